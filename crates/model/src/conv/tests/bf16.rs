//! The downsampling convolutions in bf16: on the im2col GEMMs with bf16 products, each pass
//! within bf16's rounding of the f32 kernels, alone and as a block's pair.

use rand::{Rng, SeedableRng};

use super::direct::max_rel;
use crate::conv::shared::{bf16_products, weight_to_taps, Geometry};
use crate::conv::{
    conv_forward, conv_forward_with_shortcut, conv_input_grad, conv_input_grad_with_shortcut, conv_weight_grad_taps,
    conv_weight_grad_taps_with_shortcut, im2col,
};

/// Every pass of the stride-2 3×3 convolutions and their 1×1 shortcuts (alone and as a pair)
/// against f32: close, and rounded.
#[test]
fn im2col_bf16_products_follow_f32_within_bf16_rounding() {
    if !bf16_products() {
        eprintln!("no AVX512-BF16 on this CPU: bf16 products are not used here");
        return;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut random = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let geometry = |(c, side, k, stride, co): (usize, usize, usize, usize, usize)| Geometry {
        channels: c,
        height: side,
        width: side,
        kernel: k,
        stride,
        padding: k / 2,
        out_channels: co,
        bf16: false,
    };
    let n = 3;
    for (conv, shortcut) in [((32, 16, 3, 2, 64), (32, 16, 1, 2, 64)), ((64, 8, 3, 2, 128), (64, 8, 1, 2, 128))] {
        let (g, gs) = (geometry(conv), geometry(shortcut));
        let (g16, gs16) = (Geometry { bf16: true, ..g }, Geometry { bf16: true, ..gs });
        assert!(im2col::takes_bf16(&g16) && im2col::takes_bf16(&gs16) && !im2col::takes_bf16(&g), "{conv:?}");
        let x = random(n * g.image_len());
        let (w, ws) = (random(g.out_channels * g.rows()), random(gs.out_channels * gs.rows()));
        let (taps, taps_s) = (weight_to_taps(&w, &g), weight_to_taps(&ws, &gs));
        let (dy, dys) = (random(n * g.positions() * g.out_channels), random(n * gs.positions() * gs.out_channels));
        let case = format!("{conv:?}");
        // Two operands rounded to 8 significant bits, summed over up to 9·C products.
        let close = |a: &[f32], b: &[f32], what: &str| {
            let e = max_rel(a, b);
            assert!(e > 0.0 && e < 2e-2, "{what} {case}: {e}");
        };
        close(&conv_forward(&g16, &x, &taps), &conv_forward(&g, &x, &taps), "forward");
        close(&conv_forward(&gs16, &x, &taps_s), &conv_forward(&gs, &x, &taps_s), "shortcut forward");
        close(&conv_input_grad(&g16, &dy, &taps), &conv_input_grad(&g, &dy, &taps), "input gradient");
        close(&conv_input_grad(&gs16, &dys, &taps_s), &conv_input_grad(&gs, &dys, &taps_s), "shortcut input gradient");
        close(&conv_weight_grad_taps(&g16, &x, &dy), &conv_weight_grad_taps(&g, &x, &dy), "weight gradient");
        let (y16, ys16) = conv_forward_with_shortcut(&g16, &x, &taps, &gs16, &taps_s);
        let (y, ys) = conv_forward_with_shortcut(&g, &x, &taps, &gs, &taps_s);
        close(&y16, &y, "pair forward");
        close(&ys16, &ys, "pair shortcut forward");
        let dx16 = conv_input_grad_with_shortcut((&g16, &dy, &taps), (&gs16, &dys, &taps_s));
        close(&dx16, &conv_input_grad_with_shortcut((&g, &dy, &taps), (&gs, &dys, &taps_s)), "pair input gradient");
        let (dw16, dws16) = conv_weight_grad_taps_with_shortcut((&g16, &dy), (&gs16, &dys), &x);
        let (dw, dws) = conv_weight_grad_taps_with_shortcut((&g, &dy), (&gs, &dys), &x);
        close(&dw16, &dw, "pair weight gradient");
        close(&dws16, &dws, "pair shortcut weight gradient");
    }
    // At 16 channels, and off stride 2, the f32 kernels stay.
    for shape in [(16, 16, 3, 2, 32), (16, 7, 3, 1, 32), (128, 4, 3, 1, 128)] {
        assert!(!im2col::takes_bf16(&Geometry { bf16: true, ..geometry(shape) }), "{shape:?}");
    }
}
