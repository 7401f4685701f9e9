//! Run identities (the SHA-256 of a run's canonical configuration) of every run the shipped
//! experiment files plan, and of every method's defaults on every dataset, against
//! `tests/run_identities.txt`: a change to the configuration's types or defaults that would give
//! existing runs new identities (and so train them again) fails here.

use std::path::Path;

use infomax_runner::config::{Dataset, Method, RunConfig};
use infomax_runner::ExperimentFile;

fn identities() -> String {
    let mut lines = Vec::new();
    for method in Method::ALL {
        for dataset in Dataset::ALL {
            let config = RunConfig::defaults(method, dataset);
            lines.push(format!("defaults {} {:?} {}", method.name(), dataset, config.hash()));
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"));
    files.sort();
    for path in files {
        let file = ExperimentFile::load(&path).unwrap();
        for profile in file.profiles.keys() {
            let plan = infomax_runner::plan::plan(&file, profile, &[], &Default::default()).unwrap();
            for run in plan {
                lines.push(format!("{} {} {}", run.config.experiment, run.config.profile, run.config.hash()));
            }
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn shipped_runs_keep_their_identities() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/run_identities.txt");
    let now = identities();
    if std::env::var_os("INFOMAX_WRITE_IDENTITIES").is_some() {
        std::fs::write(&golden, &now).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    for (i, (a, b)) in expected.lines().zip(now.lines()).enumerate() {
        assert_eq!(a, b, "line {}: a run's identity changed", i + 1);
    }
    assert_eq!(expected.lines().count(), now.lines().count());
}
