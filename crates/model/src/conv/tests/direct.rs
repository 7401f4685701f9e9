//! The direct kernels against the im2col path, and where `conv` takes them.

use rand::{Rng, SeedableRng};

use crate::conv::shared::{avx512, flipped, taps_to_direct, weight_to_taps, Geometry, RowAffine};
use crate::conv::{conv_input_grad, conv_input_grad_add, direct, direct_or_tap_major_forward, im2col};

/// The direct families' forward as `conv` calls it where Winograd does not take the shape:
/// tap-major where it takes it, else the one-row tiles.
fn forward_into(
    g: &Geometry,
    x: &[f32],
    input: Option<&RowAffine>,
    weights: &[f32],
    y: &mut [std::mem::MaybeUninit<f32>],
) {
    let kernel = direct_or_tap_major_forward(g).expect("direct convolution called where it does not apply");
    kernel(g, x, input, weights, y, &|_| ());
}

/// Whether the input gradient has a direct or tap-major kernel (Winograd aside): the 3×3
/// stride-1 convolution through the flipped kernel's forward, the 3×3 and 1×1 stride-2 ones
/// through the direct kernels.
fn direct_or_tap_major_input_grad(g: &Geometry) -> bool {
    match (g.kernel, g.stride, g.padding) {
        (3, 1, 1) => direct_or_tap_major_forward::<()>(&flipped(g)).is_some(),
        (3, 2, 1) | (1, 2, 0) => direct::handles_strided_input_grad(g),
        _ => false,
    }
}

/// [`forward_into`] writes every output (into NaN slots: callers hand it uninitialised
/// memory, relying on it writing every element) and equals the im2col path.
pub(super) fn assert_forward_equals_im2col(g: &Geometry, x: &[f32], taps: &[f32], case: &str) {
    let reference = im2col::forward(g, x, taps);
    let mut slots = vec![std::mem::MaybeUninit::new(f32::NAN); reference.len()];
    forward_into(g, x, None, &taps_to_direct(taps, g), &mut slots);
    // SAFETY: every slot was initialised before the kernel wrote into it.
    let direct: Vec<f32> = slots.iter().map(|v| unsafe { v.assume_init() }).collect();
    assert!(direct.iter().all(|v| v.is_finite()), "forward {case}: an output left unwritten");
    let e = max_rel(&direct, &reference);
    assert!(e < 1e-5, "forward {case}: {e}");
}

pub(super) fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The forward and both gradients equal the im2col path on random inputs, for every kernel
/// and stride the direct kernels take, 16-, 32- and 64-wide channel blocks, odd channel counts and
/// sizes, row widths that leave every tile size, and planes small enough that the weight
/// gradient takes several images at once (with a shorter last group).
#[test]
fn direct_forward_and_gradients_equal_im2col() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for &(n, c, h, w, co, k, s) in &[
        (2, 16, 32, 32, 16, 3, 1),
        (3, 5, 7, 13, 32, 3, 1),
        (2, 32, 4, 4, 32, 3, 1),
        (1, 3, 9, 31, 16, 3, 1),
        (2, 3, 8, 8, 32, 3, 1),
        (2, 2, 5, 6, 16, 3, 1),
        (5, 3, 3, 5, 16, 3, 1),
        (5, 32, 4, 4, 32, 3, 1),
        (1, 3, 5, 11, 64, 3, 1),
        (2, 32, 5, 27, 32, 3, 1),
        (1, 16, 3, 13, 32, 3, 1),
        (2, 64, 6, 7, 64, 3, 1),
        (1, 128, 4, 5, 128, 3, 1),
        (1, 96, 5, 8, 112, 3, 1),
        (2, 16, 32, 32, 32, 3, 2),
        (3, 16, 9, 7, 32, 3, 2),
        (2, 16, 1, 5, 16, 3, 2),
        (2, 32, 7, 13, 64, 3, 2),
        (3, 5, 9, 30, 48, 3, 2),
        (2, 64, 7, 9, 128, 3, 2),
        (2, 16, 32, 32, 32, 1, 2),
        (2, 64, 8, 8, 128, 1, 2),
        (3, 32, 7, 29, 64, 1, 2),
        (2, 48, 6, 5, 16, 1, 2),
        (2, 16, 6, 10, 80, 1, 2),
        (2, 128, 6, 6, 256, 1, 2),
    ] {
        let g = Geometry {
            channels: c,
            height: h,
            width: w,
            kernel: k,
            stride: s,
            padding: k / 2,
            out_channels: co,
            bf16: false,
        };
        let case = format!("n{n} c{c} {h}×{w} co{co} k{k} s{s}");
        if !avx512() {
            eprintln!("no AVX-512 on this CPU: the direct convolution is not used here");
            return;
        }
        assert!(direct::handles_forward(&g), "{case}: the direct kernel should take it");
        let x: Vec<f32> = (0..n * h * w * c).map(|_| rng.random_range(-1.0..1.0)).collect();
        let dy: Vec<f32> = (0..n * g.positions() * co).map(|_| rng.random_range(-1.0..1.0)).collect();
        let wt: Vec<f32> = (0..co * c * k * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let taps = weight_to_taps(&wt, &g);
        assert_forward_equals_im2col(&g, &x, &taps, &case);
        // The input gradient, onto zeros and onto what is there.
        let start: Vec<f32> = (0..x.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut dx_ref = start.clone();
        im2col::input_grad_into(&g, &dy, &taps, &mut dx_ref, true);
        let mut dx = start.clone();
        conv_input_grad_add(&g, &dy, &taps, &mut dx);
        let e = max_rel(&dx, &dx_ref);
        assert!(e < 1e-5, "input gradient added {case}: {e}");
        let mut dx_ref = vec![0f32; x.len()];
        im2col::input_grad_into(&g, &dy, &taps, &mut dx_ref, false);
        let e = max_rel(&conv_input_grad(&g, &dy, &taps), &dx_ref);
        assert!(e < 1e-5, "input gradient {case}: {e}");
        let dw_ref = im2col::weight_grad_taps(&g, &x, &dy);
        let dw = direct::weight_grad_taps(&g, &x, None, &dy);
        let e = max_rel(&dw, &dw_ref);
        assert!(e < 1e-5, "weight gradient {case}: {e}");
    }
}

/// A 3×3 stride-2 convolution and its 1×1 stride-2 shortcut run as one pass per image equal
/// the two run apart, in every pass, at odd sizes; the input gradients summed.
#[test]
fn shortcut_pair_equals_the_two_convolutions_apart() {
    if !avx512() {
        return;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for &(n, c, h, w, co, co_s) in &[
        (2, 16, 9, 7, 32, 32),
        (3, 32, 8, 8, 64, 64),
        (1, 64, 5, 11, 128, 128),
        (2, 16, 1, 6, 32, 48),
        (5, 16, 7, 7, 32, 32),
    ] {
        let geometry = |kernel, out_channels| Geometry {
            channels: c,
            height: h,
            width: w,
            kernel,
            stride: 2,
            padding: kernel / 2,
            out_channels,
            bf16: false,
        };
        let (g, gs) = (geometry(3, co), geometry(1, co_s));
        let case = format!("n{n} c{c} {h}×{w} co{co}+{co_s}");
        assert!(direct::handles_downsampling_pair(&g, &gs), "{case}: the pair should run together");
        let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let x = random(n * h * w * c);
        let (taps, taps_s) = (random(co * 9 * c), random(co_s * c));
        let (dy, dys) = (random(n * g.positions() * co), random(n * gs.positions() * co_s));
        let (y, ys) = crate::conv::conv_forward_with_shortcut(&g, &x, &taps, &gs, &taps_s);
        assert_eq!(y, crate::conv::conv_forward(&g, &x, &taps), "forward {case}");
        assert_eq!(ys, crate::conv::conv_forward(&gs, &x, &taps_s), "shortcut forward {case}");
        let dx = crate::conv::conv_input_grad_with_shortcut((&g, &dy, &taps), (&gs, &dys, &taps_s));
        let mut dx_apart = conv_input_grad(&g, &dy, &taps);
        conv_input_grad_add(&gs, &dys, &taps_s, &mut dx_apart);
        assert_eq!(dx, dx_apart, "input gradient {case}");
        let (dw, dws) = crate::conv::conv_weight_grad_taps_with_shortcut((&g, &dy), (&gs, &dys), &x);
        // Summed over images in the thread pool's order: equal up to rounding.
        let e = max_rel(&dw, &direct::weight_grad_taps(&g, &x, None, &dy));
        assert!(e < 1e-6, "weight gradient {case}: {e}");
        let e = max_rel(&dws, &im2col::weight_grad_taps(&gs, &x, &dys));
        assert!(e < 1e-5, "shortcut weight gradient {case}: {e}");
    }
    let g = |kernel, stride, channels| Geometry {
        channels,
        height: 8,
        width: 8,
        kernel,
        stride,
        padding: kernel / 2,
        out_channels: 32,
        bf16: false,
    };
    assert!(!direct::handles_downsampling_pair(&g(3, 2, 24), &g(1, 2, 24)), "no direct input gradient for 24 channels");
    assert!(
        !direct::handles_downsampling_pair(&g(3, 1, 16), &g(1, 2, 16)),
        "a stride-1 convolution has no shortcut to share"
    );
    assert!(!direct::handles_downsampling_pair(&g(3, 2, 16), &g(1, 2, 32)), "different inputs");
}

/// Which input gradients take a direct kernel: those whose input has a multiple of 16
/// channels (never the stem's), up to 128 channels, and the tap-major ones on small planes.
#[test]
fn input_gradient_kernels_apply_where_intended() {
    if !avx512() {
        return;
    }
    let g = |c, co, k, s| Geometry {
        channels: c,
        height: 8,
        width: 8,
        kernel: k,
        stride: s,
        padding: k / 2,
        out_channels: co,
        bf16: false,
    };
    assert!(direct_or_tap_major_input_grad(&g(16, 32, 1, 2)));
    assert!(direct_or_tap_major_input_grad(&g(32, 32, 3, 1)));
    assert!(!direct_or_tap_major_input_grad(&g(3, 16, 3, 1)));
    assert!(direct_or_tap_major_input_grad(&g(16, 32, 3, 2)));
    assert!(!direct_or_tap_major_input_grad(&g(24, 32, 3, 2)));
    assert!(!direct_or_tap_major_input_grad(&g(24, 32, 1, 2)));
    assert!(direct_or_tap_major_input_grad(&g(128, 128, 3, 1)));
    assert!(direct_or_tap_major_input_grad(&g(64, 128, 3, 2)));
    assert!(!direct_or_tap_major_input_grad(&g(128, 256, 3, 2)));
    assert!(direct_or_tap_major_input_grad(&g(256, 256, 3, 1)), "tap-major on 8×8 planes");
    assert!(!direct_or_tap_major_input_grad(&Geometry { height: 16, width: 16, ..g(256, 256, 3, 1) }));
    assert!(!direct_or_tap_major_input_grad(&g(256, 96, 3, 1)), "the flipped convolution has 96 outputs");
}
