//! 2-D convolution with a selectable implementation, and the choice of kernel for each pass.
//!
//! candle's CPU convolution backward computes the input gradient with an unblocked
//! `conv_transpose2d` (a loop of dot products) and the weight gradient through an im2col of the
//! whole gradient, which together make it 5-10× slower than PyTorch (measured: ~85 % of a
//! training step). [`ConvKernels::Im2col`] works on channels-last activations `(N, H, W, C)` with
//! this crate's kernels, one family to a module: `im2col` (GEMM over chunks of whole images,
//! any shape), `direct` (AVX-512 tiles of output pixels along a row, up to 128 channels),
//! `tap_major` (AVX-512, small planes of many channels, several images at once) and `winograd`
//! (F(2×2, 3×3), the 3×3 stride-1 convolutions of 16-512 channels). Each imports only what all
//! share (`shared`: the geometry, buffers, weight layouts, bordered copies, the BatchNorm map,
//! the bf16 products)
//! and `crate::cpu`, never another family or this module. This module picks the kernel of each
//! pass — Winograd where it handles the shape, else tap-major, else direct, else im2col; in bf16,
//! im2col on bf16 products ahead of tap-major and direct where it takes the shape — and
//! calls a forward through one function type ([`ForwardKernel`]), a weight gradient through
//! another ([`WeightGradKernel`]). [`ConvKernels::Candle`] keeps candle's own kernels on `(N, C, H,
//! W)` selectable: the reference, and the path on GPUs, where `Im2col` has no kernel yet.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Tensor};

use crate::batch_norm::{mean_and_variance, Moments};
use crate::cpu::{f32_slice, new_filled, zeros};
pub use shared::bf16_products;
use shared::{flipped, taps_to_direct, taps_to_direct_input_grad, ForwardKernel, WeightGradKernel};
pub(crate) use shared::{taps_to_weight, weight_to_taps, Geometry, RowAffine};

mod direct;
mod im2col;
mod passes;
pub(crate) mod shared;
mod tap_major;
#[cfg(test)]
mod tests;
mod winograd;

pub use passes::ConvPasses;

/// The name the ops' errors carry.
const OP: &str = "im2col convolution";

/// Which convolution kernels a model uses: a run's `encoder.conv`, `im2col` or `candle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConvKernels {
    /// Channels-last im2col + GEMM forward and backward (CPU, f32); where the CPU has AVX-512,
    /// the layers of up to 128 channels by the direct kernels (`direct::handles_forward`), the
    /// forward, stride-1 input gradient and (up to 256 channels) weight gradient of wider ones on
    /// planes of at most 8×8 by the tap-major ones (`tap_major::handles_forward`,
    /// `tap_major::handles_weight_grad`), and of them the 3×3 stride-1 convolutions of 16-512
    /// channels (the weight gradient from 32) by Winograd's F(2×2, 3×3)
    /// (`winograd::handles_forward`, `winograd::handles_weight_grad`); falls back to `Candle`
    /// elsewhere.
    #[default]
    Im2col,
    /// candle's `conv2d` and its autograd (`conv_transpose2d` backward), channels first.
    Candle,
}

/// How a network lays out its activations between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActLayout {
    /// `(N, C, H, W)`, candle's and PyTorch's default.
    ChannelsFirst,
    /// `(N, H, W, C)`: what [`ConvKernels::Im2col`] reads and writes.
    ChannelsLast,
}

impl std::str::FromStr for ConvKernels {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "im2col" => Ok(ConvKernels::Im2col),
            "candle" => Ok(ConvKernels::Candle),
            other => Err(format!("`im2col` or `candle` expected, got `{other}`")),
        }
    }
}

impl ConvKernels {
    /// The layout a network with these kernels keeps for input `x`: channels last where the
    /// im2col kernels run (CPU, f32), channels first elsewhere.
    pub fn layout_for(self, x: &Tensor) -> ActLayout {
        if self == ConvKernels::Im2col && x.device().is_cpu() && x.dtype() == DType::F32 {
            ActLayout::ChannelsLast
        } else {
            ActLayout::ChannelsFirst
        }
    }
}

impl ActLayout {
    /// `(N, C, H, W)` input into this layout.
    pub fn from_nchw(self, x: &Tensor) -> Result<Tensor> {
        match self {
            ActLayout::ChannelsFirst => Ok(x.clone()),
            ActLayout::ChannelsLast => x.permute((0, 2, 3, 1))?.contiguous(),
        }
    }

    /// This layout back into `(N, C, H, W)`.
    pub fn to_nchw(self, x: &Tensor) -> Result<Tensor> {
        match self {
            ActLayout::ChannelsFirst => Ok(x.clone()),
            ActLayout::ChannelsLast => x.permute((0, 3, 1, 2))?.contiguous(),
        }
    }

    /// The mean over the spatial positions: `(N, C)`.
    pub fn global_average_pool(self, x: &Tensor) -> Result<Tensor> {
        match self {
            ActLayout::ChannelsFirst => x.mean(3)?.mean(2),
            ActLayout::ChannelsLast => {
                let (n, h, w, c) = x.dims4()?;
                x.reshape((n, h * w, c))?.mean(1)
            }
        }
    }
}

/// The forward kernel for `g` on this CPU, `None` where only im2col computes it: Winograd where it
/// handles the shape (fewer multiply-adds), else the direct families'.
fn forward_kernel<T: Send>(g: &Geometry) -> Option<ForwardKernel<T>> {
    if winograd::handles_forward(g) {
        return Some(winograd::forward_into_then);
    }
    if im2col::takes_bf16(g) {
        return None;
    }
    direct_or_tap_major_forward(g)
}

/// The forward kernel of the direct families for `g` on this CPU: tap-major on the small planes
/// it suits (where it and the one-row tiles both could, it wins), else the one-row tiles.
fn direct_or_tap_major_forward<T: Send>(g: &Geometry) -> Option<ForwardKernel<T>> {
    if tap_major::handles_forward(g) {
        Some(tap_major::forward_into_then)
    } else if direct::handles_forward(g) {
        Some(direct::forward_into_then)
    } else {
        None
    }
}

/// Whether the direct kernels run a downsampling block's convolution `g` and shortcut `gs`
/// together: where they take the pair and bf16 products do not go to im2col instead.
fn direct_pair(g: &Geometry, gs: &Geometry) -> bool {
    direct::handles_downsampling_pair(g, gs) && !im2col::takes_bf16(g)
}

/// Whether the direct kernels compute the stride-2 input gradient of `g` (not in bf16 where
/// im2col takes it).
fn direct_strided_input_grad(g: &Geometry) -> bool {
    direct::handles_strided_input_grad(g) && !im2col::takes_bf16(g)
}

/// The kernel of the stride-1 input gradient of `g`, the forward of its flipped kernel
/// ([`flipped`]): Winograd's or a direct family's where one takes that forward, else `None`.
fn input_grad_kernel<T: Send>(g: &Geometry) -> Option<ForwardKernel<T>> {
    if g.stride == 1 {
        forward_kernel(&flipped(g))
    } else {
        None
    }
}

/// The weight-gradient kernel for `g` on this CPU, `None` where only im2col computes it:
/// Winograd, else tap-major, else direct, each where it handles the shape.
fn weight_grad_kernel(g: &Geometry) -> Option<WeightGradKernel> {
    if winograd::handles_weight_grad(g) {
        Some(winograd::weight_grad_taps)
    } else if im2col::takes_bf16(g) {
        None
    } else if tap_major::handles_weight_grad(g) {
        Some(tap_major::weight_grad_taps)
    } else if direct::handles_weight_grad(g) {
        Some(direct::weight_grad_taps)
    } else {
        None
    }
}

/// `y = conv(x)` over channels-last images `x` (`n · image_len` floats) with the weight as
/// taps ([`weight_to_taps`]); `y` is `(n, out_h, out_w, C_out)`.
pub(crate) fn conv_forward(g: &Geometry, x: &[f32], taps: &[f32]) -> Vec<f32> {
    let Some(kernel) = forward_kernel(g) else {
        return im2col::forward(g, x, taps);
    };
    let weights = taps_to_direct(taps, g);
    // SAFETY: the kernel writes every output.
    unsafe {
        new_filled(x.len() / g.image_len() * g.positions() * g.out_channels, |y| {
            kernel(g, x, None, &weights, y, &|_| ());
        })
    }
}

/// [`conv_forward`] of `x`, or of `relu(BN(x))` with `input` the BatchNorm's affine map, and the
/// per-channel mean and biased variance of the output (for the BatchNorm after it). Where the
/// direct kernels apply, `relu(BN(x))` is made image by image as the input is copied into its
/// bordered buffer (the copy is made anyway; the activation is never stored: a write and a read
/// of it fewer, and its memory), and the statistics are taken from each image's output right
/// after the kernel writes it, in cache, instead of in another pass over memory.
pub(crate) fn conv_forward_with_statistics(
    g: &Geometry,
    x: &[f32],
    input: Option<&RowAffine>,
    taps: &[f32],
) -> (Vec<f32>, (Vec<f64>, Vec<f64>)) {
    let co = g.out_channels;
    if let Some(kernel) = forward_kernel(g).filter(|_| g.padding == 1 || input.is_none()) {
        let weights = taps_to_direct(taps, g);
        let mut parts = Vec::new();
        // SAFETY: the kernel writes every output.
        let y = unsafe {
            new_filled(x.len() / g.image_len() * g.positions() * co, |y| {
                parts = kernel(g, x, input, &weights, y, &|yi| Moments::of_rows(yi, co));
            })
        };
        return (y, Moments::merge(parts, co));
    }
    let y = match input {
        Some(bn) => im2col::forward(g, &bn.apply_new(x, true), taps),
        None => im2col::forward(g, x, taps),
    };
    let statistics = mean_and_variance(&y, co);
    (y, statistics)
}

/// [`conv_forward`] of a block's first convolution `g` and of its projection shortcut `gs`, both
/// reading `x`: one pass per image where the direct kernels take both (the shortcut reads the
/// copy of the image the other just made, from cache), else one after the other.
pub(crate) fn conv_forward_with_shortcut(
    g: &Geometry,
    x: &[f32],
    taps: &[f32],
    gs: &Geometry,
    taps_s: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    if !direct_pair(g, gs) {
        return (conv_forward(g, x, taps), conv_forward(gs, x, taps_s));
    }
    let n = x.len() / g.image_len();
    let (weights, weights_s) = (taps_to_direct(taps, g), taps_to_direct(taps_s, gs));
    let mut ys = Vec::new();
    // SAFETY: the direct kernels write every output of both.
    let y = unsafe {
        new_filled(n * g.positions() * g.out_channels, |y| {
            ys = new_filled(n * gs.positions() * gs.out_channels, |ys| {
                direct::forward_pair_into((g, x, &weights, y), (gs, &weights_s, ys))
            });
        })
    };
    (y, ys)
}

/// The input gradient (`n · image_len` floats, a new buffer) of [`conv_forward`] from the output
/// gradient `dy`. To add it onto an existing gradient (a residual block's two branches), call
/// [`conv_input_grad_add`].
pub(crate) fn conv_input_grad(g: &Geometry, dy: &[f32], taps: &[f32]) -> Vec<f32> {
    let len = dy.len() / (g.positions() * g.out_channels) * g.image_len();
    if let Some(kernel) = input_grad_kernel(g) {
        // A 3×3 stride-1 convolution's input gradient is the same convolution of `dy` with the
        // kernel flipped and its channels swapped.
        let weights = taps_to_direct_input_grad(taps, g);
        // SAFETY: the kernel writes every output.
        return unsafe {
            new_filled(len, |dx| {
                kernel(&flipped(g), dy, None, &weights, dx, &|_| ());
            })
        };
    }
    if g.kernel == 3 && g.stride == 2 && direct_strided_input_grad(g) {
        // SAFETY: the direct kernel writes every output.
        return unsafe { new_filled(len, |dx| direct::input_grad_stride2_into(g, dy, taps, dx, None)) };
    }
    // Both paths below add onto what is there: zeros, and no second zeroing inside.
    let mut dx = zeros(len);
    conv_input_grad_add(g, dy, taps, &mut dx);
    dx
}

/// The input gradient of a block's input through its first convolution `g` (output gradient
/// `dy`) and its projection shortcut `gs` (`dys`), summed: see [`conv_forward_with_shortcut`].
pub(crate) fn conv_input_grad_with_shortcut(
    (g, dy, taps): (&Geometry, &[f32], &[f32]),
    (gs, dys, taps_s): (&Geometry, &[f32], &[f32]),
) -> Vec<f32> {
    if !direct_pair(g, gs) {
        let mut dx = conv_input_grad(g, dy, taps);
        conv_input_grad_add(gs, dys, taps_s, &mut dx);
        return dx;
    }
    let len = dy.len() / (g.positions() * g.out_channels) * g.image_len();
    // SAFETY: the direct kernel writes every output, then adds the shortcut's onto it.
    unsafe { new_filled(len, |dx| direct::input_grad_stride2_into(g, dy, taps, dx, Some((gs, dys, taps_s)))) }
}

/// Adds the input gradient of [`conv_forward`] onto `dx`.
pub(crate) fn conv_input_grad_add(g: &Geometry, dy: &[f32], taps: &[f32], dx: &mut [f32]) {
    if g.kernel == 1 && g.stride != 1 && direct_strided_input_grad(g) {
        return direct::input_grad_add(g, dy, taps, dx);
    }
    im2col::input_grad_into(g, dy, taps, dx, true);
}

/// The weight gradient of [`conv_forward`] as taps `(C_out, k, k, C_in)`.
pub(crate) fn conv_weight_grad_taps(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    match weight_grad_kernel(g) {
        Some(kernel) => kernel(g, x, None, dy),
        None => im2col::weight_grad_taps(g, x, dy),
    }
}

/// [`conv_weight_grad_taps`] with the input `relu(BN(a))`, made as [`conv_forward_with_statistics`]
/// makes it: by the kernel as it reads a padded input, else in full.
pub(crate) fn conv_weight_grad_taps_bn_relu(g: &Geometry, a: &[f32], bn: &RowAffine, dy: &[f32]) -> Vec<f32> {
    match weight_grad_kernel(g) {
        Some(kernel) if g.padding == 1 => kernel(g, a, Some(bn), dy),
        _ => im2col::weight_grad_taps(g, &bn.apply_new(a, true), dy),
    }
}

/// [`conv_weight_grad_taps`] of a block's first convolution `g` (output gradient `dy`) and of
/// its projection shortcut `gs` (`dys`), both reading `x`: see [`conv_forward_with_shortcut`].
pub(crate) fn conv_weight_grad_taps_with_shortcut(
    (g, dy): (&Geometry, &[f32]),
    (gs, dys): (&Geometry, &[f32]),
    x: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    if !direct_pair(g, gs) {
        return (conv_weight_grad_taps(g, x, dy), conv_weight_grad_taps(gs, x, dys));
    }
    direct::weight_grad_taps_pair(g, x, dy, gs, dys)
}

/// The forward convolution, `(x, w) → y` on channels-last `x`, with its backward built from the
/// two ops below.
#[derive(Debug, Clone, Copy)]
struct ConvForward(Geometry);

/// `(dy, w) → dx`.
#[derive(Debug, Clone, Copy)]
struct ConvInputGrad(Geometry);

/// `(x, dy) → dw`.
#[derive(Debug, Clone, Copy)]
struct ConvWeightGrad(Geometry);

impl CustomOp2 for ConvForward {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (x, w) = (f32_slice(OP, xs, xl, "input")?, f32_slice(OP, ws, wl, "weight")?);
        let n = xl.dims()[0];
        let y = conv_forward(&g, x, &weight_to_taps(w, &g));
        Ok((CpuStorage::F32(y), Shape::from((n, g.out_h(), g.out_w(), g.out_channels))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(w, &ConvInputGrad(self.0))?;
        let dw = x.apply_op2_no_bwd(&dy, &ConvWeightGrad(self.0))?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "conv2d-im2col-input-grad"
    }

    fn cpu_fwd(&self, ds: &CpuStorage, dl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (dy, w) = (f32_slice(OP, ds, dl, "output gradient")?, f32_slice(OP, ws, wl, "weight")?);
        let n = dl.dims()[0];
        let dx = conv_input_grad(&g, dy, &weight_to_taps(w, &g));
        Ok((CpuStorage::F32(dx), Shape::from((n, g.height, g.width, g.channels))))
    }
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "conv2d-im2col-weight-grad"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ds: &CpuStorage, dl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (x, dy) = (f32_slice(OP, xs, xl, "input")?, f32_slice(OP, ds, dl, "output gradient")?);
        let dw = taps_to_weight(&conv_weight_grad_taps(&g, x, dy), &g);
        Ok((CpuStorage::F32(dw), Shape::from((g.out_channels, g.channels, g.kernel, g.kernel))))
    }
}

/// A square-kernel convolution without bias (ResNets put BatchNorm after every conv).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    stride: usize,
    padding: usize,
    imp: ConvKernels,
    precision: crate::Precision,
}

impl Conv2d {
    /// `weight` is `(C_out, C_in, k, k)` in either layout.
    pub fn new(weight: Tensor, stride: usize, padding: usize, imp: ConvKernels) -> Self {
        Self { weight, stride, padding, imp, precision: crate::Precision::F32 }
    }

    /// The same convolution in `precision` (bf16 runs channels first, on candle's kernels).
    pub fn with_precision(self, precision: crate::Precision) -> Self {
        Self { precision, ..self }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Whether this convolution's products run in bf16 on this CPU's own instructions.
    fn bf16(&self) -> bool {
        self.precision == crate::Precision::Bf16 && bf16_products()
    }

    /// The layout `x` runs in: [`ConvKernels::layout_for`]'s, in bf16 channels last only where
    /// the CPU has bf16 products (else candle's kernels, channels first).
    pub fn layout_for(&self, x: &Tensor) -> ActLayout {
        match self.precision {
            crate::Precision::F32 => self.imp.layout_for(x),
            crate::Precision::Bf16 if self.bf16() => self.imp.layout_for(x),
            crate::Precision::Bf16 => ActLayout::ChannelsFirst,
        }
    }

    /// The geometry of this convolution on channels-last images of `height × width` (the
    /// channel counts from the weight).
    pub(crate) fn geometry(&self, height: usize, width: usize) -> Result<Geometry> {
        let (co, ci, k, k2) = self.weight.dims4()?;
        if k != k2 {
            candle_core::bail!("conv2d: the kernel must be square, the weight is {:?}", self.weight.dims());
        }
        Ok(Geometry {
            channels: ci,
            height,
            width,
            kernel: k,
            stride: self.stride,
            padding: self.padding,
            out_channels: co,
            bf16: self.bf16(),
        })
    }

    /// The convolution of `x` laid out as `layout` (what [`ConvKernels::layout_for`] chose), in the
    /// same layout.
    pub fn forward_in(&self, x: &Tensor, layout: ActLayout) -> Result<Tensor> {
        match layout {
            ActLayout::ChannelsFirst => {
                self.precision.apply(x, &self.weight, |x, w| x.conv2d(w, self.padding, self.stride, 1, 1))
            }
            ActLayout::ChannelsLast => {
                if self.precision != crate::Precision::F32 && !self.bf16() {
                    candle_core::bail!("conv2d: channels-last bf16 needs a CPU with AVX512-BF16");
                }
                if !(x.device().is_cpu() && x.dtype() == DType::F32) {
                    candle_core::bail!("conv2d: channels-last activations need the CPU and f32");
                }
                let (_, h, w, c) = x.dims4()?;
                let (co, ci, k, k2) = self.weight.dims4()?;
                if ci != c || k != k2 {
                    candle_core::bail!("conv2d: input has {c} channels, the weight is {:?}", self.weight.dims());
                }
                let g = Geometry {
                    channels: c,
                    height: h,
                    width: w,
                    kernel: k,
                    stride: self.stride,
                    padding: self.padding,
                    out_channels: co,
                    bf16: self.bf16(),
                };
                x.contiguous()?.apply_op2(&self.weight.contiguous()?, ConvForward(g))
            }
        }
    }
}

impl Module for Conv2d {
    /// `(N, C, H, W)` in and out, whichever kernels run.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let layout = self.layout_for(x);
        layout.to_nchw(&self.forward_in(&layout.from_nchw(x)?, layout)?)
    }
}
