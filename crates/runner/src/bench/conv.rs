//! The timing behind `infomax bench conv`: each pass of one convolution as a training step runs
//! it, on random data, through the model crate's public kernels ([`ConvPasses`]) or candle's.

use std::hint::black_box;
use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use infomax_model::conv::ConvPasses;
use infomax_model::ConvKernels;

/// One convolution's shape for [`time_passes`]: `batch` images of `channels × side × side`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvShape {
    pub batch: usize,
    pub channels: usize,
    pub side: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Whether training needs the input gradient here (not for the stem: the images need none).
    pub input_grad: bool,
    /// With the 1×1 stride-2 projection shortcut (same input, `out_channels`) beside it: a
    /// downsampling block's first convolution, timed as training runs the two, together
    /// where the direct kernels take both ([`ConvPasses::forward_with_shortcut`]).
    pub shortcut: bool,
}

impl ConvShape {
    /// Padded to keep the side at stride 1, as ResNet's convolutions are.
    fn padding(&self) -> usize {
        self.kernel / 2
    }

    /// The output's side (the shortcut's too).
    fn out_side(&self) -> usize {
        (self.side + 2 * self.padding() - self.kernel) / self.stride + 1
    }

    fn passes(&self, bf16: bool) -> ConvPasses {
        let side = (self.side, self.side);
        ConvPasses::new(self.channels, side, self.kernel, self.stride, self.padding(), self.out_channels)
            .with_bf16(bf16)
    }

    /// The shortcut's passes.
    fn shortcut_passes(&self, bf16: bool) -> ConvPasses {
        ConvPasses::new(self.channels, (self.side, self.side), 1, self.stride, 0, self.out_channels).with_bf16(bf16)
    }

    /// Floating-point operations of one pass (each pass is one multiply-add per weight tap and
    /// output position: 2 FLOPs), the shortcut's included.
    pub fn flops(&self) -> f64 {
        let positions = self.out_side() * self.out_side();
        let taps = self.channels * self.kernel * self.kernel + if self.shortcut { self.channels } else { 0 };
        2.0 * (self.batch * positions * taps * self.out_channels) as f64
    }

    /// The distinct convolutions of the small-stem ResNet-18 on `side`-pixel images, each with
    /// how many times it occurs; each stage's first with its shortcut.
    pub fn resnet18(widths: [usize; 4], batch: usize, side: usize) -> Vec<(ConvShape, usize)> {
        let shape = |channels, side, out_channels, kernel, stride| ConvShape {
            batch,
            channels,
            side,
            out_channels,
            kernel,
            stride,
            input_grad: true,
            shortcut: false,
        };
        let stem = ConvShape { input_grad: false, ..shape(3, side, widths[0], 3, 1) };
        let mut out = vec![(stem, 1), (shape(widths[0], side, widths[0], 3, 1), 4)];
        let mut s = side;
        for pair in widths.windows(2) {
            let (cin, c) = (pair[0], pair[1]);
            out.push((ConvShape { shortcut: true, ..shape(cin, s, c, 3, 2) }, 1));
            s = s.div_ceil(2);
            out.push((shape(c, s, c, 3, 1), 3));
        }
        out
    }
}

/// Seconds per call of each pass of a convolution, best of the repetitions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PassSeconds {
    pub forward: f64,
    /// The gradients training computes here (candle's autograd: both).
    pub backward: f64,
    /// How many passes `backward` is: 2, or 1 where training needs no input gradient.
    pub backward_passes: usize,
    /// The input and weight gradients apart, where the kernels compute them apart (not candle's
    /// autograd, which makes both in one call) and training needs them.
    pub input_grad: Option<f64>,
    pub weight_grad: Option<f64>,
}

/// Times the forward and backward passes of `imp` on random data, each as a training step runs
/// it (the input gradient where [`ConvShape::input_grad`], the shortcut beside it where
/// [`ConvShape::shortcut`]).
pub(crate) fn time_passes(shape: ConvShape, imp: ConvKernels, repetitions: usize, bf16: bool) -> Result<PassSeconds> {
    let dev = Device::Cpu;
    let (side, out, k, pad) = (shape.side, shape.out_side(), shape.kernel, shape.padding());
    let best = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?; // warm-up: thread pool, allocator, caches
        let mut best = f64::INFINITY;
        for _ in 0..repetitions.max(1) {
            let t = Instant::now();
            f()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    let w = Tensor::randn(0f32, 1.0, (shape.out_channels, shape.channels, k, k), &dev)?;
    let ws = Tensor::randn(0f32, 1.0, (shape.out_channels, shape.channels, 1, 1), &dev)?;
    let values = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
    match imp {
        ConvKernels::Im2col if shape.shortcut => {
            let (conv, shortcut) = (shape.passes(bf16), shape.shortcut_passes(bf16));
            let x = values(&Tensor::randn(0f32, 1.0, shape.batch * side * side * shape.channels, &dev)?)?;
            let dy = values(&Tensor::randn(0f32, 1.0, shape.batch * out * out * shape.out_channels, &dev)?)?;
            let dys = values(&Tensor::randn(0f32, 1.0, dy.len(), &dev)?)?;
            let (w, ws) = (values(&w)?, values(&ws)?);
            // The weights' reordering is part of each pass, as in training.
            let forward = best(&mut || {
                black_box(conv.forward_with_shortcut(&shortcut, &x, (&w, &ws)));
                Ok(())
            })?;
            let input_grad = best(&mut || {
                black_box(conv.input_grad_with_shortcut(&shortcut, (&dy, &w), (&dys, &ws)));
                Ok(())
            })?;
            let weight_grad = best(&mut || {
                black_box(conv.weight_grad_with_shortcut(&shortcut, &x, (&dy, &dys)));
                Ok(())
            })?;
            Ok(PassSeconds {
                forward,
                backward: input_grad + weight_grad,
                backward_passes: 2,
                input_grad: Some(input_grad),
                weight_grad: Some(weight_grad),
            })
        }
        ConvKernels::Im2col => {
            let conv = shape.passes(bf16);
            let x = values(&Tensor::randn(0f32, 1.0, (shape.batch, side, side, shape.channels), &dev)?)?;
            let dy = values(&Tensor::randn(0f32, 1.0, (shape.batch, out, out, shape.out_channels), &dev)?)?;
            let w = values(&w)?;
            let forward = best(&mut || {
                black_box(conv.forward(&x, &w));
                Ok(())
            })?;
            let input_grad = if shape.input_grad {
                Some(best(&mut || {
                    black_box(conv.input_grad(&dy, &w));
                    Ok(())
                })?)
            } else {
                None
            };
            let weight_grad = best(&mut || {
                black_box(conv.weight_grad(&x, &dy));
                Ok(())
            })?;
            Ok(PassSeconds {
                forward,
                backward: input_grad.unwrap_or(0.0) + weight_grad,
                backward_passes: 1 + usize::from(input_grad.is_some()),
                input_grad,
                weight_grad: Some(weight_grad),
            })
        }
        ConvKernels::Candle => {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (shape.batch, shape.channels, side, side), &dev)?)?;
            let (wv, wsv) = (Var::from_tensor(&w)?, Var::from_tensor(&ws)?);
            // Both convolutions where there is a shortcut, each its own call.
            let outputs = || -> Result<Vec<Tensor>> {
                let y = x.conv2d(&wv, pad, shape.stride, 1, 1)?;
                Ok(if shape.shortcut { vec![y, x.conv2d(&wsv, 0, shape.stride, 1, 1)?] } else { vec![y] })
            };
            let forward = best(&mut || outputs().map(drop))?;
            let ys = outputs()?;
            let dys = ys.iter().map(|y| Tensor::randn(0f32, 1.0, y.shape(), &dev)).collect::<Result<Vec<_>>>()?;
            let backward = best(&mut || {
                let mut total = (&ys[0] * &dys[0])?.sum_all()?;
                for (y, dy) in ys.iter().zip(&dys).skip(1) {
                    total = (total + (y * dy)?.sum_all()?)?;
                }
                total.backward().map(drop)
            })?;
            Ok(PassSeconds { forward, backward, backward_passes: 2, input_grad: None, weight_grad: None })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every branch times its passes on a small shape: the shortcut pair and a lone convolution
    /// (with and without the input gradient) on the model's kernels, and candle's.
    #[test]
    fn time_passes_times_every_pass_it_reports() {
        let shape = ConvShape {
            batch: 2,
            channels: 16,
            side: 8,
            out_channels: 32,
            kernel: 3,
            stride: 2,
            input_grad: true,
            shortcut: true,
        };
        let stem = ConvShape { channels: 3, out_channels: 16, stride: 1, input_grad: false, shortcut: false, ..shape };
        let positive = |s: f64| s.is_finite() && s > 0.0;
        for (shape, imp) in [(shape, ConvKernels::Im2col), (stem, ConvKernels::Im2col), (shape, ConvKernels::Candle)] {
            let t = time_passes(shape, imp, 1, false).unwrap();
            assert!(positive(t.forward) && positive(t.backward), "{shape:?} {imp:?}: {t:?}");
            let apart = [t.input_grad, t.weight_grad];
            match imp {
                ConvKernels::Candle => assert_eq!((t.backward_passes, apart), (2, [None, None])),
                ConvKernels::Im2col => {
                    assert_eq!(t.backward_passes, 1 + usize::from(shape.input_grad));
                    assert_eq!(t.input_grad.is_some(), shape.input_grad);
                    assert!(t.weight_grad.is_some_and(positive));
                }
            }
        }
        // 2 FLOPs per multiply-add: the 3×3 convolution's and the 1×1 shortcut's taps, 4×4 outputs.
        assert_eq!(shape.flops(), 2.0 * (2 * 16 * (16 * 9 + 16) * 32) as f64);
    }
}
