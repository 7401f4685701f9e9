//! Experiments from anywhere: the shipped files are built into the binary, and a directory
//! (`--experiments`, `$INFOMAX_EXPERIMENTS`, else `./experiments`) shadows them by name. Only
//! planning commands run here (`--dry-run`, `show`, `experiments list`): nothing trains.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{text, workspace_root};

/// The binary run in `dir` with no `$INFOMAX_EXPERIMENTS`, and `env` set.
fn infomax_in(dir: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_infomax"));
    c.current_dir(dir).env_remove("INFOMAX_EXPERIMENTS").env("RAYON_NUM_THREADS", common::THREADS);
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args).output().unwrap()
}

/// `reproduce NAME --dry-run` against a database and data root that do not exist (nothing is
/// read or created; every run shows as skipped for its dataset).
fn dry_run(dir: &Path, scratch: &Path, env: &[(&str, &Path)], name: &str, profile: &str) -> Output {
    let db = scratch.join("none.sqlite");
    let data = scratch.join("no-data");
    let args = ["reproduce", name, "--profile", profile, "--dry-run", "--db", db.to_str().unwrap()];
    infomax_in(dir, env, &[&args[..], &["--data-dir", data.to_str().unwrap()]].concat())
}

/// A small experiment file titled `smoke, shadowed` (3 epochs of VICReg; a `smoke` profile): a
/// plan of its own, told apart from the shipped smoke file at once.
const SHADOW: &str = r#"
[experiment]
name = "smoke"
title = "smoke, shadowed"
paper = "VICReg"
reproduces = "nothing: it stands in for the shipped smoke file"

[base]
method = "vicreg"
dataset = "cifar10"
projector = { widths = [64, 32] }
optimizer = { warmup_epochs = 1 }
train = { epochs = 3, batch_size = 16, train_images = 64 }

[profiles.smoke]
about = "tiny"
encoder = { width = 0.25 }
"#;

fn shadowing_smoke() -> &'static str {
    SHADOW
}

/// The `[hash]` of each run a dry run lists.
fn hashes(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once("  [").and_then(|(_, r)| r.split_once(']')).map(|(h, _)| h.to_string()))
        .collect()
}

/// The profiles a shipped file defines (`[profiles.NAME]` headers).
fn profiles(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("[profiles.").and_then(|r| r.strip_suffix(']')))
        .filter(|p| !p.contains('.'))
        .map(String::from)
        .collect()
}

/// From a folder without experiments/, every shipped experiment plans from its built-in copy,
/// and each plan is the one the same file on disk gives (the output but for its `file:` line,
/// run identities included).
#[test]
fn built_in_experiments_plan_from_anywhere_with_the_runs_of_the_files_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let root = workspace_root();
    let names = infomax_runner::experiment::known_experiments(&root.join("experiments"));
    assert!(names.len() >= 10, "{names:?}");
    let without_file_line = |o: &Output| {
        String::from_utf8_lossy(&o.stdout).lines().filter(|l| !l.starts_with("file: ")).collect::<Vec<_>>().join("\n")
    };
    for name in &names {
        let on_disk = std::fs::read_to_string(root.join(format!("experiments/{name}.toml"))).unwrap();
        for profile in profiles(&on_disk) {
            let built_in = dry_run(&elsewhere, tmp.path(), &[], name, &profile);
            assert!(built_in.status.success(), "{name} / {profile}: {}", text(&built_in));
            assert!(text(&built_in).contains(&format!("file: builtin:{name}.toml")), "{}", text(&built_in));
            let disk = dry_run(&root, tmp.path(), &[], name, &profile);
            assert!(text(&disk).contains(&format!("file: experiments/{name}.toml")), "{}", text(&disk));
            assert!(!hashes(&built_in).is_empty(), "{}", text(&built_in));
            assert_eq!(hashes(&built_in), hashes(&disk), "{name} / {profile}");
            assert_eq!(without_file_line(&built_in), without_file_line(&disk), "{name} / {profile}");
        }
    }
    assert!(!tmp.path().join("none.sqlite").exists(), "a dry run creates no database");
    // `show` and `builtin:NAME` name the same file.
    let o = infomax_in(&elsewhere, &[], &["show", "builtin:smoke", "--profile", "smoke"]);
    assert!(o.status.success() && text(&o).contains("from builtin:smoke.toml"), "{}", text(&o));
}

/// `experiments list`: every name built in from a bare folder; with `--experiments DIR`, DIR's
/// files (one shadowing a built-in, one new) by path, the rest still built in.
#[test]
fn experiments_list_says_which_file_each_name_resolves_to() {
    let tmp = tempfile::tempdir().unwrap();
    let o = infomax_in(tmp.path(), &[], &["experiments", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    let list = text(&o);
    let smoke = list.lines().find(|l| l.starts_with("smoke ")).unwrap_or_else(|| panic!("{list}"));
    assert!(smoke.contains("VICReg end to end: CIFAR-10") && smoke.trim_end().ends_with("built in"), "{list}");
    assert!(list.lines().filter(|l| l.trim_end().ends_with("built in")).count() >= 10, "{list}");

    let dir = tmp.path().join("mine");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("smoke.toml"), shadowing_smoke()).unwrap();
    std::fs::write(dir.join("extra.toml"), shadowing_smoke()).unwrap();
    let o = infomax_in(tmp.path(), &[], &["experiments", "list", "--experiments", dir.to_str().unwrap()]);
    let list = text(&o);
    assert!(o.status.success(), "{list}");
    let line =
        |name: &str| list.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{list}"));
    let smoke_file = dir.join("smoke.toml").display().to_string();
    assert!(line("smoke").contains("smoke, shadowed") && line("smoke").contains(&smoke_file), "{list}");
    assert!(line("smoke").contains("shadows the built-in"), "{list}");
    assert!(line("extra").contains(&dir.join("extra.toml").display().to_string()), "{list}");
    assert!(!line("extra").contains("shadows"), "{list}");
    assert!(line("byol").trim_end().ends_with("built in"), "{list}");
    assert!(list.contains(&format!("{} (named by --experiments)", dir.display())), "{list}");
}

/// A file of the directory wins over the built-in of its name, by `--experiments`,
/// `$INFOMAX_EXPERIMENTS` (the option beating the variable) or `./experiments`; the names it lacks
/// and `builtin:NAME` stay built in.
#[test]
fn a_directory_shadows_the_built_ins_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    let dir = tmp.path().join("mine");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("smoke.toml"), shadowing_smoke()).unwrap();
    let shadowed = dir.join("smoke.toml").display().to_string();

    let built_in = dry_run(&bare, tmp.path(), &[], "smoke", "smoke");
    assert!(built_in.status.success() && text(&built_in).contains("file: builtin:smoke.toml"), "{}", text(&built_in));

    // --experiments DIR
    let flag = ["--experiments", dir.to_str().unwrap()];
    let o = infomax_in(&bare, &[], &[&["show", "smoke"][..], &flag].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("from {shadowed}")) && text(&o).contains("train.epochs = 3"), "{}", text(&o));
    let o = infomax_in(&bare, &[], &[&["show", "byol"][..], &flag].concat());
    assert!(o.status.success() && text(&o).contains("from builtin:byol.toml"), "{}", text(&o));
    let o = infomax_in(&bare, &[], &[&["show", "builtin:smoke"][..], &flag].concat());
    assert!(o.status.success() && text(&o).contains("from builtin:smoke.toml"), "{}", text(&o));

    // $INFOMAX_EXPERIMENTS, and the option over it.
    let env = [("INFOMAX_EXPERIMENTS", dir.as_path())];
    let o = dry_run(&bare, tmp.path(), &env, "smoke", "smoke");
    assert!(o.status.success() && text(&o).contains(&format!("file: {shadowed}")), "{}", text(&o));
    assert_ne!(hashes(&o), hashes(&built_in), "the shadowing file plans other runs");
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let o = infomax_in(&bare, &env, &["show", "smoke", "--experiments", other.to_str().unwrap()]);
    assert!(o.status.success() && text(&o).contains("from builtin:smoke.toml"), "{}", text(&o));

    // ./experiments in the working directory.
    let project = tmp.path().join("project");
    std::fs::create_dir_all(project.join("experiments")).unwrap();
    std::fs::write(project.join("experiments/smoke.toml"), shadowing_smoke()).unwrap();
    let o = dry_run(&project, tmp.path(), &[], "smoke", "smoke");
    assert!(o.status.success() && text(&o).contains("file: experiments/smoke.toml"), "{}", text(&o));
    let o = dry_run(&project, tmp.path(), &[], "w-mse", "smoke");
    assert!(o.status.success() && text(&o).contains("file: builtin:w-mse.toml"), "{}", text(&o));
}

/// An unknown name lists the known names and the places they were looked for; a directory named
/// by the option or the variable must exist.
#[test]
fn unknown_names_say_where_they_were_looked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let o = dry_run(tmp.path(), tmp.path(), &[], "smoek", "smoke");
    let msg = text(&o);
    assert!(!o.status.success());
    for part in ["no experiment named `smoek`", "did you mean `smoke`", "built-in experiments", "no ./experiments"] {
        assert!(msg.contains(part), "{part}: {msg}");
    }
    assert!(msg.contains("known names (built in): barlow-twins, byol"), "{msg}");

    let dir = tmp.path().join("mine");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("extra.toml"), shadowing_smoke()).unwrap();
    let o = infomax_in(tmp.path(), &[("INFOMAX_EXPERIMENTS", dir.as_path())], &["show", "nonesuch"]);
    let msg = text(&o);
    assert!(!o.status.success());
    let looked = format!("looked for nonesuch.toml in {} (named by $INFOMAX_EXPERIMENTS), then the", dir.display());
    assert!(msg.contains(&looked), "{msg}");
    assert!(msg.contains(&format!("known names in {}: extra; further built-in names: barlow-twins", dir.display())));

    let absent = tmp.path().join("absent");
    let o = infomax_in(tmp.path(), &[], &["experiments", "list", "--experiments", absent.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("no such directory"), "{}", text(&o));
    let o = infomax_in(tmp.path(), &[], &["show", "smoke.toml"]);
    assert!(!o.status.success() && text(&o).contains("the name `smoke` alone finds the built-in"), "{}", text(&o));
}

/// `submit` resolves a built-in experiment like any other, and its job runs the copy it writes
/// into the job folder by path, so the tasks need no experiments/ either.
#[test]
fn submit_runs_a_built_in_experiment_from_its_job_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let job = tmp.path().join("job");
    let args = ["submit", "smoke", "--slurm", "--dry-run", "--skip-unreadable", "--dir", job.to_str().unwrap()];
    let o = infomax_in(tmp.path(), &[], &args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("--no-progress --slurm-requeue \\\n    --skip-unreadable"), "{}", text(&o));
    let copy = job.join("experiment.toml");
    assert!(text(&o).contains(&format!("reproduce {}", copy.display())), "{}", text(&o));
    assert!(!job.exists(), "a dry run writes nothing");
}
