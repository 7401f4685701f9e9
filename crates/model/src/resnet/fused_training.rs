//! A ResNet's training-mode forward and backward on the CPU as one candle op.
//!
//! Layer by layer, each convolution and BatchNorm is its own autograd node, and candle's backward
//! adds every node's gradient into a freshly zeroed tensor of the activation's size, runs the
//! residual additions and ReLUs (and their masks) as separate element-wise passes, and copies
//! the BatchNorm gradients out of their packed buffer: measured, ~28 % of a width-0.25 step went
//! to those passes (perf: `binary_map_vec_par`, `memset`, `memmove`). Here the encoder's
//! trainable parameters enter as one flat vector (a `cat` of every conv weight, γ and β), the
//! forward keeps what the backward needs on its own tape, and the backward walks the blocks in
//! reverse with the same kernels (`conv`: im2col + GEMM, `batch_norm`: fused rows), fusing what
//! the layer-by-layer graph runs apart: `relu(BN₁(a))` is made image by image as conv2 copies
//! its input into a bordered buffer (never stored); `relu(BN₂(c) + shortcut)` is one pass
//! forward; backward, the ReLU's mask is applied in place and the shortcut's gradient is
//! accumulated straight into the block input's gradient; a projection shortcut's three passes
//! run beside the block's first convolution's, which read the same input
//! (`conv::conv_forward_with_shortcut` and its two gradients).
//!
//! The images get no gradient (they are data); the op returns the globally average-pooled
//! `(N, C)` features, and each BatchNorm's batch statistics for the running ones. A step's views
//! enter side by side and run at once, each with its own statistics and tape ([`TrainPass`]):
//! one view after the other, a width-0.5 step at batch 128 ran 98.2 images/s, at once 103.2
//! (medians of five alternated runs; width 0.25 315.6 → 330.4, width 1.0 28.8 → 29.6). The
//! numbers are those of the layer-by-layer path and of candle's reference (`resnet` tests).

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Device, Layout, Result, Shape, Tensor};
use candle_nn::BatchNorm;
use rayon::prelude::*;

use crate::batch_norm::{update_running_statistics, ReluCut};
use crate::conv::{
    conv_forward_with_shortcut, conv_forward_with_statistics, conv_input_grad, conv_input_grad_with_shortcut,
    conv_weight_grad_taps, conv_weight_grad_taps_bn_relu, conv_weight_grad_taps_with_shortcut, taps_to_weight,
    weight_to_taps, Geometry, RowAffine,
};
use crate::cpu::{f32_slice, new_filled, rows_per_task, with_channels, zeros};
use crate::Conv2d;

/// The name the op's errors carry.
const OP: &str = "fused ResNet training pass";

/// A convolution: its geometry and its weight's offset in the flat parameters.
#[derive(Debug, Clone, Copy)]
struct ConvLayer {
    g: Geometry,
    offset: usize,
}

impl ConvLayer {
    fn weight<'a>(&self, params: &'a [f32]) -> &'a [f32] {
        let g = &self.g;
        &params[self.offset..][..g.out_channels * g.channels * g.kernel * g.kernel]
    }
}

/// A BatchNorm: channels, ε, and the offset of γ (β follows it).
#[derive(Debug, Clone, Copy)]
struct BnLayer {
    channels: usize,
    eps: f64,
    offset: usize,
}

impl BnLayer {
    fn gamma<'a>(&self, params: &'a [f32]) -> &'a [f32] {
        &params[self.offset..][..self.channels]
    }

    fn beta<'a>(&self, params: &'a [f32]) -> &'a [f32] {
        &params[self.offset + self.channels..][..self.channels]
    }

    fn affine(&self, x: &[f32], params: &[f32]) -> RowAffine {
        RowAffine::of_batch(x, self.gamma(params), self.beta(params), self.eps)
    }

    /// [`Self::affine`] from the batch statistics, taken already.
    fn affine_of(&self, statistics: (Vec<f64>, Vec<f64>), params: &[f32]) -> RowAffine {
        RowAffine::of_statistics(statistics, self.gamma(params), self.beta(params), self.eps)
    }
}

#[derive(Debug, Clone, Copy)]
struct BlockLayers {
    conv1: ConvLayer,
    bn1: BnLayer,
    conv2: ConvLayer,
    bn2: BnLayer,
    downsample: Option<(ConvLayer, BnLayer)>,
}

/// The layers the op runs, in forward order, each with its geometry and its parameters' offsets
/// in the flat vector: built by [`LayerScheduleBuilder`] in the order the parameters are
/// flattened.
#[derive(Debug, Clone)]
struct LayerSchedule {
    stem: (ConvLayer, BnLayer),
    blocks: Vec<BlockLayers>,
    params: usize,
}

impl LayerSchedule {
    /// Channels of the last activation: the features' size.
    fn feature_channels(&self) -> usize {
        self.blocks.last().map_or(self.stem.0.g.out_channels, |b| b.conv2.g.out_channels)
    }
}

/// Walks a ResNet's layers in forward order, collecting the parameter tensors to flatten, their
/// offsets, and the BatchNorms whose running statistics the pass updates.
pub(crate) struct LayerScheduleBuilder {
    params: Vec<Tensor>,
    len: usize,
    bns: Vec<BatchNorm>,
    height: usize,
    width: usize,
    stem: Option<(ConvLayer, BnLayer)>,
    blocks: Vec<BlockLayers>,
}

impl LayerScheduleBuilder {
    /// For channels-last images of `height × width`.
    pub(crate) fn new(height: usize, width: usize) -> Self {
        Self { params: Vec::new(), len: 0, bns: Vec::new(), height, width, stem: None, blocks: Vec::new() }
    }

    fn push(&mut self, t: &Tensor) -> Result<usize> {
        let offset = self.len;
        self.len += t.elem_count();
        self.params.push(t.flatten_all()?);
        Ok(offset)
    }

    /// A convolution on `height × width` planes.
    fn conv(&mut self, conv: &Conv2d, height: usize, width: usize) -> Result<ConvLayer> {
        let g = conv.geometry(height, width)?;
        Ok(ConvLayer { g, offset: self.push(conv.weight())? })
    }

    fn bn(&mut self, bn: &BatchNorm) -> Result<BnLayer> {
        let Some((gamma, beta)) = bn.weight_and_bias() else {
            candle_core::bail!("{OP}: a ResNet's BatchNorm has γ and β");
        };
        let offset = self.push(gamma)?;
        self.push(beta)?;
        self.bns.push(bn.clone());
        Ok(BnLayer { channels: gamma.elem_count(), eps: bn.eps(), offset })
    }

    pub(crate) fn stem(&mut self, conv: &Conv2d, bn: &BatchNorm) -> Result<()> {
        let c = self.conv(conv, self.height, self.width)?;
        (self.height, self.width) = (c.g.out_h(), c.g.out_w());
        let b = self.bn(bn)?;
        self.stem = Some((c, b));
        Ok(())
    }

    /// A BasicBlock: `conv1 → bn1 → relu → conv2 → bn2`, plus the optional projection shortcut.
    pub(crate) fn block(
        &mut self,
        (conv1, bn1): (&Conv2d, &BatchNorm),
        (conv2, bn2): (&Conv2d, &BatchNorm),
        downsample: Option<(&Conv2d, &BatchNorm)>,
    ) -> Result<()> {
        let (h, w) = (self.height, self.width);
        let c1 = self.conv(conv1, h, w)?;
        let b1 = self.bn(bn1)?;
        let c2 = self.conv(conv2, c1.g.out_h(), c1.g.out_w())?;
        let b2 = self.bn(bn2)?;
        let downsample = match downsample {
            Some((c, b)) => Some((self.conv(c, h, w)?, self.bn(b)?)),
            None => None,
        };
        (self.height, self.width) = (c2.g.out_h(), c2.g.out_w());
        self.blocks.push(BlockLayers { conv1: c1, bn1: b1, conv2: c2, bn2: b2, downsample });
        Ok(())
    }

    /// Runs the pass on channels-last views `xs`, each `(N, H, W, C)` of the same shape: each
    /// view's `(N, C)` pooled features, with a backward into every collected parameter; updates
    /// the running statistics view after view, as that many calls would. Each view keeps its
    /// own batch statistics (every author's code forwards the views one by one); they run as
    /// one op so that the pool works on both at once (see [`TrainPass`]).
    pub(crate) fn forward_views(self, xs: &[Tensor]) -> Result<Vec<Tensor>> {
        let Some(stem) = self.stem else { candle_core::bail!("{OP}: no stem") };
        let Some(first) = xs.first() else { return Ok(Vec::new()) };
        if xs.iter().any(|x| x.dims() != first.dims()) {
            candle_core::bail!("{OP}: views of different shapes");
        }
        let schedule = LayerSchedule { stem, blocks: self.blocks, params: self.len };
        let params = Tensor::cat(&self.params, 0)?;
        let tapes = Arc::new(Mutex::new(Vec::new()));
        let op = TrainPass { schedule, views: xs.len(), tapes: tapes.clone() };
        let x = if xs.len() == 1 { first.contiguous()? } else { Tensor::cat(xs, 0)? };
        let features = x.apply_op2_arc(&params, Arc::new(Box::new(op)))?;
        let guard = tapes.lock().expect("tape lock");
        if guard.len() != xs.len() {
            candle_core::bail!("{OP}: the forward left {} tapes for {} views", guard.len(), xs.len());
        }
        for tape in guard.iter() {
            let rows = |len: usize, c: usize| len / c;
            let mut stats = vec![(&tape.stem_bn, rows(tape.stem_pre.len(), tape.stem_bn.mean.len()))];
            for b in &tape.blocks {
                stats.push((&b.bn1, rows(b.a.len(), b.bn1.mean.len())));
                stats.push((&b.bn2, rows(b.c.len(), b.bn2.mean.len())));
                if let Some((s, bn)) = &b.shortcut {
                    stats.push((bn, rows(s.len(), bn.mean.len())));
                }
            }
            // The same order as the schedule's BatchNorms.
            for (bn, (affine, m)) in self.bns.iter().zip(stats) {
                if m < 2 {
                    candle_core::bail!("batch-norm in training needs at least 2 rows, got {m}");
                }
                let as_tensor =
                    |v: &[f64]| Tensor::from_vec(v.iter().map(|v| *v as f32).collect::<Vec<_>>(), v.len(), x.device());
                update_running_statistics(bn, &as_tensor(&affine.mean)?, &as_tensor(&affine.var)?, m)?;
            }
        }
        drop(guard);
        let n = first.dim(0)?;
        (0..xs.len()).map(|v| features.narrow(0, v * n, n)).collect()
    }
}

/// What the backward needs of one BasicBlock.
struct BlockTape {
    /// conv1's output and its BatchNorm. `relu(bn1(a))`, conv2's input, is not kept: conv2
    /// normalises `a` as it copies each image into its bordered buffer, forward and for its
    /// weight gradient, and bn1's backward recomputes the ReLU's sign.
    a: Vec<f32>,
    bn1: RowAffine,
    /// conv2's output and its BatchNorm.
    c: Vec<f32>,
    bn2: RowAffine,
    /// The projection shortcut's convolution output and BatchNorm.
    shortcut: Option<(Vec<f32>, RowAffine)>,
}

struct Tape {
    input: Vec<f32>,
    stem_pre: Vec<f32>,
    stem_bn: RowAffine,
    /// `outputs[0]` is the stem's (after its ReLU), `outputs[i + 1]` block i's.
    outputs: Vec<Vec<f32>>,
    blocks: Vec<BlockTape>,
}

/// `(images, flat parameters) → features`, keeping a tape per view for the backward: the views
/// side by side in its input, each through the schedule with its own batch statistics. They run at
/// once on the pool, so that one view's memory-bound passes (BatchNorm, residual sums, bordered
/// copies), the ends of its parallel loops and the op's serial steps overlap the other's
/// convolutions; their parameter gradients are summed.
struct TrainPass {
    schedule: LayerSchedule,
    views: usize,
    tapes: Arc<Mutex<Vec<Tape>>>,
}

/// `out = relu(c · scale₂ + shift₂ + shortcut)`, the shortcut either the block's input or its
/// projection `s · scale_d + shift_d`.
fn residual_relu(c: &[f32], bn2: &RowAffine, input: &[f32], projection: Option<(&[f32], &RowAffine)>) -> Vec<f32> {
    let ch = bn2.scale.len();
    let task = rows_per_task(ch) * ch;
    let (s2, t2) = (&bn2.scale, &bn2.shift);
    let fill = |out: &mut [MaybeUninit<f32>]| match projection {
        None => {
            out.par_chunks_mut(task).zip(c.par_chunks(task).zip(input.par_chunks(task))).for_each(|(oc, (cc, ic))| {
                with_channels!(ch, C => {
                    let (s2, t2) = (&s2[..C], &t2[..C]);
                    for ((or, cr), ir) in oc.chunks_exact_mut(C).zip(cc.chunks_exact(C)).zip(ic.chunks_exact(C)) {
                        for ((((o, &c), &i), &s2), &t2) in or.iter_mut().zip(cr).zip(ir).zip(s2).zip(t2) {
                            o.write((c * s2 + t2 + i).max(0.0));
                        }
                    }
                })
            })
        }
        Some((s, bnd)) => {
            let (sd, td) = (&bnd.scale, &bnd.shift);
            out.par_chunks_mut(task).zip(c.par_chunks(task).zip(s.par_chunks(task))).for_each(|(oc, (cc, sc))| {
                with_channels!(ch, C => {
                    let affine = s2[..C].iter().zip(&t2[..C]).zip(sd[..C].iter().zip(&td[..C]));
                    for ((or, cr), sr) in oc.chunks_exact_mut(C).zip(cc.chunks_exact(C)).zip(sc.chunks_exact(C)) {
                        for (((o, &c), &s), ((&s2, &t2), (&sd, &td))) in or.iter_mut().zip(cr).zip(sr).zip(affine.clone()) {
                            o.write((c * s2 + t2 + s * sd + td).max(0.0));
                        }
                    }
                })
            })
        }
    };
    // SAFETY: the rows of every task cover `out`, each element written once.
    unsafe { new_filled(c.len(), fill) }
}

/// `acc += g` where `y > 0`: a gradient through a ReLU, added onto another term's.
fn add_where_positive(acc: &mut [f32], g: &[f32], y: &[f32]) {
    const TASK: usize = 1 << 16;
    acc.par_chunks_mut(TASK).zip(g.par_chunks(TASK).zip(y.par_chunks(TASK))).for_each(|(ac, (gc, yc))| {
        for ((a, &g), &y) in ac.iter_mut().zip(gc).zip(yc) {
            *a += if y > 0.0 { g } else { 0.0 };
        }
    });
}

impl CustomOp2 for TrainPass {
    fn name(&self) -> &'static str {
        "resnet-train-pass"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ps: &CpuStorage, pl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(OP, xs, xl, "images")?;
        let params = f32_slice(OP, ps, pl, "parameters")?;
        let (stem, _) = self.schedule.stem;
        let n = xl.dims()[0];
        if xl.dims() != [n, stem.g.height, stem.g.width, stem.g.channels] || params.len() != self.schedule.params {
            candle_core::bail!("{OP}: images {:?} or {} parameters do not fit the schedule", xl.dims(), params.len());
        }
        if self.views == 0 || n == 0 || !n.is_multiple_of(self.views) {
            candle_core::bail!("{OP}: {n} images are not {} views of equal batches", self.views);
        }
        let per_view: Vec<(Vec<f32>, Tape)> =
            x.par_chunks(x.len() / self.views).map(|xv| self.forward_view(xv, params)).collect();
        let features: Vec<f32> = per_view.iter().flat_map(|(f, _)| f.iter().copied()).collect();
        *self.tapes.lock().expect("tape lock") = per_view.into_iter().map(|(_, tape)| tape).collect();
        Ok((CpuStorage::F32(features), Shape::from((n, self.schedule.feature_channels()))))
    }

    fn bwd(&self, _x: &Tensor, params: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dfeatures: Vec<f32> = dy.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
        let params: Vec<f32> = params.flatten_all()?.to_vec1()?;
        let tapes = self.tapes.lock().expect("tape lock");
        if tapes.len() != self.views {
            candle_core::bail!("{OP}: backward before forward");
        }
        let per_view: Vec<Vec<f32>> = tapes
            .par_iter()
            .zip(dfeatures.par_chunks(dfeatures.len() / self.views))
            .map(|(tape, d)| self.backward(tape, &params, d))
            .collect();
        let mut views = per_view.into_iter();
        let mut grads = views.next().expect("at least one view");
        for g in views {
            grads.par_chunks_mut(1 << 16).zip(g.par_chunks(1 << 16)).for_each(|(a, b)| {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            });
        }
        Ok((None, Some(Tensor::from_vec(grads, self.schedule.params, &Device::Cpu)?)))
    }
}

impl TrainPass {
    /// One view's forward: its `(n, C)` pooled features and its tape.
    fn forward_view(&self, x: &[f32], params: &[f32]) -> (Vec<f32>, Tape) {
        let schedule = &self.schedule;
        let (stem, stem_layer) = schedule.stem;
        let n = x.len() / stem.g.image_len();
        let taps = |layer: &ConvLayer| weight_to_taps(layer.weight(params), &layer.g);
        // Each convolution's output with its batch statistics, for the BatchNorm after it.
        let conv = |layer: &ConvLayer, input: &[f32], bn: Option<&RowAffine>| {
            conv_forward_with_statistics(&layer.g, input, bn, &taps(layer))
        };
        let (stem_pre, statistics) = conv(&stem, x, None);
        let stem_bn = stem_layer.affine_of(statistics, params);
        let first = stem_bn.apply_new(&stem_pre, true);
        let mut outputs = vec![first];
        let mut blocks = Vec::with_capacity(schedule.blocks.len());
        for layers in &schedule.blocks {
            let input = outputs.last().expect("the stem's output is first");
            // The projection shortcut reads the block's input too: both convolutions at once.
            let (a, bn1, s) = match &layers.downsample {
                Some((conv_d, _)) => {
                    let (a, s) = conv_forward_with_shortcut(
                        &layers.conv1.g,
                        input,
                        &taps(&layers.conv1),
                        &conv_d.g,
                        &taps(conv_d),
                    );
                    let bn1 = layers.bn1.affine(&a, params);
                    (a, bn1, Some(s))
                }
                None => {
                    let (a, statistics) = conv(&layers.conv1, input, None);
                    (a, layers.bn1.affine_of(statistics, params), None)
                }
            };
            let (c, statistics) = conv(&layers.conv2, &a, Some(&bn1));
            let bn2 = layers.bn2.affine_of(statistics, params);
            let shortcut = layers.downsample.zip(s).map(|((_, bn_d), s)| {
                let bn = bn_d.affine(&s, params);
                (s, bn)
            });
            let out = residual_relu(&c, &bn2, input, shortcut.as_ref().map(|(s, bn)| (s.as_slice(), bn)));
            outputs.push(out);
            blocks.push(BlockTape { a, bn1, c, bn2, shortcut });
        }
        let last = outputs.last().expect("at least the stem");
        let ch = schedule.feature_channels();
        let positions = last.len() / (n * ch);
        let mut features = vec![0f32; n * ch];
        features.par_chunks_mut(ch).zip(last.par_chunks(positions * ch)).for_each(|(f, image)| {
            for pixel in image.chunks_exact(ch) {
                f.iter_mut().zip(pixel).for_each(|(f, v)| *f += v);
            }
            f.iter_mut().for_each(|f| *f /= positions as f32);
        });
        (features, Tape { input: x.to_vec(), stem_pre, stem_bn, outputs, blocks })
    }

    /// The gradient of every flat parameter from the features' gradient.
    fn backward(&self, tape: &Tape, params: &[f32], dfeatures: &[f32]) -> Vec<f32> {
        let schedule = &self.schedule;
        let mut grads = vec![0f32; schedule.params];
        let put =
            |grads: &mut [f32], offset: usize, values: &[f32]| grads[offset..][..values.len()].copy_from_slice(values);
        let put_bn = |grads: &mut [f32], layer: &BnLayer, (dg, db): (Vec<f32>, Vec<f32>)| {
            put(grads, layer.offset, &dg);
            put(grads, layer.offset + layer.channels, &db);
        };
        let taps = |layer: &ConvLayer| weight_to_taps(layer.weight(params), &layer.g);
        let weight_grad = |layer: &ConvLayer, input: &[f32], d: &[f32]| {
            taps_to_weight(&conv_weight_grad_taps(&layer.g, input, d), &layer.g)
        };

        // The average pool's gradient: each position gets its image's feature gradient / positions.
        let last = tape.outputs.last().expect("at least the stem");
        let ch = schedule.feature_channels();
        let n = dfeatures.len() / ch;
        let positions = last.len() / (n * ch);
        let mut dout = zeros(last.len());
        dout.par_chunks_mut(positions * ch).zip(dfeatures.par_chunks(ch)).for_each(|(d, f)| {
            for pixel in d.chunks_exact_mut(ch) {
                pixel.iter_mut().zip(f).for_each(|(d, f)| *d = f / positions as f32);
            }
        });

        for (i, (layers, bt)) in schedule.blocks.iter().zip(&tape.blocks).enumerate().rev() {
            let (input, out) = (&tape.outputs[i], &tape.outputs[i + 1]);
            // `dout` reaches the sum through the ReLU after it: each of the sum's terms below
            // cuts it where `out ≤ 0` as it reads it (a pass of its own, branching on the sign,
            // cost 4 % of a width-0.25 step).
            let (dc, bn2_grads) = bt.bn2.backward_new(layers.bn2.gamma(params), &bt.c, &dout, ReluCut::Where(out));
            put_bn(&mut grads, &layers.bn2, bn2_grads);
            let db = conv_input_grad(&layers.conv2.g, &dc, &taps(&layers.conv2));
            let dw2 = conv_weight_grad_taps_bn_relu(&layers.conv2.g, &bt.a, &bt.bn1, &dc);
            put(&mut grads, layers.conv2.offset, &taps_to_weight(&dw2, &layers.conv2.g));
            drop(dc);
            let (da, bn1_grads) = bt.bn1.backward_new(layers.bn1.gamma(params), &bt.a, &db, ReluCut::Own);
            put_bn(&mut grads, &layers.bn1, bn1_grads);
            drop(db);
            let (conv1, g1) = (&layers.conv1, &layers.conv1.g);
            dout = match (&layers.downsample, &bt.shortcut) {
                (Some((conv_d, bn_d)), Some((s, bn))) => {
                    // The shortcut's passes run beside conv1's, which read the same input.
                    let (ds, bnd_grads) = bn.backward_new(bn_d.gamma(params), s, &dout, ReluCut::Where(out));
                    put_bn(&mut grads, bn_d, bnd_grads);
                    let din = conv_input_grad_with_shortcut((g1, &da, &taps(conv1)), (&conv_d.g, &ds, &taps(conv_d)));
                    let (dw1, dwd) = conv_weight_grad_taps_with_shortcut((g1, &da), (&conv_d.g, &ds), input);
                    put(&mut grads, conv1.offset, &taps_to_weight(&dw1, g1));
                    put(&mut grads, conv_d.offset, &taps_to_weight(&dwd, &conv_d.g));
                    din
                }
                _ => {
                    let mut din = conv_input_grad(g1, &da, &taps(conv1));
                    put(&mut grads, conv1.offset, &weight_grad(conv1, input, &da));
                    add_where_positive(&mut din, &dout, out);
                    din
                }
            };
        }

        let (stem, stem_layer) = &schedule.stem;
        let (da, stem_grads) = tape.stem_bn.backward_new(stem_layer.gamma(params), &tape.stem_pre, &dout, ReluCut::Own);
        put_bn(&mut grads, stem_layer, stem_grads);
        put(&mut grads, stem.offset, &weight_grad(stem, &tape.input, &da));
        grads
    }
}
