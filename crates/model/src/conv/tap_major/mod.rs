//! The 3×3 convolutions of 128 channels and more on planes of at most 8×8 outputs, tap-major
//! over several images at once, with AVX-512: the forward (with it the stride-1 input gradient,
//! the forward of the flipped kernel) and, up to 256 channels, the weight gradient. Each output
//! position has its own window pointer ([`TapJob`], an indirect convolution), so that a tile of
//! 6 positions runs on across rows and images and one tap's weights for 64 output channels are
//! reused from L2 by every tile; [`suits_shape`] says why the one-row tiles of `direct` lose on
//! these planes. The numbers equal im2col's up to the order of the sums (tests).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::cpu::{add_into, ordered_zip_fold};

use crate::conv::shared::{avx512, direct_to_taps, with_inputs, Geometry, RowAffine};

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Output positions per task of the tap-major forward (8 images of 4×4, 2 of 8×8): their
/// bordered copies (8 × 37 KB at 256 channels on 4×4), outputs and one tap's weights for 64
/// output channels (64 KB) stay in L2 together. Forward GFLOP/s, medians of 30 alternated calls:
/// 256 channels on 4×4, 8 images per task against 4, 217-219 against 208-217; on 8×8, 2 images
/// against 8, 219 against 212.
const FORWARD_POSITIONS: usize = 128;

/// Whether tap-major wins on this shape ([`TapJob`]): 3×3 kernels (stride 1 or 2) on planes
/// of at most 8×8 outputs from at least 128 channels, where the one-row tiles lose twice: a row
/// of 4 or 8 pixels leaves them short tiles, and each tile streams every weight of its output
/// channels (2.4 MB at 256 channels) through the caches again. One forward on two cores, batch
/// 128, GFLOP/s median of 30 alternated calls (im2col → one-row tiles → tap-major): 128→128 on
/// 4×4 175 → 175 → 207, on 8×8 195 → 189 → 216; 256→256 on 4×4 185 → (not taken) → 219, on 8×8
/// 189 → – → 219; 512→512 on 4×4 169 → – → 188; 3×3 stride 2 128→256 to 4×4 184 → – → 211, to 8×8
/// 171 → – → 194; 256→512 to 4×4 176 → – → 185. Not taken, no better than the one-row tiles:
/// 64 channels (on 4×4 204 → 196, 8×8 207 → 206) and planes of 16×16 and more (128→128 198 → 209
/// within the noise, 64→64 216 → 214).
pub(crate) fn suits_shape(g: &Geometry) -> bool {
    (g.kernel, g.padding) == (3, 1)
        && g.stride <= 2
        && g.positions() <= 64
        && g.channels >= 128
        && g.out_channels.is_multiple_of(64)
}

/// Whether [`forward_into_then`] computes this convolution on this CPU: the shapes tap-major wins
/// on ([`suits_shape`]), where the CPU has AVX-512F.
pub(crate) fn handles_forward(g: &Geometry) -> bool {
    suits_shape(g) && avx512()
}

/// A [`ForwardKernel`](crate::conv::shared::ForwardKernel): chunks of images, each chunk's
/// outputs one tap at a time ([`TapJob`]). Only where [`handles_forward`].
pub(crate) fn forward_into_then<T: Send>(
    g: &Geometry,
    x: &[f32],
    input: Option<&RowAffine>,
    weights: &[f32],
    y: &mut [MaybeUninit<f32>],
    then: &(dyn Fn(&[f32]) -> T + Sync),
) -> Vec<T> {
    assert!(handles_forward(g), "tap-major convolution called where it does not apply");
    let co = g.out_channels;
    let out_len = g.positions() * co;
    assert_eq!(y.len(), x.len() / g.image_len() * out_len, "tap-major convolution: output size");
    assert_eq!(weights.len(), g.rows() * co, "tap-major convolution: weight size");
    let chunk = FORWARD_POSITIONS.div_ceil(g.positions()).min((x.len() / g.image_len()).max(1));
    let per_chunk: Vec<Vec<T>> = y
        .par_chunks_mut(chunk * out_len)
        .zip(x.par_chunks(chunk * g.image_len()))
        .map(|(yc, xc)| {
            with_inputs(g, xc, input, |planes, x_row, plane| forward_job(g, planes, (x_row, plane), weights, yc).run());
            // SAFETY: the job wrote every element of the chunk's outputs.
            let yc = unsafe { std::slice::from_raw_parts(yc.as_ptr().cast::<f32>(), yc.len()) };
            yc.chunks_exact(out_len).map(then).collect()
        })
        .collect();
    per_chunk.into_iter().flatten().collect()
}

/// A chunk's tap-major forward: `planes` as [`with_inputs`] hands them (rows of `x_row` floats,
/// images of `plane` floats), `y` the chunk's outputs.
fn forward_job<'a>(
    g: &Geometry,
    planes: &'a [f32],
    (x_row, plane): (usize, usize),
    weights: &'a [f32],
    y: &mut [MaybeUninit<f32>],
) -> TapJob<'a> {
    let images = y.len() / (g.positions() * g.out_channels);
    let (corners, c) = (window_corners(g, images, (x_row, plane)), g.channels);
    TapJob {
        planes,
        corners,
        x_row,
        c,
        kernel: g.kernel,
        weights,
        co: g.out_channels,
        y: y.as_mut_ptr().cast(),
        y_len: y.len(),
    }
}

/// Where each output position's window starts in `images` bordered planes (rows of `x_row`
/// floats, planes of `plane`), position by position, image after image.
fn window_corners(g: &Geometry, images: usize, (x_row, plane): (usize, usize)) -> Vec<usize> {
    let (c, s, oh, ow) = (g.channels, g.stride, g.out_h(), g.out_w());
    (0..images)
        .flat_map(|i| (0..oh).flat_map(move |oy| (0..ow).map(move |ox| i * plane + oy * s * x_row + ox * s * c)))
        .collect()
}

/// Several images' convolution one tap at a time (an indirect convolution: each output
/// position its own window pointer, so a tile runs on across rows and images): position `p`,
/// of every image in order, reads the window whose corner is `planes[corners[p]]` and writes
/// its `co` channels at `y + p·co`. Each (tap, 64 output channels) is a `C_in × 64` block of
/// weights that every tile of 6 positions reuses from L2; the outputs take the taps' sums in turn.
struct TapJob<'a> {
    planes: &'a [f32],
    corners: Vec<usize>,
    x_row: usize,
    c: usize,
    kernel: usize,
    /// `(kernel, kernel, c, co)`.
    weights: &'a [f32],
    co: usize,
    y: *mut f32,
    y_len: usize,
}

impl TapJob<'_> {
    /// Checks that every read and write stays inside the buffers, then runs the kernel.
    fn run(&self) {
        let (k, c, co) = (self.kernel, self.c, self.co);
        assert!(co.is_multiple_of(64) && c > 0 && k > 0);
        let window = (k - 1) * self.x_row + k * c;
        let inside = self.corners.iter().all(|&at| at + window <= self.planes.len());
        assert!(inside, "tap-major convolution: a window outside the input");
        assert!(self.weights.len() >= k * k * c * co, "tap-major convolution: weight size");
        assert!(self.y_len >= self.corners.len() * co, "tap-major convolution: output size");
        assert!(avx512(), "direct convolution without AVX-512");
        // SAFETY: the asserts above bound every offset the kernel forms; the CPU has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::forward(self)
        }
    }
}

/// Whether [`weight_grad_taps`] computes this convolution's weight gradient on this CPU: the
/// tap-major shapes ([`suits_shape`]) up to 256 channels in and out. Batch 128, two cores,
/// GFLOP/s median of 12 alternated calls (im2col or one-row direct → this): 256→256 on 4×4 126-143 → 138-162, on
/// 8×8 162 → 184; 128→128 on 4×4 148 (direct) → 164, on 8×8 179 (direct) → 187; stride 2
/// 128→256 to 4×4 140 → 152, to 8×8 152 → 173. Not taken, slower: 256→512 to 4×4 161 → 155,
/// 512→512 on 4×4 152 → 121 (its sums, 9.4 MB, stream through memory once per chunk).
pub(crate) fn handles_weight_grad(g: &Geometry) -> bool {
    suits_shape(g) && g.channels <= 256 && g.out_channels <= 256 && avx512()
}

/// Output positions per task of the tap-major weight gradient: each task adds into every sum
/// once, so more than the forward's (256→256 on 4×4, 128 → 512 positions: 115 → 138 GFLOP/s;
/// 1024 no better).
const WEIGHT_GRAD_POSITIONS: usize = 512;

/// A [`WeightGradKernel`](crate::conv::shared::WeightGradKernel): the weight gradient of a
/// tap-major convolution as taps `(C_out, k, k, C_in)`, chunk by chunk of images: the chunk's
/// output gradient packed into panels of 64 output channels (each position's 64 floats
/// contiguous, not 1 KB apart, where every fourth position fell into the same L1 sets), then for
/// every (64 output channels, tap, 6 input channels) 24 sums over all the chunk's positions,
/// each position's window found through its corner as in [`TapJob`]. With `input` the images
/// are `relu(x · scale + shift)` of those `x`, as in [`forward_into_then`]. Only where
/// [`handles_weight_grad`].
pub(crate) fn weight_grad_taps(g: &Geometry, x: &[f32], input: Option<&RowAffine>, dy: &[f32]) -> Vec<f32> {
    assert!(handles_weight_grad(g), "tap-major weight gradient where it does not apply");
    let (co, out_len) = (g.out_channels, g.positions() * g.out_channels);
    let n = x.len() / g.image_len();
    assert_eq!(dy.len(), n * out_len, "tap-major weight gradient: sizes");
    let chunk = WEIGHT_GRAD_POSITIONS.div_ceil(g.positions()).min(n.max(1));
    let zero = || vec![0f32; g.rows() * co];
    let per_tap = ordered_zip_fold(
        (x, chunk * g.image_len()),
        (dy, chunk * out_len),
        zero,
        |mut acc, _, xc, dyc| {
            let m = dyc.len() / co;
            let mut panels = vec![0f32; m * co];
            for (p, row) in dyc.chunks_exact(co).enumerate() {
                for (ob, part) in row.chunks_exact(64).enumerate() {
                    panels[(ob * m + p) * 64..][..64].copy_from_slice(part);
                }
            }
            with_inputs(g, xc, input, |planes, x_row, plane| {
                let c = g.channels;
                let corners = window_corners(g, m / g.positions(), (x_row, plane));
                let window = (g.kernel - 1) * x_row + g.kernel * c;
                let inside = corners.iter().all(|&at| at + window <= planes.len());
                assert!(inside, "tap-major weight gradient: a window outside the input");
                assert!(acc.len() == g.rows() * co && panels.len() == m * co && co.is_multiple_of(64));
                // SAFETY: every window inside `planes` (checked), the panels and sums sized as
                // the kernel reads them; the CPU has AVX-512F (`handles_weight_grad`).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    avx512::weight_grad(planes, &corners, (x_row, c, g.kernel), &panels, co, &mut acc)
                };
            });
            acc
        },
        add_into,
    );
    direct_to_taps(&per_tap, g)
}
