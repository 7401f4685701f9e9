//! ResNet-18 (BasicBlock, [2, 2, 2, 2]) as torchvision builds it, with the small-image stem the
//! CIFAR papers use (3×3 stride-1 conv1, no max-pool) and a width multiplier (1.0 = 64-128-256-512).
//! The output is the globally average-pooled feature (512 × width).

use candle_core::{Result, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{BatchNorm, Init, ModuleT, VarBuilder};

use crate::batch_norm::batch_norm_rows;
use crate::conv::{ActLayout, Conv2d, ConvKernels};

use crate::mlp::batch_norm;
use crate::Error;
use fused_training::LayerScheduleBuilder;

mod fused_training;

/// The architectures by name, as torchvision names them, and their depth.
pub const ARCHS: [(&str, usize); 3] = [("resnet18", 18), ("resnet34", 34), ("resnet50", 50)];

/// Which stem and how wide.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// 18 (BasicBlock [2, 2, 2, 2]), 34 (BasicBlock [3, 4, 6, 3]) or 50 (Bottleneck [3, 4, 6, 3]).
    pub depth: usize,
    /// Channel multiplier: 1.0 gives 64-128-256-512.
    pub width: f64,
    /// 3×3 stride-1 conv1 (CIFAR) instead of 7×7 stride-2 (ImageNet).
    pub small_stem: bool,
    /// conv1's zero padding; `None`: half the kernel (1 for the small stem, 3 for ImageNet's).
    /// solo-learn's CIFAR stem pads its 3×3 by 2, so 32-px images leave it at 34 px.
    pub stem_padding: Option<usize>,
    /// 3×3 stride-2 max-pool after the stem: ImageNet's, and the W-MSE code's on STL-10 and
    /// Tiny-ImageNet (with the small stem); not on CIFAR.
    pub max_pool: bool,
    /// Zero the last BN γ of each residual branch (FAIR code), so each block starts as identity.
    pub zero_init_residual: bool,
    /// Convolution kernels (im2col + GEMM, or candle's reference).
    pub conv: ConvKernels,
    /// Arithmetic of the convolutions (bf16: channels first, candle's kernels).
    pub precision: crate::Precision,
}

impl ResNetConfig {
    pub fn resnet18(width: f64) -> Self {
        Self {
            depth: 18,
            width,
            small_stem: true,
            stem_padding: None,
            max_pool: false,
            zero_init_residual: false,
            conv: ConvKernels::default(),
            precision: crate::Precision::F32,
        }
    }

    /// The depth of an architecture name (`resnet50` → 50), if it is one of [`ARCHS`].
    pub fn depth_of(arch: &str) -> Option<usize> {
        ARCHS.iter().find(|(name, _)| *name == arch).map(|&(_, depth)| depth)
    }

    /// Residual blocks per stage.
    pub fn stage_blocks(&self) -> [usize; 4] {
        if self.depth >= 34 {
            [3, 4, 6, 3]
        } else {
            [2, 2, 2, 2]
        }
    }

    /// Whether the blocks are bottlenecks (1×1 → 3×3 → 1×1, four times as many channels out).
    pub fn bottleneck(&self) -> bool {
        self.depth >= 50
    }

    /// A block's output channels per channel of its stage width: 4 for bottlenecks, else 1.
    pub fn expansion(&self) -> usize {
        if self.bottleneck() {
            4
        } else {
            1
        }
    }

    /// Channels of the four stages (a bottleneck's inner width; its output is
    /// [`ResNetConfig::expansion`] times more).
    pub fn stage_widths(&self) -> [usize; 4] {
        self.stage_widths_unclamped().map(|c| c.max(1))
    }

    /// The stages' channels as the width multiplier rounds them, 0 where it rounds to none (a
    /// configuration to refuse, not to widen to one channel).
    pub fn stage_widths_unclamped(&self) -> [usize; 4] {
        [64, 128, 256, 512].map(|c| (c as f64 * self.width).round() as usize)
    }

    pub fn output_dim(&self) -> usize {
        self.stage_widths()[3] * self.expansion()
    }

    /// Multiply-accumulates of one forward pass on a `side`×`side` image, counted from the
    /// convolution shapes (BatchNorm, ReLU and pooling are a few percent and left out): what the
    /// runner's time estimates scale by.
    pub fn forward_macs(&self, side: usize) -> u64 {
        let halve = |s: usize| (s.saturating_sub(1)) / 2 + 1; // k 3 (or 7) with padding, stride 2
        let [c0, ..] = self.stage_widths();
        let (k, stride) = self.stem_kernel();
        let mut s = (side + 2 * self.stem_padding() - k) / stride + 1;
        let mut macs = (s * s * k * k * 3 * c0) as u64;
        if self.max_pool {
            s = halve(s);
        }
        let mut cin = c0;
        let e = self.expansion();
        for (stage, (&c, &blocks)) in self.stage_widths().iter().zip(&self.stage_blocks()).enumerate() {
            for block in 0..blocks {
                let stride2 = stage > 0 && block == 0;
                let area_in = (s * s) as u64;
                if stride2 {
                    s = halve(s);
                }
                let area = (s * s) as u64;
                let cout = c * e;
                macs += if self.bottleneck() {
                    // 1×1 at the input's size, 3×3 (strided), 1×1 out to four times the width.
                    area_in * (cin * c) as u64 + area * 9 * (c * c) as u64 + area * (c * cout) as u64
                } else {
                    area * 9 * (cin * c) as u64 + area * 9 * (c * c) as u64
                };
                if cin != cout || stride2 {
                    macs += area * (cin * cout) as u64; // 1×1 downsample
                }
                cin = cout;
            }
        }
        macs
    }

    /// conv1's kernel side and stride.
    pub fn stem_kernel(&self) -> (usize, usize) {
        if self.small_stem {
            (3, 1)
        } else {
            (7, 2)
        }
    }

    /// conv1's zero padding.
    pub fn stem_padding(&self) -> usize {
        self.stem_padding.unwrap_or(self.stem_kernel().0 / 2)
    }

    pub fn validate(&self) -> crate::Result<()> {
        if !ARCHS.iter().any(|&(_, depth)| depth == self.depth) {
            return Err(Error::Config {
                field: "encoder.depth",
                what: format!("18, 34 or 50 expected, got {}", self.depth),
            });
        }
        let (k, _) = self.stem_kernel();
        if self.stem_padding() >= k {
            return Err(Error::Config {
                field: "encoder.stem_padding",
                what: format!("at most {} for a {k}×{k} stem expected, got {}", k - 1, self.stem_padding()),
            });
        }
        if !(self.width > 0.0 && self.width.is_finite()) {
            return Err(Error::Config {
                field: "encoder.width",
                what: format!("a positive multiplier expected, got {}", self.width),
            });
        }
        Ok(())
    }
}

/// torchvision's ResNet conv initialisation: Kaiming normal, fan-out, ReLU gain.
const CONV_INIT: Init =
    Init::Kaiming { dist: NormalOrUniform::Normal, fan: FanInOut::FanOut, non_linearity: NonLinearity::ReLU };

/// How every convolution of an encoder runs: its kernels and its arithmetic.
#[derive(Debug, Clone, Copy)]
struct ConvOpts {
    imp: ConvKernels,
    precision: crate::Precision,
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, opts: ConvOpts, vb: VarBuilder) -> Result<Conv2d> {
    let w = vb.get_with_hints((cout, cin, k, k), "weight", CONV_INIT)?;
    Ok(Conv2d::new(w, stride, k / 2, opts.imp).with_precision(opts.precision))
}

fn bn_zero_gamma(c: usize, vb: VarBuilder) -> Result<BatchNorm> {
    // Create γ first with zeros; batch_norm then finds it and keeps it.
    vb.get_with_hints(c, "weight", Init::Const(0.0))?;
    batch_norm(c, vb)
}

/// A block's projection shortcut (`downsample`: 1×1 convolution, BatchNorm) where its stride or
/// width changes, as torchvision makes it.
fn projection(
    cin: usize,
    cout: usize,
    stride: usize,
    imp: ConvOpts,
    vb: &VarBuilder,
) -> Result<Option<(Conv2d, BatchNorm)>> {
    if stride == 1 && cin == cout {
        return Ok(None);
    }
    let d = vb.pp("downsample");
    Ok(Some((conv(cin, cout, 1, stride, imp, d.pp("0"))?, batch_norm(cout, d.pp("1"))?)))
}

/// `relu(y + shortcut(x))`: a block's output from its residual branch `y` and its input.
fn residual(
    y: Tensor,
    x: &Tensor,
    downsample: Option<&(Conv2d, BatchNorm)>,
    layout: ActLayout,
    train: bool,
) -> Result<Tensor> {
    let shortcut = match downsample {
        Some((c, bn)) => bn_in(bn, &c.forward_in(x, layout)?, layout, false, train)?,
        None => x.clone(),
    };
    (y + shortcut)?.relu()
}

#[derive(Debug, Clone)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, zero_init: bool, imp: ConvOpts, vb: VarBuilder) -> Result<Self> {
        let downsample = projection(cin, cout, stride, imp, &vb)?;
        Ok(Self {
            conv1: conv(cin, cout, 3, stride, imp, vb.pp("conv1"))?,
            bn1: batch_norm(cout, vb.pp("bn1"))?,
            conv2: conv(cout, cout, 3, 1, imp, vb.pp("conv2"))?,
            bn2: if zero_init { bn_zero_gamma(cout, vb.pp("bn2"))? } else { batch_norm(cout, vb.pp("bn2"))? },
            downsample,
        })
    }
}

/// torchvision's Bottleneck (ResNet v1.5, the stride on the 3×3): `1×1 → bn → relu → 3×3 → bn
/// → relu → 1×1 (four times the width) → bn`, plus the shortcut, then a ReLU.
#[derive(Debug, Clone)]
struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Conv2d,
    bn3: BatchNorm,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl Bottleneck {
    fn new(cin: usize, width: usize, stride: usize, zero_init: bool, imp: ConvOpts, vb: VarBuilder) -> Result<Self> {
        let cout = width * 4;
        let downsample = projection(cin, cout, stride, imp, &vb)?;
        Ok(Self {
            conv1: conv(cin, width, 1, 1, imp, vb.pp("conv1"))?,
            bn1: batch_norm(width, vb.pp("bn1"))?,
            conv2: conv(width, width, 3, stride, imp, vb.pp("conv2"))?,
            bn2: batch_norm(width, vb.pp("bn2"))?,
            conv3: conv(width, cout, 1, 1, imp, vb.pp("conv3"))?,
            bn3: if zero_init { bn_zero_gamma(cout, vb.pp("bn3"))? } else { batch_norm(cout, vb.pp("bn3"))? },
            downsample,
        })
    }

    fn forward_in(&self, x: &Tensor, layout: ActLayout, train: bool) -> Result<Tensor> {
        let y = bn_in(&self.bn1, &self.conv1.forward_in(x, layout)?, layout, true, train)?;
        let y = bn_in(&self.bn2, &self.conv2.forward_in(&y, layout)?, layout, true, train)?;
        let y = bn_in(&self.bn3, &self.conv3.forward_in(&y, layout)?, layout, false, train)?;
        residual(y, x, self.downsample.as_ref(), layout, train)
    }
}

/// A residual block of either kind.
#[derive(Debug, Clone)]
enum Block {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
}

impl Block {
    fn forward_in(&self, x: &Tensor, layout: ActLayout, train: bool) -> Result<Tensor> {
        match self {
            Block::Basic(b) => b.forward_in(x, layout, train),
            Block::Bottleneck(b) => b.forward_in(x, layout, train),
        }
    }
}

/// BatchNorm over the channels of activations in either layout, then a ReLU if `relu`:
/// channels last is a `(N·H·W, C)` batch of feature vectors, normalised by the fused kernel.
fn bn_in(bn: &BatchNorm, x: &Tensor, layout: ActLayout, relu: bool, train: bool) -> Result<Tensor> {
    match layout {
        ActLayout::ChannelsFirst => {
            let y = bn.forward_t(x, train)?;
            if relu {
                y.relu()
            } else {
                Ok(y)
            }
        }
        ActLayout::ChannelsLast => {
            let (n, h, w, c) = x.dims4()?;
            batch_norm_rows(bn, &x.reshape((n * h * w, c))?, relu, train)?.reshape((n, h, w, c))
        }
    }
}

impl BasicBlock {
    fn forward_in(&self, x: &Tensor, layout: ActLayout, train: bool) -> Result<Tensor> {
        let y = bn_in(&self.bn1, &self.conv1.forward_in(x, layout)?, layout, true, train)?;
        let y = bn_in(&self.bn2, &self.conv2.forward_in(&y, layout)?, layout, false, train)?;
        residual(y, x, self.downsample.as_ref(), layout, train)
    }
}

/// The encoder: stem, four stages of residual blocks, global average pool.
#[derive(Debug, Clone)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    max_pool: bool,
    blocks: Vec<Block>,
    output_dim: usize,
}

impl ResNet {
    /// Variables follow torchvision's names (`conv1`, `bn1`, `layer1.0.conv1`, …).
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder) -> crate::Result<Self> {
        cfg.validate()?;
        let widths = cfg.stage_widths();
        let (k, stride) = cfg.stem_kernel();
        let opts = ConvOpts { imp: cfg.conv, precision: cfg.precision };
        let w = vb.pp("conv1").get_with_hints((widths[0], 3, k, k), "weight", CONV_INIT)?;
        let conv1 = Conv2d::new(w, stride, cfg.stem_padding(), opts.imp).with_precision(opts.precision);
        let bn1 = batch_norm(widths[0], vb.pp("bn1"))?;
        let mut blocks = Vec::new();
        let mut cin = widths[0];
        for (stage, (&width, &n)) in widths.iter().zip(&cfg.stage_blocks()).enumerate() {
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let path = vb.pp(format!("layer{}", stage + 1)).pp(b.to_string());
                let zero = cfg.zero_init_residual;
                blocks.push(if cfg.bottleneck() {
                    Block::Bottleneck(Bottleneck::new(cin, width, stride, zero, opts, path)?)
                } else {
                    Block::Basic(BasicBlock::new(cin, width, stride, zero, opts, path)?)
                });
                cin = width * cfg.expansion();
            }
        }
        Ok(Self { conv1, bn1, max_pool: cfg.max_pool, blocks, output_dim: cfg.output_dim() })
    }

    pub fn output_dim(&self) -> usize {
        self.output_dim
    }

    /// Training mode on channels-last CPU activations: the whole encoder as one op
    /// (`fused_training`), the same numbers as the layer-by-layer path without its per-node passes;
    /// the views (of one shape) in one op, each with its own batch statistics.
    fn train_pass(&self, xs: &[Tensor]) -> Result<Vec<Tensor>> {
        let (_, h, w, _) = xs[0].dims4()?;
        let mut schedule = LayerScheduleBuilder::new(h, w);
        schedule.stem(&self.conv1, &self.bn1)?;
        for b in &self.blocks {
            let Block::Basic(b) = b else { unreachable!("takes_train_pass: BasicBlocks only") };
            schedule.block((&b.conv1, &b.bn1), (&b.conv2, &b.bn2), b.downsample.as_ref().map(|(c, bn)| (c, bn)))?;
        }
        schedule.forward_views(xs)
    }

    /// [`ModuleT::forward_t`] of each view, as that many calls would give them (each view's
    /// BatchNorms use its own statistics, the running ones updated view after view); where the
    /// fused training pass applies, the views of one shape go through it together, so that the
    /// pool overlaps their work.
    pub fn forward_views_t(&self, xs: &[Tensor], train: bool) -> Result<Vec<Tensor>> {
        match xs.first() {
            Some(first) if xs.iter().all(|x| self.takes_train_pass(x, train) && x.dims() == first.dims()) => {
                let layout = self.layout_for(first);
                self.train_pass(&xs.iter().map(|x| layout.from_nchw(x)).collect::<Result<Vec<_>>>()?)
            }
            _ => xs.iter().map(|x| self.forward_t(x, train)).collect(),
        }
    }
}

impl ModuleT for ResNet {
    /// `(N, C, H, W)` images in, `(N, output_dim)` features out; in between, the layout the
    /// convolution kernels want.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if self.takes_train_pass(x, train) {
            let mut features = self.train_pass(&[self.layout_for(x).from_nchw(x)?])?;
            return Ok(features.remove(0));
        }
        self.forward_layers(x, train, true)
    }
}

impl ResNet {
    /// Whether `x` goes through the fused training pass (`fused_training`): training mode,
    /// channels-last activations, no stem max-pool, BasicBlocks (bottlenecks run layer by layer).
    fn takes_train_pass(&self, x: &Tensor, train: bool) -> bool {
        train
            && self.layout_for(x) == ActLayout::ChannelsLast
            && !self.max_pool
            && self.blocks.iter().all(|b| matches!(b, Block::Basic(_)))
    }

    fn layout_for(&self, x: &Tensor) -> ActLayout {
        self.conv1.layout_for(x)
    }

    /// Frozen features for evaluation: evaluation-mode BatchNorm, and no graph kept — each
    /// block's activations are freed once the next block's exist, so a batch costs a few
    /// activations' memory, not a training step's. The features carry no gradient.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_layers(x, false, false)
    }

    /// The network layer by layer, each convolution and BatchNorm its own autograd node (the
    /// graph dropped after each block unless `keep_graph`): the evaluation path, the stem
    /// max-pool's, and the reference the fused pass is tested against.
    fn forward_layers(&self, x: &Tensor, train: bool, keep_graph: bool) -> Result<Tensor> {
        let layout = self.layout_for(x);
        let x = layout.from_nchw(x)?;
        let mut x = bn_in(&self.bn1, &self.conv1.forward_in(&x, layout)?, layout, true, train)?;
        if self.max_pool {
            // Once per image at the stem: a layout round-trip costs less than a second kernel.
            x = layout.from_nchw(&crate::max_pool::max_pool_3x3_s2(&layout.to_nchw(&x)?)?)?;
        }
        for block in &self.blocks {
            x = block.forward_in(&x, layout, train)?;
            if !keep_graph {
                x = x.detach();
            }
        }
        layout.global_average_pool(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::max_rel;
    use crate::SeededVarMap;
    use candle_core::{DType, Device};

    #[test]
    fn resnet18_shapes_and_parameter_count() {
        let map = SeededVarMap::new(0);
        let net = ResNet::new(&ResNetConfig::resnet18(1.0), map.builder(DType::F32, &Device::Cpu)).unwrap();
        assert_eq!(net.output_dim(), 512);
        let trainable: usize = map
            .named_vars()
            .iter()
            .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
            .map(|(_, v)| v.elem_count())
            .sum();
        // torchvision resnet18 without fc is 11,176,512 parameters; the 3×3 stem replaces the
        // 7×7 conv1 (9,408 weights) by a 3×3 one (1,728): 11,168,832.
        assert_eq!(trainable, 11_168_832);
    }

    #[test]
    fn width_multiplier_and_eval_mode() {
        let map = SeededVarMap::new(1);
        let net = ResNet::new(&ResNetConfig::resnet18(0.25), map.builder(DType::F32, &Device::Cpu)).unwrap();
        assert_eq!(net.output_dim(), 128);
        let x = crate::cpu::test_randn(0f32, 1.0, (4, 3, 32, 32), &Device::Cpu).unwrap();
        let before = map.named_vars().into_iter().find(|(n, _)| n == "bn1.running_mean").unwrap().1;
        let before = before.as_tensor().to_vec1::<f32>().unwrap();
        let y = net.forward_t(&x, false).unwrap();
        assert_eq!(y.dims(), &[4, 128]);
        let after = map.named_vars().into_iter().find(|(n, _)| n == "bn1.running_mean").unwrap().1;
        assert_eq!(before, after.as_tensor().to_vec1::<f32>().unwrap(), "eval mode must not touch running stats");
        net.forward_t(&x, true).unwrap();
        let after = map.named_vars().into_iter().find(|(n, _)| n == "bn1.running_mean").unwrap().1;
        assert_ne!(before, after.as_tensor().to_vec1::<f32>().unwrap(), "training mode updates running stats");
    }

    /// Through a few SGD steps, the channels-last im2col convolutions and fused BatchNorm give
    /// the loss and every gradient that candle's reference kernels (channels first) give from
    /// the same weights, and the same running statistics and evaluation-mode features. Both
    /// networks take the reference's step, so they keep the same weights. The loss (continuous)
    /// must agree to 1e-5; the gradients only to 10 % (L2): now and then one f32 rounding puts
    /// a pre-activation of the last block (6 images × 2×2 positions) on the other side of its
    /// ReLU's kink and every gradient moves by a few percent (seen: 2-5 % in about one run in
    /// ten). A wiring error (layout, residual, ReLU placement) moves them by far more; the
    /// kernels themselves are compared to 1e-4 on their own in `conv` and `batch_norm`. At width
    /// 0.25 on 12×12 images, where the CPU has AVX-512, the 3×3 stride-1 layers of 16, 32 and 128
    /// channels (even planes) run Winograd, the 64-channel ones (3×3 planes) and the stride-2
    /// ones the direct kernels.
    #[test]
    fn fast_kernels_train_like_the_reference() {
        let dev = Device::Cpu;
        let x = crate::cpu::test_randn(0f32, 1.0, (6, 3, 12, 12), &dev).unwrap();
        let target = crate::cpu::test_randn(0f32, 1.0, (6, 128), &dev).unwrap();
        let build = |conv: ConvKernels| {
            let map = SeededVarMap::new(7);
            let cfg = ResNetConfig { conv, ..ResNetConfig::resnet18(0.25) };
            let net = ResNet::new(&cfg, map.builder(DType::F32, &dev)).unwrap();
            (map.named_vars(), net)
        };
        let (vars_ref, net_ref) = build(ConvKernels::Candle);
        let (vars_fast, net_fast) = build(ConvKernels::Im2col);
        let loss_of =
            |net: &ResNet| (net.forward_t(&x, true).unwrap() - &target).unwrap().sqr().unwrap().mean_all().unwrap();
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // ‖a − b‖ / ‖b‖.
        let rel_l2 = |a: &[f32], b: &[f32]| {
            let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
            let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
            (d / n.max(1e-30)).sqrt()
        };
        let mut losses = Vec::new();
        for step in 0..4 {
            let (l_ref, l_fast) = (loss_of(&net_ref), loss_of(&net_fast));
            let (g_ref, g_fast) = (l_ref.backward().unwrap(), l_fast.backward().unwrap());
            let (a, b) = (l_fast.to_scalar::<f32>().unwrap(), l_ref.to_scalar::<f32>().unwrap());
            assert!((a - b).abs() <= 1e-5 * b.abs(), "step {step}: loss {a} vs {b}");
            losses.push(b);
            let (mut all_fast, mut all_ref) = (Vec::new(), Vec::new());
            for ((name, v_ref), (_, v_fast)) in
                vars_ref.iter().zip(&vars_fast).filter(|((n, _), _)| !n.contains("running_"))
            {
                let gr = g_ref.get(v_ref.as_tensor()).unwrap();
                let gf = g_fast.get(v_fast.as_tensor()).unwrap();
                let (vf, vr) = (values(gf), values(gr));
                let e = rel_l2(&vf, &vr);
                assert!(e < 0.25, "step {step}: gradient of {name} differs by {e}");
                all_fast.extend(vf);
                all_ref.extend(vr);
                let next = (v_ref.as_tensor() - (gr * 0.05).unwrap()).unwrap();
                v_ref.set(&next).unwrap();
                v_fast.set(&next).unwrap();
            }
            let e = rel_l2(&all_fast, &all_ref);
            assert!(e < 0.1, "step {step}: the gradients differ by {e}");
        }
        assert!(losses[3] < losses[0], "the loss falls: {losses:?}");
        for ((name, a), (_, b)) in vars_fast.iter().zip(&vars_ref).filter(|((n, _), _)| n.contains("running_")) {
            let e = rel_l2(&values(a.as_tensor()), &values(b.as_tensor()));
            assert!(e < 1e-5, "{name} differs by {e}");
        }
        let e =
            rel_l2(&values(&net_fast.forward_t(&x, false).unwrap()), &values(&net_ref.forward_t(&x, false).unwrap()));
        assert!(e < 1e-5, "evaluation-mode features differ by {e}");
    }

    /// solo-learn's CIFAR stem (3×3, stride 1, padding 2: solo-learn 9187ea3 solo/methods/base.py
    /// lines 200-203) through the fast kernels equals candle's reference, and counts its larger
    /// plane in the multiply-accumulates.
    #[test]
    fn padded_stem_equals_the_reference_kernels() {
        let dev = Device::Cpu;
        let x = crate::cpu::test_randn(0f32, 1.0, (4, 3, 12, 12), &dev).unwrap();
        let features = |conv: ConvKernels| {
            let map = SeededVarMap::new(3);
            let cfg = ResNetConfig { conv, stem_padding: Some(2), ..ResNetConfig::resnet18(0.25) };
            ResNet::new(&cfg, map.builder(DType::F32, &dev)).unwrap().forward_t(&x, true).unwrap()
        };
        let (fast, reference) = (features(ConvKernels::Im2col), features(ConvKernels::Candle));
        assert_eq!(fast.dims(), &[4, 128]);
        assert!(max_rel(&fast, &reference) < 1e-4, "{}", max_rel(&fast, &reference));
        let padded = ResNetConfig { stem_padding: Some(2), ..ResNetConfig::resnet18(1.0) };
        // 34×34 stem outputs instead of 32×32.
        let stem = |side: usize| (side * side * 9 * 3 * 64) as u64;
        assert_eq!(
            padded.forward_macs(32) - stem(34),
            ResNetConfig::resnet18(1.0).forward_macs(34) - stem(34),
            "the stages see a 34-px plane"
        );
        let refused = ResNetConfig { stem_padding: Some(3), ..ResNetConfig::resnet18(1.0) };
        assert!(refused.validate().unwrap_err().to_string().contains("encoder.stem_padding"));
    }

    /// The fused training pass (`fused_training`) against the layer-by-layer graph on the same
    /// kernels: features, every parameter's gradient and the running statistics, for the CIFAR
    /// stem and the 7×7 stride-2 one, identity and projection shortcuts, odd plane sizes.
    #[test]
    fn fused_training_pass_equals_the_layer_by_layer_graph() {
        let dev = Device::Cpu;
        // solo-learn's CIFAR stem pads by 2: 12-px images leave it at 14 px.
        for (small_stem, stem_padding, side) in [(true, None, 12), (false, None, 21), (true, Some(2), 12)] {
            let build = || {
                let map = SeededVarMap::new(11);
                let cfg = ResNetConfig { small_stem, stem_padding, ..ResNetConfig::resnet18(0.125) };
                let net = ResNet::new(&cfg, map.builder(DType::F32, &dev)).unwrap();
                // Non-trivial γ and β everywhere.
                for (name, v) in map.named_vars() {
                    if name.ends_with("bn1.weight") || name.ends_with("bn2.weight") || name.ends_with(".1.weight") {
                        v.set(&crate::cpu::test_randn(1f32, 0.3, v.shape(), &dev).unwrap()).unwrap();
                    } else if name.ends_with(".bias") {
                        v.set(&crate::cpu::test_randn(0f32, 0.3, v.shape(), &dev).unwrap()).unwrap();
                    }
                }
                (map.named_vars(), net)
            };
            let x = crate::cpu::test_randn(0f32, 1.0, (5, 3, side, side), &dev).unwrap();
            let (vars_fused, fused) = build();
            let (vars_layers, layers) = build();
            for ((_, a), (_, b)) in vars_fused.iter().zip(&vars_layers) {
                b.set(a.as_tensor()).unwrap();
            }
            let y_fused = fused.forward_t(&x, true).unwrap();
            let y_layers = layers.forward_layers(&x, true, true).unwrap();
            assert!(max_rel(&y_fused, &y_layers) < 1e-5, "features: {}", max_rel(&y_fused, &y_layers));
            let upstream = crate::cpu::test_randn(0f32, 1.0, y_fused.shape(), &dev).unwrap();
            let g_fused = (&y_fused * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            let g_layers = (&y_layers * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            for ((name, vf), (_, vl)) in vars_fused.iter().zip(&vars_layers) {
                if name.contains("running_") {
                    let e = max_rel(vf.as_tensor(), vl.as_tensor());
                    assert!(e < 1e-6, "{name} (stem {small_stem}): {e}");
                    continue;
                }
                let (gf, gl) = (g_fused.get(vf.as_tensor()), g_layers.get(vl.as_tensor()));
                let (gf, gl) = (gf.unwrap_or_else(|| panic!("no fused gradient for {name}")), gl.unwrap());
                let e = max_rel(gf, gl);
                assert!(e < 1e-4, "gradient of {name} (stem {small_stem}): {e}");
            }
        }
    }

    /// Two views through the fused pass at once against one after the other through the
    /// layer-by-layer graph: each view's features (its own batch statistics), the gradients of a
    /// loss on both, and the running statistics after both updates, in view order.
    #[test]
    fn fused_views_equal_the_views_one_at_a_time() {
        let dev = Device::Cpu;
        let build = || {
            let map = SeededVarMap::new(3);
            let net = ResNet::new(&ResNetConfig::resnet18(0.125), map.builder(DType::F32, &dev)).unwrap();
            (map.named_vars(), net)
        };
        let (vars_fused, fused) = build();
        let (vars_layers, layers) = build();
        // The second view on another scale, so that the views' batch statistics differ.
        let xs = [
            crate::cpu::test_randn(0f32, 1.0, (4, 3, 10, 10), &dev).unwrap(),
            crate::cpu::test_randn(0.5f32, 2.0, (4, 3, 10, 10), &dev).unwrap(),
        ];
        let y_fused = fused.forward_views_t(&xs, true).unwrap();
        let y_layers: Vec<Tensor> = xs.iter().map(|x| layers.forward_layers(x, true, true).unwrap()).collect();
        assert_eq!(y_fused.len(), 2);
        let mut loss: [Option<Tensor>; 2] = [None, None];
        for (v, (yf, yl)) in y_fused.iter().zip(&y_layers).enumerate() {
            assert!(max_rel(yf, yl) < 1e-5, "view {v} features: {}", max_rel(yf, yl));
            let upstream = crate::cpu::test_randn(0f32, 1.0, yf.shape(), &dev).unwrap();
            for (slot, y) in loss.iter_mut().zip([yf, yl]) {
                let term = (y * &upstream).unwrap().sum_all().unwrap();
                *slot = Some(match slot.take() {
                    Some(sum) => sum.add(&term).unwrap(),
                    None => term,
                });
            }
        }
        let [lf, ll] = loss.map(|l| l.unwrap().backward().unwrap());
        for ((name, vf), (_, vl)) in vars_fused.iter().zip(&vars_layers) {
            if name.contains("running_") {
                let e = max_rel(vf.as_tensor(), vl.as_tensor());
                assert!(e < 1e-6, "{name}: {e}");
                continue;
            }
            let (gf, gl) = (lf.get(vf.as_tensor()).unwrap(), ll.get(vl.as_tensor()).unwrap());
            let e = max_rel(gf, gl);
            assert!(e < 1e-4, "gradient of {name}: {e}");
        }
    }

    #[test]
    fn forward_macs_match_the_known_counts() {
        // CIFAR ResNet-18: 0.56 GMACs; torchvision's ImageNet ResNet-18 at 224 px: 1.82 GMACs.
        let cifar = ResNetConfig::resnet18(1.0).forward_macs(32);
        assert!((555_000_000..=558_000_000).contains(&cifar), "{cifar}");
        let imagenet = ResNetConfig { small_stem: false, max_pool: true, ..ResNetConfig::resnet18(1.0) };
        let m = imagenet.forward_macs(224);
        assert!((1_810_000_000..=1_830_000_000).contains(&m), "{m}");
        // Width 0.5 has a quarter of the inner MACs.
        let half = ResNetConfig::resnet18(0.5).forward_macs(32) as f64;
        assert!((half / cifar as f64 - 0.25).abs() < 0.01);
    }

    #[test]
    fn resnet34_has_torchvisions_blocks_and_parameter_count() {
        let cfg = ResNetConfig { depth: 34, ..ResNetConfig::resnet18(1.0) };
        let vars = SeededVarMap::new(0);
        let net = ResNet::new(&cfg, vars.builder(DType::F32, &Device::Cpu)).unwrap();
        let names: Vec<String> = vars.named_vars().into_iter().map(|(n, _)| n).collect();
        assert!(
            names.iter().any(|n| n == "layer3.5.conv2.weight") && !names.iter().any(|n| n.starts_with("layer3.6."))
        );
        // torchvision's resnet34 without its fc (512 × 1000 + 1000) and with a 3×3 stem
        // (3·64·9 instead of 3·64·49): 21,797,672 − 513,000 − 7,680 parameters.
        let params: usize = vars
            .named_vars()
            .iter()
            .filter(|(n, _)| !n.contains("running_"))
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum();
        assert_eq!(params, 21_797_672 - 513_000 - 7_680);
        let x = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.forward_t(&x, false).unwrap().dims(), &[2, 512]);
        let macs = cfg.forward_macs(32) as f64 / ResNetConfig::resnet18(1.0).forward_macs(32) as f64;
        assert!((1.9..2.1).contains(&macs), "ResNet-34 costs about twice ResNet-18: {macs}");
    }

    /// ResNet-50 as torchvision builds it: Bottleneck blocks [3, 4, 6, 3], the stride on the 3×3,
    /// 2,048-d features, torchvision's parameter names and count, ~4.1 GMACs at 224 px.
    #[test]
    fn resnet50_has_torchvisions_bottlenecks_and_parameter_count() {
        let imagenet = ResNetConfig { depth: 50, small_stem: false, max_pool: true, ..ResNetConfig::resnet18(1.0) };
        let vars = SeededVarMap::new(0);
        let net = ResNet::new(&imagenet, vars.builder(DType::F32, &Device::Cpu)).unwrap();
        assert_eq!(net.output_dim(), 2048);
        let shape = |name: &str| {
            vars.named_vars().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name}")).1.dims().to_vec()
        };
        assert_eq!(shape("layer1.0.conv1.weight"), [64, 64, 1, 1]);
        assert_eq!(shape("layer1.0.conv3.weight"), [256, 64, 1, 1]);
        assert_eq!(shape("layer1.0.downsample.0.weight"), [256, 64, 1, 1]);
        assert_eq!(shape("layer2.0.conv2.weight"), [128, 128, 3, 3]);
        assert_eq!(shape("layer4.2.bn3.weight"), [2048]);
        assert!(!vars.named_vars().iter().any(|(n, _)| n.starts_with("layer3.6.")));
        let params: usize = vars
            .named_vars()
            .iter()
            .filter(|(n, _)| !n.contains("running_"))
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum();
        // torchvision's resnet50, 25,557,032 parameters, without its fc (2048 × 1000 + 1000).
        assert_eq!(params, 25_557_032 - 2_049_000);
        // Its published cost: 4.1 GMACs at 224 px (the convolutions; the fc adds 2 M).
        let macs = imagenet.forward_macs(224);
        assert!((4_050_000_000..=4_130_000_000).contains(&macs), "{macs}");
        // The small-image stem at CIFAR size: a stride-2 stage takes 32 px to 4 px.
        let cifar = ResNetConfig { depth: 50, ..ResNetConfig::resnet18(0.125) };
        let x = crate::cpu::test_randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
        let small = ResNet::new(&cifar, SeededVarMap::new(1).builder(DType::F32, &Device::Cpu)).unwrap();
        assert_eq!(small.forward_t(&x, true).unwrap().dims(), &[2, 256]);
    }

    /// Bottleneck blocks through the fast kernels train like candle's reference: the same loss
    /// and gradients (1×1 convolutions included), and zero-initialised residuals start each
    /// bottleneck as the identity.
    #[test]
    fn resnet50_fast_kernels_equal_the_reference() {
        let dev = Device::Cpu;
        let x = crate::cpu::test_randn(0f32, 1.0, (16, 3, 16, 16), &dev).unwrap();
        let run = |conv: ConvKernels| {
            let map = SeededVarMap::new(5);
            let cfg = ResNetConfig { depth: 50, conv, ..ResNetConfig::resnet18(0.125) };
            let net = ResNet::new(&cfg, map.builder(DType::F32, &dev)).unwrap();
            let y = net.forward_t(&x, true).unwrap();
            let grads = y.sqr().unwrap().mean_all().unwrap().backward().unwrap();
            let g: Vec<(String, Tensor)> = map
                .named_vars()
                .into_iter()
                .filter(|(n, _)| !n.contains("running_"))
                .map(|(n, v)| (n, grads.get(v.as_tensor()).unwrap().clone()))
                .collect();
            (y, g)
        };
        let ((y_fast, g_fast), (y_ref, g_ref)) = (run(ConvKernels::Im2col), run(ConvKernels::Candle));
        assert!(max_rel(&y_fast, &y_ref) < 1e-4, "features: {}", max_rel(&y_fast, &y_ref));
        // ‖a − b‖ / ‖b‖. At 16 images the gradients agree to 3e-4 (each block alone to 1e-6); at 8
        // images a step of BatchNorm over so few rows amplifies the float rounding of one kernel
        // against the other through the 16 blocks to a few percent. A wiring error moves them by
        // far more.
        let rel_l2 = |a: &Tensor, b: &Tensor| {
            let d = (a - b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            let n = b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            (d / n.max(1e-30)).sqrt()
        };
        for ((name, a), (_, b)) in g_fast.iter().zip(&g_ref) {
            assert!(rel_l2(a, b) < 2e-3, "gradient of {name}: {}", rel_l2(a, b));
        }
        let zero = ResNetConfig { depth: 50, zero_init_residual: true, ..ResNetConfig::resnet18(0.125) };
        let map = SeededVarMap::new(5);
        ResNet::new(&zero, map.builder(DType::F32, &dev)).unwrap();
        let gamma = map.named_vars().into_iter().find(|(n, _)| n == "layer2.1.bn3.weight").unwrap().1;
        assert_eq!(gamma.as_tensor().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn imagenet_stem_downsamples() {
        let map = SeededVarMap::new(1);
        let cfg = ResNetConfig { small_stem: false, max_pool: true, ..ResNetConfig::resnet18(0.125) };
        let net = ResNet::new(&cfg, map.builder(DType::F32, &Device::Cpu)).unwrap();
        let x = crate::cpu::test_randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
        assert_eq!(net.forward_t(&x, true).unwrap().dims(), &[2, 64]);
    }

    /// The evaluation features without a graph are the evaluation-mode forward's, value for
    /// value.
    #[test]
    fn features_equal_the_evaluation_forward() {
        let dev = Device::Cpu;
        let x = crate::cpu::test_randn(0f32, 1.0, (3, 3, 16, 16), &dev).unwrap();
        let map = SeededVarMap::new(5);
        let net = ResNet::new(&ResNetConfig::resnet18(0.125), map.builder(DType::F32, &dev)).unwrap();
        let a = net.features(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = net.forward_t(&x, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
    }

    /// bf16 (autocast-style) gives the f32 network's features and gradients to bf16's
    /// precision (8 bits of mantissa: a few parts in a thousand per product), with f32
    /// gradients for f32 weights. Evaluation-mode BatchNorm, so that the comparison measures the
    /// products' rounding rather than how a 4-image batch's statistics amplify it.
    #[test]
    fn bf16_convolutions_follow_f32() {
        let dev = Device::Cpu;
        let x = crate::cpu::test_randn(0f32, 1.0, (4, 3, 8, 8), &dev).unwrap();
        let run = |precision: crate::Precision| {
            let map = SeededVarMap::new(3);
            let cfg = ResNetConfig { precision, ..ResNetConfig::resnet18(0.125) };
            let net = ResNet::new(&cfg, map.builder(DType::F32, &dev)).unwrap();
            let y = net.forward_t(&x, false).unwrap();
            assert_eq!(y.dtype(), DType::F32);
            let grads = y.sqr().unwrap().mean_all().unwrap().backward().unwrap();
            let w = map.named_vars().into_iter().find(|(n, _)| n == "conv1.weight").unwrap().1;
            let g = grads.get(w.as_tensor()).unwrap().clone();
            assert_eq!(g.dtype(), DType::F32);
            (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let rel = |a: &[f32], b: &[f32]| {
            let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
            let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
            (d / n).sqrt()
        };
        let (y32, g32) = run(crate::Precision::F32);
        let (y16, g16) = run(crate::Precision::Bf16);
        let (ey, eg) = (rel(&y16, &y32), rel(&g16, &g32));
        // The stem's weight gradient sums 256 products per entry through 17 bf16 backward
        // products, with cancellation: about 10 % (L2) off, while the features agree to < 1 %.
        assert!(ey < 0.02 && eg < 0.2, "bf16 vs f32: features {ey}, conv1 gradient {eg}");
        assert!(ey > 0.0, "bf16 must actually round");
    }
}
