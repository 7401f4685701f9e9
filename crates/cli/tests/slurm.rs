//! `infomax submit --slurm` against a real Slurm: a one-node cluster on this machine
//! (`tools/slurm/local-cluster.sh`, which `.ci/run` installs and starts). The smoke experiment,
//! shrunk to a tiny real CIFAR-10 slice, in 2 shards: one task is warned mid-run (SIGUSR1, as
//! Slurm warns before a time limit), checkpoints, requeues itself and resumes; the merge job
//! then holds every run exactly once with every epoch.
//!
//! Where no Slurm answers (`sinfo`), the test says so and passes, unless INFOMAX_REQUIRE_SLURM=1
//! (CI sets it) makes that a failure.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{data_root, infomax, text};
use rusqlite::{Connection, OpenFlags};

fn slurm_answers() -> bool {
    Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false)
}

fn run(program: &str, args: &[&str]) -> String {
    let o = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(o.status.success(), "{program} {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Polls `what` every 100 ms until it returns Some, for at most `limit`.
fn wait_for<T>(limit: Duration, why: &str, diagnose: &dyn Fn() -> String, mut what: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = what() {
            return v;
        }
        assert!(start.elapsed() < limit, "waited {limit:?} for {why}\n{}", diagnose());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn epochs_recorded(db: &Path) -> Option<i64> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    c.busy_timeout(Duration::from_secs(1)).ok()?;
    c.query_row("SELECT COUNT(*) FROM epochs", [], |r| r.get(0)).ok()
}

fn logs(dir: &Path) -> String {
    let mut all = String::new();
    for name in ["task-1.log", "task-2.log", "merge.log"] {
        let text = std::fs::read_to_string(dir.join("logs").join(name)).unwrap_or_default();
        all.push_str(&format!("---- {name}\n{text}"));
    }
    all + &run("squeue", &["-a"])
}

#[test]
fn a_sweep_in_two_shards_merges_every_run_once_and_a_requeued_task_loses_nothing() {
    if !slurm_answers() {
        assert!(
            std::env::var("INFOMAX_REQUIRE_SLURM").as_deref() != Ok("1"),
            "INFOMAX_REQUIRE_SLURM=1 but no Slurm answers `sinfo` (start one: tools/slurm/local-cluster.sh)"
        );
        eprintln!("skipped: no Slurm answers `sinfo` (tools/slurm/local-cluster.sh starts one)");
        return;
    }
    let data = data_root();
    let tmp = tempfile::tempdir().unwrap();
    let job_dir = tmp.path().join("job");
    let epochs = 4;
    let epochs_set = format!("train.epochs={epochs}");
    // Two seeds of the smoke experiment at toy size: 5 steps of 64 images per epoch, ResNet-18
    // at width 0.125, k-NN on 200/100 images, a 5-epoch linear probe.
    let mut args = vec!["submit", "smoke", "--slurm", "--shards", "2", "--seeds", "2"];
    args.extend(["--dir", job_dir.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    for s in [
        epochs_set.as_str(),
        "train.train_images=320",
        "train.batch_size=64",
        "encoder.width=0.125",
        "projector.widths=[64, 32]",
        "eval.bank_images=200",
        "eval.test_images=100",
        "eval.linear_epochs=5",
    ] {
        args.extend(["--set", s]);
    }

    // --dry-run shows both scripts and writes nothing.
    let mut dry = args.clone();
    dry.push("--dry-run");
    let o = infomax(&dry);
    assert!(o.status.success(), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(shown.contains("#SBATCH --array=1-2") && shown.contains("merge --db"), "{shown}");
    assert!(!job_dir.exists(), "--dry-run wrote {}", job_dir.display());

    let o = infomax(&args);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let job_id = |after: &str| -> String {
        let rest = &out[out.find(after).unwrap_or_else(|| panic!("no `{after}` in {out}")) + after.len()..];
        rest.chars().take_while(|c| c.is_ascii_digit()).collect()
    };
    let (array, merge) = (job_id("tasks (job "), job_id("after them (job "));
    assert!(!array.is_empty() && !merge.is_empty(), "{out}");
    let diagnose = || logs(&job_dir);

    // Task 1 has recorded its first epoch of 4: warn it as Slurm warns before a time limit.
    let task1_db = job_dir.join("shards/task-1.sqlite");
    wait_for(Duration::from_secs(300), "task 1's first epoch", &diagnose, || {
        epochs_recorded(&task1_db).filter(|&n| n >= 1)
    });
    let task1 = format!("{array}_1");
    run("scancel", &["--signal=USR1", "--batch", &task1]);
    // It requeues itself and waits out Slurm's hold on a requeued job (its credential lifetime:
    // 120 s by default, 10 s on the test cluster). Releasing it earlier (`scontrol update
    // StartTime=now`) races the node's revocation of the old credential: Slurm then kills the
    // restarted job ("Job credential revoked"), as it once did here.
    wait_for(Duration::from_secs(180), "task 1 to be requeued", &diagnose, || {
        let state = run("squeue", &["-h", "-j", &task1, "-o", "%T %r"]);
        state.starts_with("PENDING").then_some(())
    });
    wait_for(Duration::from_secs(600), "every job to end", &diagnose, || {
        run("squeue", &["-h", "-j", &format!("{array},{merge}")]).is_empty().then_some(())
    });

    let log = diagnose();
    assert!(log.contains(&format!("requeueing Slurm job {task1}")), "task 1 did not requeue itself:\n{log}");
    assert!(log.contains("restart 1"), "task 1 did not start again:\n{log}");
    assert!(log.contains("resumes from its checkpoint"), "task 1 did not resume:\n{log}");

    let merged = Connection::open(job_dir.join("results.sqlite")).unwrap();
    let runs: Vec<(i64, String, String, String)> = merged
        .prepare("SELECT id, config_hash, status, grid_json FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(runs.len(), 2, "merged runs {runs:?}\n{log}");
    assert_ne!(runs[0].1, runs[1].1, "{runs:?}");
    for (id, _, status, grid) in &runs {
        assert_eq!(status, "finished", "status of run {id} ({grid})\n{log}");
        let recorded: Vec<i64> = merged
            .prepare("SELECT epoch FROM epochs WHERE run_id = ?1 ORDER BY epoch")
            .unwrap()
            .query_map([id], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(recorded, (1..=epochs).collect::<Vec<i64>>(), "epochs of run {id}\n{log}");
        let last_eval: i64 = merged
            .query_row("SELECT MAX(epoch) FROM evaluations WHERE run_id = ?1 AND protocol = 'knn-cosine'", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(last_eval, epochs, "last evaluation of run {id}\n{log}");
    }
    assert!(job_dir.join("report/index.html").is_file(), "no merged report\n{log}");
}
