//! Checkpoints at the end of every epoch, and mid-epoch when SIGINT/SIGTERM stops a run: the
//! online network's variables (BatchNorm running statistics included), BYOL's EMA target, the
//! optimiser's state, and where training stands (epoch, global step, steps into the next epoch
//! with the epoch's running sums). One safetensors file holds the tensors and a JSON file the
//! position.
//!
//! Randomness needs no saved state: every draw (shuffle, views, W-MSE permutations, probe) comes
//! from a stream derived from (run seed, purpose, epoch, index), so training resumed after epoch
//! E draws exactly what an uninterrupted run draws.
//!
//! Writes are atomic: `epoch-E.safetensors` and `epoch-E.json` (mid-epoch: `epoch-E-step-S.*`) are written under temporary names
//! and renamed, then `latest.json` is replaced by a rename; older epochs are removed afterwards. A
//! crash at any point leaves the previous checkpoint or the new one, never half of one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::method::Network;
use crate::optim::Optimizer;
use crate::{Error, Result};

const FORMAT: u32 = 1;

/// Where training stands in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The last finished epoch.
    pub epoch: usize,
    /// Optimiser steps taken so far (the schedule's position).
    pub step: usize,
    /// Steps already taken into epoch `epoch + 1` (a mid-epoch checkpoint); none at an epoch's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_epoch: Option<usize>,
}

impl Position {
    /// At the end of `epoch`, after `step` optimiser steps in all.
    pub fn epoch_end(epoch: usize, step: usize) -> Self {
        Position { epoch, step, in_epoch: None }
    }

    /// The file stem of this position's checkpoint.
    pub fn stem(&self) -> String {
        match self.in_epoch {
            Some(s) => format!("epoch-{}-step-{s}", self.epoch + 1),
            None => format!("epoch-{}", self.epoch),
        }
    }
}

/// An unfinished epoch's running sums, so the resumed epoch records what an uninterrupted one
/// would (its mean loss and terms over all its steps, its wall time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    pub loss_sum: f64,
    pub term_sums: Vec<(String, f64)>,
    pub wall_seconds: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: u32,
    config_hash: String,
    position: Position,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partial: Option<PartialEpoch>,
}

/// The checkpoint folder of a run: `<checkpoints>/<config hash>/`.
pub fn dir_for(checkpoints: &Path, config_hash: &str) -> PathBuf {
    checkpoints.join(config_hash)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Save the state at `position` (with the unfinished epoch's sums when it is mid-epoch).
pub fn save(
    dir: &Path,
    config_hash: &str,
    position: Position,
    partial: Option<&PartialEpoch>,
    net: &Network,
    opt: &dyn Optimizer,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in net.vars.named_vars() {
        tensors.insert(format!("online/{name}"), var.as_tensor().detach());
    }
    if let Some(t) = &net.target {
        for (name, var) in t.vars.named_vars() {
            tensors.insert(format!("target/{name}"), var.as_tensor().detach());
        }
    }
    for (name, t) in opt.state()? {
        tensors.insert(format!("optimizer/{name}"), t.detach());
    }
    let stem = position.stem();
    let weights = dir.join(format!("{stem}.safetensors"));
    write_atomically(&weights, |tmp| Ok(candle_core::safetensors::save(&tensors, tmp)?))?;
    let meta = Meta { format: FORMAT, config_hash: config_hash.to_string(), position, partial: partial.cloned() };
    let json = serde_json::to_vec_pretty(&meta).expect("checkpoint metadata serialises");
    write_atomically(&dir.join(format!("{stem}.json")), |tmp| std::fs::write(tmp, &json).map_err(io(tmp)))?;
    write_atomically(&dir.join("latest.json"), |tmp| std::fs::write(tmp, &json).map_err(io(tmp)))?;
    // Only now is the new checkpoint the one a resume reads: drop the older ones.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("epoch-") && !name.starts_with(&format!("{stem}.")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Move a run's checkpoints to its new identity (a database migration gave its configuration
/// a new hash): `<checkpoints>/<old>/` becomes `<checkpoints>/<new>/`, each description naming
/// the new hash. Nothing to move, or a folder already there under the new hash, is left alone.
pub fn rename_run(checkpoints: &Path, old_hash: &str, new_hash: &str) -> Result<()> {
    let (from, to) = (dir_for(checkpoints, old_hash), dir_for(checkpoints, new_hash));
    if !from.is_dir() || to.exists() {
        return Ok(());
    }
    std::fs::rename(&from, &to).map_err(io(&to))?;
    for entry in std::fs::read_dir(&to).map_err(io(&to))?.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let mut meta: Meta = serde_json::from_slice(&bytes)
            .map_err(|e| Error::File { path: path.clone(), what: format!("not a checkpoint description: {e}") })?;
        meta.config_hash = new_hash.to_string();
        let json = serde_json::to_vec_pretty(&meta).expect("checkpoint metadata serialises");
        write_atomically(&path, |tmp| std::fs::write(tmp, &json).map_err(io(tmp)))?;
    }
    Ok(())
}

/// Remove what a write interrupted by a crash left in a checkpoint folder (files under a
/// temporary name: `*.tmp-<pid>`, `*.tmp*`), before a run resumes from the folder.
pub fn remove_unfinished_writes(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().contains(".tmp") {
            let path = e.path();
            tracing::info!("removing {}, left by an interrupted write", path.display());
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Remove a run's checkpoints (a fresh start, or a checkpoint that is not this run's).
pub fn clear(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io { path: dir.to_path_buf(), source: e }),
        _ => Ok(()),
    }
}

fn latest_meta(dir: &Path, config_hash: &str) -> Result<Option<Meta>> {
    let path = dir.join("latest.json");
    let Ok(bytes) = std::fs::read(&path) else { return Ok(None) };
    let meta: Meta = serde_json::from_slice(&bytes)
        .map_err(|e| Error::File { path: path.clone(), what: format!("not a checkpoint description: {e}") })?;
    if meta.format != FORMAT || meta.config_hash != config_hash {
        return Ok(None);
    }
    Ok(Some(meta))
}

/// The position of the latest checkpoint in `dir`, if one exists for this configuration.
pub fn latest(dir: &Path, config_hash: &str) -> Result<Option<Position>> {
    Ok(latest_meta(dir, config_hash)?.map(|m| m.position))
}

/// The unfinished epoch's sums of the latest checkpoint, when it was taken mid-epoch.
pub fn latest_partial(dir: &Path, config_hash: &str) -> Result<Option<PartialEpoch>> {
    Ok(latest_meta(dir, config_hash)?.and_then(|m| m.partial))
}

/// Load the latest checkpoint into `net` and `opt`; returns its position.
pub fn restore(dir: &Path, config_hash: &str, net: &Network, opt: &mut dyn Optimizer) -> Result<Option<Position>> {
    let Some(position) = latest(dir, config_hash)? else { return Ok(None) };
    let path = dir.join(format!("{}.safetensors", position.stem()));
    let device = net.vars.named_vars().first().map(|(_, v)| v.device().clone()).unwrap_or(candle_core::Device::Cpu);
    let tensors = candle_core::safetensors::load(&path, &device)?;
    let set = |prefix: &str, vars: Vec<(String, candle_core::Var)>| -> Result<()> {
        for (name, var) in vars {
            let key = format!("{prefix}/{name}");
            let t = tensors
                .get(&key)
                .ok_or_else(|| Error::File { path: path.clone(), what: format!("no tensor {key}") })?;
            if t.dims() != var.dims() {
                return Err(Error::File {
                    path: path.clone(),
                    what: format!("{key} has shape {:?}, the model {:?}", t.dims(), var.dims()),
                });
            }
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        Ok(())
    };
    set("online", net.vars.named_vars())?;
    if let Some(t) = &net.target {
        set("target", t.vars.named_vars())?;
    }
    let opt_state: HashMap<String, Tensor> =
        tensors.iter().filter_map(|(k, v)| k.strip_prefix("optimizer/").map(|n| (n.to_string(), v.clone()))).collect();
    opt.load_state(&opt_state)?;
    Ok(Some(position))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dataset, Method, RunConfig};
    use crate::method::StepContext;
    use candle_core::Device;

    /// What a write killed half-way left (its temporary names) is removed; a checkpoint is not.
    #[test]
    fn unfinished_writes_are_removed_and_checkpoints_kept() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["epoch-3.tmp-4242", "latest.json.tmpAbC123", "epoch-2.safetensors", "latest.json"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        remove_unfinished_writes(dir.path()).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        left.sort();
        assert_eq!(left, ["epoch-2.safetensors", "latest.json"]);
        remove_unfinished_writes(&dir.path().join("absent")).unwrap();
    }

    fn all_values(net: &Network, opt: &dyn Optimizer) -> Vec<(String, Vec<f32>)> {
        let mut out: Vec<(String, Vec<f32>)> = Vec::new();
        let flat = |t: &Tensor| t.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for (n, v) in net.vars.named_vars() {
            out.push((format!("online/{n}"), flat(v.as_tensor())));
        }
        for (n, v) in net.target.as_ref().unwrap().vars.named_vars() {
            out.push((format!("target/{n}"), flat(v.as_tensor())));
        }
        let mut state = opt.state().unwrap();
        state.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(state.iter().map(|(n, t)| (format!("optimizer/{n}"), flat(t))));
        out
    }

    /// BYOL (online, EMA target, Adam moments and step) after two steps, saved and restored into a
    /// freshly built network and optimiser, is the same to the last bit.
    #[test]
    fn save_and_restore_round_trip_byol_with_adam() {
        let dev = Device::Cpu;
        let mut config = RunConfig::defaults(Method::Byol, Dataset::Cifar10);
        config.encoder.width = 0.125;
        config.projector.widths = vec![16, 8];
        config.predictor.as_mut().unwrap().widths = vec![16, 8];
        let net = Network::new(&config, &dev).unwrap();
        let mut opt = crate::train::optimizer_for(&config, &net);
        let views: Vec<Tensor> = (0..2).map(|_| Tensor::randn(0f32, 1.0, (8, 3, 8, 8), &dev).unwrap()).collect();
        for step in 0..2 {
            let ctx = StepContext { seed: 0, epoch: 1, step, progress: 0.5 };
            let out = config.method.step_loss(&config, &net, &views, &ctx).unwrap();
            opt.step(&out.loss.backward().unwrap(), 1e-3).unwrap();
            config.method.after_step(&config, &net, &ctx).unwrap();
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = dir_for(tmp.path(), &config.hash());
        let pos = Position::epoch_end(3, 2);
        save(&dir, &config.hash(), pos, None, &net, opt.as_ref()).unwrap();
        let mid = Position { epoch: 3, step: 2, in_epoch: Some(1) };
        let sums = PartialEpoch { loss_sum: 1.5, term_sums: vec![("loss.x".into(), 0.5)], wall_seconds: 2.0 };
        save(&dir, &config.hash(), mid, Some(&sums), &net, opt.as_ref()).unwrap();
        assert!(dir.join("epoch-4-step-1.safetensors").exists() && !dir.join("epoch-3.safetensors").exists());
        assert_eq!(latest_partial(&dir, &config.hash()).unwrap(), Some(sums));
        save(&dir, &config.hash(), Position::epoch_end(4, 2), None, &net, opt.as_ref()).unwrap();
        assert!(!dir.join("epoch-4-step-1.safetensors").exists(), "older checkpoints are removed");
        assert_eq!(latest_partial(&dir, &config.hash()).unwrap(), None);

        let fresh = Network::new(&config, &dev).unwrap();
        let mut fresh_opt = crate::train::optimizer_for(&config, &fresh);
        assert_eq!(restore(&dir, &config.hash(), &fresh, fresh_opt.as_mut()).unwrap(), Some(Position::epoch_end(4, 2)));
        let (a, b) = (all_values(&net, opt.as_ref()), all_values(&fresh, fresh_opt.as_ref()));
        assert_eq!(a.len(), b.len());
        assert!(a.iter().any(|(n, _)| n == "optimizer/adam_step"));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y);
        }
        assert_eq!(latest(&dir, "another-config").unwrap(), None, "a checkpoint of another configuration is not used");
    }
}
