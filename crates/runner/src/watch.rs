//! What someone watching a sweep sees while a run trains: in a terminal, a progress bar per epoch
//! whose message carries the running loss, the learning rate, images/s, the elapsed time, the
//! run's ETA and the sweep's; elsewhere (a Slurm log, `--no-progress`) the same as a log line
//! every `log_every` seconds, so a log never goes silent for an epoch.
//!
//! The ETAs are of training: the run's is its steps left at the epoch's measured step rate; the
//! sweep's adds the training work of the runs after this one (their floating-point operations,
//! [`crate::estimate::run_flops`]) at the rate this run reaches.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::human::human_duration;

/// Where a run stands in its sweep.
#[derive(Debug, Clone, Copy, Default)]
pub struct SweepPosition {
    /// This run's place (from 1) and the number of runs planned.
    pub index: usize,
    pub count: usize,
    /// Training work (floating-point operations) of the runs after this one still to train.
    pub flops_after: f64,
}

/// How a run reports its progress.
pub struct Watch {
    bar: ProgressBar,
    /// Log lines, when no bar is drawn: their interval and when the last was written.
    log_every: Option<Duration>,
    last_log: Instant,
    run_started: Instant,
    epoch_started: Instant,
    epoch_first_step: usize,
    epoch: usize,
    epochs: usize,
    steps_per_epoch: usize,
    total_steps: usize,
    batch_size: usize,
    flops_per_image: f64,
    sweep: SweepPosition,
}

/// Progress at one step, as shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub images_per_second: f64,
    pub elapsed: f64,
    pub run_eta: f64,
    pub sweep_eta: f64,
}

impl Watch {
    /// `bar`: draw a progress bar (else log lines every `log_every`).
    pub fn new(
        bar: bool,
        log_every: Duration,
        config: &crate::config::RunConfig,
        steps_per_epoch: usize,
        sweep: SweepPosition,
    ) -> Self {
        let now = Instant::now();
        Watch {
            bar: ProgressBar::hidden(),
            log_every: (!bar).then_some(log_every),
            last_log: now,
            run_started: now,
            epoch_started: now,
            epoch_first_step: 0,
            epoch: 0,
            epochs: config.train.epochs,
            steps_per_epoch,
            total_steps: steps_per_epoch * config.train.epochs,
            batch_size: config.train.batch_size,
            flops_per_image: crate::estimate::train_flops_per_image(config),
            sweep,
        }
    }

    /// An epoch starts at its step `first_step` (past 0 when resumed inside it).
    pub fn start_epoch(&mut self, epoch: usize, first_step: usize) {
        self.epoch = epoch;
        self.epoch_started = Instant::now();
        self.epoch_first_step = first_step;
        if self.log_every.is_none() {
            let run = match self.sweep.count {
                0 => String::new(),
                n => format!("run {}/{n} ", self.sweep.index),
            };
            self.bar = ProgressBar::new(self.steps_per_epoch as u64)
                .with_prefix(format!("{run}epoch {epoch}/{}", self.epochs));
            self.bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            self.bar.set_position(first_step as u64);
        }
    }

    /// The rates and ETAs after `done` steps of the epoch, `global_step` of the run.
    pub fn progress(&self, done_in_epoch: usize, global_step: usize) -> Progress {
        let epoch_seconds = self.epoch_started.elapsed().as_secs_f64();
        let steps = done_in_epoch.saturating_sub(self.epoch_first_step);
        let seconds_per_step = if steps > 0 { epoch_seconds / steps as f64 } else { f64::NAN };
        let images_per_second = self.batch_size as f64 / seconds_per_step;
        let run_eta = self.total_steps.saturating_sub(global_step) as f64 * seconds_per_step;
        let sweep_eta = run_eta + self.sweep.flops_after / (self.flops_per_image * images_per_second);
        Progress { images_per_second, elapsed: self.run_started.elapsed().as_secs_f64(), run_eta, sweep_eta }
    }

    /// A step ended: `done_in_epoch` steps of the epoch and `global_step` of the run are done,
    /// the epoch's mean loss so far is `loss`, the step's learning rate `lr`.
    pub fn step(&mut self, done_in_epoch: usize, global_step: usize, loss: f64, lr: f64) {
        let p = self.progress(done_in_epoch, global_step);
        let text = format!(
            "loss {loss:.4} · lr {lr:.4} · {} · {} elapsed · run ETA {} · sweep ETA {}",
            rate(p.images_per_second),
            human_duration(p.elapsed),
            eta(p.run_eta),
            eta(p.sweep_eta)
        );
        match self.log_every {
            None => {
                self.bar.set_position(done_in_epoch as u64);
                self.bar.set_message(text);
            }
            Some(every) if self.last_log.elapsed() >= every || done_in_epoch == self.steps_per_epoch => {
                self.last_log = Instant::now();
                let run = match self.sweep.count {
                    0 => String::new(),
                    n => format!("run {}/{n}, ", self.sweep.index),
                };
                tracing::info!(
                    "{run}epoch {}/{} step {done_in_epoch}/{} (run step {global_step}/{}): {text}",
                    self.epoch,
                    self.epochs,
                    self.steps_per_epoch,
                    self.total_steps
                );
            }
            Some(_) => {}
        }
    }

    /// Clear the epoch's bar (before its summary line is logged).
    pub fn finish_epoch(&self) {
        self.bar.finish_and_clear();
    }
}

/// `512 img/s`, with a tenth below 100.
fn rate(images_per_second: f64) -> String {
    if !images_per_second.is_finite() {
        "— img/s".into()
    } else if images_per_second < 100.0 {
        format!("{images_per_second:.1} img/s")
    } else {
        format!("{images_per_second:.0} img/s")
    }
}

fn eta(seconds: f64) -> String {
    if seconds.is_finite() {
        human_duration(seconds)
    } else {
        "—".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dataset, Method, RunConfig};

    /// The ETAs: the run's steps left at the measured rate, then the later runs' work at the
    /// rate this run reaches (measured by the flops of its own images).
    #[test]
    fn etas_are_the_work_left_at_the_measured_rate() {
        let mut config = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
        config.train.epochs = 10;
        config.train.batch_size = 100;
        let per_image = crate::estimate::train_flops_per_image(&config);
        let sweep = SweepPosition { index: 1, count: 2, flops_after: per_image * 1000.0 };
        let mut w = Watch::new(false, Duration::from_secs(30), &config, 50, sweep);
        w.start_epoch(1, 0);
        std::thread::sleep(Duration::from_millis(200));
        let p = w.progress(10, 10);
        // 10 steps of 100 images in ~0.2 s: ~5,000 img/s, 490 steps left ≈ 9.8 s, and 1,000
        // images of the next run ≈ 0.2 s more.
        assert!((p.images_per_second - 5000.0).abs() < 1500.0, "{p:?}");
        let spi = 1.0 / p.images_per_second;
        assert!((p.run_eta - 490.0 * 100.0 * spi).abs() < 1e-6 * p.run_eta, "{p:?}");
        assert!((p.sweep_eta - p.run_eta - 1000.0 * spi).abs() < 1e-6 * p.sweep_eta, "{p:?}");
        assert!(p.elapsed >= 0.2);
        assert_eq!(rate(512.4), "512 img/s");
        assert_eq!(rate(51.24), "51.2 img/s");
        assert_eq!(eta(f64::NAN), "—");
    }
}
