//! What every convolution kernel family shares: the [`Geometry`] of a convolution, per-thread
//! buffers, run-time detection of AVX-512, the weight layouts the kernels read ([`taps`]), the
//! zero-bordered copies of images that the padded direct and tap-major kernels read, the
//! BatchNorm + ReLU map a kernel may apply to its input as it reads it ([`RowAffine`]), and the
//! products with bf16 operands ([`bf16`]), the
//! one function type of a forward kernel ([`ForwardKernel`]) and of a weight-gradient kernel
//! ([`WeightGradKernel`]) through which `conv` calls them.
//!
//! A leaf: it imports nothing of `conv` but its own children (and `crate::cpu`), so that the
//! kernel families depend on it and never on each other or on the dispatch in `conv`.

use std::mem::MaybeUninit;

pub(crate) mod bf16;
mod row_affine;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd;
mod taps;

pub(crate) use row_affine::{normalised, RowAffine};
pub(crate) use taps::{
    direct_to_taps, flipped, taps_to_direct, taps_to_direct_input_grad, taps_to_weight, weight_to_taps,
};

/// 16-lane vectors of one register tile of a product with `co` columns: 4 (64 columns) where
/// they divide `co`, else 2, else 1.
pub(crate) fn product_vectors(co: usize) -> usize {
    if co.is_multiple_of(64) {
        4
    } else if co.is_multiple_of(32) {
        2
    } else {
        1
    }
}

/// Geometry of one convolution: input planes, square kernel, stride, padding, output channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) channels: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
    pub(crate) out_channels: usize,
    /// Products with bf16 operands and f32 sums where a kernel has them (`train.precision =
    /// "bf16"` on a CPU with AVX512-BF16: [`bf16_products`]); f32 elsewhere.
    pub(crate) bf16: bool,
}

impl Geometry {
    pub(crate) fn out_h(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    pub(crate) fn out_w(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Columns of the im2col matrix (and of `W'`): k·k·C, pixel-major.
    pub(crate) fn rows(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// Output positions of one image.
    pub(crate) fn positions(&self) -> usize {
        self.out_h() * self.out_w()
    }

    pub(crate) fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// A kernel family's forward convolution, the one interface through which `conv` runs the
/// Winograd, tap-major and direct kernels: `y = conv(x)` for channels-last `x` `(n, H, W, C_in)`
/// and weights `(k, k, C_in, C_out)` ([`taps_to_direct`]), written into `y` `(n, out_h, out_w,
/// C_out)`, every element of it; with `input` the images are `relu(x · scale + shift)` of those
/// `x` (a BatchNorm + ReLU applied as the kernel reads them); then `then` on each image's output
/// while it is in cache: what it returns, image by image. Each family's `handles_forward` says
/// where its kernel may be called.
pub(crate) type ForwardKernel<T> =
    fn(&Geometry, &[f32], Option<&RowAffine>, &[f32], &mut [MaybeUninit<f32>], &(dyn Fn(&[f32]) -> T + Sync)) -> Vec<T>;

/// A kernel family's weight gradient as taps `(C_out, k, k, C_in)` from the input `x` and the
/// output gradient `dy`, summed over the images; with `input` the images are `relu(x · scale +
/// shift)` of those `x`, as in [`ForwardKernel`]. Each family's `handles_weight_grad` says where
/// its kernel may be called.
pub(crate) type WeightGradKernel = fn(&Geometry, &[f32], Option<&RowAffine>, &[f32]) -> Vec<f32>;

/// Whether the CPU multiplies bf16 pairs into f32 sums (AVX512-BF16's `vdpbf16ps`: Zen 4,
/// Sapphire Rapids), which `train.precision = "bf16"` on the CPU needs.
pub fn bf16_products() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512() && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX-512F, which every kernel but im2col needs.
pub(crate) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

thread_local! {
    /// Each thread's scratch buffer (the im2col matrix, Winograd's transformed tiles), kept
    /// between calls: rebuilding a fresh zeroed buffer per task cost a memset of the whole
    /// matrix every time (perf: ~8 % of a width-0.25 step).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Each thread's zero-bordered image (or output gradient), kept between calls.
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer of at least `len` floats (contents unspecified: `f`
/// overwrites what it reads). A re-entrant call gets a fresh buffer instead of panicking.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Runs `f` on `len` floats of this thread's buffer (kept between calls; a re-entrant call gets
/// a fresh one) after `fill` has written every one of them.
pub(crate) fn with_buffer<R>(len: usize, fill: impl FnOnce(&mut [f32]), f: impl FnOnce(&[f32]) -> R) -> R {
    PADDED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            fill(&mut buf[..len]);
            f(&buf[..len])
        }
        Err(_) => {
            let mut buf = vec![0.0; len];
            fill(&mut buf);
            f(&buf)
        }
    })
}

/// Runs `f` on image `x` `(h, w, c)` as the kernel reads it, with the length of one of its
/// rows: the image itself where `g` has no padding, else copied into the middle of this
/// thread's zero-bordered `(h + 2, w + 2, c)` buffer, kept between calls (a re-entrant call
/// gets a fresh one).
/// With `input`, the copy is `relu(x · scale + shift)`.
pub(crate) fn with_input<R>(
    g: &Geometry,
    x: &[f32],
    input: Option<&RowAffine>,
    f: impl FnOnce(&[f32], usize) -> R,
) -> R {
    with_inputs(g, x, input, |planes, x_row, _| f(planes, x_row))
}

/// [`with_input`] for the images `x` (whole ones), one after another: `f` gets them, the length
/// of a row and of an image.
pub(crate) fn with_inputs<R>(
    g: &Geometry,
    x: &[f32],
    input: Option<&RowAffine>,
    f: impl FnOnce(&[f32], usize, usize) -> R,
) -> R {
    let (h, w, c) = (g.height, g.width, g.channels);
    if g.padding == 0 {
        assert!(input.is_none(), "direct convolution: an input transform needs a bordered copy");
        return f(x, w * c, g.image_len());
    }
    assert_eq!(g.padding, 1, "direct convolution: padding 0 or 1");
    let plane = (h + 2) * (w + 2) * c;
    let len = x.len() / g.image_len() * plane;
    let fill = |buf: &mut [f32]| {
        for (xi, padded) in x.chunks_exact(g.image_len()).zip(buf.chunks_exact_mut(plane)) {
            pad(xi, padded, (h, w, c), input);
        }
    };
    with_buffer(len, fill, |buf| f(buf, (w + 2) * c, plane))
}

/// One image `(h, w, c)` (or `relu(x · scale + shift)` of it) into the middle of
/// `(h + 2, w + 2, c)`, the border zero.
fn pad(x: &[f32], padded: &mut [f32], (h, w, c): (usize, usize, usize), input: Option<&RowAffine>) {
    let row = (w + 2) * c;
    padded[..row].fill(0.0);
    padded[(h + 1) * row..].fill(0.0);
    for (src, dst) in x.chunks_exact(w * c).zip(padded[row..(h + 1) * row].chunks_exact_mut(row)) {
        dst[..c].fill(0.0);
        match input {
            None => dst[c..(w + 1) * c].copy_from_slice(src),
            Some(bn) => bn.apply_relu_pixels(src, &mut dst[c..(w + 1) * c]),
        }
        dst[(w + 1) * c..].fill(0.0);
    }
}
