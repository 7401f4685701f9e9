//! Row-wise distances between two views' embeddings, shared by W-MSE, BYOL and SimSiam.

use candle_core::{Tensor, D};

use crate::Result;

/// Each row scaled to unit L2 norm, `x / max(‖x‖, 1e-12)` (PyTorch's `F.normalize`).
pub fn l2_normalise(x: &Tensor) -> Result<Tensor> {
    let norms = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norms)?)
}

/// Cosine similarity of matching rows, shape `(N,)`.
pub fn cosine_rows(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((l2_normalise(a)? * l2_normalise(b)?)?.sum(D::Minus1)?)
}

/// `2 − 2 cos(a_n, b_n)` averaged over rows: the squared distance of the L2-normalised rows
/// (the W-MSE authors' `norm_mse_loss`, also BYOL's regression loss). In `[0, 4]`.
pub fn normalised_mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(cosine_rows(a, b)?.mean_all()?.affine(-2.0, 2.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn normalised_mse_by_hand() {
        let dev = Device::Cpu;
        // Row 0: same direction (cos 1 → 0); row 1: orthogonal (cos 0 → 2). Mean 1.
        let a = Tensor::new(&[[1.0f64, 0.0], [0.0, 3.0]], &dev).unwrap();
        let b = Tensor::new(&[[5.0f64, 0.0], [2.0, 0.0]], &dev).unwrap();
        let v = normalised_mse(&a, &b).unwrap().to_scalar::<f64>().unwrap();
        assert!((v - 1.0).abs() < 1e-12, "{v}");
        let opposite = normalised_mse(&a, &a.neg().unwrap()).unwrap().to_scalar::<f64>().unwrap();
        assert!((opposite - 4.0).abs() < 1e-12);
    }
}
