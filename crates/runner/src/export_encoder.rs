//! `infomax export-encoder`: a trained run's encoder as a safetensors file with torchvision's
//! ResNet parameter names (`conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`,
//! `layer2.0.downsample.0.weight`, …, `num_batches_tracked` included), so PyTorch users can load it
//! into `torchvision.models.resnet18()` (or `resnet34()`) with the run's stem:
//!
//! ```python
//! m = torchvision.models.resnet18()
//! m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)   # small_stem (padding: stem_padding)
//! m.maxpool = torch.nn.Identity()                          # unless max_pool
//! m.fc = torch.nn.Identity()
//! m.load_state_dict(safetensors.torch.load_file("encoder.safetensors"))
//! ```
//! The file's metadata says which run, epoch and architecture it holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::checkpoint;
use crate::config::RunConfig;
use crate::store::Store;
use crate::{Error, Result};

/// What was exported.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedEncoder {
    pub run_id: i64,
    pub status: String,
    pub epoch: usize,
    pub epochs: usize,
    pub tensors: usize,
    pub config: RunConfig,
}

/// Write the encoder of `run`'s latest checkpoint (in `checkpoints`, the database's folder) to
/// `out`, atomically.
pub fn export_encoder(store: &Store, checkpoints: &Path, run: &str, out: &Path) -> Result<ExportedEncoder> {
    let (run_id, status, config) = store.find_run(run)?;
    let hash = config.hash();
    let dir = checkpoint::dir_for(checkpoints, &hash);
    let position = checkpoint::latest(&dir, &hash)?.ok_or_else(|| Error::Run {
        run: run.into(),
        what: format!(
            "run {run_id} ({status}) has no checkpoint in {}: checkpoints live beside the database the run trained in",
            dir.display()
        ),
    })?;
    let weights: PathBuf = dir.join(format!("{}.safetensors", position.stem()));
    let all = candle_core::safetensors::load(&weights, &Device::Cpu)?;
    let mut encoder: Vec<(String, Tensor)> = all
        .into_iter()
        .filter_map(|(name, t)| name.strip_prefix("online/encoder.").map(|n| (n.to_string(), t)))
        .collect();
    if encoder.is_empty() {
        return Err(Error::File { path: weights, what: "holds no encoder tensors (online/encoder.*)".into() });
    }
    // torchvision's BatchNorm keeps a count of training-mode forwards: one per view per step.
    let forwards = (position.step * config.train.views) as i64;
    let batch_norms: Vec<String> =
        encoder.iter().filter_map(|(n, _)| n.strip_suffix(".running_mean").map(str::to_string)).collect();
    for bn in batch_norms {
        encoder.push((format!("{bn}.num_batches_tracked"), Tensor::new(forwards, &Device::Cpu)?));
    }
    encoder.sort_by(|a, b| a.0.cmp(&b.0));
    let e = &config.encoder;
    let metadata: HashMap<String, String> = [
        ("format", "pt".to_string()),
        ("infomax.run_id", run_id.to_string()),
        ("infomax.config_hash", hash.clone()),
        ("infomax.experiment", config.experiment.clone()),
        ("infomax.method", config.method.name().to_string()),
        ("infomax.dataset", config.dataset.name().to_string()),
        ("infomax.epoch", position.epoch.to_string()),
        ("infomax.arch", e.arch.clone()),
        ("infomax.width", e.width.to_string()),
        ("infomax.small_stem", e.small_stem.to_string()),
        ("infomax.stem_padding", e.resnet().stem_padding().to_string()),
        ("infomax.max_pool", e.max_pool.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io { path: parent.to_path_buf(), source })?;
    }
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    safetensors::serialize_to_file(encoder.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata), &tmp)
        .map_err(|e| Error::File { path: tmp.clone(), what: format!("cannot write: {e}") })?;
    std::fs::rename(&tmp, out).map_err(|source| Error::Io { path: out.to_path_buf(), source })?;
    Ok(ExportedEncoder {
        run_id,
        status,
        epoch: position.epoch,
        epochs: config.train.epochs,
        tensors: encoder.len(),
        config,
    })
}
