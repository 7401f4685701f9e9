//! Checks on a resolved [`RunConfig`] that types alone cannot express; each failure names the field.
//! What holds for every method is checked here; each method's own rules are in its file
//! (`MethodImpl::check`).

use std::path::Path;

use crate::config::{OptimizerKind, RunConfig};
pub use crate::method::Check;

/// Every check, in order: the networks, the training budget, the method, the optimiser, the
/// evaluation and the augmentations.
pub fn validate(s: &RunConfig) -> Check {
    check_finite(s)?;
    check_networks(s)?;
    check_training(s)?;
    check_method(s)?;
    check_optimizer(s)?;
    check_dataset(s)?;
    check_evaluation(s)
}

/// A folder dataset states its stored size and its normalisation; nothing about its pixels is
/// guessed.
fn check_dataset(s: &RunConfig) -> Check {
    let (resize, crop) = (s.augment.eval_resize, s.augment.eval_crop);
    let f = match &s.dataset {
        infomax_data::DatasetSpec::Builtin(d) if d.imagenet_classes().is_some() => {
            // Images read from their files have many sizes: evaluation resizes every one and
            // takes one crop of it.
            if resize == 0 || crop == 0 {
                use infomax_data::imagenet::{CROP, EVAL_RESIZE};
                let field = if resize == 0 { "augment.eval_resize" } else { "augment.eval_crop" };
                return fail(
                    field,
                    format!(
                        "{d}'s images have many sizes: evaluation resizes them and takes a centre crop (its \
                         default: eval_resize = {EVAL_RESIZE}, eval_crop = {CROP}), got 0"
                    ),
                );
            }
            return Ok(());
        }
        infomax_data::DatasetSpec::Builtin(d) => {
            // Images used at their stored side: a crop cannot be larger.
            if resize == 0 && crop > d.side() {
                return fail(
                    "augment.eval_crop",
                    format!("at most {d}'s {} px (or set eval_resize), got {crop}", d.side()),
                );
            }
            return Ok(());
        }
        infomax_data::DatasetSpec::Folder(f) => f,
    };
    if resize == 0 && crop > f.image_size {
        return fail(
            "augment.eval_crop",
            format!("at most the folder's image_size {} (or set eval_resize), got {crop}", f.image_size),
        );
    }
    if let Err((field, what)) = f.check() {
        return fail(&format!("dataset.{field}"), what);
    }
    // `datasets stats` reads a relative path from the current folder, a run from the data root.
    let path = if Path::new(&f.folder).is_absolute() { f.folder.clone() } else { format!("DATA_ROOT/{}", f.folder) };
    for (field, given, used, what) in
        [("dataset.mean", f.mean, s.augment.mean, "augment.mean"), ("dataset.std", f.std, s.augment.std, "augment.std")]
    {
        let Some(given) = given else {
            return fail(
                field,
                format!(
                    "the folder's per-channel mean and std are needed for normalisation: run `infomax datasets \
                     stats {path} --image-size {}` once (runs then use the statistics it caches), or give \
                     the `mean` and `std` it prints in the dataset table",
                    f.image_size
                ),
            );
        };
        // An experiment written for a built-in dataset states that dataset's statistics; on a
        // folder they would normalise with numbers that are not the folder's.
        if used != given {
            return fail(
                what,
                format!(
                    "{used:?} is not the folder dataset's {field} {given:?}: remove `{what}` from the experiment \
                     or set it to the folder's (`--set {what}=…`)"
                ),
            );
        }
    }
    Ok(())
}

/// A failed check of `field`.
fn fail(field: &str, what: String) -> Check {
    Err((field.to_string(), what))
}

/// Every number is finite: NaN and the infinities are no setting a run can use (and the stored
/// JSON, which has no such numbers, would write them as `null`).
fn check_finite(s: &RunConfig) -> Check {
    match s.stored_fields().into_iter().find(|(_, v)| v == "null") {
        Some((field, _)) => fail(&field, "a finite number expected, got NaN or an infinity".into()),
        None => Ok(()),
    }
}

/// An encoder's width multiplier: positive, and wide enough that every stage keeps a channel.
fn check_width(field: &str, encoder: &crate::config::EncoderConfig) -> Check {
    let w = encoder.width;
    if !(w > 0.0 && w.is_finite()) {
        return fail(field, format!("a positive multiplier expected, got {w}"));
    }
    let channels = encoder.resnet().stage_widths_unclamped();
    if channels.contains(&0) {
        return fail(
            field,
            format!("a multiplier that leaves every stage a channel expected, got {w} (channels {channels:?})"),
        );
    }
    Ok(())
}

/// A head's weights with their gradients and two optimiser buffers (4 × 4 bytes a parameter)
/// must fit this machine's memory: a width typed with three zeros too many is refused here, with
/// the bytes it would take, not by the allocator aborting the run.
fn check_head_memory(field: &str, input: usize, widths: &[usize]) -> Check {
    let mut dims = vec![input];
    dims.extend(widths);
    let params = dims.windows(2).try_fold(0u128, |acc, w| acc.checked_add(w[0] as u128 * w[1] as u128));
    let bytes = params.map(|p| p.saturating_mul(16));
    let total = crate::environment::total_memory_bytes().map_or(u128::MAX, u128::from);
    match bytes {
        Some(b) if b <= total => Ok(()),
        _ => fail(
            field,
            format!(
                "layers {dims:?} need {} of weights, gradients and optimiser state, more than this machine's {}",
                bytes.map_or("more bytes than can be counted".into(), |b| format!("{:.1} GB", b as f64 / 1e9)),
                if total == u128::MAX { "memory".into() } else { format!("{:.1} GB", total as f64 / 1e9) }
            ),
        ),
    }
}

/// An encoder architecture infomax builds.
fn check_arch(field: &str, arch: &str) -> Check {
    match infomax_model::ResNetConfig::depth_of(arch) {
        Some(_) => Ok(()),
        None => {
            let names: Vec<String> = infomax_model::ARCHS.iter().map(|(n, _)| format!("`{n}`")).collect();
            fail(field, format!("one of {} expected, got `{arch}`", names.join(", ")))
        }
    }
}

/// The encoders, branch B and the heads.
fn check_networks(s: &RunConfig) -> Check {
    check_arch("encoder.arch", &s.encoder.arch)?;
    if let Some(b) = &s.branch_b {
        check_arch("branch_b.encoder.arch", &b.encoder.arch)?;
        check_width("branch_b.encoder.width", &b.encoder)?;
        if s.predictor.is_some() {
            return fail(
                "branch_b",
                format!(
                    "{} predicts one branch's output from the other's through a shared predictor and target; \
                     it runs with shared weights only (VICReg's Table 5 has no different-weights row for it)",
                    s.method.name()
                ),
            );
        }
        if s.train.views != 2 {
            return fail("branch_b", format!("two branches take two views, got train.views = {}", s.train.views));
        }
    }
    check_width("encoder.width", &s.encoder)?;
    if s.projector.widths.is_empty() || s.projector.widths.contains(&0) {
        return fail(
            "projector.widths",
            format!("one or more positive layer widths expected, got {:?}", s.projector.widths),
        );
    }
    check_head_memory("projector.widths", s.encoder.resnet().output_dim(), &s.projector.widths)?;
    if let Some(p) = &s.predictor {
        check_head_memory("predictor.widths", s.embedding_dim(), &p.widths)?;
        if p.widths.is_empty() || p.widths.contains(&0) {
            return fail("predictor.widths", format!("one or more positive layer widths expected, got {:?}", p.widths));
        }
        if p.widths.last() != s.projector.widths.last() {
            return fail(
                "predictor.widths",
                format!(
                    "the predictor must end at the embedding size {} (the last projector width), got {:?}",
                    s.embedding_dim(),
                    p.widths
                ),
            );
        }
    }
    Ok(())
}

/// The training budget: epochs, batch and images.
fn check_training(s: &RunConfig) -> Check {
    let t = &s.train;
    if t.epochs == 0 {
        return fail("train.epochs", "at least 1 expected, got 0".into());
    }
    if t.batch_size < 2 {
        return fail("train.batch_size", format!("at least 2 expected (batch statistics), got {}", t.batch_size));
    }
    if t.train_images != 0 && t.train_images < t.batch_size {
        return fail(
            "train.train_images",
            format!("at least one batch ({}) expected, got {}", t.batch_size, t.train_images),
        );
    }
    Ok(())
}

/// The method's own table and rules, its views and predictor, the added variance term.
fn check_method(s: &RunConfig) -> Check {
    let t = &s.train;
    s.method_params.check(s.method)?;
    if s.method.two_views() && t.views != 2 {
        return fail("train.views", format!("{} compares exactly 2 views, got {}", s.method.title(), t.views));
    }
    s.method.check(s)?;
    if s.method.needs_predictor() != s.predictor.is_some() {
        let what = match s.method.needs_predictor() {
            true => format!("method {} needs a [predictor]", s.method),
            false => format!("method {} takes no [predictor]", s.method),
        };
        return fail("predictor", what);
    }
    if t.views < 2 {
        return fail("train.views", format!("at least 2 views expected, got {}", t.views));
    }
    if let Some(v) = &s.variance_reg {
        if v.coeff < 0.0 || v.gamma <= 0.0 || v.eps < 0.0 {
            return fail(
                "variance_reg",
                format!("coeff ≥ 0, gamma > 0 and eps ≥ 0 expected, got {} {} {}", v.coeff, v.gamma, v.eps),
            );
        }
    }
    Ok(())
}

/// The optimiser and its schedule.
fn check_optimizer(s: &RunConfig) -> Check {
    let t = &s.train;
    let o = &s.optimizer;
    if !(o.lr > 0.0 && o.lr.is_finite()) {
        return fail("optimizer.lr", format!("a positive learning rate expected, got {}", o.lr));
    }
    if o.weight_decay < 0.0 {
        return fail("optimizer.weight_decay", format!("≥ 0 expected, got {}", o.weight_decay));
    }
    if o.warmup_epochs < 0.0 || o.warmup_epochs > t.epochs as f64 {
        return fail(
            "optimizer.warmup_epochs",
            format!("between 0 and train.epochs ({}) expected, got {}", t.epochs, o.warmup_epochs),
        );
    }
    if o.warmup_steps.is_some() && o.warmup_epochs != 0.0 {
        return fail(
            "optimizer.warmup_steps",
            format!("warm-up in steps replaces warmup_epochs, which must be 0 (got {})", o.warmup_epochs),
        );
    }
    match o.schedule {
        crate::config::Schedule::Step => {
            let f = o.drop_factor;
            if !f.is_some_and(|f| f > 0.0 && f <= 1.0) {
                return fail("optimizer.drop_factor", format!("the step schedule needs a factor in (0, 1], got {f:?}"));
            }
            if let Some(d) =
                o.drop_epochs_before_end.iter().find(|d| !(d.is_finite() && **d > 0.0 && **d < t.epochs as f64))
            {
                return fail(
                    "optimizer.drop_epochs_before_end",
                    format!("epochs before the end above 0 and below train.epochs ({}) expected, got {d}", t.epochs),
                );
            }
        }
        crate::config::Schedule::Cosine => {
            if o.drop_factor.is_some() || !o.drop_epochs_before_end.is_empty() {
                return fail("optimizer.schedule", "drops are set but the schedule is `cosine`; set `step`".into());
            }
        }
    }
    if !(0.0..=1.0).contains(&o.end_lr_factor) {
        return fail("optimizer.end_lr_factor", format!("a factor in [0, 1] expected, got {}", o.end_lr_factor));
    }
    if !(o.bias_and_norm_lr_factor >= 0.0 && o.bias_and_norm_lr_factor.is_finite()) {
        return fail(
            "optimizer.bias_and_norm_lr_factor",
            format!("a factor ≥ 0 expected, got {}", o.bias_and_norm_lr_factor),
        );
    }
    if o.kind != OptimizerKind::Adam && !(0.0..1.0).contains(&o.momentum) {
        return fail("optimizer.momentum", format!("a value in [0, 1) expected, got {}", o.momentum));
    }
    Ok(())
}

/// The sizes a run asks for beyond what its dataset has, each as a sentence: the run uses the
/// whole split instead (a grid shares one budget across datasets, so this is a stated clamp, not
/// an error). `reproduce --dry-run` prints them with the plan and a run logs them as it starts.
pub fn clamps(s: &RunConfig, data_root: &std::path::Path) -> Vec<String> {
    use infomax_data::Split;
    let d = &s.dataset;
    let sizes = d.split_sizes(data_root);
    let count =
        |splits: &[Split]| -> usize { sizes.iter().filter(|(sp, _)| splits.contains(sp)).map(|(_, n)| n).sum() };
    let mut out = Vec::new();
    for (field, asked, splits, what) in [
        ("train.train_images", s.train.train_images, d.pretrain_splits(), "pre-training images"),
        ("eval.bank_images", s.eval.bank_images, &[Split::Train][..], "labelled training images"),
        ("eval.test_images", s.eval.test_images, &[Split::Test][..], "test images"),
    ] {
        let has = count(splits);
        if asked > has {
            out.push(format!("{field} = {asked}: {} has {has} {what}; all {has} are used", d.name()));
        }
    }
    out
}

/// Evaluation and augmentations.
fn check_evaluation(s: &RunConfig) -> Check {
    if s.eval.linear_epochs > 0 && s.eval.linear_batch_size == 0 {
        return fail("eval.linear_batch_size", "at least 1 expected, got 0".into());
    }
    if s.eval.batch_size == 0 {
        return fail("eval.batch_size", "at least 1 expected, got 0".into());
    }
    if s.eval.bank_images != 0 && s.eval.bank_images < 200 {
        return fail("eval.bank_images", format!("at least 200 expected (200-NN), got {}", s.eval.bank_images));
    }
    if let Err(e) = s.augment.validate() {
        return fail("augment", e.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dataset, Method};

    fn field_of(s: &RunConfig) -> String {
        validate(s).unwrap_err().0
    }

    /// Values that used to pass: a NaN anywhere, a negative VICReg weight, a width that rounds a
    /// stage to no channel.
    #[test]
    fn nonsense_is_refused_naming_the_field() {
        let base = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
        let mut s = base.clone();
        s.optimizer.weight_decay = f64::NAN;
        assert_eq!(field_of(&s), "optimizer.weight_decay");
        let mut s = base.clone();
        s.augment.view_a.color_jitter.hue = f32::INFINITY;
        assert_eq!(field_of(&s), "augment.view_a.color_jitter.hue");
        let negative: crate::Override = "vicreg.sim_coeff=-1".parse().unwrap();
        let err = crate::Override::apply_all(&[negative], &base).unwrap_err().to_string();
        assert!(err.contains("field `vicreg.sim_coeff`: a weight ≥ 0 expected, got -1"), "{err}");
        let mut s = base.clone();
        s.encoder.width = 1e-9;
        let (field, what) = validate(&s).unwrap_err();
        assert_eq!(field, "encoder.width");
        assert!(what.contains("channels [0, 0, 0, 0]"), "{what}");
        s.encoder.width = 1.0 / 64.0; // the stem keeps one channel
        assert!(validate(&s).is_ok(), "{:?}", validate(&s));
        let mut s = base.clone();
        s.projector.widths = vec![1_000_000_000];
        let (field, what) = validate(&s).unwrap_err();
        assert_eq!(field, "projector.widths");
        assert!(what.contains("need 8192.0 GB"), "{what}");
        for m in Method::ALL {
            assert!(validate(&RunConfig::defaults(m, Dataset::Stl10)).is_ok(), "{m:?}");
        }
    }

    /// Evaluation never crops beyond what it resizes to: ImageNet's images of every size need
    /// both, a decoded set's stored side bounds a crop without a resize.
    #[test]
    fn evaluation_crops_fit_the_images() {
        let imagenet = RunConfig::defaults(Method::Vicreg, Dataset::Imagenet100);
        assert_eq!((imagenet.augment.eval_resize, imagenet.augment.eval_crop), (256, 224));
        assert!(validate(&imagenet).is_ok());
        let mut s = imagenet.clone();
        s.augment.eval_resize = 0;
        assert_eq!(field_of(&s), "augment.eval_resize");
        let mut s = imagenet;
        s.augment.eval_crop = 0;
        assert_eq!(field_of(&s), "augment.eval_crop");
        let mut s = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
        s.augment.eval_crop = 40;
        assert_eq!(field_of(&s), "augment.eval_crop");
        s.augment.eval_resize = 48;
        assert!(validate(&s).is_ok(), "resized first, a 40-px crop fits");
    }

    #[test]
    fn sizes_beyond_the_dataset_are_stated() {
        let mut s = RunConfig::defaults(Method::Vicreg, Dataset::Stl10);
        assert!(clamps(&s, std::path::Path::new("/nonexistent")).is_empty());
        s.train.train_images = 10_000_000;
        s.eval.bank_images = 10_000;
        s.eval.test_images = 20_000;
        assert_eq!(
            clamps(&s, std::path::Path::new("/nonexistent")),
            [
                "train.train_images = 10000000: stl10 has 105000 pre-training images; all 105000 are used",
                "eval.bank_images = 10000: stl10 has 5000 labelled training images; all 5000 are used",
                "eval.test_images = 20000: stl10 has 8000 test images; all 8000 are used",
            ]
        );
    }

    #[test]
    fn a_folder_dataset_states_its_normalisation_and_the_run_uses_it() {
        use infomax_data::folder::FolderDataset;
        let stated =
            FolderDataset { mean: Some([0.4, 0.5, 0.6]), std: Some([0.2, 0.2, 0.3]), ..FolderDataset::at("pets") };
        let s = RunConfig::defaults(Method::Vicreg, infomax_data::DatasetSpec::Folder(stated.clone()));
        assert_eq!((s.augment.mean, s.augment.std), ([0.4, 0.5, 0.6], [0.2, 0.2, 0.3]), "the folder's statistics");
        assert!(s.encoder.small_stem && s.encoder.max_pool, "64 px: the small stem with its max-pool");
        assert!(validate(&s).is_ok(), "{:?}", validate(&s));
        let unstated =
            RunConfig::defaults(Method::Vicreg, infomax_data::DatasetSpec::Folder(FolderDataset::at("pets")));
        let (field, what) = validate(&unstated).unwrap_err();
        assert_eq!(field, "dataset.mean");
        assert!(what.contains("infomax datasets stats DATA_ROOT/pets --image-size 64"), "{what}");
        let mut cifar_stats = s.clone();
        cifar_stats.augment.std = Dataset::Cifar10.mean_std().1;
        let (field, what) = validate(&cifar_stats).unwrap_err();
        assert_eq!(field, "augment.std");
        assert!(what.contains("not the folder dataset's dataset.std"), "{what}");
        let big = FolderDataset { image_size: 224, ..stated };
        let s = RunConfig::defaults(Method::Vicreg, infomax_data::DatasetSpec::Folder(big));
        assert!(!s.encoder.small_stem && s.augment.size() == 224, "224 px: ImageNet's stem");
    }
}
