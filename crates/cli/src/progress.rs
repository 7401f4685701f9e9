//! Progress bars the commands draw on stderr (indicatif hides them when stderr is not a
//! terminal). Training's bars are the runner's: `reproduce --no-progress` turns them off.

use std::borrow::Cow;

use indicatif::{ProgressBar, ProgressStyle};

/// A download's bar: bytes so far of `bytes`, the rate and the time left, after `prefix` (the
/// archive's file name).
pub fn download(prefix: impl Into<Cow<'static, str>>, bytes: u64) -> ProgressBar {
    let pb = ProgressBar::new(bytes).with_prefix(prefix);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb
}
