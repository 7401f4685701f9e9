//! Checks on a resolved [`RunConfig`] that types alone cannot express; each failure names the field.
//! What holds for every method is checked here; each method's own rules are in its file
//! (`MethodImpl::check`).

use crate::config::{OptimizerKind, RunConfig};
pub use crate::method::Check;

/// Every check, in order: the networks, the training budget, the method, the optimiser, the
/// evaluation and the augmentations.
pub fn validate(s: &RunConfig) -> Check {
    check_networks(s)?;
    check_training(s)?;
    check_method(s)?;
    check_optimizer(s)?;
    check_evaluation(s)
}

/// A failed check of `field`.
fn fail(field: &str, what: String) -> Check {
    Err((field.to_string(), what))
}

/// The encoders, branch B and the heads.
fn check_networks(s: &RunConfig) -> Check {
    if !["resnet18", "resnet34"].contains(&s.encoder.arch.as_str()) {
        return fail("encoder.arch", format!("`resnet18` or `resnet34` expected, got `{}`", s.encoder.arch));
    }
    if let Some(b) = &s.branch_b {
        if !["resnet18", "resnet34"].contains(&b.encoder.arch.as_str()) {
            return fail(
                "branch_b.encoder.arch",
                format!("`resnet18` or `resnet34` expected, got `{}`", b.encoder.arch),
            );
        }
        if !(b.encoder.width > 0.0 && b.encoder.width.is_finite()) {
            return fail("branch_b.encoder.width", format!("a positive multiplier expected, got {}", b.encoder.width));
        }
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
    if !(s.encoder.width > 0.0 && s.encoder.width.is_finite()) {
        return fail("encoder.width", format!("a positive multiplier expected, got {}", s.encoder.width));
    }
    if s.projector.widths.is_empty() || s.projector.widths.contains(&0) {
        return fail(
            "projector.widths",
            format!("one or more positive layer widths expected, got {:?}", s.projector.widths),
        );
    }
    if let Some(p) = &s.predictor {
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
