//! Checks on a resolved [`RunSpec`] that types alone cannot express; each failure names the field.

use crate::spec::{Method, OptimizerKind, RunSpec};

type Check = std::result::Result<(), (&'static str, String)>;

pub fn validate(s: &RunSpec) -> Check {
    let fail = |field: &'static str, what: String| Err((field, what));
    if s.encoder.arch != "resnet18" {
        return fail("encoder.arch", format!("`resnet18` expected, got `{}`", s.encoder.arch));
    }
    if !(s.encoder.width > 0.0 && s.encoder.width.is_finite()) {
        return fail("encoder.width", format!("a positive multiplier expected, got {}", s.encoder.width));
    }
    if s.projector.is_empty() || s.projector.contains(&0) {
        return fail("projector", format!("one or more positive layer widths expected, got {:?}", s.projector));
    }
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
    match s.method {
        Method::Vicreg => {
            if t.views != 2 {
                return fail("train.views", format!("VICReg compares exactly 2 views, got {}", t.views));
            }
            let Some(v) = &s.vicreg else {
                return fail("vicreg", "the [vicreg] coefficients are missing".into());
            };
            if v.eps < 0.0 || v.gamma <= 0.0 {
                return fail("vicreg", format!("eps ≥ 0 and gamma > 0 expected, got eps {} gamma {}", v.eps, v.gamma));
            }
        }
    }
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
    if o.kind == OptimizerKind::Lars && !(0.0..1.0).contains(&o.momentum) {
        return fail("optimizer.momentum", format!("a value in [0, 1) expected, got {}", o.momentum));
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
