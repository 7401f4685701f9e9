//! The Winograd kernels against the im2col path, and the shapes they take.

use std::mem::MaybeUninit;

use rand::{Rng, SeedableRng};

use crate::conv::shared::{avx512, flipped, taps_to_direct, weight_to_taps, Geometry, RowAffine};
use crate::conv::{
    conv_forward_with_statistics, conv_input_grad, conv_weight_grad_taps_bn_relu, forward_kernel, im2col,
    input_grad_kernel, winograd,
};

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn geometry((c, h, w, co): (usize, usize, usize, usize)) -> Geometry {
    Geometry { channels: c, height: h, width: w, kernel: 3, stride: 1, padding: 1, out_channels: co, bf16: false }
}

/// Forward (from the images and from `relu(BN(x))` of them, with the statistics after it) and
/// the stride-1 input gradient through the flipped kernel equal im2col on random inputs, into
/// NaN-filled outputs (every element written): planes of one tile and of many, groups
/// that end inside an image and images that share a task, a last task of fewer images, and the
/// widths the network uses.
#[test]
fn winograd_equals_im2col() {
    if !avx512() {
        assert!(!winograd::handles_forward(&geometry((64, 8, 8, 64))), "no AVX-512: never");
        eprintln!("no AVX-512 on this CPU: Winograd is not used here");
        return;
    }
    assert!(!winograd::handles_forward(&geometry((8, 8, 8, 64))), "input channels off 16: direct");
    assert!(!winograd::handles_forward(&geometry((64, 7, 8, 64))), "odd planes: direct");
    assert!(!winograd::handles_forward(&geometry((64, 8, 8, 96))), "output channels beyond 64 off 64: direct");
    assert!(!winograd::handles_forward(&geometry((64, 8, 8, 24))), "output channels off 16: direct");
    assert!(!winograd::handles_forward(&geometry((1024, 4, 4, 64))), "beyond 512 channels: direct");
    assert!(!winograd::handles_forward(&Geometry { stride: 2, ..geometry((64, 8, 8, 64)) }), "stride 2: direct");
    assert!(!winograd::handles_forward(&Geometry { kernel: 1, padding: 0, ..geometry((64, 8, 8, 64)) }), "1×1: direct");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for &(n, shape) in &[
        (3, (64, 2, 2, 64)),
        (2, (64, 16, 16, 64)),
        (5, (128, 8, 8, 128)),
        (3, (64, 32, 32, 128)),
        (7, (256, 4, 4, 256)),
        (2, (80, 6, 10, 192)),
        (9, (128, 4, 4, 64)),
        (3, (16, 32, 32, 16)),
        (2, (32, 16, 16, 32)),
        (2, (48, 4, 6, 32)),
        (3, (32, 6, 4, 48)),
        (2, (512, 4, 4, 512)),
        // No direct kernel for 256 channels on 12×12 (a 96-pixel image's third stage).
        (2, (256, 12, 12, 256)),
        // A 16-channel output after 512 (the input gradient of 16 → 512): groups shorter
        // than the products' 24-row tile.
        (2, (16, 4, 4, 512)),
        (2, (512, 4, 4, 16)),
    ] {
        let g = geometry(shape);
        let case = format!("n{n} {shape:?}");
        assert!(winograd::handles_forward(&g), "{case}: Winograd should take it");
        // `conv` dispatches to it whether or not a direct kernel exists for the shape.
        assert!(forward_kernel::<()>(&g).is_some(), "{case}: conv should hand it to Winograd");
        let (c, co) = (g.channels, g.out_channels);
        let x: Vec<f32> = (0..n * g.image_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let wt: Vec<f32> = (0..co * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
        let taps = weight_to_taps(&wt, &g);
        let weights = taps_to_direct(&taps, &g);
        let reference = im2col::forward(&g, &x, &taps);
        let mut slots = vec![MaybeUninit::new(f32::NAN); reference.len()];
        let sums = winograd::forward_into_then(&g, &x, None, &weights, &mut slots, &|yi| yi.iter().sum::<f32>());
        // SAFETY: every slot was initialised before the kernel wrote into it.
        let y: Vec<f32> = slots.iter().map(|v| unsafe { v.assume_init() }).collect();
        assert!(y.iter().all(|v| v.is_finite()), "forward {case}: an output left unwritten");
        let e = max_rel(&y, &reference);
        assert!(e < 1e-5, "forward {case}: {e}");
        let image_sums: Vec<f32> = y.chunks_exact(g.positions() * co).map(|yi| yi.iter().sum()).collect();
        assert_eq!(sums, image_sums, "forward {case}: `then` on each image's output, in order");

        // From relu(BN(x)), with the statistics of the output, as conv2 of a block runs.
        let gamma: Vec<f32> = (0..c).map(|_| rng.random_range(0.5..1.5)).collect();
        let beta: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();
        let bn = RowAffine::of_batch(&x, &gamma, &beta, 1e-5);
        let reference = im2col::forward(&g, &bn.apply_new(&x, true), &taps);
        let (y, (mean, var)) = conv_forward_with_statistics(&g, &x, Some(&bn), &taps);
        let e = max_rel(&y, &reference);
        assert!(e < 1e-5, "forward from relu(BN(x)) {case}: {e}");
        let (mean_ref, var_ref) = crate::batch_norm::mean_and_variance(&reference, co);
        let scale = var_ref.iter().fold(0f64, |m, v| m.max(*v)).sqrt();
        let e = mean.iter().zip(&mean_ref).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(e < 1e-5, "means {case}: {e} of the largest standard deviation");
        let e = var.iter().zip(&var_ref).fold(0f64, |m, (a, b)| m.max((a - b).abs() / b));
        assert!(e < 1e-4, "variances {case}: {e}");

        // The input gradient: Winograd on the flipped kernel where the swapped channels apply.
        let flipped_applies = c.is_multiple_of(if c > 64 { 64 } else { 16 }) && co.is_multiple_of(16);
        assert_eq!(winograd::handles_forward(&flipped(&g)), flipped_applies, "{case}");
        assert!(!flipped_applies || input_grad_kernel::<()>(&g).is_some(), "{case}: conv should hand it to Winograd");
        let dy: Vec<f32> = (0..n * g.positions() * co).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut dx_ref = vec![0f32; x.len()];
        im2col::input_grad_into(&g, &dy, &taps, &mut dx_ref, false);
        let e = max_rel(&conv_input_grad(&g, &dy, &taps), &dx_ref);
        assert!(e < 1e-5, "input gradient {case}: {e}");

        // The weight gradient, from the images and from relu(BN(x)) made as it reads them.
        assert_eq!(winograd::handles_weight_grad(&g), c >= 32 && co >= 32, "{case}");
        if !winograd::handles_weight_grad(&g) {
            continue;
        }
        let dw_ref = im2col::weight_grad_taps(&g, &x, &dy);
        let e = max_rel(&winograd::weight_grad_taps(&g, &x, None, &dy), &dw_ref);
        assert!(e < 1e-5, "weight gradient {case}: {e}");
        let dw_ref = im2col::weight_grad_taps(&g, &bn.apply_new(&x, true), &dy);
        let e = max_rel(&conv_weight_grad_taps_bn_relu(&g, &x, &bn, &dy), &dw_ref);
        assert!(e < 1e-5, "weight gradient from relu(BN(x)) {case}: {e}");
    }
}

/// bf16 products (`vdpbf16ps`, where the CPU has AVX512-BF16): the forward, the input gradient
/// through it and the weight gradient stay within bf16's rounding of the f32 kernel, every tile shape (4, 2
/// and 1 vectors of output channels, row tails) and every output written; and they do round.
#[test]
fn winograd_bf16_products_follow_f32_within_bf16_rounding() {
    if !crate::conv::shared::bf16_products() {
        eprintln!("no AVX512-BF16 on this CPU: bf16 products are not used here");
        return;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for &(n, shape) in
        &[(3, (64, 2, 2, 64)), (2, (32, 16, 16, 32)), (3, (16, 32, 32, 16)), (2, (256, 4, 6, 128)), (2, (48, 4, 6, 32))]
    {
        let g = geometry(shape);
        let g16 = Geometry { bf16: true, ..g };
        let case = format!("n{n} {shape:?}");
        let (c, co) = (g.channels, g.out_channels);
        let x: Vec<f32> = (0..n * g.image_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let wt: Vec<f32> = (0..co * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
        let taps = weight_to_taps(&wt, &g);
        let weights = taps_to_direct(&taps, &g);
        let run = |g: &Geometry| {
            let mut slots = vec![MaybeUninit::new(f32::NAN); n * g.positions() * co];
            winograd::forward_into_then(g, &x, None, &weights, &mut slots, &|_| ());
            // SAFETY: every slot was initialised before the kernel wrote into it.
            slots.iter().map(|v| unsafe { v.assume_init() }).collect::<Vec<f32>>()
        };
        let (y, y16) = (run(&g), run(&g16));
        assert!(y16.iter().all(|v| v.is_finite()), "{case}: an output left unwritten");
        let e = max_rel(&y16, &y);
        // Two operands rounded to 8 significant bits, summed over 16·C products of either sign.
        assert!(e > 0.0 && e < 2e-2, "forward {case}: {e}");
        let dy: Vec<f32> = (0..n * g.positions() * co).map(|_| rng.random_range(-1.0..1.0)).collect();
        let e = max_rel(&conv_input_grad(&g16, &dy, &taps), &conv_input_grad(&g, &dy, &taps));
        assert!(e < 2e-2, "input gradient {case}: {e}");
        if winograd::handles_weight_grad(&g) {
            // Summed over every tile of the batch (an odd count in some groups: a zero row pairs the last).
            let e = max_rel(
                &winograd::weight_grad_taps(&g16, &x, None, &dy),
                &winograd::weight_grad_taps(&g, &x, None, &dy),
            );
            assert!(e > 0.0 && e < 2e-2, "weight gradient {case}: {e}");
        }
    }
}
