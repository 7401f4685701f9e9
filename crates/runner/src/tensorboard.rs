//! TensorBoard event files: each run writes its scalars (per recorded step, per epoch, per
//! evaluation) to `<database>.tensorboard/<run>/events.out.tfevents.*`, so `tensorboard --logdir
//! reports/` shows every run of a sweep.
//!
//! The format is TensorFlow's: a file of records, each `length (u64 LE)`, `masked CRC-32C of the
//! length`, the bytes of one `Event` protocol buffer, `masked CRC-32C of the bytes`. The first
//! event names the file version; every other holds a `Summary` of `(tag, simple_value)` pairs at
//! a step. The messages are declared here with `prost` (only the fields written), the checksums
//! come from `crc32c`.
//!
//! Tags use the database's names: `step/loss`, `step/lr`, `step/images_per_second`,
//! `step/<term>` (`step/loss.invariance`, `step/diag.effective_rank`), `epoch/loss`,
//! `epoch/<term>`, and `eval/<metric>` (`eval/knn200`, `eval/linear`), with the optimiser steps
//! taken as the x axis (0 for the evaluation at initialisation).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::{Error, Result};

#[derive(Clone, PartialEq, Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(string, optional, tag = "3")]
    file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
}

#[derive(Clone, PartialEq, Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// A run's event folder under `root`: `<experiment>/<profile>/<grid cell>-<hash prefix>`, e.g.
/// `table1/smoke/method=vicreg,dataset=cifar10,seed=0-3fa2b1c4` (TensorBoard names the run by
/// it; the hash keeps two variants of one cell apart).
pub fn run_dir(root: &Path, config: &crate::config::RunConfig) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_alphanumeric() || "=,.-_".contains(c) { c } else { '_' }).collect()
    };
    let or = |s: &str, none: &str| if s.is_empty() { none.to_string() } else { clean(s) };
    let cell = crate::store::run_label(config).replace(' ', ",");
    root.join(or(&config.experiment, "no-experiment")).join(or(&config.profile, "no-profile")).join(format!(
        "{}-{}",
        clean(&cell),
        &config.hash()[..8]
    ))
}

/// TensorFlow's masked CRC-32C of a record's parts.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One run's event file, appended to as the run goes.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Start a new event file in `dir` (created if needed). A run resumed after an interruption
    /// starts another file beside the first; TensorBoard reads them together.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let path = dir.join(format!("events.out.tfevents.{}.infomax.{}", now.as_secs(), std::process::id()));
        let file = File::create(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        let mut writer = EventWriter { path, file: BufWriter::new(file) };
        writer.write(&Event {
            wall_time: wall_time(),
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
        })?;
        writer.flush()?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `(tag, value)` scalars at `step`.
    pub fn scalars<'a>(&mut self, step: u64, values: impl IntoIterator<Item = (&'a str, f64)>) -> Result<()> {
        let value = values
            .into_iter()
            .map(|(tag, v)| SummaryValue { tag: tag.to_string(), simple_value: Some(v as f32) })
            .collect();
        self.write(&Event {
            wall_time: wall_time(),
            step: step as i64,
            file_version: None,
            summary: Some(Summary { value }),
        })
    }

    /// Push what was written to the file, so a running TensorBoard sees it.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|source| Error::Io { path: self.path.clone(), source })
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        let data = event.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.file.write_all(&record).map_err(|source| Error::Io { path: self.path.clone(), source })
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// One scalar read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub step: u64,
    pub tag: String,
    pub value: f32,
}

/// Every scalar of an event file, checking each record's checksums (what TensorBoard reads).
pub fn read_scalars(path: &Path) -> Result<Vec<Scalar>> {
    let bad = |what: String| Error::File { path: path.to_path_buf(), what };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        if rest.len() < 12 {
            return Err(bad(format!("a record cut short ({} bytes left)", rest.len())));
        }
        let (len_bytes, crc) = (&rest[..8], u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes")));
        if crc != masked_crc(len_bytes) {
            return Err(bad("a record length's checksum does not match".into()));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        if rest.len() < 16 + len {
            return Err(bad(format!("a record of {len} bytes cut short")));
        }
        let data = &rest[12..12 + len];
        if u32::from_le_bytes(rest[12 + len..16 + len].try_into().expect("4 bytes")) != masked_crc(data) {
            return Err(bad("a record's checksum does not match".into()));
        }
        let event = Event::decode(data).map_err(|e| bad(format!("not an event: {e}")))?;
        for v in event.summary.into_iter().flat_map(|s| s.value) {
            if let Some(value) = v.simple_value {
                out.push(Scalar { step: event.step as u64, tag: v.tag, value });
            }
        }
        rest = &rest[16 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32C's published check value, and TensorFlow's mask of it.
    #[test]
    fn checksums_follow_tensorflow() {
        // CRC-32C of "123456789" is 0xE3069283 (RFC 3720's check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn scalars_read_back_as_written_and_a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(3, [("step/loss", 1.25), ("step/lr", 0.5)]).unwrap();
        w.scalars(4, [("eval/knn200", 41.5)]).unwrap();
        w.flush().unwrap();
        let path = w.path().to_path_buf();
        assert!(path.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."));
        let got = read_scalars(&path).unwrap();
        let want = vec![
            Scalar { step: 3, tag: "step/loss".into(), value: 1.25 },
            Scalar { step: 3, tag: "step/lr".into(), value: 0.5 },
            Scalar { step: 4, tag: "eval/knn200".into(), value: 41.5 },
        ];
        assert_eq!(got, want);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_scalars(&path).unwrap_err().to_string().contains("checksum"));
    }
}
