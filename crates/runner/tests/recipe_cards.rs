//! The `paper` profiles (and `paper-<dataset>` ones, such as `paper-imagenet100`) held to their
//! sources, cell by cell. Every such cell of every shipped experiment file names the source it
//! follows (`[[profiles.paper.recipe]]`); each source has a
//! card below, transcribed from the authors' code or paper with the file and line each value
//! comes from, and the test compares it field by field with the resolved configuration that
//! `infomax reproduce NAME --profile paper` would train. A field that differs from the card passes
//! only with a `[[profiles.paper.deviation]]` that covers the cell and names the field.
//!
//! Sources:
//! - the W-MSE code, htdt/self-supervised at d9662c8: W-MSE 2 and 4, its SimCLR
//!   (`--method contrastive`) and BYOL baselines;
//! - the FAIR code, facebookresearch/barlowtwins at 8e8d284 and facebookresearch/vicreg at 4e12602;
//! - solo-learn's CIFAR recipes, vturrisi/solo-learn at 9187ea3 (the references of table1's
//!   Barlow Twins and VICReg rows), and its ImageNet-100 recipes at the same commit;
//! - SimSiam's paper, whose CIFAR-10 recipe is given in its appendix (its code covers ImageNet only).

use std::path::Path;

use infomax_runner::config::{Method, RunConfig};
use infomax_runner::experiment::Deviation;
use infomax_runner::ExperimentFile;

/// What the experiment files write as a cell's `recipe.source`, one per card.
const WMSE_CODE: &str = "htdt/self-supervised d9662c8 (README.md commands, cfg.py, train.py, model.py)";
const FAIR_BARLOW_TWINS: &str = "facebookresearch/barlowtwins 8e8d284 (main.py)";
const FAIR_VICREG: &str = "facebookresearch/vicreg 4e12602 (main_vicreg.py, augmentations.py, README.md)";
const SOLO_BARLOW_TWINS: &str = "vturrisi/solo-learn 9187ea3 (scripts/pretrain/cifar/barlow.yaml)";
const SOLO_VICREG: &str = "vturrisi/solo-learn 9187ea3 (scripts/pretrain/cifar/vicreg.yaml)";
const SOLO_BARLOW_TWINS_IN100: &str =
    "vturrisi/solo-learn 9187ea3 (scripts/pretrain/imagenet-100/barlow.yaml, augmentations/asymmetric.yaml)";
const SOLO_VICREG_IN100: &str =
    "vturrisi/solo-learn 9187ea3 (scripts/pretrain/imagenet-100/vicreg.yaml, augmentations/vicreg.yaml)";
const SIMSIAM_PAPER: &str = "SimSiam (Chen & He, CVPR 2021), appendix: CIFAR experiments";

/// One line of a card: the field, the source's value as the stored JSON writes it, and where the
/// source says so.
type Entry = (String, String, String);

fn entry(field: &str, value: &str, at: &str) -> Entry {
    (field.to_string(), value.to_string(), at.to_string())
}

/// One cell of the W-MSE code's README commands.
struct WmseCommand {
    /// table1's method name (`w-mse-4`) and the dataset.
    method: &'static str,
    dataset: &'static str,
    /// README.md line of the command.
    line: usize,
    epochs: usize,
    lr: &'static str,
    emb: usize,
    /// `--bs` (images per step; cfg.py line 112 default 512) and `--num_samples` (views).
    batch: usize,
    views: usize,
    /// `--w_size` and `--w_iter` (W-MSE only; cfg.py defaults 128 and 1).
    w_size: usize,
    w_iter: usize,
}

#[rustfmt::skip]
const WMSE_COMMANDS: &[WmseCommand] = &[
    // README.md lines 40-43: W-MSE 4.
    WmseCommand { method: "w-mse-4", dataset: "cifar10", line: 40, epochs: 1000, lr: "0.003", emb: 64, batch: 256, views: 4, w_size: 128, w_iter: 1 },
    WmseCommand { method: "w-mse-4", dataset: "cifar100", line: 41, epochs: 1000, lr: "0.003", emb: 64, batch: 256, views: 4, w_size: 128, w_iter: 1 },
    WmseCommand { method: "w-mse-4", dataset: "stl10", line: 42, epochs: 2000, lr: "0.002", emb: 128, batch: 256, views: 4, w_size: 256, w_iter: 1 },
    WmseCommand { method: "w-mse-4", dataset: "tiny-imagenet", line: 43, epochs: 1000, lr: "0.002", emb: 128, batch: 256, views: 4, w_size: 256, w_iter: 1 },
    // Lines 48-51: W-MSE 2.
    WmseCommand { method: "w-mse-2", dataset: "cifar10", line: 48, epochs: 1000, lr: "0.003", emb: 64, batch: 512, views: 2, w_size: 128, w_iter: 1 },
    WmseCommand { method: "w-mse-2", dataset: "cifar100", line: 49, epochs: 1000, lr: "0.003", emb: 64, batch: 512, views: 2, w_size: 128, w_iter: 1 },
    WmseCommand { method: "w-mse-2", dataset: "stl10", line: 50, epochs: 2000, lr: "0.002", emb: 128, batch: 512, views: 2, w_size: 256, w_iter: 4 },
    WmseCommand { method: "w-mse-2", dataset: "tiny-imagenet", line: 51, epochs: 1000, lr: "0.002", emb: 128, batch: 512, views: 2, w_size: 256, w_iter: 4 },
    // Lines 56-59: SimCLR (`--method contrastive`).
    WmseCommand { method: "simclr", dataset: "cifar10", line: 56, epochs: 1000, lr: "0.003", emb: 64, batch: 512, views: 2, w_size: 0, w_iter: 0 },
    WmseCommand { method: "simclr", dataset: "cifar100", line: 57, epochs: 1000, lr: "0.003", emb: 64, batch: 512, views: 2, w_size: 0, w_iter: 0 },
    WmseCommand { method: "simclr", dataset: "stl10", line: 58, epochs: 2000, lr: "0.002", emb: 128, batch: 512, views: 2, w_size: 0, w_iter: 0 },
    WmseCommand { method: "simclr", dataset: "tiny-imagenet", line: 59, epochs: 1000, lr: "0.002", emb: 128, batch: 512, views: 2, w_size: 0, w_iter: 0 },
    // Lines 64-67: BYOL.
    WmseCommand { method: "byol", dataset: "cifar10", line: 64, epochs: 1000, lr: "0.003", emb: 64, batch: 512, views: 2, w_size: 0, w_iter: 0 },
    WmseCommand { method: "byol", dataset: "cifar100", line: 65, epochs: 1000, lr: "0.003", emb: 64, batch: 512, views: 2, w_size: 0, w_iter: 0 },
    WmseCommand { method: "byol", dataset: "stl10", line: 66, epochs: 2000, lr: "0.002", emb: 128, batch: 512, views: 2, w_size: 0, w_iter: 0 },
    WmseCommand { method: "byol", dataset: "tiny-imagenet", line: 67, epochs: 1000, lr: "0.002", emb: 128, batch: 512, views: 2, w_size: 0, w_iter: 0 },
];

/// The W-MSE code's recipe for a cell: its README command for the method and dataset (W-MSE with
/// 4 views is W-MSE 4's command, with other view counts W-MSE 2's), and the code's defaults.
fn wmse_code(c: &RunConfig) -> Vec<Entry> {
    let method = match c.method {
        Method::WMse if c.train.views == 4 => "w-mse-4",
        Method::WMse => "w-mse-2",
        other => other.name(),
    };
    let cmd = WMSE_COMMANDS
        .iter()
        .find(|k| k.method == method && k.dataset == c.dataset.name())
        .unwrap_or_else(|| panic!("the W-MSE code has no command for {method} on {}", c.dataset.name()));
    let readme = format!("README.md line {}", cmd.line);
    let emb = cmd.emb;
    let mut card = vec![
        entry("train.epochs", &cmd.epochs.to_string(), &format!("{readme}: --epoch")),
        entry("optimizer.lr", cmd.lr, &format!("{readme}: --lr")),
        entry("train.batch_size", &cmd.batch.to_string(), &format!("{readme}: --bs")),
        entry("train.views", &cmd.views.to_string(), &format!("{readme}: --num_samples")),
        // cfg.py lines 77-80 `--head_layers` 2, `--head_size` 1024: one hidden layer, then emb.
        entry("projector.widths", &format!("[1024,{emb}]"), &format!("cfg.py lines 77-80; {readme}: --emb")),
        entry("projector.hidden_bias", "true", "model.py line 10: nn.Linear"),
        entry("projector.last_bias", "true", "model.py line 15: nn.Linear"),
        // train.py line 39: Adam(lr, weight_decay=cfg.adam_l2); cfg.py `--adam_l2` 1e-6.
        entry("optimizer.kind", "\"adam\"", "train.py line 39"),
        entry("optimizer.weight_decay", "1e-6", "cfg.py --adam_l2"),
        entry("optimizer.lr_batch_scaling", "false", "train.py line 39: the lr as given"),
        // train.py lines 43-54: 500 warm-up iterations; line 23 and cfg.py `--drop` [50, 25],
        // `--drop_gamma` 0.2, `--lr_step` step.
        entry("optimizer.schedule", "\"step\"", "cfg.py --lr_step"),
        entry("optimizer.warmup_steps", "500", "train.py lines 43-54"),
        entry("optimizer.warmup_epochs", "0.0", "train.py lines 43-54: in iterations"),
        entry("optimizer.drop_epochs_before_end", "[50,25]", "train.py line 23; cfg.py --drop"),
        entry("optimizer.drop_factor", "0.2", "cfg.py --drop_gamma"),
        // No autocast in train.py.
        entry("train.precision", "\"f32\"", "train.py: fp32"),
        // model.py lines 19-27: torchvision's resnet18, its conv1 3×3 stride 1, its max-pool
        // removed on CIFAR only.
        entry("encoder.arch", "\"resnet18\"", "cfg.py lines 128-132: --arch resnet18"),
        entry("encoder.width", "1.0", "model.py line 21"),
        entry("encoder.small_stem", "true", "model.py line 23"),
        entry("encoder.stem_padding", "null", "model.py line 23: padding 1"),
        entry(
            "encoder.max_pool",
            if c.dataset.name().starts_with("cifar") { "false" } else { "true" },
            "model.py lines 24-25",
        ),
        entry("encoder.zero_init_residual", "false", "model.py line 21: torchvision's default"),
        entry("augment.preset", "\"wmse\"", "datasets/transforms.py"),
    ];
    match c.method {
        Method::WMse => card.extend([
            entry("wmse.w_size", &cmd.w_size.to_string(), &format!("{readme}: --w_size")),
            entry("wmse.w_iter", &cmd.w_iter.to_string(), &format!("{readme}: --w_iter")),
            entry("wmse.eps", "0.0", "cfg.py line 74: --w_eps"),
            entry("projector.joint_views", "true", "methods/w_mse.py line 22: one head call over all views"),
        ]),
        Method::Simclr => card.extend([
            entry("simclr.tau", "0.5", "cfg.py line 97: --tau"),
            entry("projector.joint_views", "true", "methods/contrastive.py line 38: one head call over all views"),
            entry("projector.output_bn", "true", "methods/contrastive.py lines 32, 38: bn_last"),
        ]),
        // methods/byol.py lines 17-21: Linear(emb, 1024), BN, ReLU, Linear(1024, emb).
        Method::Byol => card.extend([
            entry("byol.tau_base", "0.99", "cfg.py line 22: --byol_tau"),
            entry("predictor.widths", &format!("[1024,{emb}]"), "methods/byol.py lines 17-21"),
        ]),
        other => panic!("the W-MSE code has no {} recipe", other.name()),
    }
    card
}

/// Barlow Twins, facebookresearch/barlowtwins main.py.
fn fair_barlow_twins(_: &RunConfig) -> Vec<Entry> {
    vec![
        entry("encoder.arch", "\"resnet50\"", "main.py line 191"),
        entry("encoder.zero_init_residual", "true", "main.py line 191"),
        entry("train.epochs", "1000", "main.py line 29"),
        entry("train.batch_size", "2048", "main.py line 31"),
        entry("optimizer.kind", "\"lars\"", "main.py lines 99-101"),
        entry("optimizer.lars_variant", "\"fair\"", "main.py lines 210-245"),
        entry("optimizer.lr", "0.2", "main.py line 33, scaled by batch/256 (line 158)"),
        entry("optimizer.lr_batch_scaling", "true", "main.py line 158"),
        entry("optimizer.bias_and_norm_lr_factor", "0.024", "main.py line 35: 0.0048 / 0.2"),
        entry("optimizer.weight_decay", "1e-6", "main.py line 37"),
        entry("optimizer.eta", "0.001", "main.py line 225"),
        entry("optimizer.momentum", "0.9", "main.py line 225"),
        entry("optimizer.schedule", "\"cosine\"", "main.py lines 155-167"),
        entry("optimizer.warmup_epochs", "10.0", "main.py line 157"),
        entry("optimizer.end_lr_factor", "0.001", "main.py line 165"),
        entry("barlow_twins.lambda", "0.0051", "main.py line 39"),
        entry("barlow_twins.scale_loss", "1.0", "main.py lines 204-208: no scale"),
        entry("projector.widths", "[8192,8192,8192]", "main.py line 41"),
        entry("projector.hidden_bias", "false", "main.py line 198"),
        entry("projector.last_bias", "false", "main.py line 201"),
        entry("train.precision", "\"fp16\"", "main.py lines 122-130 (autocast)"),
        entry("augment.preset", "\"fair\"", "main.py lines 293-317"),
    ]
}

/// VICReg, facebookresearch/vicreg main_vicreg.py and README.md.
fn fair_vicreg(_: &RunConfig) -> Vec<Entry> {
    vec![
        entry("encoder.arch", "\"resnet50\"", "main_vicreg.py line 42"),
        entry("encoder.zero_init_residual", "true", "main_vicreg.py line 190"),
        entry("train.epochs", "1000", "README.md line 80"),
        entry("train.batch_size", "2048", "README.md line 80"),
        entry("optimizer.kind", "\"lars\"", "main_vicreg.py line 109"),
        entry("optimizer.lars_variant", "\"fair\"", "main_vicreg.py lines 234-268"),
        entry("optimizer.lr", "0.2", "README.md line 80, scaled by batch/256 (main_vicreg.py line 170)"),
        entry("optimizer.lr_batch_scaling", "true", "main_vicreg.py line 170"),
        entry("optimizer.weight_decay", "1e-6", "main_vicreg.py line 54"),
        entry("optimizer.eta", "0.001", "main_vicreg.py line 252"),
        entry("optimizer.schedule", "\"cosine\"", "main_vicreg.py lines 166-178"),
        entry("optimizer.warmup_epochs", "10.0", "main_vicreg.py line 169"),
        entry("optimizer.end_lr_factor", "0.001", "main_vicreg.py line 177"),
        entry("vicreg.sim_coeff", "25.0", "main_vicreg.py line 58"),
        entry("vicreg.std_coeff", "25.0", "main_vicreg.py line 60"),
        entry("vicreg.cov_coeff", "1.0", "main_vicreg.py line 62"),
        entry("projector.widths", "[8192,8192,8192]", "main_vicreg.py line 44"),
        entry("train.precision", "\"fp16\"", "main_vicreg.py lines 128-138 (autocast)"),
        entry("augment.preset", "\"fair\"", "augmentations.py lines 41-76"),
    ]
}

/// What solo-learn's recipes share: solo/args/pretrain.py, solo/methods/base.py and
/// solo/utils/lars.py at 9187ea3, and each yaml's `optimizer` block (`yaml` names its lines, and
/// `epochs` is its `max_epochs`). The stem is CIFAR's on CIFAR, torchvision's elsewhere.
fn solo_learn_common(c: &RunConfig, yaml: &str, lines: [usize; 6], epochs: &str) -> Vec<Entry> {
    let [batch, lr, wd, lars, epochs_line, precision] = lines;
    let at = |line: usize| format!("{yaml} line {line}");
    let cifar = c.dataset.name().starts_with("cifar");
    let stem = if cifar {
        // base.py lines 198-203: on CIFAR, conv1 3×3 stride 1 padding 2 and no max-pool.
        [("true", "2", "false"), ("solo/methods/base.py lines 200-202", "", "solo/methods/base.py line 203")]
    } else {
        [
            ("false", "3", "true"),
            (
                "torchvision's resnet18: conv1 7×7, stride 2, padding 3; base.py lines 198-203 change CIFAR's only",
                "",
                "torchvision's resnet18: max-pool after conv1",
            ),
        ]
    };
    let [(small, padding, pool), (small_at, _, pool_at)] = stem;
    vec![
        entry("encoder.arch", "\"resnet18\"", &format!("{yaml}: backbone.name")),
        entry("encoder.width", "1.0", "torchvision's resnet18 (solo/backbones/resnet/resnet.py line 20)"),
        entry("encoder.zero_init_residual", "false", "torchvision's default; backbone.kwargs {} (base.py line 277)"),
        entry("encoder.small_stem", small, small_at),
        entry("encoder.stem_padding", padding, small_at),
        entry("encoder.max_pool", pool, pool_at),
        entry("train.batch_size", "256", &format!("{}{}", at(batch), if cifar { "" } else { " × 2 devices" })),
        entry("train.views", "2", "two crops"),
        entry("train.epochs", epochs, &at(epochs_line)),
        entry("optimizer.kind", "\"lars\"", &at(lars - 6)),
        entry("optimizer.lr", "0.3", &at(lr)),
        entry("optimizer.lr_batch_scaling", "true", "solo/args/pretrain.py lines 153-154"),
        entry("optimizer.weight_decay", "0.0001", &at(wd)),
        entry("optimizer.momentum", "0.9", "solo/args/pretrain.py line 164"),
        entry("optimizer.eta", "0.02", &at(lars + 1)),
        entry(
            "optimizer.lars_variant",
            "\"solo-learn\"",
            &format!("{}, {}; solo/utils/lars.py lines 136-150", at(lars), at(lars + 2)),
        ),
        entry("optimizer.bias_and_norm_lr_factor", "1.0", "one parameter group (base.py lines 340-357)"),
        entry("optimizer.schedule", "\"cosine\"", "warmup_cosine (base.py lines 362-380)"),
        entry("optimizer.warmup_epochs", "10.0", "solo/methods/base.py line 293"),
        entry("optimizer.end_lr_factor", "0.0", "solo/methods/base.py line 291: min_lr 0"),
        entry("train.precision", "\"fp16\"", &format!("{}: 16-mixed", at(precision))),
    ]
}

/// solo-learn's per-dataset normalisation of its pre-training views (solo/data/pretrain_dataloader.py
/// lines 206-208, `MEANS_N_STD`; ImageNet-100's, read through DALI, solo/data/dali_dataloader.py
/// lines 362-368: timm's ImageNet statistics).
fn solo_learn_normalisation(c: &RunConfig) -> Vec<Entry> {
    let (mean, std, at) = match c.dataset.name() {
        "cifar10" => {
            ("[0.4914,0.4822,0.4465]", "[0.247,0.2435,0.2616]", "solo/data/pretrain_dataloader.py lines 206-208")
        }
        "cifar100" => {
            ("[0.5071,0.4865,0.4409]", "[0.2673,0.2564,0.2762]", "solo/data/pretrain_dataloader.py lines 206-208")
        }
        "imagenet100" => ("[0.485,0.456,0.406]", "[0.229,0.224,0.225]", "solo/data/dali_dataloader.py lines 362-368"),
        other => panic!("solo-learn's recipe on {other}"),
    };
    vec![entry("augment.mean", mean, at), entry("augment.std", std, at)]
}

/// The colour and crop entries of one solo-learn view.
fn solo_learn_view(view: &'static str, at: &str, crop_min: &str, blur_p: &str, solarize_p: &str) -> Vec<Entry> {
    let f = |name: &str| format!("augment.{view}.{name}");
    vec![
        entry(&f("order"), "\"crop-first\"", "solo/data/pretrain_dataloader.py: crop first"),
        entry(&f("crop_scale"), &format!("[{crop_min},1.0]"), at),
        entry(&f("color_jitter.brightness"), "0.4", at),
        entry(&f("color_jitter.contrast"), "0.4", at),
        entry(&f("color_jitter.saturation"), "0.2", at),
        entry(&f("color_jitter.hue"), "0.1", at),
        entry(&f("color_jitter.p"), "0.8", at),
        entry(&f("grayscale_p"), "0.2", at),
        entry(&f("blur_p"), blur_p, at),
        entry(&f("solarize_p"), solarize_p, at),
        entry(&f("flip_p"), "0.5", at),
    ]
}

/// Barlow Twins, solo-learn's barlow.yaml with its asymmetric augmentations: on CIFAR
/// scripts/pretrain/cifar/, on ImageNet-100 scripts/pretrain/imagenet-100/ (400 epochs, blur on
/// both views, 224-px crops, evaluation on 256-resized centre crops).
fn solo_barlow_twins(c: &RunConfig) -> Vec<Entry> {
    let in100 = c.dataset.name() == "imagenet100";
    let (dir, epochs, blur) =
        if in100 { ("imagenet-100/", "400", ["1.0", "0.1"]) } else { ("", "1000", ["0.0", "0.0"]) };
    let yaml = format!("{dir}barlow.yaml");
    let mut card = solo_learn_common(c, &yaml, [30, 31, 33, 35, 48, 53], epochs);
    card.extend(solo_learn_normalisation(c));
    card.extend([
        entry("projector.widths", "[2048,2048,2048]", &format!("{yaml} lines 19-20")),
        entry("projector.hidden_bias", "true", "solo/methods/barlow_twins.py lines 52-58: nn.Linear"),
        entry("projector.last_bias", "true", "solo/methods/barlow_twins.py line 58"),
        entry("barlow_twins.lambda", "0.0051", "solo/methods/barlow_twins.py line 77"),
        entry("barlow_twins.scale_loss", "0.1", &format!("{yaml} line 21")),
    ]);
    let aug = format!("{dir}augmentations/asymmetric.yaml");
    card.extend(solo_learn_view("view_a", &format!("{aug} lines 1-22"), "0.08", blur[0], "0.0"));
    card.extend(solo_learn_view("view_b", &format!("{aug} lines 24-45"), "0.08", blur[1], "0.2"));
    if in100 {
        card.extend(solo_learn_imagenet_sizes(&format!("{aug} line 21")));
    }
    card
}

/// The 224-px crops of solo-learn's ImageNet recipes and their evaluation transform.
fn solo_learn_imagenet_sizes(crop_at: &str) -> Vec<Entry> {
    let at = "solo/data/classification_dataloader.py lines 112-127";
    vec![
        entry("augment.view_a.size", "224", crop_at),
        entry("augment.eval_resize", "256", &format!("{at}: Resize(256)")),
        entry("augment.eval_crop", "224", &format!("{at}: CenterCrop(224)")),
    ]
}

/// VICReg, solo-learn's vicreg.yaml with its own symmetric augmentations: on CIFAR
/// scripts/pretrain/cifar/ (inline, no blur), on ImageNet-100 scripts/pretrain/imagenet-100/
/// (augmentations/vicreg.yaml: blur 0.5, 224-px crops; 400 epochs).
fn solo_vicreg(c: &RunConfig) -> Vec<Entry> {
    let in100 = c.dataset.name() == "imagenet100";
    let (yaml, lines, epochs) = if in100 {
        ("imagenet-100/vicreg.yaml", [61, 62, 64, 66, 79, 84], "400")
    } else {
        ("vicreg.yaml", [60, 61, 63, 65, 78, 83], "1000")
    };
    // The method's lines: the projector's two, then the three coefficients.
    let first = if in100 { 19 } else { 18 };
    let mut card = solo_learn_common(c, yaml, lines, epochs);
    card.extend(solo_learn_normalisation(c));
    card.extend([
        entry("projector.widths", "[2048,2048,2048]", &format!("{yaml} lines {first}-{}", first + 1)),
        entry("projector.hidden_bias", "true", "solo/methods/vicreg.py lines 54-60: nn.Linear"),
        entry("projector.last_bias", "true", "solo/methods/vicreg.py line 60"),
        entry("vicreg.sim_coeff", "25.0", &format!("{yaml} line {}", first + 2)),
        entry("vicreg.std_coeff", "25.0", &format!("{yaml} line {}", first + 3)),
        entry("vicreg.cov_coeff", "1.0", &format!("{yaml} line {}", first + 4)),
    ]);
    let (aug, blur) = if in100 {
        ("imagenet-100/augmentations/vicreg.yaml lines 1-22", "0.5")
    } else {
        ("vicreg.yaml lines 29-57", "0.0")
    };
    for view in ["view_a", "view_b"] {
        card.extend(solo_learn_view(view, aug, "0.2", blur, "0.1"));
    }
    if in100 {
        card.extend(solo_learn_imagenet_sizes("imagenet-100/augmentations/vicreg.yaml line 21"));
    }
    card
}

/// SimSiam's CIFAR-10 recipe, from its paper's appendix.
fn simsiam_paper(_: &RunConfig) -> Vec<Entry> {
    let at = "SimSiam appendix, CIFAR experiments";
    vec![
        entry("encoder.arch", "\"resnet18\"", at),
        entry("encoder.small_stem", "true", at),
        entry("encoder.max_pool", "false", at),
        entry("train.epochs", "800", at),
        entry("train.batch_size", "512", at),
        entry("optimizer.kind", "\"sgd\"", at),
        entry("optimizer.lr", "0.03", at),
        entry("optimizer.lr_batch_scaling", "true", "lr = base × batch / 256"),
        entry("optimizer.momentum", "0.9", at),
        entry("optimizer.weight_decay", "0.0005", at),
        entry("optimizer.schedule", "\"cosine\"", at),
        entry("optimizer.warmup_epochs", "0.0", at),
        entry("optimizer.end_lr_factor", "0.0", at),
        entry("projector.widths", "[2048,2048]", "a 2-layer projection MLP on CIFAR"),
        entry("projector.output_bn", "true", "Sec. 3: BN on the projector's output"),
        entry("predictor.widths", "[512,2048]", "Sec. 3: the predictor's 512-d bottleneck"),
    ]
}

/// The card of a recipe source named in an experiment file.
fn card_of(source: &str) -> Option<fn(&RunConfig) -> Vec<Entry>> {
    Some(match source {
        WMSE_CODE => wmse_code,
        FAIR_BARLOW_TWINS => fair_barlow_twins,
        FAIR_VICREG => fair_vicreg,
        SOLO_BARLOW_TWINS => solo_barlow_twins,
        SOLO_VICREG => solo_vicreg,
        SOLO_BARLOW_TWINS_IN100 => solo_barlow_twins,
        SOLO_VICREG_IN100 => solo_vicreg,
        SIMSIAM_PAPER => simsiam_paper,
        _ => return None,
    })
}

/// A `paper` cell of a shipped experiment file.
struct Cell {
    /// `table1 method=vicreg dataset=cifar10`.
    name: String,
    coords: Vec<(String, String)>,
    recipe: Option<String>,
    config: RunConfig,
}

fn experiments_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments")
}

fn load(name: &str) -> ExperimentFile {
    ExperimentFile::load(&experiments_dir().join(format!("{name}.toml"))).unwrap()
}

/// Every shipped file's cells of its `paper` and `paper-<dataset>` profiles, by profile.
fn paper_cells() -> Vec<(ExperimentFile, String, Vec<Cell>)> {
    let mut names: Vec<String> = std::fs::read_dir(experiments_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for file in names.iter().map(|name| load(name)) {
        let profiles: Vec<String> =
            file.profiles.keys().filter(|p| *p == "paper" || p.starts_with("paper-")).cloned().collect();
        for profile in profiles {
            let plan = infomax_runner::plan::plan(&file, &profile, &[], &Default::default()).unwrap();
            let cells = plan
                .into_iter()
                .map(|r| Cell {
                    name: format!("{} {profile} {}", file.meta.name, r.label()),
                    coords: r.coords.clone(),
                    recipe: r.recipe.clone(),
                    config: r.config,
                })
                .collect();
            out.push((file.clone(), profile, cells));
        }
    }
    out
}

/// Whether two JSON texts are the same value, numbers compared as numbers (the recipe computes
/// 0.0048 / 0.2, stored 0.023999999999999997).
fn same(a: &str, b: &str) -> bool {
    fn eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value::*;
        match (a, b) {
            (Number(x), Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-7 * x.abs().max(y.abs())
            }
            (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| eq(x, y)),
            _ => a == b,
        }
    }
    match (serde_json::from_str(a), serde_json::from_str(b)) {
        (Ok(a), Ok(b)) => eq(&a, &b),
        _ => a == b,
    }
}

/// The cells' fields that differ from their card without a deviation, and how many follow it.
fn unexplained(cells: &[Cell], deviations: &[&Deviation]) -> (Vec<String>, usize) {
    let mut missing = Vec::new();
    let mut followed = 0;
    for cell in cells {
        let source = cell.recipe.as_deref().unwrap_or_else(|| panic!("{}: no recipe", cell.name));
        let card = card_of(source).unwrap_or_else(|| panic!("{}: no card for the source `{source}`", cell.name));
        let fields = cell.config.fields();
        for (field, value, at) in card(&cell.config) {
            let ours = fields.get(&field).unwrap_or_else(|| panic!("{}: no field {field}", cell.name));
            if same(ours, &value) {
                followed += 1;
            } else if !deviations.iter().any(|d| d.field == field && d.covers(&cell.coords)) {
                missing.push(format!("{}: {field} = {ours}, the source {value} ({at}), no deviation", cell.name));
            }
        }
    }
    (missing, followed)
}

/// Every `paper` cell of every shipped file names a source that has a card.
#[test]
fn every_paper_cell_names_a_source_with_a_card() {
    let mut cells = 0;
    for (_, _, file_cells) in paper_cells() {
        for cell in &file_cells {
            let source =
                cell.recipe.as_deref().unwrap_or_else(|| panic!("{}: no [[profiles.paper.recipe]]", cell.name));
            assert!(card_of(source).is_some(), "{}: `{source}` is no known source", cell.name);
            // solo-learn's two recipes of a method share a card, which follows the cell's dataset.
            let in100 = [SOLO_BARLOW_TWINS_IN100, SOLO_VICREG_IN100].contains(&source);
            assert_eq!(in100, cell.config.dataset.name() == "imagenet100", "{}: `{source}`", cell.name);
            cells += 1;
        }
    }
    assert!(cells >= 100, "{cells} paper cells");
}

/// Every `paper` cell follows its card, or a deviation says why not.
#[test]
fn every_paper_cell_follows_its_card_or_says_why_not() {
    let mut problems = Vec::new();
    let mut followed = 0;
    for (file, profile, cells) in paper_cells() {
        let deviations: Vec<&Deviation> = file.profiles[&profile].deviations.iter().collect();
        let (missing, n) = unexplained(&cells, &deviations);
        problems.extend(missing);
        followed += n;
    }
    assert!(problems.is_empty(), "{} fields differ without a deviation:\n{}", problems.len(), problems.join("\n"));
    assert!(followed > 1000, "{followed} fields follow their source");
}

/// The check bites: without table1's projector deviation, its 4 FAIR cells fail the card.
#[test]
fn a_field_that_differs_without_a_deviation_fails_the_card() {
    let (file, _, cells) = paper_cells().into_iter().find(|(f, p, _)| f.meta.name == "table1" && p == "paper").unwrap();
    let without: Vec<&Deviation> =
        file.profiles["paper"].deviations.iter().filter(|d| d.field != "projector.widths").collect();
    let (missing, _) = unexplained(&cells, &without);
    assert_eq!(missing.len(), 4, "{missing:?}");
    assert!(missing.iter().all(|m| m.contains("projector.widths = [2048,2048,2048]")), "{missing:?}");
}

/// table1's rows whose references are solo-learn's follow solo-learn; the others the W-MSE code
/// or, for Barlow Twins and VICReg off CIFAR, the FAIR code.
#[test]
fn table1_cells_follow_the_source_of_their_reference() {
    let (_, _, cells) = paper_cells().into_iter().find(|(f, p, _)| f.meta.name == "table1" && p == "paper").unwrap();
    for cell in &cells {
        let at = |axis: &str| cell.coords.iter().find(|(a, _)| a == axis).unwrap().1.clone();
        let (method, dataset) = (at("method"), at("dataset"));
        let expected = match (method.as_str(), dataset.starts_with("cifar")) {
            ("barlow-twins", true) => SOLO_BARLOW_TWINS,
            ("vicreg", true) => SOLO_VICREG,
            ("barlow-twins", false) => FAIR_BARLOW_TWINS,
            ("vicreg", false) => FAIR_VICREG,
            _ => WMSE_CODE,
        };
        assert_eq!(cell.recipe.as_deref(), Some(expected), "{}", cell.name);
    }
}

/// What a small profile may scale without saying so: the budget (how much is trained and
/// evaluated, on what hardware, at what width), never the recipe.
fn is_budget(field: &str) -> bool {
    const BUDGET: &[&str] = &[
        "seed",
        "profile",
        "encoder.width",
        "branch_b.encoder.width",
        "train.epochs",
        "train.batch_size",
        "train.train_images",
        "train.device",
        "train.precision",
        "optimizer.warmup_epochs",
        "optimizer.warmup_steps",
        "optimizer.drop_epochs_before_end",
    ];
    BUDGET.contains(&field) || field.starts_with("eval.") || field.starts_with("grid.")
}

/// The fields in which each cell of `profile` differs from the `paper` cell it scales down
/// (the same grid coordinates, axes over budget fields aside) outside the budget and without a
/// deviation of `profile` that names the field; and how many recipe fields were compared.
fn recipe_departures(
    file: &ExperimentFile,
    profile: &str,
    overrides: &[infomax_runner::experiment::Override],
) -> (Vec<String>, usize) {
    let paper = infomax_runner::plan::plan(file, "paper", &[], &Default::default()).unwrap();
    let small = infomax_runner::plan::plan(file, profile, overrides, &Default::default()).unwrap();
    let recipe_coords = |coords: &[(String, String)]| -> Vec<(String, String)> {
        coords.iter().filter(|(axis, _)| !is_budget(axis)).cloned().collect()
    };
    let deviations = &file.profiles[profile].deviations;
    let (mut departures, mut compared) = (Vec::new(), 0);
    for run in &small {
        let name = format!("{} {profile} {}", file.meta.name, run.label());
        let twin = paper
            .iter()
            .find(|p| recipe_coords(&p.coords) == recipe_coords(&run.coords))
            .unwrap_or_else(|| panic!("{name}: no paper cell with the same recipe coordinates"));
        let (ours, theirs) = (run.config.fields(), twin.config.fields());
        for (field, value) in &ours {
            if is_budget(field) {
                continue;
            }
            compared += 1;
            let paper_value = theirs.get(field).map(String::as_str).unwrap_or("none");
            if !same(value, paper_value) && !deviations.iter().any(|d| &d.field == field && d.covers(&run.coords)) {
                departures.push(format!("{name}: {field} = {value}, paper {paper_value}, no deviation"));
            }
        }
    }
    (departures, compared)
}

/// Item of the recipes' contract: a `smoke` or `cpu` result is a small version of the paper's
/// run. Each of their cells trains its `paper` cell's recipe (augmentations, optimiser, heads,
/// loss) and scales only the budget, or records the departure as a deviation of its profile.
#[test]
fn small_profiles_scale_the_paper_recipe_only_in_budget() {
    let (mut departures, mut compared) = (Vec::new(), 0);
    for (file, _, _) in paper_cells().into_iter().filter(|(_, p, _)| p == "paper") {
        for profile in ["smoke", "cpu"] {
            if file.profiles.contains_key(profile) {
                let (d, n) = recipe_departures(&file, profile, &[]);
                departures.extend(d);
                compared += n;
            }
        }
    }
    assert!(departures.is_empty(), "{} recipe fields differ from paper:\n{}", departures.len(), departures.join("\n"));
    assert!(compared > 1000, "{compared} fields compared");
}

/// The check bites: a smoke run with another learning rate departs from its paper recipe.
#[test]
fn a_small_profile_with_another_recipe_fails() {
    let file = load("smoke");
    let lr: infomax_runner::experiment::Override = "optimizer.lr=0.5".parse().unwrap();
    let (departures, _) = recipe_departures(&file, "smoke", &[lr]);
    assert_eq!(departures.len(), 1, "{departures:?}");
    assert!(departures[0].contains("optimizer.lr = 0.5, paper 0.3"), "{departures:?}");
}
