//! The papers' findings a small-budget reproduction must still show (docs/methods.md#findings
//! gives each one's source and criterion), each evaluated from the database and marked holds /
//! does not hold / not enough data, with the numbers behind it. Comparisons are made only between runs of the same experiment, profile and dataset (a
//! smoke run is never compared with a longer one).

use std::collections::BTreeMap;

use infomax_runner::config::Method;
use serde::Serialize;

use crate::db::{Database, Metric, Run};

/// A k-NN gain over the random encoder below this many points is not "a wide margin".
pub const WIDE_MARGIN: f64 = 5.0;
/// Collapse thresholds: per-dimension std of L2-normalised embeddings of dimension D is about
/// 1/√D when the embeddings spread evenly; below a quarter of that, or an effective rank below
/// 5 % of what a step's batch allows, min(D, batch) (or below 2), counts as collapsing.
pub const MIN_STD_FRACTION: f64 = 0.25;
pub const MIN_RANK_FRACTION: f64 = 0.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Holds,
    DoesNotHold,
    NotEnoughData,
}

impl Verdict {
    fn from_checks(checks: &[bool]) -> Verdict {
        match checks {
            [] => Verdict::NotEnoughData,
            c if c.iter().all(|&ok| ok) => Verdict::Holds,
            _ => Verdict::DoesNotHold,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::DoesNotHold => "does not hold",
            Verdict::NotEnoughData => "not enough data",
        }
    }
}

/// One line of evidence: what was compared, and whether it agrees with the claim.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub text: String,
    pub agrees: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: &'static str,
    /// Its heading's anchor in docs/methods.md, where the claim's source and the criterion are
    /// written out; the report prints it beside the finding.
    pub anchor: &'static str,
    pub claim: &'static str,
    pub verdict: Verdict,
    pub verdict_label: &'static str,
    /// The metric and thresholds the verdict rests on.
    pub basis: String,
    pub evidence: Vec<Evidence>,
}

/// The anchors of the findings' headings in docs/methods.md, by id.
pub const ANCHORS: [(&str, &str); 5] = [
    ("a", "finding-a-every-method-beats-a-random-encoder"),
    ("b", "finding-b-barlow-twins-improves-as-the-projector-widens"),
    ("c", "finding-c-different-weights-cost-vicreg-less-than-barlow-twins"),
    ("d", "finding-d-w-mse-4-is-at-least-w-mse-2"),
    ("e", "finding-e-no-method-collapses"),
];

fn finding(id: &'static str, claim: &'static str, basis: String, evidence: Vec<Evidence>) -> Finding {
    let verdict = Verdict::from_checks(&evidence.iter().map(|e| e.agrees).collect::<Vec<_>>());
    let anchor = ANCHORS.iter().find(|(i, _)| *i == id).map_or("findings", |&(_, a)| a);
    Finding { id, anchor, claim, verdict, verdict_label: verdict.label(), basis, evidence }
}

fn embedding_dim(run: &Run) -> Option<usize> {
    run.config.projector.widths.last().copied()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Finished runs grouped by (experiment, profile, dataset), groups in a stable order.
fn comparable_groups(db: &Database, keep: impl Fn(&Run) -> bool) -> BTreeMap<(String, String, String), Vec<&Run>> {
    let mut groups: BTreeMap<(String, String, String), Vec<&Run>> = BTreeMap::new();
    for r in db.runs.iter().filter(|r| r.status == "finished" && keep(r)) {
        // A variant (a run trained with `--set`) is compared only with runs of the same variant.
        let profile = match r.variant.as_str() {
            "" => r.config.profile.clone(),
            v => format!("{} · {v}", r.config.profile),
        };
        let key = (r.config.experiment.clone(), profile, r.config.dataset.name().to_string());
        groups.entry(key).or_default().push(r);
    }
    groups
}

/// The linear probe when every run has one, else 200-NN.
fn headline(db: &Database, runs: &[&Run]) -> Metric {
    if runs.iter().all(|r| db.result(r, Metric::Linear).is_some()) {
        Metric::Linear
    } else {
        Metric::Knn200
    }
}

fn mean_result(db: &Database, runs: &[&Run], m: Metric) -> Option<f64> {
    let v: Vec<f64> = runs.iter().filter_map(|r| db.result(r, m)).collect();
    (!v.is_empty()).then(|| mean(&v))
}

fn where_(key: &(String, String, String)) -> String {
    format!("{} / {} / {}", key.0, key.1, key.2)
}

/// (a) every method beats a randomly initialised encoder's k-NN accuracy by a wide margin.
fn beats_random(db: &Database) -> Finding {
    // One group per configuration: only its seeds are averaged.
    let mut by_method: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    for r in db.runs.iter().filter(|r| r.status == "finished") {
        if let (Some(t), Some(i)) = (db.result(r, Metric::Knn200), db.initial(r, Metric::Knn200)) {
            let place = format!("{} · {}", crate::compare::source(r), r.config.dataset.name());
            by_method.entry((r.method_label.clone(), place, r.config.seedless_hash())).or_default().push(t - i);
        }
    }
    let evidence = by_method
        .iter()
        .map(|((method, place, _), gains)| {
            let min = gains.iter().copied().fold(f64::MAX, f64::min);
            Evidence {
                text: format!(
                    "{method} ({place}, {} run{}): 200-NN gain over init {:+.2} points on average, {:+.2} at least",
                    gains.len(),
                    if gains.len() == 1 { "" } else { "s" },
                    mean(gains),
                    min
                ),
                agrees: min >= WIDE_MARGIN,
            }
        })
        .collect();
    finding(
        "a",
        "Every method beats a randomly initialised encoder's k-NN accuracy by a wide margin.",
        format!("200-NN top-1 of each finished run against the same encoder at initialisation; a wide margin is ≥ {WIDE_MARGIN} points for every run of the method."),
        evidence,
    )
}

/// Spearman's rank correlation (no ties expected among distinct dimensions' means).
fn rank_correlation(xs: &[f64], ys: &[f64]) -> f64 {
    let ranks = |v: &[f64]| {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        idx.iter().enumerate().for_each(|(rank, &i)| r[i] = rank as f64);
        r
    };
    let (rx, ry) = (ranks(xs), ranks(ys));
    let (mx, my) = (mean(&rx), mean(&ry));
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum::<f64>().sqrt();
    let sy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum::<f64>().sqrt();
    if sx == 0.0 || sy == 0.0 {
        0.0
    } else {
        cov / (sx * sy)
    }
}

/// (b) Barlow Twins improves as the projector widens.
fn barlow_twins_widens(db: &Database) -> Finding {
    let groups = comparable_groups(db, |r| r.config.method == Method::BarlowTwins && r.config.branch_b.is_none());
    let mut evidence = Vec::new();
    for (key, runs) in &groups {
        let mut by_dim: BTreeMap<usize, Vec<&Run>> = BTreeMap::new();
        for r in runs {
            if let Some(d) = embedding_dim(r) {
                by_dim.entry(d).or_default().push(r);
            }
        }
        if by_dim.len() < 2 {
            continue;
        }
        let m = headline(db, runs);
        let points: Vec<(f64, f64)> =
            by_dim.iter().filter_map(|(d, rs)| Some((*d as f64, mean_result(db, rs, m)?))).collect();
        let (xs, ys): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
        let rho = rank_correlation(&xs, &ys);
        let rises = ys.last() > ys.first();
        let seq = points.iter().map(|(d, v)| format!("{d} → {v:.2}")).collect::<Vec<_>>().join(", ");
        evidence.push(Evidence {
            text: format!("{}: {} by output dimension: {seq}; rank correlation {rho:+.2}", where_(key), m.short()),
            agrees: rises && rho > 0.0,
        });
    }
    finding(
        "b",
        "Barlow Twins improves as the projector widens.",
        "Finished Barlow Twins runs of one experiment, profile and dataset at two or more projector output dimensions (mean over seeds): holds when the widest beats the narrowest and accuracy rises with dimension in rank order (Spearman ρ > 0).".into(),
        evidence,
    )
}

/// (c) going from shared to different weights costs VICReg less than Barlow Twins.
fn sharing_cost(db: &Database) -> Finding {
    // Shared weights: no second branch; different weights: a second branch with the same encoder.
    let sharing = |r: &Run| -> Option<&'static str> {
        match &r.config.branch_b {
            None => Some("shared"),
            Some(b) if b.encoder == r.config.encoder => Some("different"),
            Some(_) => None,
        }
    };
    let groups = comparable_groups(db, |r| matches!(r.config.method, Method::Vicreg | Method::BarlowTwins));
    let mut evidence = Vec::new();
    for (key, runs) in &groups {
        let m = headline(db, runs);
        let cost = |method: Method| -> Option<(f64, f64)> {
            let of = |kind: &str| {
                let rs: Vec<&Run> =
                    runs.iter().copied().filter(|r| r.config.method == method && sharing(r) == Some(kind)).collect();
                mean_result(db, &rs, m)
            };
            Some((of("shared")?, of("different")?))
        };
        let (Some(v), Some(b)) = (cost(Method::Vicreg), cost(Method::BarlowTwins)) else { continue };
        let (cv, cb) = (v.0 - v.1, b.0 - b.1);
        evidence.push(Evidence {
            text: format!(
                "{}: {} shared → different weights: VICReg {:.2} → {:.2} (costs {cv:+.2}), Barlow Twins {:.2} → {:.2} (costs {cb:+.2})",
                where_(key),
                m.short(),
                v.0,
                v.1,
                b.0,
                b.1
            ),
            agrees: cv < cb,
        });
    }
    finding(
        "c",
        "Going from shared to different weights costs VICReg less than Barlow Twins.",
        "Finished VICReg and Barlow Twins runs of one experiment, profile and dataset, each with shared weights and with a second branch of the same architecture (mean over seeds): the drop (shared − different) must be smaller for VICReg.".into(),
        evidence,
    )
}

/// (d) W-MSE 4 ≥ W-MSE 2 at equal views per step.
fn more_positives(db: &Database) -> Finding {
    let groups = comparable_groups(db, |r| r.config.method == Method::WMse);
    let mut evidence = Vec::new();
    for (key, runs) in &groups {
        let mut by_budget: BTreeMap<usize, BTreeMap<usize, Vec<&Run>>> = BTreeMap::new();
        for r in runs {
            let (views, batch) = (r.config.train.views, r.config.train.batch_size);
            by_budget.entry(views * batch).or_default().entry(views).or_default().push(r);
        }
        for (budget, by_views) in &by_budget {
            let (Some(d2), Some(d4)) = (by_views.get(&2), by_views.get(&4)) else { continue };
            let all: Vec<&Run> = d2.iter().chain(d4).copied().collect();
            let m = headline(db, &all);
            let (Some(a), Some(b)) = (mean_result(db, d2, m), mean_result(db, d4, m)) else { continue };
            evidence.push(Evidence {
                text: format!(
                    "{}: {budget} augmented views per step, {}: d = 2 {a:.2} ({} run{}), d = 4 {b:.2} ({} run{}), difference {:+.2}",
                    where_(key),
                    m.short(),
                    d2.len(),
                    if d2.len() == 1 { "" } else { "s" },
                    d4.len(),
                    if d4.len() == 1 { "" } else { "s" },
                    b - a
                ),
                agrees: b >= a,
            });
        }
    }
    finding(
        "d",
        "W-MSE 4 ≥ W-MSE 2 at equal views per step.",
        "Finished W-MSE runs of one experiment, profile and dataset with d = 2 and d = 4 positives and the same number of augmented views per step (batch × d), mean over seeds.".into(),
        evidence,
    )
}

/// (e) no method collapses.
fn no_collapse(db: &Database) -> Finding {
    // (std × √D, effective rank, the most it can be: min(D, batch), run id) of each run, by
    // configuration (its seeds together). The rank is measured on one step's batch of
    // embeddings, so a batch smaller than D bounds it.
    type Spread = (f64, f64, usize, i64);
    let mut by_method: BTreeMap<(String, String, String), Vec<Spread>> = BTreeMap::new();
    for r in db.runs.iter().filter(|r| r.status == "finished") {
        let (Some(last), Some(d)) = (db.epochs_of(r).last(), embedding_dim(r)) else { continue };
        let (Some(std), Some(rank)) = (last.term("diag.embedding_std"), last.term("diag.effective_rank")) else {
            continue;
        };
        let batch = r.config.train.batch_size;
        let place = format!("{} · {}", crate::compare::source(r), r.config.dataset.name());
        by_method.entry((r.method_label.clone(), place, r.config.seedless_hash())).or_default().push((
            std * (d as f64).sqrt(),
            rank,
            d.min(batch),
            r.id.unwrap_or_default(),
        ));
    }
    let mut evidence = Vec::new();
    for ((method, place, _), runs) in &by_method {
        let worst_std = runs.iter().min_by(|a, b| a.0.total_cmp(&b.0)).expect("a group has a run");
        let worst_rank = runs.iter().min_by(|a, b| (a.1 / a.2 as f64).total_cmp(&(b.1 / b.2 as f64))).expect("a run");
        let ok = runs
            .iter()
            .all(|(s, rank, most, _)| *s >= MIN_STD_FRACTION && *rank >= (MIN_RANK_FRACTION * *most as f64).max(2.0));
        evidence.push(Evidence {
            text: format!(
                "{method} ({place}, {} run{}): last epoch's embedding std × √D at least {:.2} (run {}), effective rank at least {:.1} of at most {} (run {})",
                runs.len(),
                if runs.len() == 1 { "" } else { "s" },
                worst_std.0,
                worst_std.3,
                worst_rank.1,
                worst_rank.2,
                worst_rank.3
            ),
            agrees: ok,
        });
    }
    finding(
        "e",
        "No method collapses: the embeddings' per-dimension std stays well above zero and their effective rank stays high.",
        format!(
            "The last epoch's mean per-dimension std of L2-normalised embeddings (evenly spread embeddings of dimension D give about 1/√D) and their effective rank (on a step's batch, so at most min(D, batch)), for every finished run: collapse is std × √D < {MIN_STD_FRACTION} or effective rank < {:.0} % of min(D, batch) (or 2).",
            MIN_RANK_FRACTION * 100.0
        ),
        evidence,
    )
}

/// All five findings, in the order (a to e) of docs/methods.md#findings.
pub fn evaluate(db: &Database) -> Vec<Finding> {
    vec![beats_random(db), barlow_twins_widens(db), sharing_cost(db), more_positives(db), no_collapse(db)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_correlation_of_monotone_and_reversed() {
        assert!((rank_correlation(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((rank_correlation(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    }

    /// Every anchor the report prints names a heading of docs/methods.md (as GitHub derives
    /// anchors: lower case, punctuation dropped, spaces to hyphens), so a renamed heading fails
    /// here rather than leaving the report pointing nowhere.
    #[test]
    fn anchors_name_headings_of_the_methods_page() {
        let page = include_str!("../../../docs/methods.md");
        let anchors: Vec<String> = page
            .lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| {
                l.trim_start_matches('#')
                    .trim()
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect()
            })
            .collect();
        assert!(anchors.iter().any(|a| a == "findings"), "{anchors:?}");
        for (id, anchor) in ANCHORS {
            assert!(anchors.iter().any(|a| a == anchor), "finding {id}: no heading for #{anchor} in {anchors:?}");
        }
        assert_eq!(ANCHORS.map(|(id, _)| id), ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn verdicts() {
        assert_eq!(Verdict::from_checks(&[]), Verdict::NotEnoughData);
        assert_eq!(Verdict::from_checks(&[true, true]), Verdict::Holds);
        assert_eq!(Verdict::from_checks(&[true, false]), Verdict::DoesNotHold);
    }
}
