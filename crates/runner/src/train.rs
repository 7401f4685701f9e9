//! Training and evaluating one run, writing every epoch and evaluation to the store as it
//! happens.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor, D};
use infomax_data::seed::{rng_for, Purpose};
use infomax_data::views::augmented_views;
use infomax_data::{Images, Split, Unreadable};
use rand::seq::SliceRandom;

use crate::checkpoint;
use crate::config::{OptimizerKind, Precision, RunConfig};
use crate::eval::{extract_features, knn_cosine_weighted, knn_euclidean_majority};
use crate::method::{Network, StepContext};
use crate::optim::{Adam, Lars, LrSchedule, Optimizer, Sgd};
use crate::probe::{linear_probe, ProbeConfig};
use crate::store::lease::{Claim, Heartbeat};
use crate::store::{EpochRecord, EvalRecord, Metric, RunStatus, StepRecord, Store};
use crate::tensorboard::EventWriter;
use crate::watch::{SweepPosition, Watch};
use crate::{Error, Result};

/// Batches of views prepared ahead of the trainer.
const PREFETCH_BATCHES: usize = 2;

/// The most steps a run records in `steps` (and in its TensorBoard events): every step of a run
/// of up to this many, else every n-th step, n the smallest that keeps it within. About 0.2 KB a
/// recorded step in the database (`bench/README.md`), so a run records at most ~20 MB of steps
/// (a 1,000-epoch CIFAR-10 run at batch 256 has 195,000 steps and records every other one).
pub const RECORDED_STEPS_MAX: usize = 100_000;

/// Every how many steps a run of `total_steps` records one (see [`RECORDED_STEPS_MAX`]).
pub fn record_every(total_steps: usize) -> usize {
    total_steps.div_ceil(RECORDED_STEPS_MAX).max(1)
}

/// Where a run reads data and writes results.
pub struct RunContext<'a> {
    pub data_root: PathBuf,
    pub store: &'a Store,
    /// The GPU a `train.device = "cuda"` run uses (`--device cuda:N`).
    pub cuda_ordinal: usize,
    /// Draw progress bars (they also hide themselves when stderr is not a terminal); without
    /// them, a log line every `log_every`.
    pub progress: bool,
    /// How often a log line is written without a bar, and how often recorded steps are written
    /// to the database and the event file within an epoch.
    pub log_every: std::time::Duration,
    /// Folder of this database's TensorBoard event files (`results.sqlite` →
    /// `results.tensorboard/`, a run in `<experiment>/<profile>/<run>/`); none: not written.
    pub tensorboard: Option<PathBuf>,
    /// Called with the run's id after every recorded epoch and evaluation (the CLI re-renders
    /// the report).
    pub on_record: Option<&'a (dyn Fn(i64) + Sync)>,
    pub code_version: String,
    pub machine: String,
    /// Folder of this database's per-run checkpoints (`<folder>/<config hash>/`); each database
    /// has its own (`results.sqlite` → `results.checkpoints/`), so two databases never read each
    /// other's.
    pub checkpoints: PathBuf,
    /// Set by the binary's SIGINT/SIGTERM handler: training stops after the step in flight.
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Skip images that stop decoding mid-run (datasets read from their files), each logged and
    /// counted in the epoch's log line, instead of failing the run (`--skip-unreadable`).
    pub skip_unreadable: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// A run with the same config hash had already finished (or diverged): nothing was trained.
    AlreadyDone {
        run_id: i64,
        status: String,
    },
    /// Another live process trains it (its lease): nothing was trained here.
    Busy {
        run_id: i64,
        owner: String,
    },
    Finished {
        run_id: i64,
    },
    Diverged {
        run_id: i64,
        epoch: usize,
        step: usize,
    },
}

/// Whether a run draws progress bars: asked for, and stderr is a terminal.
fn draws_bars(ctx: &RunContext) -> bool {
    ctx.progress && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// An evaluation's progress bar (hidden unless bars are drawn).
fn eval_bar(ctx: &RunContext, len: u64, epoch: usize) -> indicatif::ProgressBar {
    if !draws_bars(ctx) {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len).with_prefix(format!("eval ep {epoch}"));
    pb.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} images, ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb
}

/// The data a run trains and evaluates on, loaded and checked before the run is recorded:
/// the labelled training split (the k-NN bank), the test split, and the pre-training images
/// (STL-10: train followed by unlabeled; `train.train_images` keeps N of them, `Images::subset`).
struct RunData {
    full_train: Images,
    train: Images,
    test: Images,
}

impl RunData {
    fn load(config: &RunConfig, ctx: &RunContext) -> Result<Self> {
        let (d, root) = (&config.dataset, ctx.data_root.as_path());
        // One policy, and one list of skipped files, for every split.
        let unreadable = if ctx.skip_unreadable { Unreadable::skip() } else { Unreadable::default() };
        let full_train = d.open(root, Split::Train, unreadable.clone())?;
        let test = d.open(root, Split::Test, unreadable.clone())?;
        let pretrain =
            if d.pretrain_splits() == [Split::Train] { full_train.clone() } else { d.open_pretrain(root, unreadable)? };
        let train = if config.train.train_images > 0 { pretrain.subset(config.train.train_images) } else { pretrain };
        let train = train.unlabelled();
        if train.len() < config.train.batch_size {
            return Err(Error::Run {
                run: config.hash(),
                what: format!("{} training images, fewer than one batch of {}", train.len(), config.train.batch_size),
            });
        }
        Ok(Self { full_train, train, test })
    }

    /// How many unreadable images were skipped so far, and the first of them (none: `None`).
    fn skipped_note(&self) -> Option<String> {
        // The splits share one list (`load`); a decoded set has none, so ask each.
        let skipped =
            [&self.train, &self.full_train, &self.test].into_iter().map(Images::skipped).max_by_key(Vec::len)?;
        let first = skipped.first()?;
        Some(format!(
            "{} unreadable images skipped (--skip-unreadable; counted since this process started), the first {}",
            skipped.len(),
            first.display()
        ))
    }
}

/// Train (unless already done), evaluate and store one run.
///
/// Bad input (a missing dataset, too few images) fails before anything is written; a run that
/// fails later keeps what it recorded and is marked `failed` with the reason.
pub fn execute(config: &RunConfig, ctx: &RunContext, sweep: SweepPosition) -> Result<RunOutcome> {
    let hash = config.hash();
    if let Some((run_id, status)) = ctx.store.completed_run(&hash)? {
        return Ok(RunOutcome::AlreadyDone { run_id, status });
    }
    for clamp in crate::validate::clamps(config, &ctx.data_root) {
        tracing::warn!("{clamp}");
    }
    let data = RunData::load(config, ctx)?;
    // A device that cannot be opened is bad input too: it fails before a run row exists.
    let device = crate::device::open(config.train.device, ctx.cuda_ordinal)?;
    if config.train.precision == Precision::Bf16 && device.is_cpu() && !infomax_model::conv::bf16_products() {
        tracing::warn!(
            "train.precision = \"bf16\" on a CPU without AVX512-BF16: products are rounded to bf16 on f32 kernels, \
             slower than f32; this checks bf16's numbers, it does not speed the run up"
        );
    }
    let ckpt_dir = checkpoint::dir_for(&ctx.checkpoints, &hash);
    let events_dir = ctx.tensorboard.as_ref().map(|root| crate::tensorboard::run_dir(root, config));
    let (run_id, resume) = match ctx.store.claim_run(config, &ctx.code_version, &ctx.machine)? {
        Claim::Done { run_id, status } => return Ok(RunOutcome::AlreadyDone { run_id, status }),
        Claim::Busy { run_id, owner } => return Ok(RunOutcome::Busy { run_id, owner }),
        Claim::Resume(run_id) => {
            // Files an interrupted write left behind are not a checkpoint.
            checkpoint::remove_unfinished_writes(&ckpt_dir)?;
            let mut pos = checkpoint::latest(&ckpt_dir, &hash)?;
            // A checkpoint past what this row recorded was written by another row of the same
            // configuration (an earlier attempt that failed): its epochs are not in this row.
            let recorded = ctx.store.last_recorded_epoch(run_id)?;
            if let Some(p) = pos.filter(|p| p.epoch > recorded) {
                tracing::warn!(
                    "run {run_id}: the checkpoint after epoch {} is not this run's (it recorded {recorded} epochs); \
                     training it from the start",
                    p.epoch
                );
                checkpoint::clear(&ckpt_dir)?;
                pos = None;
            }
            match pos {
                Some(p) => match p.in_epoch {
                    Some(s) => {
                        tracing::info!("run {run_id} resumes from its checkpoint at epoch {}, step {s}", p.epoch + 1)
                    }
                    None => tracing::info!("run {run_id} resumes from its checkpoint after epoch {}", p.epoch),
                },
                None => tracing::warn!(
                    "run {run_id} was interrupted before its first checkpoint; training it from the start"
                ),
            }
            ctx.store.resume_run(run_id, pos)?;
            (run_id, pos)
        }
        Claim::Fresh(run_id) => {
            // A fresh run: checkpoints and events left by an earlier failed attempt are not its
            // state.
            checkpoint::clear(&ckpt_dir)?;
            if let Some(dir) = &events_dir {
                checkpoint::clear(dir)?;
            }
            (run_id, None)
        }
    };
    // The lease is renewed while this run trains (and dropped with it).
    let _heartbeat = Heartbeat::start(ctx.store.path(), run_id);
    let events = events_dir.as_deref().map(EventWriter::create).transpose()?;
    let place = Place { run_id, ckpt_dir: &ckpt_dir, events, sweep };
    match train_and_evaluate(config, ctx, &device, &data, place, resume) {
        Ok(outcome) => {
            match &outcome {
                RunOutcome::Diverged { epoch, step, .. } => {
                    let detail = format!("loss not finite at epoch {epoch}, step {step}");
                    ctx.store.finish_run(run_id, RunStatus::Diverged, Some(&detail))?;
                }
                // Skipped images are on the run's record, not only in its log.
                _ => ctx.store.finish_run(run_id, RunStatus::Finished, data.skipped_note().as_deref())?,
            }
            Ok(outcome)
        }
        Err(e @ Error::Interrupted { .. }) => {
            let _ = ctx.store.finish_run(run_id, RunStatus::Interrupted, Some(&e.to_string()));
            Err(e)
        }
        Err(e) => {
            // Keep what was recorded and say why the run stopped.
            let _ = ctx.store.finish_run(run_id, RunStatus::Failed, Some(&e.to_string()));
            Err(e)
        }
    }
}

/// Where a recorded run writes: its row, its checkpoint folder, its event file, and its place in
/// the sweep.
struct Place<'a> {
    run_id: i64,
    ckpt_dir: &'a std::path::Path,
    events: Option<EventWriter>,
    sweep: SweepPosition,
}

/// Train a recorded run from its start or its checkpoint, evaluating as its config says, and
/// write every step, epoch, evaluation and checkpoint as it happens.
fn train_and_evaluate(
    config: &RunConfig,
    ctx: &RunContext,
    device: &Device,
    data: &RunData,
    place: Place,
    resume: Option<checkpoint::Position>,
) -> Result<RunOutcome> {
    let run_id = place.run_id;
    let mut t = Training::build(config, ctx, device, data, place)?;
    let Start { first_epoch, mut step, mut in_epoch } = match resume {
        Some(_) => t.restore()?,
        None => {
            t.evaluate(0, 0)?;
            Start { first_epoch: 1, step: 0, in_epoch: None }
        }
    };
    for epoch in first_epoch..=config.train.epochs {
        let record = match t.train_epoch(epoch, &mut step, in_epoch.take())? {
            EpochEnd::Trained(record) => record,
            EpochEnd::Diverged(outcome) => return Ok(outcome),
        };
        t.finish_epoch(&record, step)?;
    }
    Ok(RunOutcome::Finished { run_id })
}

/// A run in training: its data and evaluation subsets, the network, its optimiser, and the learning-rate schedule.
struct Training<'a> {
    config: &'a RunConfig,
    ctx: &'a RunContext<'a>,
    device: &'a Device,
    data: &'a RunData,
    run_id: i64,
    ckpt_dir: &'a std::path::Path,
    hash: String,
    /// The labelled training images the k-NN bank is made of, and the test images queried.
    bank_idx: Vec<usize>,
    test_idx: Vec<usize>,
    net: Network,
    opt: Box<dyn Optimizer>,
    schedule: LrSchedule,
    steps_per_epoch: usize,
    /// Every how many steps one is recorded, and those recorded since the last write.
    record_every: usize,
    steps: Vec<StepRecord>,
    events: Option<EventWriter>,
    watch: Watch,
}

/// Where training starts: the first epoch to train, the optimiser steps already taken, and, when
/// resuming mid-epoch, the step the epoch starts at and its sums so far.
struct Start {
    first_epoch: usize,
    step: usize,
    in_epoch: Option<(usize, checkpoint::PartialEpoch)>,
}

/// How an epoch's steps ended.
enum EpochEnd {
    /// Every step ran: the epoch's row, not yet recorded.
    Trained(EpochRecord),
    /// A step's loss was not finite.
    Diverged(RunOutcome),
}

impl<'a> Training<'a> {
    /// Build the network, the optimiser and the schedule; nothing is written.
    fn build(
        config: &'a RunConfig,
        ctx: &'a RunContext<'a>,
        device: &'a Device,
        data: &'a RunData,
        place: Place<'a>,
    ) -> Result<Self> {
        let Place { run_id, ckpt_dir, events, sweep } = place;
        let RunData { full_train, train, test } = data;
        let bank_n =
            if config.eval.bank_images > 0 { config.eval.bank_images.min(full_train.len()) } else { full_train.len() };
        let test_n = if config.eval.test_images > 0 { config.eval.test_images.min(test.len()) } else { test.len() };
        // The first images, or, where a split is stored class after class, spread over its classes.
        let bank_idx = full_train.subset_indices(bank_n);
        let test_idx = test.subset_indices(test_n);

        let net = Network::new(config, device)?;
        let opt = optimizer_for(config, &net);
        let steps_per_epoch = train.len() / config.train.batch_size;
        let schedule = LrSchedule::for_run(config, steps_per_epoch);
        Ok(Self {
            config,
            ctx,
            device,
            data,
            run_id,
            ckpt_dir,
            hash: config.hash(),
            bank_idx,
            test_idx,
            net,
            opt,
            record_every: record_every(schedule.total_steps),
            schedule,
            steps_per_epoch,
            steps: Vec::new(),
            events,
            watch: Watch::new(draws_bars(ctx), ctx.log_every, config, steps_per_epoch, sweep),
        })
    }

    /// Write the steps recorded since the last write, to the database and the event file.
    fn write_steps(&mut self) -> Result<()> {
        self.ctx.store.record_steps(self.run_id, &self.steps)?;
        if let Some(events) = &mut self.events {
            for s in &self.steps {
                let mut values = vec![
                    ("step/loss".to_string(), s.loss),
                    ("step/lr".to_string(), s.lr),
                    ("step/images_per_second".to_string(), s.images_per_second),
                ];
                values.extend(s.terms.iter().map(|(n, v)| (format!("step/{n}"), *v)));
                events.scalars(s.step as u64, values.iter().map(|(t, v)| (t.as_str(), *v)))?;
            }
            events.flush()?;
        }
        self.steps.clear();
        Ok(())
    }

    /// Tell the CLI something was recorded (it re-renders the report).
    fn recorded(&self) {
        if let Some(f) = self.ctx.on_record {
            f(self.run_id);
        }
    }

    /// Load the latest checkpoint into the network and the optimiser: training goes on after
    /// its epoch, or inside it from the step it was taken at.
    fn restore(&mut self) -> Result<Start> {
        let (ckpt_dir, hash) = (self.ckpt_dir, &self.hash);
        let pos = checkpoint::restore(ckpt_dir, hash, &self.net, self.opt.as_mut())?
            .ok_or_else(|| Error::Run { run: hash.clone(), what: "its checkpoint disappeared".into() })?;
        let mut in_epoch = None;
        if let Some(s) = pos.in_epoch {
            let sums = checkpoint::latest_partial(ckpt_dir, hash)?.unwrap_or(checkpoint::PartialEpoch {
                loss_sum: 0.0,
                term_sums: Vec::new(),
                wall_seconds: 0.0,
            });
            in_epoch = Some((s, sums));
        }
        Ok(Start { first_epoch: pos.epoch + 1, step: pos.step, in_epoch })
    }

    /// The k-NN (and, when the config asks, linear-probe) accuracies after `epoch` (`step`
    /// optimiser steps), recorded.
    fn evaluate(&mut self, epoch: usize, step: usize) -> Result<()> {
        let Training { config, ctx, device, data, run_id, ref bank_idx, ref test_idx, ref net, .. } = *self;
        let RunData { full_train, test, .. } = data;
        let (bank_n, test_n) = (bank_idx.len(), test_idx.len());
        let pb = eval_bar(ctx, (bank_n + test_n) as u64, epoch);
        let classes = full_train.num_classes();
        let bank = extract_features(net, full_train, bank_idx, &config.augment, config.eval.batch_size, device, |n| {
            pb.inc(n as u64)
        })?;
        let queries = extract_features(net, test, test_idx, &config.augment, config.eval.batch_size, device, |n| {
            pb.inc(n as u64)
        })?;
        pb.finish_and_clear();
        let knn5 = knn_euclidean_majority(&bank, &queries, 5, classes)?;
        let knn200 = knn_cosine_weighted(&bank, &queries, 200, 0.1, classes)?;
        let mut results = vec![(Metric::Knn5, knn5), (Metric::Knn200, knn200)];
        if config.eval.linear_epochs > 0 {
            let cfg = ProbeConfig {
                epochs: config.eval.linear_epochs,
                batch_size: config.eval.linear_batch_size,
                seed: config.seed,
                stream: epoch as u64,
            };
            let linear = linear_probe(&bank, &queries, classes, &cfg)?;
            tracing::info!("epoch {epoch}: linear probe top-1 {:.2} %, top-5 {:.2} %", linear.top1, linear.top5);
            results.push((Metric::Linear, linear));
        }
        for (metric, acc) in &results {
            ctx.store.record_eval(
                run_id,
                &EvalRecord {
                    epoch,
                    protocol: metric.protocol().into(),
                    k: metric.k(),
                    top1: acc.top1,
                    top5: acc.top5,
                    bank_size: bank_n,
                    test_size: test_n,
                },
            )?;
        }
        tracing::info!("epoch {epoch}: 5-NN top-1 {:.2} %, 200-NN top-1 {:.2} %", knn5.top1, knn200.top1);
        if let Some(events) = &mut self.events {
            let mut values: Vec<(String, f64)> = Vec::new();
            for (metric, acc) in &results {
                values.push((format!("eval/{}", metric.key()), acc.top1));
                if *metric == Metric::Linear {
                    values.push((format!("eval/{}", Metric::LinearTop5.key()), acc.top5));
                }
            }
            events.scalars(step as u64, values.iter().map(|(t, v)| (t.as_str(), *v)))?;
            events.flush()?;
        }
        self.recorded();
        Ok(())
    }

    /// Run one epoch's steps (from `resume`'s step when resuming inside it), the next batches'
    /// views augmented on their own thread; `step` counts the optimiser steps. A stop request
    /// checkpoints where the epoch stands and ends the run as interrupted.
    fn train_epoch(
        &mut self,
        epoch: usize,
        step: &mut usize,
        resume: Option<(usize, checkpoint::PartialEpoch)>,
    ) -> Result<EpochEnd> {
        let (config, data, steps_per_epoch) = (self.config, self.data, self.steps_per_epoch);
        let train = &data.train;
        let b = config.train.batch_size;
        let started = Instant::now();
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng_for(config.seed, Purpose::Shuffle, epoch as u64, 0, 0));
        // A mid-epoch resume skips the steps already taken (the order and every view are
        // functions of the seed, the epoch and the image) and carries the epoch's sums on.
        let (first_step, carried) = match resume {
            Some((s, sums)) => (s.min(steps_per_epoch), sums),
            None => (0, checkpoint::PartialEpoch { loss_sum: 0.0, term_sums: Vec::new(), wall_seconds: 0.0 }),
        };
        self.watch.start_epoch(epoch, first_step);
        let mut sums: Vec<(String, f64)> = carried.term_sums;
        let mut loss_sum = carried.loss_sum;
        let mut lr = self.schedule.lr(step.saturating_sub(1));
        let side = config.augment.size();
        // The next batches' views are augmented on their own thread while this one trains.
        let stopped = std::thread::scope(|scope| -> Result<Option<EpochStop>> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<infomax_data::Result<Vec<Vec<f32>>>>(PREFETCH_BATCHES);
            let order = &order;
            scope.spawn(move || {
                for s in first_step..steps_per_epoch {
                    let idx = &order[s * b..(s + 1) * b];
                    let views =
                        augmented_views(train, idx, config.train.views, &config.augment, config.seed, epoch as u64);
                    // A batch that cannot be made ends the epoch with its error.
                    let failed = views.is_err();
                    if tx.send(views).is_err() || failed {
                        break; // the trainer stopped early, or will with this error
                    }
                }
            });
            let mut step_started = Instant::now();
            // Recorded steps are written at least every `log_every` (and at the epoch's end), so
            // TensorBoard and the database follow an epoch that lasts hours.
            let mut steps_written = Instant::now();
            for s in first_step..steps_per_epoch {
                let views = rx
                    .recv()
                    .map_err(|_| Error::Run { run: config.hash(), what: "the augmentation thread stopped".into() })??
                    .into_iter()
                    .map(|v| Tensor::from_vec(v, (b, 3, side, side), self.device))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                lr = self.schedule.lr(*step);
                let step_ctx = StepContext {
                    seed: config.seed,
                    epoch: epoch as u64,
                    step: s as u64,
                    progress: *step as f64 / self.schedule.total_steps.max(1) as f64,
                };
                let out = config.method.step_loss(config, &self.net, &views, &step_ctx)?;
                let loss = out.loss.to_scalar::<f32>()? as f64;
                if !loss.is_finite() {
                    tracing::error!("epoch {epoch} step {s}: loss is {loss}; the run diverged");
                    return Ok(Some(EpochStop::Diverged(RunOutcome::Diverged { run_id: self.run_id, epoch, step: s })));
                }
                let grads = out.loss.backward()?;
                self.opt.step(&grads, lr)?;
                config.method.after_step(config, &self.net, &step_ctx)?;
                loss_sum += loss;
                let terms = step_terms(&out)?;
                if sums.is_empty() {
                    sums = terms.iter().map(|(n, _)| (n.clone(), 0.0)).collect();
                }
                sums.iter_mut().zip(&terms).for_each(|(acc, (_, v))| acc.1 += v);
                *step += 1;
                if (*step).is_multiple_of(self.record_every) {
                    let images_per_second = b as f64 / step_started.elapsed().as_secs_f64();
                    self.steps.push(StepRecord { step: *step, epoch, loss, lr, images_per_second, terms });
                }
                if steps_written.elapsed() >= self.ctx.log_every && !self.steps.is_empty() {
                    self.write_steps()?;
                    steps_written = Instant::now();
                }
                // The next step's time starts here: the writes above are not counted in it.
                step_started = Instant::now();
                self.watch.step(s + 1, *step, loss_sum / (s + 1) as f64, lr);
                if self.ctx.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let position = checkpoint::Position { epoch: epoch - 1, step: *step, in_epoch: Some(s + 1) };
                    let partial = checkpoint::PartialEpoch {
                        loss_sum,
                        term_sums: sums.clone(),
                        wall_seconds: carried.wall_seconds + started.elapsed().as_secs_f64(),
                    };
                    return Ok(Some(EpochStop::Interrupted { position, partial, step: s + 1 }));
                }
            }
            Ok(None)
        })?;
        self.watch.finish_epoch();
        match stopped {
            Some(EpochStop::Diverged(outcome)) => {
                // The steps up to the divergence are kept: they show how it came.
                self.write_steps()?;
                return Ok(EpochEnd::Diverged(outcome));
            }
            Some(EpochStop::Interrupted { position, partial, step: s }) => {
                // Checkpoint where it stands (its steps first), so the next call loses nothing
                // of this epoch.
                self.write_steps()?;
                checkpoint::save(self.ckpt_dir, &self.hash, position, Some(&partial), &self.net, self.opt.as_ref())?;
                return Err(Error::Interrupted { epoch, step: s });
            }
            None => {}
        }
        let wall = carried.wall_seconds + started.elapsed().as_secs_f64();
        let n = steps_per_epoch.max(1) as f64;
        Ok(EpochEnd::Trained(EpochRecord {
            epoch,
            loss: loss_sum / n,
            lr,
            images_per_second: (steps_per_epoch * b) as f64 / wall,
            wall_seconds: wall,
            terms: sums.into_iter().map(|(name, v)| (name, v / n)).collect(),
        }))
    }

    /// Close a trained epoch: record its steps and its row, evaluate when due, then checkpoint
    /// (`step` is the optimiser steps taken so far).
    fn finish_epoch(&mut self, record: &EpochRecord, step: usize) -> Result<()> {
        let (config, epoch) = (self.config, record.epoch);
        tracing::info!(
            "epoch {epoch}/{}: loss {:.4}, {:.1} img/s, {:.0} s",
            config.train.epochs,
            record.loss,
            record.images_per_second,
            record.wall_seconds
        );
        if let Some(note) = self.data.skipped_note() {
            tracing::warn!("epoch {epoch}: {note}");
        }
        self.write_steps()?;
        self.ctx.store.record_epoch(self.run_id, record)?;
        if let Some(events) = &mut self.events {
            let mut values = vec![("epoch/loss".to_string(), record.loss)];
            values.extend(record.terms.iter().map(|(n, v)| (format!("epoch/{n}"), *v)));
            events.scalars(step as u64, values.iter().map(|(t, v)| (t.as_str(), *v)))?;
            events.flush()?;
        }
        self.recorded();
        let every = config.eval.every_epochs;
        if epoch == config.train.epochs || (every > 0 && epoch % every == 0) {
            self.evaluate(epoch, step)?;
        }
        // After the epoch's rows: a crash before this line redoes the epoch from the previous
        // checkpoint, and `resume_run` drops its rows first.
        let position = checkpoint::Position::epoch_end(epoch, step);
        checkpoint::save(self.ckpt_dir, &self.hash, position, None, &self.net, self.opt.as_ref())
    }
}

/// Why an epoch's steps stopped before its end.
enum EpochStop {
    Diverged(RunOutcome),
    /// A stop request, after `step` steps of the epoch: checkpoint at `position`.
    Interrupted {
        position: checkpoint::Position,
        partial: checkpoint::PartialEpoch,
        step: usize,
    },
}

/// What a step logs besides its loss: the loss's terms (`loss.NAME`) and the collapse
/// diagnostics of the first view's embeddings (`diag.*`).
fn step_terms(out: &crate::method::StepOutput) -> Result<Vec<(String, f64)>> {
    let mut terms: Vec<(String, f64)> = Vec::with_capacity(out.terms.len() + 1);
    for (name, t) in &out.terms {
        terms.push((format!("loss.{name}"), t.to_scalar::<f32>()? as f64));
    }
    terms.push(("diag.embedding_std".into(), normalised_std(&out.embeddings[0])?));
    terms.push(("diag.effective_rank".into(), infomax_losses::stats::effective_rank(&out.embeddings[0])?));
    Ok(terms)
}

/// The optimiser a run's config names, over the online network's parameters.
pub fn optimizer_for(config: &RunConfig, net: &Network) -> Box<dyn Optimizer> {
    let o = &config.optimizer;
    let params = net.params();
    match o.kind {
        OptimizerKind::Lars => {
            let mut lars = Lars::new(params, o.weight_decay, o.momentum, o.eta);
            lars.variant = o.lars_variant;
            lars.bias_and_norm_lr_factor = o.bias_and_norm_lr_factor;
            Box::new(lars)
        }
        OptimizerKind::Adam => {
            let mut adam = Adam::new(params, o.betas, o.adam_eps, o.weight_decay);
            adam.bias_and_norm_lr_factor = o.bias_and_norm_lr_factor;
            Box::new(adam)
        }
        OptimizerKind::Sgd => {
            let mut sgd = Sgd::new(params, o.weight_decay, o.momentum);
            sgd.bias_and_norm_lr_factor = o.bias_and_norm_lr_factor;
            Box::new(sgd)
        }
    }
}

/// Collapse diagnostic: the mean over dimensions of the batch std of L2-normalised embeddings.
/// Collapsed embeddings give 0; well-spread ones give about 1/sqrt(D).
pub fn normalised_std(z: &Tensor) -> Result<f64> {
    let z = z.detach();
    let norms = z.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    let zn = z.broadcast_div(&norms)?;
    let var = infomax_losses::stats::variance_unbiased(&zn)?;
    Ok(var.sqrt()?.mean_all()?.to_scalar::<f32>()? as f64)
}
