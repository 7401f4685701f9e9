//! `infomax loss`: a method's loss and gradient on embeddings read from .npy files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use infomax_runner::config::Method;

#[derive(Args)]
pub struct LossArgs {
    /// The method whose loss to evaluate.
    #[arg(long, value_parser = method_value())]
    method: Method,
    /// The views' .npy files.
    #[arg(long, num_args = 2.., required = true, value_name = "FILE")]
    views: Vec<PathBuf>,
    /// A loss parameter (each method's keys and defaults: `infomax loss --help`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Write ∂loss/∂view_i as DIR/grad_i.npy (float32).
    #[arg(long, value_name = "DIR")]
    grad_out: Option<PathBuf>,
    /// Print one JSON object: {"method", "loss", "terms"}.
    #[arg(long)]
    json: bool,
}

/// A `--method` value: one of the registry's method names, listed in the help and in the error
/// for any other.
pub fn method_value() -> impl TypedValueParser<Value = Method> {
    PossibleValuesParser::new(Method::ALL.map(Method::name)).map(|name| name.parse().expect("a listed method name"))
}

/// `loss --set`'s help, from each method's keys and defaults.
pub fn with_keys_in_help(cli: clap::Command) -> clap::Command {
    let keys: Vec<String> = Method::ALL
        .into_iter()
        .filter_map(|m| {
            let keys = m.loss_keys();
            let list: Vec<String> = keys.iter().map(|(k, v)| format!("{k} ({v})")).collect();
            let note = match m.loss_note() {
                "" => String::new(),
                note => format!(" — {note}"),
            };
            (!list.is_empty()).then(|| format!("{m}: {}{note}", list.join(", ")))
        })
        .collect();
    let help = format!("A loss parameter, KEY=VALUE (defaults in brackets). {}.", keys.join("; "));
    cli.mut_subcommand("loss", |c| c.mut_arg("set", |a| a.help(help)))
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
