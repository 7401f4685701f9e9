//! Slurm: the job scripts of a sharded sweep (`infomax submit --slurm`) and a task's self-requeue.
//!
//! A submission is two jobs. An array job whose task `i` runs `infomax reproduce … --shard i/N`
//! into its own database (`shards/task-i.sqlite`, checkpoints beside it) in the job folder, which
//! must be on a filesystem every node sees; and a job that waits for the whole array
//! (`afterany`, so that failed runs are reported too) and runs `infomax merge` and
//! `infomax report` into `results.sqlite` and `report/`.
//!
//! Time limits and pre-emption: the array script asks Slurm for SIGUSR1 `stop_before` seconds
//! before the limit (`--signal=B:USR1@…`, to the batch shell, which `exec`s infomax). The task
//! stops after its step, checkpoints, and requeues itself (`scontrol requeue`); when Slurm starts
//! it again the same command resumes from that checkpoint. A SIGTERM is a stop too; it requeues
//! only when the job's reason is its time limit (a limit reached without the warning) — a
//! `scancel` stays a cancel, and pre-emption with `PreemptMode=REQUEUE` is requeued by Slurm.
//!
//! The scripts carry no timestamp: the same submission writes the same files, so re-submitting
//! into the same folder continues the sweep (finished runs are never trained twice), while a
//! different one is refused rather than mixed in.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// What `infomax submit --slurm` was asked for, resolved to absolute paths.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The experiment's name (job names and messages).
    pub experiment: String,
    pub profile: String,
    /// Array tasks: the plan's `--shard i/N` slices.
    pub shards: usize,
    pub partition: Option<String>,
    pub gpus_per_task: Option<u32>,
    pub cpus_per_task: Option<u32>,
    /// Slurm's `--time`, as given (checked by [`parse_time_limit`]).
    pub time: Option<String>,
    /// Seconds before the time limit at which Slurm sends SIGUSR1.
    pub stop_before: u32,
    /// Further `#SBATCH` options, verbatim (`--account=…`, `--qos=…`, `--constraint=…`).
    pub sbatch_options: Vec<String>,
    /// The job folder (shared by all nodes).
    pub dir: PathBuf,
    /// The folder jobs start in (`--chdir`).
    pub workdir: PathBuf,
    /// The `infomax` binary the jobs run.
    pub binary: PathBuf,
    pub data_root: PathBuf,
    /// `reproduce` options every task gets (`--seeds`, `--only`, `--set`, `--device`,
    /// `--skip-unreadable`).
    pub reproduce_args: Vec<String>,
}

/// The two scripts of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scripts {
    pub array: String,
    pub merge: String,
}

/// Files inside the job folder.
pub const EXPERIMENT_FILE: &str = "experiment.toml";
pub const ARRAY_SCRIPT: &str = "array.sbatch";
pub const MERGE_SCRIPT: &str = "merge.sbatch";
pub const MERGED_DB: &str = "results.sqlite";

/// Slurm's `--time` formats: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`; `None` for
/// `UNLIMITED`/`INFINITE`. Returns seconds.
pub fn parse_time_limit(s: &str) -> Result<Option<u64>> {
    let bad = || Error::Option {
        option: format!("--time {s}"),
        what: "expected Slurm's time format: minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S".into(),
    };
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinite") {
        return Ok(None);
    }
    let num = |x: &str| -> Result<u64> {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        x.parse::<u64>().map_err(|_| bad())
    };
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(num(d)?), r),
        None => (None, t),
    };
    let parts: Vec<u64> = rest.split(':').map(num).collect::<Result<_>>()?;
    let seconds = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
        _ => return Err(bad()),
    };
    if seconds == 0 {
        return Err(Error::Option { option: format!("--time {s}"), what: "a time limit above zero expected".into() });
    }
    Ok(Some(seconds))
}

/// One word for a shell: single-quoted unless it is plainly safe.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `#SBATCH` lines are not read by a shell: a path there cannot be quoted.
fn sbatch_path(what: &str, p: &Path) -> Result<String> {
    let s = p.to_str().ok_or_else(|| Error::Option { option: what.into(), what: "not valid UTF-8".into() })?;
    if s.chars().any(|c| c.is_whitespace() || "%'\"\\".contains(c)) {
        return Err(Error::Option {
            option: format!("{what} {s}"),
            what: "Slurm's #SBATCH lines cannot carry a path with spaces, quotes, backslashes or `%`; choose \
                   another folder"
                .into(),
        });
    }
    Ok(s.to_string())
}

/// A name made safe as one folder name: characters other than ASCII letters, digits, `-`, `_`
/// and `.` become `_`, and a name of dots only (`..`) becomes `_`, so it never leaves its parent.
pub fn folder_name(name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') {
        "_".into()
    } else {
        safe
    }
}

/// The default job folder of an experiment's profile: `slurm/<experiment>-<profile>`, each part a
/// [`folder_name`], so an experiment named `../../x` stays inside `slurm/`.
pub fn default_dir(experiment: &str, profile: &str) -> PathBuf {
    Path::new("slurm").join(folder_name(&format!("{experiment}-{profile}")))
}

/// A value Slurm reads from an `#SBATCH` line (a partition name): letters, digits and `-_.,:+@`
/// only — no spaces, quotes, newlines or shell characters, which could not be quoted there.
fn sbatch_word(option: &str, value: &str) -> Result<()> {
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.,:+@".contains(c)) {
        return Err(Error::Option {
            option: format!("{option} {value:?}"),
            what: "letters, digits and -_.,:+@ expected (a Slurm name; no spaces, quotes or newlines)".into(),
        });
    }
    Ok(())
}

/// A value written into a script's comment lines: one line, no control characters.
fn one_line(what: &str, value: &str) -> Result<()> {
    if value.chars().any(char::is_control) {
        return Err(Error::Option {
            option: format!("{what} {value:?}"),
            what: "a name without newlines or control characters expected".into(),
        });
    }
    Ok(())
}

impl Submission {
    /// The array script and the merge script, or why the submission cannot be written.
    pub fn scripts(&self) -> Result<Scripts> {
        one_line("the experiment name", &self.experiment)?;
        one_line("--profile", &self.profile)?;
        if let Some(p) = &self.partition {
            sbatch_word("--partition", p)?;
        }
        if self.shards == 0 {
            return Err(Error::Option { option: "--shards 0".into(), what: "at least 1 task expected".into() });
        }
        if let Some(t) = &self.time {
            if let Some(limit) = parse_time_limit(t)? {
                if u64::from(self.stop_before) >= limit {
                    return Err(Error::Option {
                        option: format!("--stop-before {}", self.stop_before),
                        what: format!(
                            "the warning must come before the time limit ({t} = {limit} s); lower --stop-before"
                        ),
                    });
                }
            }
        }
        if self.stop_before > 65_535 {
            return Err(Error::Option {
                option: format!("--stop-before {}", self.stop_before),
                what: "Slurm's --signal takes at most 65535 seconds".into(),
            });
        }
        for o in &self.sbatch_options {
            if !o.starts_with('-') || o.contains('\n') {
                return Err(Error::Option {
                    option: format!("--sbatch {o}"),
                    what: "an sbatch option expected, e.g. --sbatch=--account=lab or --sbatch=--qos=long".into(),
                });
            }
        }
        let dir = sbatch_path("--dir", &self.dir)?;
        let workdir = sbatch_path("the working directory", &self.workdir)?;
        let name = folder_name(&self.experiment);
        let q = |p: &Path| shell_quote(&p.display().to_string());
        let in_dir = |rel: &str| shell_quote(&self.dir.join(rel).display().to_string());
        let bin = q(&self.binary);

        let mut common = Vec::new();
        common.push(format!("#SBATCH --chdir={workdir}"));
        common.push("#SBATCH --open-mode=append".to_string());
        if let Some(p) = &self.partition {
            common.push(format!("#SBATCH --partition={p}"));
        }
        if let Some(t) = &self.time {
            common.push(format!("#SBATCH --time={}", t.trim()));
        }
        common.extend(self.sbatch_options.iter().map(|o| format!("#SBATCH {o}")));

        let n = self.shards;
        let mut array = vec![
            "#!/bin/bash".to_string(),
            format!(
                "# infomax submit: {} / profile {}, task $SLURM_ARRAY_TASK_ID of {n}.",
                self.experiment, self.profile
            ),
            "# Each task trains its slice of the plan into its own database under shards/; on SIGUSR1".to_string(),
            format!(
                "# ({} s before the time limit) it checkpoints, requeues itself and later resumes.",
                self.stop_before
            ),
            format!("#SBATCH --job-name=infomax-{name}"),
            format!("#SBATCH --array=1-{n}"),
            format!("#SBATCH --output={dir}/logs/task-%a.log"),
            "#SBATCH --requeue".to_string(),
            format!("#SBATCH --signal=B:USR1@{}", self.stop_before),
        ];
        if let Some(c) = self.cpus_per_task {
            array.push(format!("#SBATCH --cpus-per-task={c}"));
        }
        if let Some(g) = self.gpus_per_task {
            array.push(format!("#SBATCH --gpus-per-task={g}"));
        }
        array.extend(common.iter().cloned());
        array.push("set -eu".into());
        array.push("task=\"${SLURM_ARRAY_TASK_ID:?not an array task}\"".into());
        array.push(format!(
            "echo \"== $(date -u +%Y-%m-%dT%H:%M:%SZ) task $task/{n} on $(hostname), restart ${{SLURM_RESTART_COUNT:-0}}\""
        ));
        let mut reproduce = vec![
            format!("exec {bin} reproduce {}", in_dir(EXPERIMENT_FILE)),
            format!("--profile {}", shell_quote(&self.profile)),
            format!("--shard \"$task/{n}\""),
            format!("--db {}/shards/task-\"$task\".sqlite", q(&self.dir)),
            format!("--out {}/shards/task-\"$task\"-report", q(&self.dir)),
            format!("--data-dir {}", q(&self.data_root)),
            "--no-progress --slurm-requeue".to_string(),
        ];
        for a in self.reproduce_args.chunks(2) {
            reproduce.push(a.iter().map(|s| shell_quote(s)).collect::<Vec<_>>().join(" "));
        }
        array.push(reproduce.join(" \\\n    "));

        let mut merge = vec![
            "#!/bin/bash".to_string(),
            format!(
                "# infomax submit: merges the {n} task databases of {} / profile {} and renders the report,",
                self.experiment, self.profile
            ),
            "# once every task of the array has ended (finished, failed or cancelled).".to_string(),
            format!("#SBATCH --job-name=infomax-{name}-merge"),
            format!("#SBATCH --output={dir}/logs/merge.log"),
            "#SBATCH --cpus-per-task=1".to_string(),
        ];
        merge.extend(common);
        merge.push("set -eu".into());
        merge.push("shopt -s nullglob".into());
        merge.push(format!("dbs=({}/shards/task-*.sqlite)", q(&self.dir)));
        merge.push(format!(
            "[ ${{#dbs[@]}} -gt 0 ] || {{ echo \"no task database under {}/shards: did any task start?\" >&2; exit 1; }}",
            self.dir.display()
        ));
        merge.push(format!("{bin} merge --db {} \"${{dbs[@]}}\"", in_dir(MERGED_DB)));
        merge.push(format!(
            "exec {bin} report --db {} --out {} --data-dir {}",
            in_dir(MERGED_DB),
            in_dir("report"),
            q(&self.data_root)
        ));
        Ok(Scripts { array: array.join("\n") + "\n", merge: merge.join("\n") + "\n" })
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Writes the job folder: the experiment file as submitted and both scripts. A folder from an
/// earlier submission is reused only when it holds exactly the same files (the same sweep,
/// continued); anything else is refused, so two sweeps never share shard databases.
pub fn prepare_dir(sub: &Submission, experiment_text: &str, scripts: &Scripts) -> Result<()> {
    let files = [(EXPERIMENT_FILE, experiment_text), (ARRAY_SCRIPT, &scripts.array), (MERGE_SCRIPT, &scripts.merge)];
    for (name, text) in files {
        let path = sub.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(old) if old == text => {}
            Ok(_) => {
                return Err(Error::Option {
                    option: format!("--dir {}", sub.dir.display()),
                    what: format!(
                        "{name} there belongs to a different submission (experiment file, profile or options \
                         changed); submit into a new --dir, or remove that folder"
                    ),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    for sub_dir in ["logs", "shards"] {
        let d = sub.dir.join(sub_dir);
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    for (name, text) in files {
        let path = sub.dir.join(name);
        let tmp = sub.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(())
}

/// Runs a Slurm client command; its stdout, or an error with its stderr.
fn slurm_command(program: &str, args: &[String]) -> Result<String> {
    let shown = format!("{program} {}", args.join(" "));
    let out = Command::new(program).args(args).output().map_err(|e| Error::Option {
        option: shown.clone(),
        what: if e.kind() == std::io::ErrorKind::NotFound {
            format!("`{program}` is not on PATH: submitting needs Slurm's client commands (Debian: slurm-client)")
        } else {
            e.to_string()
        },
    })?;
    if !out.status.success() {
        return Err(Error::Option {
            option: shown,
            what: format!("{} ({})", String::from_utf8_lossy(&out.stderr).trim(), out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The job id `sbatch --parsable` printed (`ID` or `ID;cluster`).
pub fn parse_job_id(printed: &str) -> Result<String> {
    let id = printed.lines().last().unwrap_or("").split(';').next().unwrap_or("").trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Option { option: "sbatch --parsable".into(), what: format!("no job id in `{printed}`") });
    }
    Ok(id.to_string())
}

/// The two job ids of a submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub array_job: String,
    pub merge_job: String,
}

/// Submits the prepared folder: the array, then the merge job depending on all of it.
pub fn submit(sub: &Submission) -> Result<Submitted> {
    let array = sub.dir.join(ARRAY_SCRIPT).display().to_string();
    let array_job = parse_job_id(&slurm_command("sbatch", &["--parsable".into(), array])?)?;
    let merge = sub.dir.join(MERGE_SCRIPT).display().to_string();
    let merge_job = parse_job_id(&slurm_command(
        "sbatch",
        &["--parsable".into(), format!("--dependency=afterany:{array_job}"), merge],
    )?)?;
    Ok(Submitted { array_job, merge_job })
}

/// The signal that stopped a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
    /// SIGUSR1: Slurm's warning before the time limit (`--signal`), or `scancel --signal=USR1`.
    User1,
}

/// Whether a task stopped by `signal` should requeue itself, given `scontrol show job`'s text
/// for it: always on SIGUSR1, on SIGTERM only at the time limit, never on SIGINT.
pub fn should_requeue(signal: StopSignal, job_info: &str) -> bool {
    match signal {
        StopSignal::User1 => true,
        StopSignal::Terminate => job_info.split_whitespace().any(|w| w == "Reason=TimeLimit"),
        StopSignal::Interrupt => false,
    }
}

/// This process's Slurm job as `scontrol` names it (`ARRAYJOB_TASK` for an array task), if any.
pub fn current_job() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
        (Some(a), Some(t)) => Some(format!("{a}_{t}")),
        _ => var("SLURM_JOB_ID"),
    }
}

/// After a stop by `signal`: the job to requeue (this one, when it should be), or `None` (not
/// under Slurm, or a stop that is not to be undone: SIGINT, a `scancel`).
pub fn job_to_requeue(signal: StopSignal) -> Result<Option<String>> {
    let Some(job) = current_job() else { return Ok(None) };
    let info = match signal {
        StopSignal::Terminate => slurm_command("scontrol", &["show".into(), "job".into(), job.clone()])?,
        _ => String::new(),
    };
    Ok(should_requeue(signal, &info).then_some(job))
}

/// `scontrol requeue JOB`: Slurm ends this task and starts it again later (the same command,
/// which resumes from the checkpoint just written).
pub fn requeue(job: &str) -> Result<()> {
    slurm_command("scontrol", &["requeue".into(), job.into()]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission() -> Submission {
        Submission {
            experiment: "smoke".into(),
            profile: "paper".into(),
            shards: 4,
            partition: Some("gpu".into()),
            gpus_per_task: Some(1),
            cpus_per_task: Some(8),
            time: Some("2-00:00:00".into()),
            stop_before: 300,
            sbatch_options: vec!["--account=lab".into()],
            dir: "/shared/sweeps/smoke-paper".into(),
            workdir: "/home/me/infomax".into(),
            binary: "/home/me/infomax/target/release/infomax".into(),
            data_root: "/shared/data sets".into(),
            reproduce_args: vec!["--set".into(), "train.epochs=800".into(), "--only".into(), "seed=0".into()],
        }
    }

    #[test]
    fn time_limits_in_every_slurm_format() {
        let cases = [
            ("30", Some(1800)),
            ("30:15", Some(1815)),
            ("2:00:00", Some(7200)),
            ("1-12", Some(129_600)),
            ("1-0:30", Some(88_200)),
            ("2-00:00:05", Some(172_805)),
            ("UNLIMITED", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_time_limit(s).unwrap(), want, "{s}");
        }
        for bad in ["", "1h", "1:2:3:4", "-5", "1-", "0", "1-2:3:4:5", " : "] {
            let e = parse_time_limit(bad).unwrap_err().to_string();
            assert!(e.contains("--time") && e.contains("D-H:M:S") || e.contains("above zero"), "{bad}: {e}");
        }
    }

    #[test]
    fn array_script_runs_each_shard_into_its_own_database_and_requeues_on_the_warning() {
        let s = submission().scripts().unwrap();
        let a = &s.array;
        for line in [
            "#SBATCH --array=1-4",
            "#SBATCH --requeue",
            "#SBATCH --signal=B:USR1@300",
            "#SBATCH --output=/shared/sweeps/smoke-paper/logs/task-%a.log",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --cpus-per-task=8",
            "#SBATCH --partition=gpu",
            "#SBATCH --time=2-00:00:00",
            "#SBATCH --account=lab",
            "#SBATCH --chdir=/home/me/infomax",
        ] {
            assert!(a.lines().any(|l| l == line), "missing {line}:\n{a}");
        }
        assert!(a.contains(
            "exec /home/me/infomax/target/release/infomax reproduce /shared/sweeps/smoke-paper/experiment.toml"
        ));
        assert!(a.contains("--shard \"$task/4\""), "{a}");
        assert!(a.contains("--db /shared/sweeps/smoke-paper/shards/task-\"$task\".sqlite"), "{a}");
        assert!(a.contains("--data-dir '/shared/data sets'"), "{a}");
        assert!(a.contains("--slurm-requeue") && a.contains("--set train.epochs=800") && a.contains("--only seed=0"));
        // Every #SBATCH line comes before the first command (sbatch stops reading at it).
        let first_cmd = a.lines().position(|l| !l.starts_with('#')).unwrap();
        assert!(a.lines().skip(first_cmd).all(|l| !l.starts_with("#SBATCH")), "{a}");
        let m = &s.merge;
        assert!(m.contains("merge --db /shared/sweeps/smoke-paper/results.sqlite \"${dbs[@]}\""), "{m}");
        assert!(
            m.contains("report --db /shared/sweeps/smoke-paper/results.sqlite --out /shared/sweeps/smoke-paper/report")
        );
        assert!(!m.contains("--array") && !m.contains("--gpus-per-task"), "{m}");
    }

    #[test]
    fn scripts_are_valid_bash() {
        let s = submission().scripts().unwrap();
        for text in [&s.array, &s.merge] {
            let out = Command::new("bash").args(["-n", "-c", text]).output().unwrap();
            assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
        }
    }

    #[test]
    fn bad_submissions_name_the_option() {
        let mut s = submission();
        s.time = Some("10".into());
        s.stop_before = 600;
        let e = s.scripts().unwrap_err().to_string();
        assert!(e.contains("--stop-before 600") && e.contains("600 s"), "{e}");
        let mut s = submission();
        s.dir = "/shared/my sweeps".into();
        let e = s.scripts().unwrap_err().to_string();
        assert!(e.contains("--dir /shared/my sweeps") && e.contains("spaces"), "{e}");
        let mut s = submission();
        s.sbatch_options = vec!["account=lab".into()];
        assert!(s.scripts().unwrap_err().to_string().contains("--sbatch account=lab"));
        let mut s = submission();
        s.shards = 0;
        assert!(s.scripts().unwrap_err().to_string().contains("--shards 0"));
    }

    /// Hostile names and values: a job folder never leaves `slurm/`, and nothing written into a
    /// script can add a line to it or run a command.
    #[test]
    fn hostile_names_and_values_cannot_escape_or_inject() {
        assert_eq!(default_dir("../../x", "smoke"), Path::new("slurm/.._.._x-smoke"));
        assert_eq!(default_dir("..", ""), Path::new("slurm/..-"));
        assert_eq!(folder_name(".."), "_");
        assert_eq!(folder_name("a/b c;rm -rf"), "a_b_c_rm_-rf");
        for dir in [default_dir("../../x", "smoke"), default_dir("..", "..")] {
            assert!(dir.components().count() == 2 && dir.starts_with("slurm"), "{}", dir.display());
            assert!(!dir.components().any(|c| c == std::path::Component::ParentDir), "{}", dir.display());
        }
        for partition in ["gpu\n#SBATCH --wrap=rm", "gpu; rm -rf /", "gpu part", "$(reboot)", ""] {
            let mut s = submission();
            s.partition = Some(partition.into());
            let e = s.scripts().unwrap_err().to_string();
            assert!(e.contains("--partition"), "{partition:?}: {e}");
        }
        let mut s = submission();
        s.experiment = "smoke\n#SBATCH --wrap=reboot".into();
        assert!(s.scripts().unwrap_err().to_string().contains("without newlines"));
        let mut s = submission();
        s.profile = "paper\rX".into();
        assert!(s.scripts().unwrap_err().to_string().contains("--profile"));
        // Values that are passed on are quoted: a --set with shell characters stays one word.
        let mut s = submission();
        s.reproduce_args = vec!["--set".into(), "optimizer.lr=$(reboot); `id`".into()];
        let array = s.scripts().unwrap().array;
        assert!(array.contains("--set 'optimizer.lr=$(reboot); `id`'"), "{array}");
        assert_eq!(
            array.lines().filter(|l| l.starts_with("#SBATCH")).count(),
            submission().scripts().unwrap().array.lines().filter(|l| l.starts_with("#SBATCH")).count()
        );
    }

    #[test]
    fn a_folder_is_reused_only_by_the_same_submission() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = submission();
        s.dir = tmp.path().join("job");
        let scripts = s.scripts().unwrap();
        prepare_dir(&s, "[experiment]\n", &scripts).unwrap();
        assert!(s.dir.join("logs").is_dir() && s.dir.join("shards").is_dir());
        prepare_dir(&s, "[experiment]\n", &scripts).unwrap();
        let e = prepare_dir(&s, "[experiment]\nname = \"x\"\n", &scripts).unwrap_err().to_string();
        assert!(e.contains("experiment.toml") && e.contains("different submission"), "{e}");
        s.shards = 2;
        let e = prepare_dir(&s, "[experiment]\n", &s.scripts().unwrap()).unwrap_err().to_string();
        assert!(e.contains("array.sbatch"), "{e}");
    }

    #[test]
    fn job_ids_and_requeue_decisions() {
        assert_eq!(parse_job_id("1234\n").unwrap(), "1234");
        assert_eq!(parse_job_id("1234;cluster").unwrap(), "1234");
        assert!(parse_job_id("Submitted batch job 12").is_err());
        // `scontrol show job` as Slurm 22.05 prints it at the time limit and after a scancel.
        let at_limit = "   JobState=COMPLETING Reason=TimeLimit Dependency=(null)";
        let cancelled = "   JobState=COMPLETING Reason=None Dependency=(null)";
        assert!(should_requeue(StopSignal::User1, ""));
        assert!(should_requeue(StopSignal::Terminate, at_limit));
        assert!(!should_requeue(StopSignal::Terminate, cancelled));
        assert!(!should_requeue(StopSignal::Interrupt, at_limit));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("projector.widths=[64, 32]"), "'projector.widths=[64, 32]'");
    }
}
