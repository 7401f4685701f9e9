//! Mean, standard deviation and count over seeds, by polars: every table cell of the reports
//! and of `infomax compare` is one group of these samples.

use std::collections::HashMap;

use polars::prelude::*;
use serde::Serialize;

use crate::{Error, Result};

/// One run's value for a group, with its randomly initialised encoder's value when known.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub group: String,
    pub value: f64,
    pub init: Option<f64>,
}

/// A group's summary over its runs (seeds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    pub mean: f64,
    /// Sample standard deviation (n − 1); none for a single run.
    pub std: Option<f64>,
    pub n: usize,
    /// Mean over the same runs of the randomly initialised encoder's value.
    pub init: Option<f64>,
}

fn polars(e: PolarsError) -> Error {
    Error::Aggregate(e.to_string())
}

/// Summarise samples by group.
pub fn summarise(samples: &[Sample]) -> Result<HashMap<String, Stat>> {
    if samples.is_empty() {
        return Ok(HashMap::new());
    }
    let df = df!(
        "group" => samples.iter().map(|s| s.group.as_str()).collect::<Vec<_>>(),
        "value" => samples.iter().map(|s| s.value).collect::<Vec<_>>(),
        "init" => samples.iter().map(|s| s.init).collect::<Vec<_>>(),
    )
    .map_err(polars)?;
    let mut stats = HashMap::new();
    for part in df.partition_by_stable(["group"], true).map_err(polars)? {
        let group = part.column("group").and_then(|c| c.str()).map_err(polars)?;
        let values = part.column("value").and_then(|c| c.f64()).map_err(polars)?;
        let inits = part.column("init").and_then(|c| c.f64()).map_err(polars)?;
        let (Some(group), Some(mean)) = (group.get(0), values.mean()) else { continue };
        let n = values.len() - values.null_count();
        let std = values.std(1).filter(|s| n > 1 && s.is_finite());
        stats.insert(group.to_string(), Stat { mean, std, n, init: inits.mean() });
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_and_count_per_group() {
        let s = |g: &str, v: f64, i: Option<f64>| Sample { group: g.into(), value: v, init: i };
        let stats =
            summarise(&[s("a", 1.0, Some(0.5)), s("a", 3.0, Some(1.5)), s("a", 5.0, None), s("b", 2.0, None)]).unwrap();
        let a = stats["a"];
        assert_eq!((a.mean, a.n, a.init), (3.0, 3, Some(1.0)));
        assert!((a.std.unwrap() - 2.0).abs() < 1e-12, "sample std of 1, 3, 5 is 2");
        let b = stats["b"];
        assert_eq!((b.mean, b.std, b.n, b.init), (2.0, None, 1, None));
        assert!(summarise(&[]).unwrap().is_empty());
    }
}
