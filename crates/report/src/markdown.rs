//! The results as Markdown, for documents that quote them: `infomax report --markdown` prints the
//! block, `--into FILE` replaces the block between [`BEGIN`] and [`END`] in a document (the
//! README's results section, regenerated from `reports/reference.sqlite` by `just results`), so
//! no number in the docs is typed by hand. Only finished runs are shown, in a fixed order, and
//! nothing that changes between renders of the same database (no paths, no clock).

use std::fmt::Write as _;
use std::path::Path;

use infomax_runner::human::human_duration;

use crate::{index_rows, IndexRow, Result};

/// The line that opens a generated block in a document.
pub const BEGIN: &str = "<!-- results:begin -->";
/// The line that closes it.
pub const END: &str = "<!-- results:end -->";

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.1}"))
}

fn points(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:+.1}"))
}

/// The commit of a stored code version: `infomax 0.1.0+abc123456789` → `abc123456789`,
/// `infomax 0.1.0+v0.1-42-gabc1234-dirty` → `abc1234-dirty`.
fn commit_of(code_version: &str) -> &str {
    let describe = code_version.split_once('+').map_or(code_version, |(_, d)| d);
    describe.rsplit_once("-g").map_or(describe, |(_, hash)| hash)
}

/// The machine's CPU model and threads (`AMD EPYC 9R14, 2 threads`), without its memory and OS.
fn cpu_of(machine: &str) -> String {
    machine.split(", ").take(2).collect::<Vec<_>>().join(", ")
}

/// The Markdown block of the finished runs in the database at `db`: one table, a row per run in
/// the order experiment, profile, method, dataset, seed, each with its code version; the
/// machines are named once above it.
pub fn results(db: &Path) -> Result<String> {
    let data = crate::db::Database::load(db)?;
    let mut rows: Vec<IndexRow> = index_rows(&data).into_iter().filter(|r| r.status == "finished").collect();
    rows.sort_by(|a, b| {
        (&a.experiment, &a.profile, &a.method, &a.dataset, a.seed, &a.variant, a.id).cmp(&(
            &b.experiment,
            &b.profile,
            &b.method,
            &b.dataset,
            b.seed,
            &b.variant,
            b.id,
        ))
    });
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("No finished runs.\n");
        return Ok(out);
    }
    let mut machines: Vec<String> = rows.iter().map(|r| cpu_of(&r.machine)).collect();
    machines.sort();
    machines.dedup();
    let _ = writeln!(
        out,
        "{} finished runs on {}. Top-1 accuracy in percent of the frozen encoder, before training \
         (init) and after; the gain is in points. 200-NN: cosine similarity, votes weighted by \
         exp(s/0.1); 5-NN: Euclidean, majority; linear: the W-MSE protocol's probe.",
        rows.len(),
        machines.join("; ")
    );
    out.push_str(
        "\n| experiment / profile | method | dataset | seed | epochs | training | 200-NN init → after | gain \
         | 5-NN after | linear after | code |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let variant = if r.variant.is_empty() { String::new() } else { format!(" ({})", r.variant) };
        let _ = writeln!(
            out,
            "| {} / {} | {}{} | {} | {} | {} | {} | {} → {} | {} | {} | {} | {} |",
            r.experiment,
            r.profile,
            r.method,
            variant,
            r.dataset,
            r.seed,
            r.epochs_done,
            human_duration(r.train_seconds),
            percent(r.knn200_init),
            percent(r.knn200_trained),
            points(r.knn200_gain),
            percent(r.knn5_trained),
            percent(r.linear_trained),
            commit_of(&r.code_version),
        );
    }
    Ok(out)
}

/// `text` with the lines between its [`BEGIN`] and [`END`] lines replaced by `block`; an error
/// naming `path` when the markers are missing, repeated or out of order.
pub fn replace_block(path: &Path, text: &str, block: &str) -> Result<String> {
    let (begin, end) = block_bounds(path, text)?;
    let mut out = String::with_capacity(text.len() + block.len());
    out.push_str(&text[..begin]);
    out.push('\n');
    out.push_str(block.trim_end());
    out.push_str("\n\n");
    out.push_str(&text[end..]);
    Ok(out)
}

/// The generated block of `text` (between its markers), as [`results`] wrote it.
pub fn block_of<'a>(path: &Path, text: &'a str) -> Result<&'a str> {
    let (begin, end) = block_bounds(path, text)?;
    Ok(text[begin..end].trim())
}

/// Byte offsets just after the [`BEGIN`] line and at the start of the [`END`] line.
fn block_bounds(path: &Path, text: &str) -> Result<(usize, usize)> {
    let bad = |what: String| crate::Error::Markdown { path: path.to_path_buf(), what };
    let find = |marker: &str| -> Result<usize> {
        let mut at = text.match_indices(marker).map(|(i, _)| i);
        match (at.next(), at.next()) {
            (Some(i), None) => Ok(i),
            (None, _) => {
                Err(bad(format!("no `{marker}` line; the generated block goes between `{BEGIN}` and `{END}`")))
            }
            (Some(_), Some(_)) => Err(bad(format!("`{marker}` appears more than once"))),
        }
    };
    let (begin, end) = (find(BEGIN)?, find(END)?);
    if end < begin {
        return Err(bad(format!("`{END}` comes before `{BEGIN}`")));
    }
    Ok((begin + BEGIN.len(), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_replaced_between_its_markers_only() {
        let path = Path::new("README.md");
        let text = format!("# Title\n\n{BEGIN}\nold numbers\n{END}\n\nmore\n");
        let new = replace_block(path, &text, "new numbers\n").unwrap();
        assert_eq!(new, format!("# Title\n\n{BEGIN}\nnew numbers\n\n{END}\n\nmore\n"));
        assert_eq!(block_of(path, &new).unwrap(), "new numbers");
        assert_eq!(replace_block(path, &new, "new numbers").unwrap(), new, "replacing is idempotent");
    }

    #[test]
    fn missing_repeated_or_reversed_markers_are_errors_naming_the_file() {
        let path = Path::new("docs/x.md");
        for (text, expected) in [
            (format!("{BEGIN}\n"), "no `<!-- results:end -->` line"),
            (format!("{BEGIN}\n{BEGIN}\n{END}\n"), "appears more than once"),
            (format!("{END}\n{BEGIN}\n"), "comes before"),
        ] {
            let e = replace_block(path, &text, "x").unwrap_err().to_string();
            assert!(e.contains("docs/x.md") && e.contains(expected), "{e}");
        }
    }

    #[test]
    fn the_commit_and_the_cpu_are_read_from_what_the_run_stored() {
        assert_eq!(commit_of("infomax 0.1.0+v0.1-42-gabc1234"), "abc1234");
        assert_eq!(commit_of("infomax 0.1.0+abc123456789-dirty"), "abc123456789-dirty");
        assert_eq!(cpu_of("AMD EPYC 9R14, 2 threads, 23.4 GiB, Debian, device cpu"), "AMD EPYC 9R14, 2 threads");
    }
}
