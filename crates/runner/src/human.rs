//! Quantities as people read them, the same in the terminal and in the report's pages.

/// A duration: `12.3 s`, `3 min 05 s`, `1 h 02 min`, `10.4 days` — to a tenth of a second below
/// a minute, to the second below an hour, to the minute below two days.
pub fn human_duration(seconds: f64) -> String {
    let total = seconds.round() as u64;
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if total < 3600 {
        format!("{} min {:02} s", total / 60, total % 60)
    } else if total < 172_800 {
        format!("{} h {:02} min", total / 3600, (total % 3600) / 60)
    } else {
        format!("{:.1} days", seconds / 86_400.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(12.34), "12.3 s");
        assert_eq!(human_duration(185.0), "3 min 05 s");
        assert_eq!(human_duration(3720.0), "1 h 02 min");
    }

    /// The dry run's estimates: whole seconds show their tenth, long sweeps read in days.
    #[test]
    fn estimates_read_naturally() {
        assert_eq!(human_duration(50.0), "50.0 s");
        assert_eq!(human_duration(7_320.0), "2 h 02 min");
        assert_eq!(human_duration(900_000.0), "10.4 days");
    }
}
