//! `infomax loss`: a method's loss and gradient on embeddings read from .npy files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use infomax_runner::spec::Method;

#[derive(Args)]
pub struct LossArgs {
    /// barlow-twins, vicreg, w-mse, simclr, byol or simsiam.
    #[arg(long)]
    method: Method,
    /// The views' .npy files.
    #[arg(long, num_args = 2.., required = true, value_name = "FILE")]
    views: Vec<PathBuf>,
    /// A loss parameter: barlow-twins lambda; vicreg sim_coeff, std_coeff, cov_coeff, gamma, eps;
    /// w-mse w_size (default N), w_iter, eps, seed, permute (0: consecutive sub-batches); simclr tau.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Write ∂loss/∂view_i as DIR/grad_i.npy (float32).
    #[arg(long, value_name = "DIR")]
    grad_out: Option<PathBuf>,
    /// Print one JSON object: {"method", "loss", "terms"}.
    #[arg(long)]
    json: bool,
}

pub fn run(args: LossArgs) -> Result<ExitCode> {
    let LossArgs { method, views, set, grad_out, json } = args;
    let set = set
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .with_context(|| format!("--set {kv}: KEY=VALUE expected"))
        })
        .collect::<Result<Vec<_>>>()?;
    let r = infomax_runner::loss::loss_on_files(method, &views, &set)?;
    if json {
        println!("{}", r.to_json());
    } else {
        println!("{} loss: {}", method.name(), r.loss);
        for (name, v) in &r.terms {
            println!("  {name}: {v}");
        }
    }
    if let Some(dir) = grad_out {
        let written = r.write_gradients(&dir)?;
        if !json {
            println!("gradients: {} files in {}", written.len(), dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
