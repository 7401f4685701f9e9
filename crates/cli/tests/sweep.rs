//! Sweeps end to end on the real CIFAR-10 (tiny slices): a grid killed with SIGKILL at arbitrary
//! moments and re-run stores every run exactly once; shards merge into the same set of runs; a
//! diverging run is marked and the sweep goes on; `--dry-run` plans without training.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{data_root, infomax, text, workspace_root};
use rusqlite::Connection;

/// 2 methods × 2 datasets × 2 seeds at toy size: ResNet-18 width 0.125, 3 steps of 64 images per
/// epoch, 2 epochs, k-NN on 200/100 images, a 5-epoch linear probe.
const GRID: &str = r#"
[experiment]
name = "tiny-grid"
title = "a tiny sweep"
paper = "none"
reproduces = "that sweeps survive kills"

[base]
projector = { widths = [64, 32] }
encoder = { width = 0.125 }
train = { epochs = 2, batch_size = 64, train_images = 192 }
optimizer = { warmup_epochs = 0.5 }
eval = { bank_images = 200, test_images = 100, linear_epochs = 5 }

[grid]
method = ["vicreg", "simclr"]
dataset = ["cifar10", "cifar100"]
seed = [0, 1]

[profiles.smoke]
about = "toy"

[[reference]]
at = { method = "simclr", dataset = "cifar10" }
linear = 91.80
source = "W-MSE, Table 1"
"#;

/// A data root holding only CIFAR-10 (so CIFAR-100 is surely missing).
fn cifar10_only(dir: &Path) -> PathBuf {
    let root = dir.join("data");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(data_root().join("cifar-10-batches-bin"), root.join("cifar-10-batches-bin")).unwrap();
    root
}

fn args(file: &Path, data: &Path, db: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["reproduce", file.to_str().unwrap(), "--profile", "smoke", "--no-progress"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(["--data-dir", data.to_str().unwrap(), "--db", db.to_str().unwrap()].map(String::from));
    a.extend(["--out".to_string(), db.with_extension("html").display().to_string()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run(a: &[String]) -> std::process::Output {
    infomax(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Config hash → the statuses of its rows.
type RowsByHash = BTreeMap<String, Vec<String>>;
/// (run id, epoch, how often stored) of every epoch and evaluation.
type StoredCounts = Vec<(i64, i64, i64)>;

fn rows(db: &Path) -> (RowsByHash, StoredCounts) {
    let c = Connection::open(db).unwrap();
    let mut by_hash: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut s = c.prepare("SELECT config_hash, status FROM runs ORDER BY id").unwrap();
    for r in s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).unwrap() {
        let (h, st) = r.unwrap();
        by_hash.entry(h).or_default().push(st);
    }
    let mut s = c
        .prepare(
            "SELECT run_id, epoch, count(*) FROM evaluations GROUP BY run_id, epoch, protocol, k
             UNION ALL SELECT run_id, epoch, count(*) FROM epochs GROUP BY run_id, epoch",
        )
        .unwrap();
    let counts = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
    (by_hash, counts)
}

#[test]
fn a_sweep_killed_at_random_moments_stores_every_run_once_and_shards_merge_to_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10_only(tmp.path());
    let file = tmp.path().join("tiny-grid.toml");
    std::fs::write(&file, GRID).unwrap();

    // The plan, without training or creating a database.
    let db = tmp.path().join("killed.sqlite");
    let o = run(&args(&file, &data, &db, &["--dry-run"]));
    assert!(o.status.success(), "{}", text(&o));
    let plan = text(&o);
    assert!(plan.contains("8 runs over method × dataset × seed"), "{plan}");
    assert_eq!(plan.matches("skip: dataset not found").count(), 4, "{plan}");
    assert!(plan.contains("method=simclr dataset=cifar10 seed=1"), "{plan}");
    assert!(!db.exists(), "a dry run creates no database");

    // Kill the sweep at pseudo-random moments (a fixed LCG, so failures reproduce) until it ends.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut kills = 0;
    let started = Instant::now();
    loop {
        let mut child = common::command()
            .args(args(&file, &data, &db, &[]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let wait = Duration::from_millis(500 + (state >> 33) % 4000);
        let until = Instant::now() + wait;
        let mut ended = None;
        while Instant::now() < until {
            if let Some(status) = child.try_wait().unwrap() {
                ended = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match ended {
            Some(status) => {
                // 3: every run trained but CIFAR-100's, skipped (its dataset is not on disk).
                assert_eq!(status.code(), Some(3), "the sweep failed after {kills} kills");
                break;
            }
            None if kills < 6 => {
                child.kill().unwrap(); // SIGKILL: no chance to clean up
                child.wait().unwrap();
                kills += 1;
            }
            None => {
                assert_eq!(child.wait().unwrap().code(), Some(3), "the sweep failed after {kills} kills");
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(900), "the sweep never finished");
    }
    assert!(kills >= 1, "the sweep was killed at least once");
    let again = run(&args(&file, &data, &db, &[]));
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    assert!(
        text(&again)
            .contains("4 finished (4 of them already before or by another process), 0 diverged, 0 failed, 4 skipped"),
        "{}",
        text(&again)
    );

    let (by_hash, counts) = rows(&db);
    assert_eq!(by_hash.len(), 8, "{by_hash:?}");
    let finished = by_hash.values().filter(|s| *s == &vec!["finished".to_string()]).count();
    let skipped = by_hash.values().filter(|s| *s == &vec!["skipped".to_string()]).count();
    assert_eq!((finished, skipped), (4, 4), "each run one row: {by_hash:?}");
    assert!(counts.iter().all(|c| c.2 == 1), "an epoch or evaluation stored twice: {counts:?}");
    let c = Connection::open(&db).unwrap();
    let epochs: i64 = c.query_row("SELECT count(*) FROM epochs", [], |r| r.get(0)).unwrap();
    assert_eq!(epochs, 8, "2 epochs × 4 trained runs");
    let refs: f64 = c
        .query_row("SELECT value FROM reference_values WHERE experiment = 'tiny-grid' AND metric = 'linear'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(refs, 91.80);

    let status = infomax(&["status", "--db", db.to_str().unwrap()]);
    let st = text(&status);
    assert!(st.contains("finished (4)") && st.contains("skipped (4)") && st.contains("linear"), "{st}");

    // Two shards into two databases, merged: the same runs, each once; merging again adds nothing.
    let shard_dbs: Vec<PathBuf> = (1..=2).map(|i| tmp.path().join(format!("shard{i}.sqlite"))).collect();
    for (i, sdb) in shard_dbs.iter().enumerate() {
        let o = run(&args(&file, &data, sdb, &["--only", "dataset=cifar10", "--shard", &format!("{}/2", i + 1)]));
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("2 runs: 2 finished"), "{}", text(&o));
    }
    let merged = tmp.path().join("merged.sqlite");
    let m = |srcs: &[&PathBuf]| {
        let mut a = vec!["merge", "--db", merged.to_str().unwrap()];
        a.extend(srcs.iter().map(|p| p.to_str().unwrap()));
        infomax(&a)
    };
    let o = m(&[&shard_dbs[0], &shard_dbs[1]]);
    assert!(o.status.success() && text(&o).contains("2 runs copied"), "{}", text(&o));
    let o = m(&[&shard_dbs[0], &shard_dbs[1], &db]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 runs copied, 0 replaced (further along there), 2 kept"), "{}", text(&o));
    let (merged_rows, merged_counts) = rows(&merged);
    assert_eq!(merged_rows, by_hash, "the merged shards hold exactly the sweep's runs");
    assert!(merged_counts.iter().all(|c| c.2 == 1));
    let o = infomax(&["merge", "--db", merged.to_str().unwrap(), tmp.path().join("nope.sqlite").to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("nope.sqlite") && text(&o).contains("no such results database"));
    // A good source beside a corrupt one: nothing is merged, and the exit status says so.
    let fresh = tmp.path().join("fresh.sqlite");
    let corrupt = tmp.path().join("corrupt.sqlite");
    std::fs::write(&corrupt, b"not a database at all, just bytes that look nothing like SQLite").unwrap();
    let o =
        infomax(&["merge", "--db", fresh.to_str().unwrap(), shard_dbs[0].to_str().unwrap(), corrupt.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("corrupt.sqlite"), "{}", text(&o));
    assert!(text(&o).contains("nothing merged"), "{}", text(&o));
    assert!(rows(&fresh).0.is_empty(), "the good source was not merged alone");
}

#[test]
fn a_diverging_run_is_marked_and_the_sweep_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10_only(tmp.path());
    let file = tmp.path().join("diverge.toml");
    let text_file = GRID
        .replace(
            "method = [\"vicreg\", \"simclr\"]\ndataset = [\"cifar10\", \"cifar100\"]\nseed = [0, 1]",
            "\"optimizer.lr\" = [1e-3, 1e30]",
        )
        .replace("[base]\n", "[base]\nmethod = \"simclr\"\n")
        .replace("at = { method = \"simclr\", dataset = \"cifar10\" }", "at = { \"optimizer.lr\" = \"0.001\" }");
    std::fs::write(&file, text_file).unwrap();
    let db = tmp.path().join("r.sqlite");
    let o = run(&args(&file, &data, &db, &["--set", "train.epochs=1"]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("1 finished (0 of them already before or by another process), 1 diverged"), "{out}");
    let c = Connection::open(&db).unwrap();
    let rows: Vec<(String, Option<String>)> = c
        .prepare("SELECT status, status_detail FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows[0].0, "finished");
    assert_eq!(rows[1].0, "diverged");
    assert!(rows[1].1.as_deref().unwrap().starts_with("loss not finite at epoch 1"), "{rows:?}");
    // A diverged run is complete: the next call trains neither again and still reports it.
    let o = run(&args(&file, &data, &db, &["--set", "train.epochs=1"]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("1 finished (1 of them already before or by another process), 1 diverged"),
        "{}",
        text(&o)
    );
    let n: i64 = c.query_row("SELECT count(*) FROM runs", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2);
}

/// The weight-sharing experiment as shipped: its exclusions leave BYOL with shared weights only,
/// and a run with a deeper second branch (ResNet-34) trains and is evaluated on the first.
#[test]
fn weight_sharing_excludes_byol_and_trains_a_second_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10_only(tmp.path());
    let file = workspace_root().join("experiments/weight-sharing.toml");
    let db = tmp.path().join("r.sqlite");
    let o = run(&args(&file, &data, &db, &["--dry-run"]));
    let plan = text(&o);
    assert!(o.status.success() && plan.contains("13 runs over method × branches"), "{plan}");
    assert!(plan.contains("method=byol branches=shared") && !plan.contains("method=byol branches=different"), "{plan}");
    let tiny = [
        "--only",
        "method=vicreg",
        "--only",
        "branches=different-arch-deeper",
        "--set",
        "encoder.width=0.125",
        "--set",
        "projector.widths=[64, 64]",
        "--set",
        "train.train_images=128",
        "--set",
        "train.batch_size=64",
        "--set",
        "eval.bank_images=200",
        "--set",
        "eval.test_images=100",
        "--set",
        "eval.linear_epochs=5",
    ];
    let o = run(&args(&file, &data, &db, &tiny));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 runs: 1 finished"), "{}", text(&o));
    let c = Connection::open(&db).unwrap();
    let (config, grid): (String, String) =
        c.query_row("SELECT config_json, grid_json FROM runs", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["branch_b"]["encoder"]["arch"], "resnet34");
    assert_eq!(config["branch_b"]["encoder"]["width"], 0.125, "the second branch inherits the --set width");
    assert_eq!(grid, r#"{"branches":"different-arch-deeper","method":"vicreg"}"#);
    let evals: i64 = c.query_row("SELECT count(*) FROM evaluations", [], |r| r.get(0)).unwrap();
    assert_eq!(evals, 6);
    let checkpoint = std::fs::read_dir(db.with_extension("checkpoints")).unwrap().next().unwrap().unwrap().path();
    let tensors = std::fs::read(checkpoint.join("epoch-1.safetensors")).unwrap();
    let header = String::from_utf8_lossy(&tensors[..tensors.len().min(200_000)]);
    assert!(header.contains("online/branch_b.encoder.layer3.5.conv2.weight"), "the second branch is checkpointed");
}

/// `export-encoder` writes the trained encoder under torchvision's names: 20 convolutions and 20
/// BatchNorms (weight, bias, running mean and variance, num_batches_tracked) for ResNet-18 —
/// `resnet18().state_dict()` without `fc` — with the run in the metadata.
#[test]
fn export_encoder_writes_torchvision_names() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10_only(tmp.path());
    let db = tmp.path().join("r.sqlite");
    let smoke = workspace_root().join("experiments/smoke.toml");
    let tiny = [
        "--set",
        "encoder.width=0.125",
        "--set",
        "projector.widths=[64, 64]",
        "--set",
        "train.train_images=128",
        "--set",
        "train.batch_size=64",
        "--set",
        "train.epochs=1",
        "--set",
        "eval.bank_images=200",
        "--set",
        "eval.test_images=100",
        "--set",
        "eval.linear_epochs=2",
    ];
    assert!(run(&args(&smoke, &data, &db, &tiny)).status.success());
    let out = tmp.path().join("enc/encoder.safetensors");
    let o = infomax(&["export-encoder", "1", "--out", out.to_str().unwrap(), "--db", db.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("120 tensors of a resnet18 at width 0.125") && text(&o).contains("epoch 1/1"),
        "{}",
        text(&o)
    );
    let bytes = std::fs::read(&out).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let names: Vec<&String> = header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").collect();
    assert_eq!(names.len(), 120);
    for want in [
        "conv1.weight",
        "bn1.running_mean",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "layer4.1.bn2.bias",
    ] {
        assert!(names.iter().any(|n| *n == want), "{want} missing");
    }
    assert!(!names.iter().any(|n| n.contains("projector") || n.starts_with("fc")));
    assert_eq!(header["conv1.weight"]["shape"], serde_json::json!([8, 3, 3, 3]));
    assert_eq!(header["bn1.num_batches_tracked"]["dtype"], "I64");
    let meta = &header["__metadata__"];
    assert_eq!((meta["format"].as_str(), meta["infomax.method"].as_str()), (Some("pt"), Some("vicreg")));
    // By hash prefix too; bad references are named.
    let hash: String =
        Connection::open(&db).unwrap().query_row("SELECT config_hash FROM runs", [], |r| r.get(0)).unwrap();
    let o = infomax(&["export-encoder", &hash[..8], "--out", out.to_str().unwrap(), "--db", db.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = infomax(&["export-encoder", "7", "--out", out.to_str().unwrap(), "--db", db.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("no run with id 7"), "{}", text(&o));
}

/// A ResNet-50 trains and exports under torchvision's `resnet50()` names: 318 tensors (its
/// state_dict without `fc`), the bottlenecks' third convolutions and BatchNorms among them.
#[test]
fn a_resnet50_trains_and_exports_under_torchvisions_names() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10_only(tmp.path());
    let db = tmp.path().join("r.sqlite");
    let smoke = workspace_root().join("experiments/smoke.toml");
    let tiny = [
        "--set",
        "encoder.arch=\"resnet50\"",
        "--set",
        "encoder.width=0.125",
        "--set",
        "projector.widths=[64, 64]",
        "--set",
        "train.train_images=64",
        "--set",
        "train.batch_size=32",
        "--set",
        "train.epochs=1",
        "--set",
        "eval.bank_images=200",
        "--set",
        "eval.test_images=50",
        "--set",
        "eval.linear_epochs=2",
    ];
    let o = run(&args(&smoke, &data, &db, &tiny));
    assert!(o.status.success(), "{}", text(&o));
    let out = tmp.path().join("enc/encoder.safetensors");
    let o = infomax(&["export-encoder", "1", "--out", out.to_str().unwrap(), "--db", db.to_str().unwrap()]);
    assert!(o.status.success() && text(&o).contains("318 tensors of a resnet50 at width 0.125"), "{}", text(&o));
    let bytes = std::fs::read(&out).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["layer1.0.conv3.weight"]["shape"], serde_json::json!([32, 8, 1, 1]));
    assert_eq!(header["layer4.2.bn3.running_var"]["shape"], serde_json::json!([256]));
    assert_eq!(header["layer1.0.downsample.0.weight"]["shape"], serde_json::json!([32, 8, 1, 1]));
    assert_eq!(header["__metadata__"]["infomax.arch"], "resnet50");
}

/// Two runs of one cell that differ only by `--set train.epochs` are two lines in `infomax
/// status`, each naming its id and hash prefix; the second shows the field in which it differs
/// from the cell's plan (the first recorded), the first none. `export-encoder` takes either
/// name as printed.
#[test]
fn status_tells_runs_of_one_cell_apart_and_export_encoder_takes_what_it_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10_only(tmp.path());
    let db = tmp.path().join("r.sqlite");
    let smoke = workspace_root().join("experiments/smoke.toml");
    for epochs in [1, 2] {
        let mut tiny: Vec<String> = [
            "encoder.width=0.125",
            "projector.widths=[64, 64]",
            "train.train_images=128",
            "train.batch_size=64",
            "eval.bank_images=200",
            "eval.test_images=100",
            "eval.linear_epochs=2",
        ]
        .iter()
        .flat_map(|s| ["--set".to_string(), s.to_string()])
        .collect();
        tiny.extend(["--set".to_string(), format!("train.epochs={epochs}")]);
        let o = run(&args(&smoke, &data, &db, &tiny.iter().map(String::as_str).collect::<Vec<_>>()));
        assert!(o.status.success(), "{}", text(&o));
    }
    let hashes: Vec<String> = Connection::open(&db)
        .unwrap()
        .prepare("SELECT config_hash FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(hashes.len(), 2);

    let o = infomax(&["status", "--db", db.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let st = text(&o);
    let lines: Vec<&str> = st.lines().filter(|l| l.contains("smoke/smoke")).collect();
    assert_eq!(lines.len(), 2, "{st}");
    assert_ne!(lines[0], lines[1], "{st}");
    let names = |line: &str| line.split_whitespace().take(2).map(String::from).collect::<Vec<_>>();
    assert_eq!(names(lines[0]), ["#1", &hashes[0][..8]], "{st}");
    assert_eq!(names(lines[1]), ["#2", &hashes[1][..8]], "{st}");
    assert!(lines[0].contains("seed=0  epochs 1/1"), "the first run is its cell's plan: {st}");
    assert!(lines[1].contains("seed=0  train.epochs=2  epochs 2/2"), "{st}");

    let out = tmp.path().join("encoder.safetensors");
    for (name, id) in [(names(lines[0])[1].clone(), 1), (names(lines[1])[0].clone(), 2)] {
        let o = infomax(&["export-encoder", &name, "--out", out.to_str().unwrap(), "--db", db.to_str().unwrap()]);
        assert!(o.status.success() && text(&o).contains(&format!("run {id} (finished")), "{name}: {}", text(&o));
    }

    // The report and compare keep them apart too: never one mean over the two budgets.
    let html = tmp.path().join("html");
    let o = infomax(&["report", "--db", db.to_str().unwrap(), "--out", html.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let page = std::fs::read_to_string(html.join("experiment-smoke.html")).unwrap();
    assert!(page.contains("· train.epochs=2"), "the variant has its own row");
    assert!(!page.contains("(n=2)") && !page.contains("(2)</"), "no cell pools the two runs");
    let o = infomax(&["compare", "--metric", "knn200", "--db", db.to_str().unwrap(), "--out", html.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let table = text(&o);
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("vicreg")).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows.iter().all(|r| r.contains("(1)")) && rows[1].contains("train.epochs=2"), "{table}");
}

/// Three `reproduce` processes started together on one new database over a 4-run sweep: the
/// schema is created once, each run is trained by exactly one of them (one row, its epochs and
/// evaluations stored once, finished), and every process exits 0, having waited for the runs
/// the others trained.
#[test]
fn three_processes_on_one_database_train_each_run_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10_only(tmp.path());
    let file = tmp.path().join("grid.toml");
    std::fs::write(&file, GRID).unwrap();
    let db = tmp.path().join("shared.sqlite");
    let children: Vec<std::process::Child> = (0..3)
        .map(|i| {
            let mut a = args(&file, &data, &db, &["--only", "dataset=cifar10", "--no-tensorboard"]);
            // Each process its own report folder (the pages are not what is tested here).
            let out = a.iter().position(|x| x == "--out").unwrap() + 1;
            a[out] = tmp.path().join(format!("html{i}")).display().to_string();
            common::command().args(&a).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let mut trained_here = 0;
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let out = text(&o);
        let line = out.lines().find(|l| l.contains("4 runs: ")).unwrap_or_else(|| panic!("{out}"));
        eprintln!("{line}");
        assert!(line.contains("4 finished ("), "{line}");
        let elsewhere: usize = line.split("4 finished (").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        trained_here += 4 - elsewhere;
    }
    assert_eq!(trained_here, 4, "each run trained by exactly one process");
    let (by_hash, counts) = rows(&db);
    assert_eq!(by_hash.len(), 4);
    assert!(by_hash.values().all(|s| s == &["finished"]), "{by_hash:?}");
    assert!(counts.iter().all(|c| c.2 == 1), "every epoch and evaluation stored once: {counts:?}");
    assert_eq!(counts.iter().filter(|c| c.1 > 0).count() % 4, 0, "{counts:?}");
}
