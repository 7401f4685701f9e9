//! One convolution's passes on the CPU, on channels-last f32 buffers, each as a training step
//! runs it: public so that `infomax bench conv` can time the passes apart, which the candle ops
//! (whose backward makes both gradients) and the fused training op cannot.

use super::{
    conv_forward, conv_forward_with_shortcut, conv_input_grad, conv_input_grad_with_shortcut, conv_weight_grad_taps,
    conv_weight_grad_taps_with_shortcut, taps_to_weight, weight_to_taps, Geometry,
};

/// The passes of one convolution by [`ConvKernels::Im2col`](super::ConvKernels::Im2col)'s kernels:
/// activations `(n, H, W, C)` channels last, the weight `(C_out, C_in, k, k)` as a
/// [`Conv2d`](super::Conv2d) holds it, reordered into the kernels' layout inside each pass (and
/// its gradient back), as the ops and the fused training op do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvPasses(Geometry);

impl ConvPasses {
    /// A `kernel × kernel` convolution of `channels → out_channels` on `height × width` images.
    pub fn new(
        channels: usize,
        (height, width): (usize, usize),
        kernel: usize,
        stride: usize,
        padding: usize,
        out_channels: usize,
    ) -> Self {
        assert!(channels > 0 && out_channels > 0 && kernel > 0 && stride > 0, "convolution: a size of 0");
        assert!(
            height + 2 * padding >= kernel && width + 2 * padding >= kernel,
            "convolution: kernel beyond the image"
        );
        Self(Geometry { channels, height, width, kernel, stride, padding, out_channels, bf16: false })
    }

    /// The same passes with bf16 products where `on` and the CPU has them
    /// ([`bf16_products`](super::bf16_products)), as a `train.precision = "bf16"` run's.
    pub fn with_bf16(self, on: bool) -> Self {
        Self(Geometry { bf16: on && super::bf16_products(), ..self.0 })
    }

    /// `y = conv(x)`: `(n, out_h, out_w, C_out)` from `x` `(n, H, W, C_in)`.
    pub fn forward(&self, x: &[f32], weight: &[f32]) -> Vec<f32> {
        let g = &self.0;
        conv_forward(g, x, &weight_to_taps(weight, g))
    }

    /// The input gradient `(n, H, W, C_in)` from the output gradient `dy`.
    pub fn input_grad(&self, dy: &[f32], weight: &[f32]) -> Vec<f32> {
        let g = &self.0;
        conv_input_grad(g, dy, &weight_to_taps(weight, g))
    }

    /// The weight gradient `(C_out, C_in, k, k)` from the input `x` and the output gradient `dy`.
    pub fn weight_grad(&self, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let g = &self.0;
        taps_to_weight(&conv_weight_grad_taps(g, x, dy), g)
    }

    /// [`Self::forward`] of a downsampling block's first convolution (this one) and of its
    /// projection `shortcut`, both reading `x`, as training runs the two: together where the
    /// kernels take both.
    pub fn forward_with_shortcut(
        &self,
        shortcut: &ConvPasses,
        x: &[f32],
        (weight, weight_s): (&[f32], &[f32]),
    ) -> (Vec<f32>, Vec<f32>) {
        let (g, gs) = (&self.0, &shortcut.0);
        conv_forward_with_shortcut(g, x, &weight_to_taps(weight, g), gs, &weight_to_taps(weight_s, gs))
    }

    /// The input gradient of the block's input through this convolution (output gradient `dy`)
    /// and its `shortcut` (`dys`), summed.
    pub fn input_grad_with_shortcut(
        &self,
        shortcut: &ConvPasses,
        (dy, weight): (&[f32], &[f32]),
        (dys, weight_s): (&[f32], &[f32]),
    ) -> Vec<f32> {
        let (g, gs) = (&self.0, &shortcut.0);
        let (taps, taps_s) = (weight_to_taps(weight, g), weight_to_taps(weight_s, gs));
        conv_input_grad_with_shortcut((g, dy, &taps), (gs, dys, &taps_s))
    }

    /// The weight gradients of this convolution (output gradient `dy`) and of its `shortcut`
    /// (`dys`), both reading `x`.
    pub fn weight_grad_with_shortcut(
        &self,
        shortcut: &ConvPasses,
        x: &[f32],
        (dy, dys): (&[f32], &[f32]),
    ) -> (Vec<f32>, Vec<f32>) {
        let (g, gs) = (&self.0, &shortcut.0);
        let (dw, dws) = conv_weight_grad_taps_with_shortcut((g, dy), (gs, dys), x);
        (taps_to_weight(&dw, g), taps_to_weight(&dws, gs))
    }
}
