//! The bad-file corpus: every file in `tests/bad_experiments/` is a malformed experiment file whose
//! leading `# expect: TEXT` lines are fragments its error message must contain — the file, the
//! line and column where they are known, the field and what was expected. Parsing and planning
//! every profile must fail (never panic, never fall back to a default).

use std::path::Path;

use infomax_runner::plan::{plan, PlanOptions};
use infomax_runner::ExperimentFile;

fn first_error(path: &Path) -> Option<String> {
    let file = match ExperimentFile::load(path) {
        Ok(f) => f,
        Err(e) => return Some(e.to_string()),
    };
    for profile in file.profiles.keys() {
        if let Err(e) = plan(&file, profile, &[], &PlanOptions::default()) {
            return Some(e.to_string());
        }
    }
    None
}

#[test]
fn every_malformed_file_fails_with_its_expected_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_experiments");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus has {} files", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let expected: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# expect: ")).collect();
        assert!(!expected.is_empty(), "{}: no `# expect:` line", path.display());
        match first_error(path) {
            None => failures.push(format!("{}: accepted", path.display())),
            Some(msg) => {
                let name = path.file_name().unwrap().to_str().unwrap();
                if !msg.contains(name) {
                    failures.push(format!("{name}: the message does not name the file: {msg}"));
                }
                for fragment in expected {
                    if !msg.contains(fragment) {
                        failures.push(format!("{name}: expected `{fragment}` in: {msg}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
