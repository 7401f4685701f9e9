//! Tests of the kernel choice and of the kernels against each other: each family against the
//! im2col reference and, through the dispatch, against candle's convolution.

mod bf16;
mod direct;
mod tap_major;
mod winograd;

use candle_core::{Device, Var};

use super::*;
use crate::cpu::max_rel;

/// Output, input gradient and weight gradient equal candle's reference implementation.
#[test]
fn im2col_matches_candle_forward_and_gradients() {
    let dev = Device::Cpu;
    for &(n, c, h, co, k, s, p) in &[
        (3, 4, 9, 5, 3, 1, 1),
        (2, 3, 8, 6, 3, 2, 1),
        (2, 4, 8, 3, 1, 2, 0),
        (2, 4, 5, 3, 1, 1, 0),
        (2, 3, 12, 4, 7, 2, 3),
        // Several images per GEMM chunk, the last chunk shorter.
        (40, 3, 4, 5, 3, 1, 1),
        (40, 4, 8, 3, 1, 2, 0),
        (70, 6, 4, 5, 3, 2, 1),
        // A bottleneck's 1×1 convolutions at stride 1, on the planes and widths where the direct
        // and tap-major kernels take over.
        (8, 64, 4, 256, 1, 1, 0),
        (8, 256, 2, 64, 1, 1, 0),
        (8, 32, 4, 128, 1, 1, 0),
        (8, 16, 8, 64, 1, 1, 0),
    ] {
        // candle's own backward mishandles odd sizes at stride 2, so the reference only sees even ones there.
        let wd = if s == 1 { h + 1 } else { h };
        let x = Var::from_tensor(&crate::cpu::test_randn(0f32, 1.0, (n, c, h, wd), &dev).unwrap()).unwrap();
        let wt = Var::from_tensor(&crate::cpu::test_randn(0f32, 1.0, (co, c, k, k), &dev).unwrap()).unwrap();
        let upstream = {
            let probe = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 1).unwrap();
            crate::cpu::test_randn(0f32, 1.0, probe.shape(), &dev).unwrap()
        };
        let run = |imp: ConvKernels| {
            let conv = Conv2d::new(wt.as_tensor().clone(), s, p, imp);
            let y = conv.forward(x.as_tensor()).unwrap();
            let grads = (&y * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            (y, grads.get(x.as_tensor()).unwrap().clone(), grads.get(wt.as_tensor()).unwrap().clone())
        };
        let (y0, gx0, gw0) = run(ConvKernels::Candle);
        let (y1, gx1, gw1) = run(ConvKernels::Im2col);
        // The same through channels-last activations, as the encoder runs them.
        let (y2, gx2, gw2) = {
            let conv = Conv2d::new(wt.as_tensor().clone(), s, p, ConvKernels::Im2col);
            let layout = ActLayout::ChannelsLast;
            let y =
                layout.to_nchw(&conv.forward_in(&layout.from_nchw(x.as_tensor()).unwrap(), layout).unwrap()).unwrap();
            let grads = (&y * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            (y, grads.get(x.as_tensor()).unwrap().clone(), grads.get(wt.as_tensor()).unwrap().clone())
        };
        let case_last = format!("channels last n{n} c{c} h{h} co{co} k{k} s{s} p{p}");
        assert!(max_rel(&y2, &y0) < 1e-5, "output {case_last}: {}", max_rel(&y2, &y0));
        assert!(max_rel(&gx2, &gx0) < 1e-5, "input grad {case_last}: {}", max_rel(&gx2, &gx0));
        assert!(max_rel(&gw2, &gw0) < 1e-5, "weight grad {case_last}: {}", max_rel(&gw2, &gw0));
        let case = format!("n{n} c{c} h{h} co{co} k{k} s{s} p{p}");
        assert!(max_rel(&y1, &y0) < 1e-5, "output {case}: {}", max_rel(&y1, &y0));
        assert!(max_rel(&gx1, &gx0) < 1e-5, "input grad {case}: {}", max_rel(&gx1, &gx0));
        assert!(max_rel(&gw1, &gw0) < 1e-5, "weight grad {case}: {}", max_rel(&gw1, &gw0));
    }
}

/// A convolution of `relu(BN(a))` made as its bordered copy is filled equals, bit for bit,
/// the convolution of the stored activation, forward and weight gradient, and the output's
/// statistics taken image by image equal those of the whole output: on the direct kernels
/// (3×3 at stride 1 and 2, one-row tiles and tap-major over 9 images, a short last chunk)
/// and where they do not apply (24 output channels: made in full).
#[test]
fn convolving_bn_relu_of_the_input_equals_convolving_the_activation() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    for &(n, c, side, co, stride) in &[
        (3, 16, 9, 16, 1),
        (2, 32, 6, 64, 1),
        (2, 16, 7, 32, 2),
        (9, 256, 4, 256, 1),
        (3, 128, 7, 64, 2),
        (2, 32, 5, 24, 1),
    ] {
        let g = Geometry {
            channels: c,
            height: side,
            width: side,
            kernel: 3,
            stride,
            padding: 1,
            out_channels: co,
            bf16: false,
        };
        let a: Vec<f32> = (0..n * g.image_len()).map(|_| rng.random_range(-2.0..2.0)).collect();
        let gamma: Vec<f32> = (0..c).map(|_| rng.random_range(0.5..1.5)).collect();
        let beta: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();
        let bn = RowAffine::of_batch(&a, &gamma, &beta, 1e-5);
        let b = bn.apply_new(&a, true);
        assert!(b.iter().filter(|v| **v == 0.0).count() > b.len() / 5, "the ReLU should cut");
        let taps: Vec<f32> = (0..co * g.rows()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let dy: Vec<f32> = (0..n * g.positions() * co).map(|_| rng.random_range(-1.0..1.0)).collect();
        let case = format!("{c}→{co} on {side}×{side}, stride {stride}");
        let (y, (mean, var)) = conv_forward_with_statistics(&g, &a, Some(&bn), &taps);
        assert_eq!(y, conv_forward(&g, &b, &taps), "forward {case}");
        let (want_mean, want_var) = mean_and_variance(&y, co);
        // Each against its own scale: a mean near zero against the spread of the values.
        let std: Vec<f64> = want_var.iter().map(|v| v.sqrt().max(1e-3)).collect();
        let var_scale: Vec<f64> = want_var.iter().map(|v| v.max(1e-3)).collect();
        for (what, got, want, scale) in [("mean", &mean, &want_mean, &std), ("variance", &var, &want_var, &var_scale)] {
            let e = (0..co).map(|o| (got[o] - want[o]).abs() / scale[o]).fold(0f64, f64::max);
            assert!(e < 1e-6, "{what} of the output {case}: {e}");
        }
        assert_eq!(
            conv_weight_grad_taps_bn_relu(&g, &a, &bn, &dy),
            conv_weight_grad_taps(&g, &b, &dy),
            "weight gradient {case}"
        );
    }
}
