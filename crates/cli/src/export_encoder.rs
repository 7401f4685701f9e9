//! `infomax export-encoder RUN --out FILE`: a run's trained encoder as torchvision-named
//! safetensors.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use infomax_runner::Store;

use crate::paths::Paths;

#[derive(Args)]
pub struct ExportEncoderArgs {
    /// Run id (`12` or `#12`, as `infomax status` prints it) or 6+ hex digits of its
    /// configuration hash.
    run: String,
    /// The .safetensors file to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn run(args: ExportEncoderArgs, paths: &Paths) -> Result<ExitCode> {
    let ExportEncoderArgs { run, out } = args;
    if !paths.db.is_file() {
        anyhow::bail!("{}: no results database", paths.db.display());
    }
    let store = Store::open(&paths.db)?;
    let e = infomax_runner::export_encoder::export_encoder(&store, &paths.checkpoints(), &run, &out)?;
    let enc = &e.config.encoder;
    println!(
        "{}: run {} ({}, {} on {}), epoch {}/{}: {} tensors of a {} at width {} ({} stem, padding {}{})",
        out.display(),
        e.run_id,
        e.status,
        e.config.method.name(),
        e.config.dataset.name(),
        e.epoch,
        e.epochs,
        e.tensors,
        enc.arch,
        enc.width,
        if enc.small_stem { "3×3 stride-1" } else { "7×7 stride-2" },
        enc.resnet().stem_padding(),
        if enc.max_pool { ", max-pool" } else { ", no max-pool" }
    );
    if enc.width != 1.0 {
        println!(
            "note: width {} has {} channels in its first stage; torchvision's {} has 64 (width 1.0)",
            enc.width,
            enc.resnet().stage_widths()[0],
            enc.arch
        );
    }
    Ok(ExitCode::SUCCESS)
}
