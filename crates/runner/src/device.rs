//! Where runs execute: `--device cpu|cuda[:N]` and the experiment file's `train.device`.
//!
//! Every op infomax adds works on either device: the CPU kernels (im2col convolution, fused
//! BatchNorm, the stem max-pool's gradient) step aside for candle's kernels off the CPU, and W-MSE's
//! Cholesky factorisation and triangular solve, on an `emb × emb` matrix, make a host round trip
//! (see `infomax_losses::linalg`).

use candle_core::Device;

use crate::config::DeviceKind;
use crate::{Error, Result};

/// `--device`: a kind and, for CUDA, the GPU's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceChoice {
    pub kind: DeviceKind,
    pub ordinal: usize,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |what: &str| Error::Option { option: format!("--device {s}"), what: what.into() };
        match s.trim() {
            "cpu" => Ok(DeviceChoice { kind: DeviceKind::Cpu, ordinal: 0 }),
            "cuda" => Ok(DeviceChoice { kind: DeviceKind::Cuda, ordinal: 0 }),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map(|ordinal| DeviceChoice { kind: DeviceKind::Cuda, ordinal })
                    .map_err(|_| bad("cpu, cuda or cuda:N expected (N: the GPU's index, from 0)")),
                None => Err(bad("cpu, cuda or cuda:N expected (N: the GPU's index, from 0)")),
            },
        }
    }
}

impl DeviceChoice {
    /// `train.device=…` for `--set`, so the choice reaches every run's configuration.
    pub fn override_text(self) -> String {
        match self.kind {
            DeviceKind::Cpu => "train.device=cpu".into(),
            DeviceKind::Cuda => "train.device=cuda".into(),
        }
    }
}

/// Whether this binary was built with CUDA (`--features cuda`, `just build-cuda`).
pub fn cuda_built() -> bool {
    candle_core::utils::cuda_is_available()
}

/// The candle device for a kind: the CPU, or GPU `ordinal`.
pub fn open(kind: DeviceKind, ordinal: usize) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda if !cuda_built() => Err(Error::Option {
            option: format!("--device cuda:{ordinal}"),
            what: "this infomax was built without CUDA; build one with `just build-cuda` (target/cuda/release/infomax)"
                .into(),
        }),
        DeviceKind::Cuda => Device::new_cuda(ordinal).map_err(|e| Error::Option {
            option: format!("--device cuda:{ordinal}"),
            what: format!("cannot open the GPU: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse_and_bad_ones_say_what_is_expected() {
        let p = |s: &str| s.parse::<DeviceChoice>();
        assert_eq!(p("cpu").unwrap(), DeviceChoice { kind: DeviceKind::Cpu, ordinal: 0 });
        assert_eq!(p("cuda").unwrap(), DeviceChoice { kind: DeviceKind::Cuda, ordinal: 0 });
        assert_eq!(p("cuda:3").unwrap(), DeviceChoice { kind: DeviceKind::Cuda, ordinal: 3 });
        for bad in ["gpu", "cuda:", "cuda:x", "CUDA", "metal"] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("--device {bad}")) && e.contains("cuda:N"), "{e}");
        }
    }

    #[test]
    fn opening_a_gpu_without_cuda_says_how_to_build_one() {
        assert!(open(DeviceKind::Cpu, 0).unwrap().is_cpu());
        if !cuda_built() {
            let e = open(DeviceKind::Cuda, 1).unwrap_err().to_string();
            assert!(e.contains("--device cuda:1") && e.contains("just build-cuda"), "{e}");
        }
    }
}
