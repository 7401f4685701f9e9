//! End to end on the real CIFAR-10 (a small slice): `infomax reproduce smoke` trains, evaluates,
//! stores and renders; a second call trains nothing; bad input fails clearly and writes nothing.
//!
//! Needs the dataset: `INFOMAX_DATA` (CI points it at `../shared/datasets`), else `./datasets`.

mod common;

use std::path::Path;

use common::{data_root, infomax, text};
use rusqlite::Connection;

/// The smoke experiment shrunk to a slice: 256 training images, 4 steps of 64, a k-NN bank of
/// 500 and 200 test images. It checks the plumbing end to end, not that the model learns.
const SLICE: &[&str] = &[
    "--set",
    "train.epochs=1",
    "--set",
    "train.train_images=256",
    "--set",
    "train.batch_size=64",
    "--set",
    "projector.widths=[256, 256]",
    "--set",
    "eval.bank_images=500",
    "--set",
    "eval.test_images=200",
    "--no-progress",
];

/// Every other method trains from its own experiment file on a tiny real slice (2 steps of 64,
/// ResNet-18 at width 0.125, small heads), with its terms and collapse diagnostics stored; W-MSE
/// with 4 views and BYOL and SimSiam with the variance term on top.
#[test]
fn every_method_trains_from_its_experiment_file() {
    let data = data_root();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("results.sqlite");
    let out = tmp.path().join("html");
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("barlow-twins", &["projector.widths=[64, 64, 64]"], &["loss.off_diagonal", "loss.on_diagonal"]),
        ("w-mse", &["projector.widths=[64, 16]", "wmse.w_size=32", "train.views=4"], &[]),
        ("simclr", &["projector.widths=[64, 16]"], &[]),
        (
            "byol",
            &[
                "projector.widths=[64, 16]",
                "predictor.widths=[64, 16]",
                "variance_reg={coeff=1.0, gamma=1.0, eps=1e-4}",
            ],
            &["loss.variance_reg"],
        ),
        ("simsiam", &["projector.widths=[64, 64]", "predictor.widths=[16, 64]"], &[]),
        // solo-learn's CIFAR recipe: its LARS, its stem padded by 2, the loss scaled by 0.1.
        (
            "barlow-twins",
            &[
                "projector.widths=[64, 64, 64]",
                "optimizer.lars_variant=\"solo-learn\"",
                "optimizer.eta=0.02",
                "encoder.stem_padding=2",
                "barlow_twins.scale_loss=0.1",
            ],
            &["loss.off_diagonal", "loss.on_diagonal"],
        ),
        // bf16 products (rounded on the CPU as a GPU's bf16 products would be).
        ("simclr", &["projector.widths=[64, 16]", "train.precision=\"bf16\""], &[]),
    ];
    for (i, (experiment, sets, method_terms)) in cases.iter().enumerate() {
        let mut args = vec!["reproduce", experiment, "--profile", "smoke", "--data-dir", data.to_str().unwrap()];
        args.extend(["--db", db.to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-progress"]);
        let mut all = vec![
            "train.epochs=1",
            "train.train_images=128",
            "train.batch_size=64",
            "encoder.width=0.125",
            "eval.bank_images=200",
            "eval.test_images=100",
        ];
        all.extend_from_slice(sets);
        for s in &all {
            args.extend(["--set", s]);
        }
        let o = infomax(&args);
        assert!(o.status.success(), "{experiment}: {}", text(&o));
        let run_id = i as i64 + 1;
        assert!(
            text(&o).contains("1 runs: 1 finished (0 of them already before or by another process)"),
            "{}",
            text(&o)
        );
        let c = Connection::open(&db).unwrap();
        let method: String = c.query_row("SELECT method FROM runs WHERE id = ?1", [run_id], |r| r.get(0)).unwrap();
        assert_eq!(&method, experiment);
        let mut terms: Vec<(String, f64)> = c
            .prepare("SELECT name, value FROM epoch_terms WHERE run_id = ?1 ORDER BY name")
            .unwrap()
            .query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        terms.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<&str> = terms.iter().map(|t| t.0.as_str()).collect();
        let mut want = vec!["diag.effective_rank", "diag.embedding_std"];
        want.extend_from_slice(method_terms);
        assert_eq!(names, want, "{experiment}");
        let rank = terms[0].1;
        assert!(rank > 1.0 && rank.is_finite(), "{experiment}: effective rank {rank}");
        let evals: i64 =
            c.query_row("SELECT count(*) FROM evaluations WHERE run_id = ?1", [run_id], |r| r.get(0)).unwrap();
        assert_eq!(evals, 6, "{experiment}: two k-NN and the linear probe, before and after");
    }
    // The bf16 run is its own run: its precision is in its configuration (and hash), while f32
    // runs leave the default out.
    let c = Connection::open(&db).unwrap();
    let configs: Vec<String> = c
        .prepare("SELECT config_json FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(configs.last().unwrap().contains(r#""precision":"bf16""#), "{}", configs.last().unwrap());
    let solo = &configs[configs.len() - 2];
    for field in [r#""lars_variant":"solo-learn""#, r#""stem_padding":2"#, r#""scale_loss":0.1"#] {
        assert!(solo.contains(field), "{field}: {solo}");
    }
    assert!(configs[..configs.len() - 1].iter().all(|c| !c.contains("precision") && !c.contains("device")));
}

#[test]
fn smoke_experiment_on_a_real_slice_stores_rows_and_renders_the_table() {
    let data = data_root();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("results.sqlite");
    let out = tmp.path().join("html");
    let mut args = vec!["reproduce", "smoke", "--profile", "smoke", "--data-dir", data.to_str().unwrap()];
    args.extend(["--db", db.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    args.extend(SLICE);
    let first = infomax(&args);
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("1 runs: 1 finished (0 of them already before or by another process)"),
        "{}",
        text(&first)
    );

    let c = Connection::open(&db).unwrap();
    let (method, dataset, profile, status, hash, json, version): (
        String,
        String,
        String,
        String,
        String,
        String,
        String,
    ) = c
        .query_row(
            "SELECT method, dataset, profile, status, config_hash, config_json, code_version FROM runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
        )
        .unwrap();
    assert_eq!(
        (method.as_str(), dataset.as_str(), profile.as_str(), status.as_str()),
        ("vicreg", "cifar10", "smoke", "finished")
    );
    assert_eq!(hash.len(), 64);
    let cfg: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(cfg["train"]["train_images"], 256);
    assert_eq!(cfg["encoder"]["width"], 0.25);
    assert!(version.starts_with("infomax "), "{version}");

    let (epoch, loss, ips): (i64, f64, f64) = c
        .query_row("SELECT epoch, loss, images_per_second FROM epochs", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    assert_eq!(epoch, 1);
    assert!(loss.is_finite() && loss > 0.0 && ips > 0.0);
    let mut terms: Vec<String> = c
        .prepare("SELECT name FROM epoch_terms ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    terms.sort();
    assert_eq!(
        terms,
        ["diag.effective_rank", "diag.embedding_std", "loss.covariance", "loss.invariance", "loss.variance"]
    );

    // (epoch, protocol, k, top-1, top-5, bank size, test size)
    type Evaluation = (i64, String, Option<i64>, f64, f64, i64, i64);
    let evals: Vec<Evaluation> = c
        .prepare(
            "SELECT epoch, protocol, k, top1, top5, bank_size, test_size FROM evaluations ORDER BY epoch, protocol",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let keys: Vec<(i64, &str, Option<i64>)> = evals.iter().map(|e| (e.0, e.1.as_str(), e.2)).collect();
    assert_eq!(
        keys,
        [
            (0, "knn-cosine", Some(200)),
            (0, "knn-euclidean", Some(5)),
            (0, "linear", None),
            (1, "knn-cosine", Some(200)),
            (1, "knn-euclidean", Some(5)),
            (1, "linear", None)
        ]
    );
    for e in &evals {
        assert!((0.0..=100.0).contains(&e.3) && e.3 <= e.4, "{e:?}");
        assert_eq!((e.5, e.6), (500, 200));
    }
    // 10 balanced classes: a 5-way top-5 far above chance even for a random encoder.
    assert!(evals.iter().all(|e| e.4 > 30.0), "{evals:?}");

    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("<td>vicreg</td>") && html.contains("<td>cifar10</td>") && html.contains("<td>smoke</td>"));
    let init = format!("{:.2}", evals[0].3);
    let trained = format!("{:.2}", evals[3].3);
    let linear = format!("{:.2}", evals[5].3);
    assert!(html.contains(&linear), "report shows the linear probe");
    assert!(html.contains(&init) && html.contains(&trained), "report shows the stored 200-NN numbers");
    assert!(html.contains("1 / 1"), "epochs done / planned");

    // Idempotent: the same configuration is not trained again.
    let second = infomax(&args);
    assert!(second.status.success(), "{}", text(&second));
    assert!(text(&second).contains("already finished"), "{}", text(&second));
    let runs: i64 = c.query_row("SELECT count(*) FROM runs", [], |r| r.get(0)).unwrap();
    assert_eq!(runs, 1);

    // `infomax report` alone re-renders from the database.
    std::fs::remove_file(out.join("index.html")).unwrap();
    let report = infomax(&["report", "--db", db.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(report.status.success(), "{}", text(&report));
    assert!(std::fs::read_to_string(out.join("index.html")).unwrap().contains(&trained));
    // Without --out the pages go beside the database they show, never into ./reports.
    let beside = infomax(&["report", "--db", db.to_str().unwrap()]);
    assert!(beside.status.success(), "{}", text(&beside));
    assert!(std::fs::read_to_string(tmp.path().join("index.html")).unwrap().contains(&trained));
}

/// A run whose dataset is not on disk is recorded as skipped, with the command that fetches it;
/// the exit status says work was not done.
#[test]
fn a_missing_dataset_skips_the_run_with_the_fetch_command() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.sqlite");
    let empty = tmp.path().join("no-data");
    std::fs::create_dir_all(&empty).unwrap();
    let mut args = vec!["reproduce", "smoke", "--data-dir", empty.to_str().unwrap(), "--db", db.to_str().unwrap()];
    args.extend(["--out", tmp.path().to_str().unwrap()]);
    args.extend(SLICE);
    let o = infomax(&args);
    assert_eq!(o.status.code(), Some(3), "a skipped run is work not done: {}", text(&o));
    let msg = text(&o);
    assert!(msg.contains("skipped") && msg.contains("infomax datasets fetch cifar10"), "{msg}");
    // The output ends with what was skipped and why.
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("skipped") && last.contains("dataset not found") && last.contains("--fetch"), "{stdout}");
    let rows: Vec<(String, String)> = Connection::open(&db)
        .unwrap()
        .prepare("SELECT status, status_detail FROM runs")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "skipped");
    assert!(rows[0].1.starts_with("dataset not found") && rows[0].1.contains("cifar-10-batches-bin"), "{rows:?}");
    // A second call records the skip once, not twice.
    assert_eq!(infomax(&args).status.code(), Some(3));
    let n: i64 = Connection::open(&db).unwrap().query_row("SELECT count(*) FROM runs", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
    // `infomax export` lists it: one row, no evaluation.
    let csv = infomax(&["export", "--db", db.to_str().unwrap()]);
    assert!(csv.status.success(), "{}", text(&csv));
    let csv = String::from_utf8_lossy(&csv.stdout).to_string();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.lines().nth(1).unwrap().contains(",skipped,dataset not found"), "{csv}");
    // … and `--out FILE` writes the same table to a file.
    let file = tmp.path().join("all.csv");
    let o = infomax(&["export", "--db", db.to_str().unwrap(), "--out", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), csv);
}

#[test]
fn bad_overrides_and_unknown_experiments_name_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.sqlite");
    let o = infomax(&["reproduce", "smoke", "--db", db.to_str().unwrap(), "--set", "train.epoch=3"]);
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(msg.contains("experiments/smoke.toml") && msg.contains("train") && msg.contains("epoch"), "{msg}");
    // An output folder that cannot be written fails before any training, and before the
    // database exists.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let out = file.join("report");
    let o = infomax(&["reproduce", "smoke", "--db", db.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("--out") && text(&o).contains("cannot write there"),
        "{}",
        text(&o)
    );
    assert!(!db.exists(), "nothing was written");
    let o = infomax(&["reproduce", "nonesuch", "--db", db.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no experiment named `nonesuch`") && text(&o).contains("smoke"), "{}", text(&o));
    let o = infomax(&["reproduce", "smoke", "--profile", "huge", "--db", db.to_str().unwrap()]);
    assert!(text(&o).contains("no profile `huge`") && text(&o).contains("paper"), "{}", text(&o));
}

/// `--device`: a malformed one is refused before anything runs; `cuda` on a CPU-only build fails
/// the run before it has a row, saying how to build with CUDA (CI's build has no CUDA).
#[test]
fn devices_are_checked_before_a_run_starts() {
    let data = data_root();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.sqlite");
    let base = ["reproduce", "smoke", "--db", db.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    let o = infomax(&[&base[..], &["--device", "gpu"]].concat());
    assert!(!o.status.success());
    assert!(text(&o).contains("--device gpu") && text(&o).contains("cuda:N"), "{}", text(&o));
    let o =
        infomax(&[&base[..], &["--device", "cuda:1", "--no-progress", "--out", tmp.path().to_str().unwrap()]].concat());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--device cuda:1") && text(&o).contains("just build-cuda"), "{}", text(&o));
    let c = Connection::open(&db).unwrap();
    let rows: i64 = c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0, "a run that cannot open its device has no row");
    let o = infomax(&["bench", "train-step", "--device", "cuda", "--steps", "1"]);
    assert!(!o.status.success() && text(&o).contains("just build-cuda"), "{}", text(&o));
}

#[test]
fn bench_eval_prints_the_json_object() {
    let a = ["bench", "eval", "--width", "0.125", "--bank", "400", "--test", "100", "--batch", "64", "--json"];
    let o = infomax(&a);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["bank"].as_u64(), v["test"].as_u64(), v["dataset"].as_str()),
        (Some(400), Some(100), Some("cifar10"))
    );
    for key in ["images_per_second", "feature_seconds", "knn_seconds", "peak_rss_bytes"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
    let o = infomax(&["bench", "eval", "--bank", "100"]);
    assert!(!o.status.success() && text(&o).contains("--bank at least 200"), "{}", text(&o));
    // Sizes beyond this machine's memory are refused before anything is allocated.
    let o = infomax(&["bench", "eval", "--bank", "100000000000000"]);
    assert!(!o.status.success() && text(&o).contains("more than this machine's"), "{}", text(&o));
    let o = infomax(&["bench", "train-step", "--batch", "100000000000", "--steps", "1"]);
    assert!(!o.status.success() && text(&o).contains("--batch 100000000000 --views 2: needs"), "{}", text(&o));
}

#[test]
fn bench_train_step_prints_the_json_object() {
    let o = infomax(&[
        "bench",
        "train-step",
        "--width",
        "0.125",
        "--batch",
        "16",
        "--steps",
        "1",
        "--projector",
        "64,64",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["images_per_second", "seconds_per_step", "peak_rss_bytes", "width", "batch"] {
        assert!(v.get(key).is_some(), "{key} missing in {v}");
    }
    assert_eq!(v["batch"], 16);
    assert!(v["images_per_second"].as_f64().unwrap() > 0.0 && v["peak_rss_bytes"].as_u64().unwrap() > 0);
}

/// A step's configuration is the method's defaults and the flags; anything else is set with
/// `--set`, never changed behind the user's back: W-MSE's 128-row sub-batches do not divide a
/// batch of 16, and the step says so until `wmse.w_size` is set.
#[test]
fn bench_train_step_takes_fields_of_its_configuration_from_set() {
    let args = ["bench", "train-step", "--method", "w-mse", "--width", "0.125", "--batch", "16", "--steps", "1"];
    let args = [&args[..], &["--projector", "64,8", "--json"]].concat();
    let o = infomax(&args);
    assert!(!o.status.success() && text(&o).contains("wmse.w_size"), "{}", text(&o));
    let o = infomax(&[&args[..], &["--set", "wmse.w_size=16"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["arch"], "resnet18");
    // The architecture too: a ResNet-50 step says it is one.
    let fifty = ["--set", "wmse.w_size=16", "--set", "encoder.arch=\"resnet50\""];
    let o = infomax(&[&args[..], &fifty].concat());
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["arch"], "resnet50", "{}", text(&o));
    let o = infomax(&[&args[..], &["--set", "wmse.w_sise=16"]].concat());
    assert!(!o.status.success() && text(&o).contains("w_sise"), "{}", text(&o));
}

/// `--trace DIR` writes what `tools/step_reference_torch.py` replays: the initial weights, the
/// views, the first step's gradients, the final online and target weights and every loss.
#[test]
fn bench_train_step_traces_byol_for_another_framework() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    let o = infomax(&[
        "bench",
        "train-step",
        "--method",
        "byol",
        "--width",
        "0.125",
        "--batch",
        "8",
        "--warmup",
        "1",
        "--steps",
        "2",
        "--trace",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("trace.json")).unwrap()).unwrap();
    let losses = trace["losses"].as_array().unwrap();
    assert_eq!(losses.len(), 3, "warm-up and timed steps: {trace}");
    assert!(losses.iter().all(|l| l.as_f64().unwrap().is_finite()));
    assert_eq!(trace["config"]["method"], "byol");
    assert_eq!(trace["target_ema_rate"], 0.99);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let (views, initial, grads, fin, target) = (
        read("views.safetensors"),
        read("initial.safetensors"),
        read("gradients0.safetensors"),
        read("final.safetensors"),
        read("final_target.safetensors"),
    );
    let views = safetensors::SafeTensors::deserialize(&views).unwrap();
    assert_eq!(views.tensor("view1").unwrap().shape(), &[8, 3, 32, 32]);
    let (initial, grads) = (
        safetensors::SafeTensors::deserialize(&initial).unwrap(),
        safetensors::SafeTensors::deserialize(&grads).unwrap(),
    );
    let (fin, target) =
        (safetensors::SafeTensors::deserialize(&fin).unwrap(), safetensors::SafeTensors::deserialize(&target).unwrap());
    let name = "encoder.layer1.0.conv1.weight";
    assert_eq!(grads.tensor(name).unwrap().shape(), initial.tensor(name).unwrap().shape());
    assert!(initial.names().iter().any(|n| n.ends_with("running_var")), "running statistics are traced");
    assert!(grads.names().iter().all(|n| !n.contains("running_")), "only trainable variables have gradients");
    assert_ne!(fin.tensor(name).unwrap().data(), initial.tensor(name).unwrap().data(), "the steps moved it");
    let (t, f, i) = (target.tensor(name).unwrap(), fin.tensor(name).unwrap(), initial.tensor(name).unwrap());
    assert!(t.data() != i.data() && t.data() != f.data(), "the target moved part of the way");
    assert!(target.names().iter().all(|n| !n.starts_with("predictor.")), "the target has no predictor");
}

#[test]
fn bench_conv_prints_every_resnet18_shape_for_both_kernels() {
    for conv in ["im2col", "candle"] {
        let o = infomax(&[
            "bench",
            "conv",
            "--width",
            "0.125",
            "--batch",
            "4",
            "--repetitions",
            "1",
            "--conv",
            conv,
            "--json",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let rows = v["rows"].as_array().unwrap();
        // Stem, layer1, and per later stage the stride-2 3×3 with its 1×1 shortcut, the 3×3s.
        assert_eq!(rows.len(), 2 + 3 * 2);
        assert_eq!(rows.iter().map(|r| r["count"].as_u64().unwrap()).sum::<u64>(), 1 + 4 + 3 * (1 + 3));
        assert_eq!((rows[0]["channels"].as_u64(), rows[0]["out_channels"].as_u64()), (Some(3), Some(8)));
        assert_eq!(rows[7]["channels"].as_u64(), Some(64));
        let with_shortcut: Vec<usize> = (0..rows.len()).filter(|&i| rows[i]["shortcut"] == true).collect();
        assert_eq!(with_shortcut, [2, 4, 6], "each stage's first convolution with its shortcut");
        for (i, r) in rows.iter().enumerate() {
            assert!(r["forward_gflops"].as_f64().unwrap() > 0.0 && r["backward_gflops"].as_f64().unwrap() > 0.0);
            // Training computes no input gradient for the stem: the images need none.
            assert_eq!(r["input_grad_gflops"].is_number(), conv == "im2col" && i > 0, "{r}");
        }
        assert!(v["network_forward_gflops"].as_f64().unwrap() > 0.0);
    }
    let o = infomax(&["bench", "conv", "--batch", "0"]);
    assert!(!o.status.success() && text(&o).contains("--batch"), "{}", text(&o));
    // bf16 says which products ran: the CPU's own where it has AVX512-BF16, else f32.
    let args = ["bench", "conv", "--width", "0.125", "--batch", "4", "--repetitions", "1", "--precision", "bf16"];
    let o = infomax(&[&args[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let own = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains(" avx512_bf16"));
    let expected = if own { "bf16 products (AVX512-BF16)" } else { "f32 products" };
    assert_eq!(v["products"], expected);
}

/// A run on another dataset: a CIFAR-100 fixture in the official layout (random pixels, so the
/// model learns nothing; this checks the wiring), with the FAIR augmentations, a max-pool stem
/// and an evaluation transform that resizes and centre-crops, as STL-10's does.
#[test]
fn a_cifar100_run_with_fair_augmentations_and_an_eval_transform() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, n) in [("train.bin", 50_000usize), ("test.bin", 10_000)] {
        let mut bytes = vec![0u8; n * 3074];
        for (r, rec) in bytes.chunks_mut(3074).enumerate() {
            rec[0] = (r % 20) as u8;
            rec[1] = (r % 100) as u8;
            rec[2..].iter_mut().enumerate().for_each(|(i, p)| *p = ((i * 31 + r * 7) % 251) as u8);
        }
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    let names = |n: usize| (0..n).map(|i| format!("c{i}\n")).collect::<String>();
    std::fs::write(dir.join("fine_label_names.txt"), names(100)).unwrap();
    std::fs::write(dir.join("coarse_label_names.txt"), names(20)).unwrap();
    let db = tmp.path().join("results.sqlite");
    // simclr.toml leaves the normalisation to the dataset's default (smoke.toml sets solo-learn's
    // CIFAR-10 statistics, which a changed dataset would keep).
    let mut args =
        vec!["reproduce", "simclr", "--data-dir", tmp.path().to_str().unwrap(), "--db", db.to_str().unwrap()];
    let out = tmp.path().join("html");
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend_from_slice(SLICE);
    for s in [
        "dataset=cifar100",
        "augment.preset=fair",
        "encoder.width=0.125",
        "encoder.max_pool=true",
        "augment.eval_resize=36",
        "augment.eval_crop=32",
        "train.train_images=128",
    ] {
        args.extend(["--set", s]);
    }
    let o = infomax(&args);
    assert!(o.status.success(), "{}", text(&o));
    let c = Connection::open(&db).unwrap();
    let (dataset, config): (String, String) =
        c.query_row("SELECT dataset, config_json FROM runs WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(dataset, "cifar100");
    let cfg: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(cfg["augment"]["preset"], "fair");
    assert_eq!(cfg["augment"]["mean"][0].as_f64().unwrap() as f32, 0.5071);
    let top1: f64 =
        c.query_row("SELECT top1 FROM evaluations WHERE run_id = 1 AND epoch = 1 AND k = 5", [], |r| r.get(0)).unwrap();
    assert!((0.0..=100.0).contains(&top1));
}

#[test]
fn bench_augment_prints_views_per_second() {
    let o = infomax(&[
        "bench",
        "augment",
        "--dataset",
        "stl10",
        "--preset",
        "fair",
        "--batch",
        "8",
        "--batches",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["stored_side"].as_u64(), v["view_side"].as_u64()), (Some(96), Some(64)));
    assert!(v["views_per_second"].as_f64().unwrap() > 0.0);
    let o = infomax(&["bench", "augment", "--preset", "simclr"]);
    assert!(!o.status.success() && text(&o).contains("expected wmse or fair"), "{}", text(&o));
    // The table line names the machine and the instruction sets its kernels can use.
    let o = infomax(&["bench", "augment", "--batch", "4", "--batches", "1"]);
    let said = text(&o);
    let features = said.split("CPU features: ").nth(1).expect("the CPU's features").trim_end().trim_end_matches(')');
    let known = infomax_runner::environment::CPU_FEATURES;
    assert!(
        ["unknown", "none of theirs"].contains(&features) || features.split(' ').all(|f| known.contains(&f)),
        "{said}"
    );
}

/// A sweep killed (SIGKILL) while it trains resumes from its last checkpoint: one run row,
/// finished, every epoch and evaluation stored once, and bit for bit the losses of a run that
/// was never interrupted (at the tests' fixed thread count).
#[test]
fn a_killed_run_resumes_from_its_checkpoint_and_is_stored_once() {
    let data = data_root();
    let tmp = tempfile::tempdir().unwrap();
    let args = |db: &std::path::Path| -> Vec<String> {
        let mut a: Vec<String> =
            ["reproduce", "smoke", "--data-dir", data.to_str().unwrap(), "--db", db.to_str().unwrap()]
                .iter()
                .map(|s| s.to_string())
                .collect();
        a.extend(["--out".into(), tmp.path().join("html").display().to_string()]);
        a.extend(SLICE.iter().map(|s| s.to_string()));
        a.extend(
            ["--set", "train.epochs=4", "--set", "encoder.width=0.125", "--set", "train.train_images=192"]
                .map(String::from),
        );
        a
    };
    let epochs_of = |db: &std::path::Path| -> Vec<(i64, f64)> {
        let c = Connection::open(db).unwrap();
        let mut s = c.prepare("SELECT epoch, loss FROM epochs ORDER BY epoch").unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };

    let straight = tmp.path().join("straight.sqlite");
    let o = infomax(&args(&straight).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));

    let killed = tmp.path().join("killed.sqlite");
    let mut kills = 0;
    for target_epoch in [1i64, 3] {
        let mut child = common::command()
            .args(args(&killed))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let done = if killed.exists() {
                Connection::open(&killed)
                    .and_then(|c| c.query_row("SELECT COALESCE(MAX(epoch), 0) FROM epochs", [], |r| r.get::<_, i64>(0)))
                    .unwrap_or(0)
            } else {
                0
            };
            if done >= target_epoch {
                child.kill().unwrap(); // SIGKILL: no chance to clean up
                child.wait().unwrap();
                kills += 1;
                break;
            }
            assert!(started.elapsed().as_secs() < 600, "the run never reached epoch {target_epoch}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    assert!(kills >= 1, "the test killed the run at least once");
    let o = infomax(&args(&killed).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));

    let c = Connection::open(&killed).unwrap();
    let runs: Vec<(i64, String)> = c
        .prepare("SELECT id, status FROM runs")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(runs, vec![(1, "finished".to_string())]);
    let (a, b) = (epochs_of(&straight), epochs_of(&killed));
    assert_eq!(b.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2, 3, 4], "each epoch once");
    assert_eq!(a, b, "(epoch, loss) uninterrupted and resumed");
    let evals: Vec<(i64, String)> = c
        .prepare("SELECT epoch, protocol FROM evaluations ORDER BY epoch, protocol")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let keys: Vec<(i64, &str)> = evals.iter().map(|(e, p)| (*e, p.as_str())).collect();
    assert_eq!(
        keys,
        [
            (0, "knn-cosine"),
            (0, "knn-euclidean"),
            (0, "linear"),
            (4, "knn-cosine"),
            (4, "knn-euclidean"),
            (4, "linear")
        ]
    );
    let again = infomax(&args(&killed).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(text(&again).contains("already finished"), "{}", text(&again));
}

/// SIGINT (or a scheduler's SIGTERM) stops a run after its step in flight: exit status 130, the
/// run marked `interrupted` with where it stopped; the same command then resumes and finishes it.
#[test]
fn sigint_marks_the_run_interrupted_and_the_next_call_finishes_it() {
    let data = data_root();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("results.sqlite");
    let mut args: Vec<String> =
        ["reproduce", "smoke", "--data-dir", data.to_str().unwrap(), "--db", db.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(["--out".into(), tmp.path().join("html").display().to_string()]);
    args.extend(SLICE.iter().map(|s| s.to_string()));
    args.extend(
        ["--set", "train.epochs=3", "--set", "encoder.width=0.125", "--set", "train.train_images=192"]
            .map(String::from),
    );
    let mut child = common::command()
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut signalled = false;
    while child.try_wait().unwrap().is_none() {
        let epochs = if db.exists() {
            Connection::open(&db)
                .and_then(|c| c.query_row("SELECT COUNT(*) FROM epochs", [], |r| r.get::<_, i64>(0)))
                .unwrap_or(0)
        } else {
            0
        };
        if epochs >= 1 && !signalled {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            signalled = true;
        }
        assert!(started.elapsed().as_secs() < 600, "the run did not stop");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let c = Connection::open(&db).unwrap();
    let (status, detail): (String, Option<String>) =
        c.query_row("SELECT status, status_detail FROM runs WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    if out.status.code() == Some(130) {
        assert_eq!(status, "interrupted");
        assert!(
            detail.unwrap_or_default().contains("interrupted at epoch"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The signal left a mid-epoch checkpoint with the epoch's sums so far.
        let dir = std::fs::read_dir(db.with_extension("checkpoints")).unwrap().next().unwrap().unwrap().path();
        let latest = std::fs::read_to_string(dir.join("latest.json")).unwrap();
        assert!(latest.contains("\"in_epoch\"") && latest.contains("\"loss_sum\""), "{latest}");
    } else {
        // The signal came after the last step: the run simply finished.
        assert!(out.status.success() && status == "finished", "{:?} {status}", out.status);
    }
    let o = infomax(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let runs: Vec<String> = c
        .prepare("SELECT status FROM runs")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(runs, vec!["finished".to_string()]);
    let epochs: Vec<i64> = c
        .prepare("SELECT epoch FROM epochs ORDER BY epoch")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(epochs, vec![1, 2, 3]);
    // The interrupted-and-resumed run recorded what an uninterrupted one records, bit for bit.
    let straight = tmp.path().join("straight.sqlite");
    let mut straight_args = args.clone();
    let at = straight_args.iter().position(|a| a == "--db").unwrap();
    straight_args[at + 1] = straight.display().to_string();
    let o = infomax(&straight_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let losses = |db: &Path| -> Vec<f64> {
        let c = Connection::open(db).unwrap();
        let mut s = c.prepare("SELECT loss FROM epochs ORDER BY epoch").unwrap();
        s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(losses(&straight), losses(&db), "uninterrupted and resumed");
}

/// The same configuration and seed, trained twice at the same thread count: every step's loss,
/// every epoch's terms and every accuracy are bit-identical.
#[test]
fn the_same_seed_trains_bit_identically_at_a_given_thread_count() {
    let data = data_root();
    let tmp = tempfile::tempdir().unwrap();
    let dump = |db: &Path| -> Vec<String> {
        let c = Connection::open(db).unwrap();
        let mut out = Vec::new();
        for sql in [
            "SELECT step || ' ' || loss FROM steps ORDER BY step",
            "SELECT step || ' ' || name || ' ' || value FROM step_terms ORDER BY step, name",
            "SELECT epoch || ' ' || name || ' ' || value FROM epoch_terms ORDER BY epoch, name",
            "SELECT epoch || ' ' || protocol || ' ' || top1 || ' ' || top5 FROM evaluations ORDER BY epoch, protocol",
        ] {
            let mut s = c.prepare(sql).unwrap();
            out.extend(s.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap));
        }
        out
    };
    let mut runs = Vec::new();
    for i in 0..2 {
        let db = tmp.path().join(format!("run{i}.sqlite"));
        let mut a = vec!["reproduce", "smoke", "--data-dir", data.to_str().unwrap(), "--db", db.to_str().unwrap()];
        let out = tmp.path().join(format!("html{i}"));
        a.extend(["--out", out.to_str().unwrap(), "--no-tensorboard"]);
        a.extend(SLICE);
        a.extend(["--set", "train.epochs=2", "--set", "encoder.width=0.25", "--set", "train.train_images=512"]);
        let o = infomax(&a);
        assert!(o.status.success(), "{}", text(&o));
        runs.push(dump(&db));
    }
    assert!(runs[0].len() > 20, "{:?}", runs[0]);
    assert_eq!(runs[0], runs[1]);
}

/// `infomax show` prints each planned run's resolved configuration with the layer of every
/// field: the profile's `when` for STL-10's epochs, the file's `when` for W-MSE's lr, `--set`,
/// and the built-in default.
#[test]
fn show_prints_the_recipe_with_each_fields_layer() {
    let o = infomax(&[
        "show",
        "table1",
        "--profile",
        "paper",
        "--only",
        "method=w-mse-2",
        "--only",
        "dataset=stl10",
        "--set",
        "eval.batch_size=250",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let line = |field: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(&format!("{field} = ")))
            .unwrap_or_else(|| panic!("{field}: {out}"))
            .to_string()
    };
    assert!(out.contains("1 runs") && out.contains("method=w-mse-2 dataset=stl10"), "{out}");
    assert!(out.contains("\n# recipe: htdt/self-supervised d9662c8 (README.md commands"), "the cell's source: {out}");
    assert!(line("optimizer.schedule").contains("\"step\""), "fields at their defaults show too");
    let epochs = line("train.epochs");
    assert!(epochs.contains("= 2000") && epochs.contains("# profiles.paper.when[0].set (line "), "{epochs}");
    let lr = line("optimizer.lr");
    assert!(lr.contains("= 0.002") && lr.contains("# when[0].set (line "), "{lr}");
    assert!(line("eval.batch_size").contains("# --set eval.batch_size=250"));
    assert!(line("optimizer.kind").contains("\"adam\"") && line("optimizer.kind").ends_with("# default"));
    assert!(line("grid.method").ends_with("# plan"));
    // A cell that departs from its source says where and why.
    let o = infomax(&["show", "table1", "--profile", "paper", "--only", "method=vicreg", "--only", "dataset=cifar10"]);
    let vicreg = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(vicreg.contains("# recipe: vturrisi/solo-learn 9187ea3 (scripts/pretrain/cifar/vicreg.yaml)"), "{vicreg}");
    assert!(vicreg.contains("# deviation: train.precision — the source: fp16 autocast"), "{vicreg}");
    assert!(vicreg.contains("optimizer.lars_variant = \"solo-learn\""), "{vicreg}");
    // The line named is the field's own.
    let text = std::fs::read_to_string(common::workspace_root().join("experiments/table1.toml")).unwrap();
    let n: usize = epochs.rsplit("(line ").next().unwrap().trim_end_matches(')').parse().unwrap();
    assert!(text.lines().nth(n - 1).unwrap().contains("epochs = 2000"), "line {n}");
}

/// `reproduce --fetch` fetches a missing dataset before anything is trained or recorded: an
/// archive that is not the official one (here a stand-in in the downloads folder, so no network
/// is needed) stops the command with the MD5 it found, a non-zero status and no database.
#[test]
fn fetch_fails_before_any_run_when_the_archive_is_not_the_official_one() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let downloads = root.join(".infomax-downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::write(downloads.join("cifar-10-binary.tar.gz"), b"not the archive").unwrap();
    let db = tmp.path().join("r.sqlite");
    let mut args =
        vec!["reproduce", "smoke", "--fetch", "--data-dir", root.to_str().unwrap(), "--db", db.to_str().unwrap()];
    args.extend(["--out", tmp.path().to_str().unwrap()]);
    args.extend(SLICE);
    let o = infomax(&args);
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(msg.contains("fetching cifar10: cifar-10-binary.tar.gz") && msg.contains("https://"), "announced: {msg}");
    assert!(msg.contains("MD5") && msg.contains("cifar-10-binary.tar.gz"), "{msg}");
    assert!(!db.exists(), "nothing is recorded before the data is there");
}
