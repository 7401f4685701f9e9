//! Self-supervised losses as pure functions of embedding tensors.
//!
//! This crate knows tensors only: no model, no data, no configuration files. Each loss lives in
//! its own module with the paper, the formula and the defaults in its doc comment, and each term
//! is a named public function so it can be tested alone.

pub mod barlow_twins;
pub mod byol;
pub mod distance;
mod error;
pub mod linalg;
pub mod simclr;
pub mod stats;
#[cfg(test)]
mod testing;
pub mod vicreg;
pub mod wmse;

use candle_core::Tensor;

pub use barlow_twins::{barlow_twins, BarlowTwinsTerms};
pub use byol::{byol, simsiam};
pub use error::{Error, Result};
pub use simclr::{nt_xent, simclr};
pub use vicreg::{vicreg, VicregTerms, VicregWeights};
pub use wmse::{whiten_cholesky, wmse, WmseConfig};

/// At least two `(N, D)` views, all the same shape, N ≥ 2.
pub(crate) fn check_views(loss: &'static str, views: &[Tensor]) -> Result<()> {
    if views.len() < 2 {
        return Err(Error::Shape { loss, what: format!("needs at least 2 views, got {}", views.len()) });
    }
    for v in &views[1..] {
        vicreg::check_pair(loss, &views[0], v)?;
    }
    Ok(())
}

/// `f(i, j)` averaged over the unordered view pairs i < j.
pub(crate) fn mean_over_pairs(views: usize, mut f: impl FnMut(usize, usize) -> Result<Tensor>) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    let mut count = 0usize;
    for i in 0..views {
        for j in i + 1..views {
            let t = f(i, j)?;
            total = Some(match total {
                Some(acc) => (acc + t)?,
                None => t,
            });
            count += 1;
        }
    }
    let total = total.ok_or_else(|| Error::Shape { loss: "pairs", what: "needs at least 2 views".into() })?;
    Ok((total / count as f64)?)
}
