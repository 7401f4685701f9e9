//! Locating errors in an experiment file: the line and column where a path into the TOML
//! document is written.

/// One step of a path into the TOML document, for finding where something is written.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

pub(super) fn keys(path: &[&str]) -> Vec<Seg> {
    path.iter().map(|k| Seg::Key(k.to_string())).collect()
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where a path is written in the document: the key (or array element) of its deepest part
/// that exists.
pub(super) fn position_of(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut span: Option<std::ops::Range<usize>> = None;
    let mut node: Option<&DeValue> = None;
    let root = doc.get_ref();
    for seg in path {
        let table = match node {
            None => Some(root),
            Some(DeValue::Table(t)) => Some(t),
            _ => None,
        };
        match (seg, table, node) {
            (Seg::Key(k), Some(t), _) => {
                let Some((key, value)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k.as_str()) else {
                    break;
                };
                span = Some(key.span());
                node = Some(value.get_ref());
            }
            (Seg::Index(i), _, Some(DeValue::Array(a))) => {
                let Some(v) = a.get(*i) else { break };
                span = Some(v.span());
                node = Some(v.get_ref());
            }
            _ => break,
        }
    }
    span.map(|s| line_col(text, s.start))
}
