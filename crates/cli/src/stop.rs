//! Stopping a sweep cleanly on a signal: the flag the trainer polls between steps, and which
//! signal raised it (for `reproduce --slurm-requeue`).

/// A flag raised by SIGINT, SIGTERM (a scheduler's stop) or SIGUSR1 (Slurm's time-limit
/// warning): the trainer finishes its step, checkpoints, marks the run `interrupted` and the
/// process exits with 130 (or requeues itself under `--slurm-requeue`); a second signal ends it
/// at once.
pub struct StopOnSignal {
    /// Raised by the first signal; the trainer reads it after every step (`RunContext::stop`).
    pub flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    which: std::sync::Arc<std::sync::atomic::AtomicI32>,
}

impl StopOnSignal {
    /// Catch the three signals on a thread of their own; without them (a platform that refuses),
    /// a stopped run still resumes from its last checkpoint.
    pub fn install() -> Self {
        use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
        use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
        let flag = std::sync::Arc::new(AtomicBool::new(false));
        let which = std::sync::Arc::new(AtomicI32::new(0));
        match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1]) {
            Ok(mut signals) => {
                let (seen, last) = (flag.clone(), which.clone());
                std::thread::spawn(move || {
                    for sig in signals.forever() {
                        if seen.swap(true, Ordering::SeqCst) {
                            std::process::exit(130);
                        }
                        last.store(sig, Ordering::SeqCst);
                        let name = match sig {
                            SIGUSR1 => "SIGUSR1",
                            SIGTERM => "SIGTERM",
                            _ => "SIGINT",
                        };
                        eprintln!("{name} received: stopping after the current step (again to stop at once)");
                    }
                });
            }
            Err(e) => tracing::warn!(
                "cannot catch SIGINT/SIGTERM/SIGUSR1 ({e}); an interrupted run resumes from its last checkpoint"
            ),
        }
        StopOnSignal { flag, which }
    }

    /// The signal that raised the flag, if one did.
    pub fn signal(&self) -> Option<infomax_runner::slurm::StopSignal> {
        use infomax_runner::slurm::StopSignal;
        match self.which.load(std::sync::atomic::Ordering::SeqCst) {
            signal_hook::consts::SIGUSR1 => Some(StopSignal::User1),
            signal_hook::consts::SIGTERM => Some(StopSignal::Terminate),
            signal_hook::consts::SIGINT => Some(StopSignal::Interrupt),
            _ => None,
        }
    }
}
