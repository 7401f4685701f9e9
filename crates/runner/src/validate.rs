//! Checks on a resolved [`RunSpec`] that types alone cannot express; each failure names the field.

use crate::spec::{Method, OptimizerKind, RunSpec};

type Check = std::result::Result<(), (&'static str, String)>;

pub fn validate(s: &RunSpec) -> Check {
    let fail = |field: &'static str, what: String| Err((field, what));
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
    check_method_sections(s)?;
    let pairwise = |name: &str| -> Check {
        if t.views != 2 {
            return fail("train.views", format!("{name} compares exactly 2 views, got {}", t.views));
        }
        Ok(())
    };
    match s.method {
        Method::Vicreg => {
            pairwise("VICReg")?;
            let v = s.vicreg.as_ref().expect("checked above");
            if v.eps < 0.0 || v.gamma <= 0.0 {
                return fail("vicreg", format!("eps ≥ 0 and gamma > 0 expected, got eps {} gamma {}", v.eps, v.gamma));
            }
        }
        Method::BarlowTwins => {
            pairwise("Barlow Twins")?;
            let l = s.barlow_twins.as_ref().expect("checked above").lambda;
            if !(l >= 0.0 && l.is_finite()) {
                return fail("barlow_twins.lambda", format!("a non-negative weight expected, got {l}"));
            }
        }
        Method::WMse => {
            let w = s.wmse.as_ref().expect("checked above");
            let emb = s.embedding_dim();
            if w.w_size < 2 || !t.batch_size.is_multiple_of(w.w_size) {
                return fail(
                    "wmse.w_size",
                    format!(
                        "at least 2 and a divisor of train.batch_size ({}) expected, got {}",
                        t.batch_size, w.w_size
                    ),
                );
            }
            if w.eps == 0.0 && w.w_size <= emb {
                return fail(
                    "wmse.w_size",
                    format!(
                        "{} rows cannot be whitened in {emb} dimensions (their covariance has rank ≤ {}); use w_size ≈ 2 × \
                         emb ({}) or a shrinkage wmse.eps > 0",
                        w.w_size,
                        w.w_size - 1,
                        2 * emb
                    ),
                );
            }
            if w.w_iter == 0 {
                return fail("wmse.w_iter", "at least 1 expected, got 0".into());
            }
            if !(0.0..1.0).contains(&w.eps) {
                return fail("wmse.eps", format!("a shrinkage in [0, 1) expected, got {}", w.eps));
            }
        }
        Method::Simclr => {
            let tau = s.simclr.as_ref().expect("checked above").tau;
            if !(tau > 0.0 && tau.is_finite()) {
                return fail("simclr.tau", format!("a positive temperature expected, got {tau}"));
            }
        }
        Method::Byol => {
            let tau = s.byol.as_ref().expect("checked above").tau_base;
            if !(0.0..=1.0).contains(&tau) {
                return fail("byol.tau_base", format!("an EMA rate in [0, 1] expected, got {tau}"));
            }
        }
        Method::Simsiam => {}
    }
    if matches!(s.method, Method::Byol | Method::Simsiam) != s.predictor.is_some() {
        return fail(
            "predictor",
            format!("BYOL and SimSiam need a [predictor], other methods take none (method {})", s.method.name()),
        );
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
    if !(o.one_d_lr_factor >= 0.0 && o.one_d_lr_factor.is_finite()) {
        return fail("optimizer.one_d_lr_factor", format!("a factor ≥ 0 expected, got {}", o.one_d_lr_factor));
    }
    if o.kind != OptimizerKind::Adam && !(0.0..1.0).contains(&o.momentum) {
        return fail("optimizer.momentum", format!("a value in [0, 1) expected, got {}", o.momentum));
    }
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

/// Each method's own section is present, and no other method's is.
fn check_method_sections(s: &RunSpec) -> Check {
    let sections = [
        ("vicreg", Method::Vicreg, s.vicreg.is_some()),
        ("barlow_twins", Method::BarlowTwins, s.barlow_twins.is_some()),
        ("wmse", Method::WMse, s.wmse.is_some()),
        ("simclr", Method::Simclr, s.simclr.is_some()),
        ("byol", Method::Byol, s.byol.is_some()),
    ];
    for (field, method, present) in sections {
        if method == s.method && !present {
            return Err((field, format!("the [{field}] parameters of method {} are missing", s.method.name())));
        }
        if method != s.method && present {
            return Err((
                field,
                format!("[{field}] belongs to method {}, but this run's method is {}", method.name(), s.method.name()),
            ));
        }
    }
    Ok(())
}
