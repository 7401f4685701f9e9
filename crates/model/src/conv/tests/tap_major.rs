//! The tap-major kernels against the im2col path, and the shapes they take.

use rand::{Rng, SeedableRng};

use super::direct::{assert_forward_equals_im2col, max_rel};
use crate::conv::shared::{avx512, flipped, weight_to_taps, Geometry};
use crate::conv::{conv_input_grad, direct_or_tap_major_forward, im2col, tap_major};

/// The tap-major forward, through it the stride-1 input gradient, and the tap-major weight
/// gradient equal the im2col path on random inputs: 4×4 and 8×8 planes, odd sizes and
/// channel counts (every tile of input channels), stride 1 and 2, a last chunk of fewer
/// images and last tiles of every size below 6 positions; and each takes exactly the shapes
/// it was measured to win (not 64 channels, not 16×16 planes, not output channels off 64,
/// the weight gradient not beyond 256 channels).
#[test]
fn tap_major_forward_and_input_gradient_equal_im2col() {
    let g = |(c, h, w, co, s): (usize, usize, usize, usize, usize)| Geometry {
        channels: c,
        height: h,
        width: w,
        kernel: 3,
        stride: s,
        padding: 1,
        out_channels: co,
        bf16: false,
    };
    assert!(tap_major::suits_shape(&g((128, 4, 4, 128, 1))) && tap_major::suits_shape(&g((256, 8, 8, 64, 1))));
    assert!(tap_major::suits_shape(&g((128, 16, 16, 256, 2))) && tap_major::suits_shape(&g((512, 4, 4, 512, 1))));
    assert!(!tap_major::suits_shape(&g((64, 4, 4, 64, 1))), "64 channels: the one-row tiles");
    assert!(!tap_major::suits_shape(&g((128, 16, 16, 128, 1))), "16×16 planes: the one-row tiles");
    assert!(!tap_major::suits_shape(&g((128, 4, 4, 96, 1))), "output channels in blocks of 64");
    if avx512() {
        assert!(tap_major::handles_weight_grad(&g((256, 4, 4, 256, 1))));
        assert!(!tap_major::handles_weight_grad(&g((512, 4, 4, 512, 1))));
        assert!(!tap_major::handles_weight_grad(&g((256, 8, 8, 512, 2))));
    }
    if !avx512() {
        return;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    for &(n, shape) in &[
        (9, (128, 4, 4, 128, 1)),
        (3, (256, 4, 4, 64, 1)),
        (2, (128, 8, 8, 128, 1)),
        (5, (160, 3, 5, 64, 1)),
        (4, (128, 2, 7, 192, 1)),
        (2, (129, 4, 4, 64, 1)),
        (1, (128, 1, 1, 64, 1)),
        (1, (128, 1, 5, 64, 1)),
        (3, (128, 8, 8, 64, 2)),
        (2, (144, 7, 9, 128, 2)),
        (1, (128, 16, 16, 64, 2)),
    ] {
        let g = g(shape);
        let case = format!("n{n} {shape:?}");
        assert!(
            tap_major::suits_shape(&g) && direct_or_tap_major_forward::<()>(&g).is_some(),
            "{case}: tap-major should take it"
        );
        let (c, co) = (g.channels, g.out_channels);
        let x: Vec<f32> = (0..n * g.image_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let wt: Vec<f32> = (0..co * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
        let taps = weight_to_taps(&wt, &g);
        assert_forward_equals_im2col(&g, &x, &taps, &case);
        let dy: Vec<f32> = (0..n * g.positions() * co).map(|_| rng.random_range(-1.0..1.0)).collect();
        let e = max_rel(&tap_major::weight_grad_taps(&g, &x, None, &dy), &im2col::weight_grad_taps(&g, &x, &dy));
        assert!(e < 1e-5, "weight gradient {case}: {e}");
        if g.stride == 1 {
            // The input gradient is the flipped convolution: tap-major where C_in is.
            assert_eq!(tap_major::suits_shape(&flipped(&g)), co >= 128 && c.is_multiple_of(64), "{case}");
            let mut dx_ref = vec![0f32; x.len()];
            im2col::input_grad_into(&g, &dy, &taps, &mut dx_ref, false);
            let e = max_rel(&conv_input_grad(&g, &dy, &taps), &dx_ref);
            assert!(e < 1e-5, "input gradient {case}: {e}");
        }
    }
}
