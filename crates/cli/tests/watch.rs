//! Watching and querying runs, on the real CIFAR-10 at toy size: every step is recorded in the
//! database and in TensorBoard events that agree with it; a log that is not a terminal gets
//! progress lines with images/s and ETAs; the report is re-rendered between the epochs of a
//! running sweep; the `final_results` view and the README's example queries answer; each
//! database's report has its own folder.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{data_root, infomax, text, workspace_root};
use infomax_runner::tensorboard::{read_scalars, Scalar};
use rusqlite::Connection;

/// Three epochs of ten steps of 64 images, k-NN on 200/100 images, a 2-epoch linear probe.
const TINY: &[&str] = &[
    "encoder.width=0.125",
    "projector.widths=[64, 64]",
    "train.train_images=640",
    "train.batch_size=64",
    "train.epochs=3",
    "eval.bank_images=200",
    "eval.test_images=100",
    "eval.linear_epochs=2",
];

fn reproduce_args(db: &Path, extra: &[&str]) -> Vec<String> {
    let smoke = workspace_root().join("experiments/smoke.toml");
    let mut a: Vec<String> = vec!["reproduce".into(), smoke.display().to_string(), "--profile".into(), "smoke".into()];
    a.extend(["--data-dir".into(), data_root().display().to_string(), "--db".into(), db.display().to_string()]);
    a.extend(["--no-progress".into(), "--log-every".into(), "0.2".into()]);
    for s in TINY {
        a.extend(["--set".into(), s.to_string()]);
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The event file of the only run under `root`.
fn event_file(root: &Path) -> PathBuf {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents.") {
                found.push(p);
            }
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

/// The ```sql blocks of the README's section `heading`.
fn readme_queries(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = readme.split(&format!("\n## {heading}\n")).nth(1).expect("the README section");
    let section = section.split("\n## ").next().unwrap();
    section.split("```sql\n").skip(1).map(|b| b.split("```").next().unwrap().to_string()).collect()
}

#[test]
fn steps_events_and_database_agree_and_the_report_follows_the_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("results.sqlite");
    let log = tmp.path().join("stderr.log");
    let mut child = common::command()
        .args(reproduce_args(&db, &[]))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The run's page as the sweep goes: the report is rendered into the database's folder.
    let page = tmp.path().join("run-1.html");
    let mut seen: BTreeSet<String> = BTreeSet::new();
    // Step counts seen in the database while the sweep ran: written within epochs (every
    // --log-every), not only at their ends (10 steps an epoch).
    let mut step_counts: BTreeSet<i64> = BTreeSet::new();
    let started = Instant::now();
    let status = loop {
        if let Ok(html) = std::fs::read_to_string(&page) {
            if let Some(at) = html.find("<dt>epochs</dt><dd>") {
                seen.insert(html[at + 19..].split('<').next().unwrap().to_string());
            }
        }
        let steps = Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT count(*) FROM steps", [], |r| r.get::<_, i64>(0)));
        if let Ok(n) = steps {
            step_counts.insert(n);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the sweep did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{stderr}");
    for epochs in ["0 of 3", "1 of 3", "2 of 3"] {
        assert!(seen.contains(epochs), "the run page showed {seen:?} while the sweep ran, not `{epochs}`");
    }
    assert!(step_counts.iter().any(|n| n % 10 != 0), "steps written only at epochs' ends: {step_counts:?}");

    // Progress lines in a log that is not a terminal.
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("run ETA")).collect();
    assert!(lines.len() >= 3, "{stderr}");
    for l in &lines {
        assert!(l.contains("img/s") && l.contains("elapsed") && l.contains("sweep ETA") && l.contains(" step "), "{l}");
    }

    let c = Connection::open(&db).unwrap();
    // Every step, with its terms; its epoch is the one it belongs to.
    let steps: Vec<(i64, i64, f64, f64)> = c
        .prepare("SELECT step, epoch, loss, lr FROM steps WHERE run_id = 1 ORDER BY step")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(steps.iter().map(|s| s.0).collect::<Vec<_>>(), (1..=30).collect::<Vec<_>>());
    assert!(steps.iter().all(|s| s.1 == (s.0 - 1) / 10 + 1), "{steps:?}");
    let terms: Vec<(i64, String, f64)> = c
        .prepare("SELECT step, name, value FROM step_terms WHERE run_id = 1 ORDER BY step, name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let names: BTreeSet<&str> = terms.iter().map(|t| t.1.as_str()).collect();
    assert!(names.contains("loss.invariance") && names.contains("diag.effective_rank"), "{names:?}");
    assert_eq!(terms.len(), 30 * names.len());
    // The warm-up is visible: the learning rate rises over the first steps.
    assert!(steps[0].3 < steps[3].3, "{steps:?}");

    // The events hold the same values (as TensorBoard's f32).
    let events = event_file(&tmp.path().join("results.tensorboard"));
    assert!(events.starts_with(tmp.path().join("results.tensorboard/smoke/smoke")), "{}", events.display());
    let scalars = read_scalars(&events).unwrap();
    let value = |step: i64, tag: &str| -> f32 {
        let found: Vec<&Scalar> = scalars.iter().filter(|s| s.step == step as u64 && s.tag == tag).collect();
        assert_eq!(found.len(), 1, "{tag} at step {step}");
        found[0].value
    };
    for (step, _, loss, lr) in &steps {
        assert_eq!(value(*step, "step/loss"), *loss as f32);
        assert_eq!(value(*step, "step/lr"), *lr as f32);
    }
    for (step, name, v) in &terms {
        assert_eq!(value(*step, &format!("step/{name}")), *v as f32, "{name}");
    }
    let evals: Vec<(i64, f64)> = c
        .prepare("SELECT epoch, top1 FROM evaluations WHERE run_id = 1 AND protocol = 'knn-cosine' ORDER BY epoch")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 3]);
    assert_eq!(value(0, "eval/knn200"), evals[0].1 as f32);
    assert_eq!(value(30, "eval/knn200"), evals[1].1 as f32);
    let epoch_loss: f64 =
        c.query_row("SELECT loss FROM epochs WHERE run_id = 1 AND epoch = 2", [], |r| r.get(0)).unwrap();
    assert_eq!(value(20, "epoch/loss"), epoch_loss as f32);

    // The final results, one row per metric; the linear probe has no k; the numbers as written.
    let finals: Vec<(String, f64, f64)> = c
        .prepare("SELECT metric, at_init, trained FROM final_results WHERE run_id = 1 ORDER BY metric")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let metrics: Vec<&str> = finals.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(metrics, ["knn200", "knn5", "linear", "linear-top5"]);
    assert_eq!((finals[0].1, finals[0].2), (evals[0].1, evals[1].1));
    let linear_k: Option<i64> =
        c.query_row("SELECT k FROM evaluations WHERE protocol = 'linear' LIMIT 1", [], |r| r.get(0)).unwrap();
    assert_eq!(linear_k, None);
    let as_written: i64 = c
        .query_row(
            "SELECT count(*) FROM runs WHERE json_extract(config_json, '$.augment.view_a.color_jitter.brightness') = 0.4",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(as_written, 1);
    let foreign_keys: i64 = {
        let store = infomax_runner::Store::open(&db).unwrap();
        store.connection().pragma_query_value(None, "foreign_keys", |r| r.get(0)).unwrap()
    };
    assert_eq!(foreign_keys, 1);
    // The README's example queries run and answer.
    let queries = readme_queries("Results database");
    assert!(queries.len() >= 3, "{queries:?}");
    for q in &queries {
        let mut s = c.prepare(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        let n = s.query_map([], |_| Ok(())).unwrap().count();
        assert!(n > 0, "no row from the README's query {q}");
    }

    // A second database in the same folder renders into a folder of its own.
    let index = std::fs::read_to_string(tmp.path().join("index.html")).unwrap();
    let other = tmp.path().join("lr-sweep.sqlite");
    let o = infomax(
        &reproduce_args(&other, &["--set", "train.epochs=1", "--no-tensorboard"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(tmp.path().join("lr-sweep/index.html").is_file());
    assert_eq!(std::fs::read_to_string(tmp.path().join("index.html")).unwrap(), index, "the first report is untouched");
    assert!(!tmp.path().join("lr-sweep.tensorboard").exists(), "--no-tensorboard writes no events");
}
