//! Leases: which process trains a run, so that any number of processes sharing a database never
//! train one run twice.
//!
//! A process claims a run in one `BEGIN IMMEDIATE` transaction ([`Store::claim_run`]): a run
//! finished or diverged is done; a run `running` under a live lease is another process's (the
//! claimer skips it and comes back to it); otherwise the claimer takes up the newest unfinished
//! row of the configuration (its checkpoint resumes it) or inserts a new one, naming itself
//! `owner` (`host:pid`). While it trains, a [`Heartbeat`] thread renews `heartbeat_at` every
//! [`HEARTBEAT`]. A lease is dead when its process is gone: on the same host, when no process has
//! its pid; from another host, when its heartbeat is older than [`STALE_AFTER_SECONDS`]. A dead
//! lease is taken over by the next claim, and its row reads `interrupted`, never `running`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::rows::RunStatus;
use super::Store;
use crate::config::RunConfig;
use crate::Result;

/// How often a training process renews its lease.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// A lease from another host whose heartbeat is older than this is dead.
pub const STALE_AFTER_SECONDS: f64 = 300.0;

/// SQL for a row's lease age in seconds (NULL without a heartbeat).
pub(super) const HEARTBEAT_AGE: &str = "(julianday('now') - julianday(heartbeat_at)) * 86400.0";

/// This machine's host name (`/proc/sys/kernel/hostname`, else `localhost`).
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// This process, as a lease names it: `host:pid`.
pub fn this_process() -> String {
    format!("{}:{}", this_host(), std::process::id())
}

/// Whether the lease of `owner`, renewed `age_seconds` ago, is held by a live process.
pub fn alive(owner: Option<&str>, age_seconds: Option<f64>) -> bool {
    let Some((host, pid)) = owner.and_then(|o| o.rsplit_once(':')) else { return false };
    if host == this_host() {
        pid.parse::<u32>().is_ok_and(|p| p == std::process::id() || Path::new("/proc").join(pid).exists())
    } else {
        age_seconds.is_some_and(|a| a < STALE_AFTER_SECONDS)
    }
}

/// A row's status as it is: `running` under a dead lease reads `interrupted`, with why.
pub(super) fn shown_status(
    status: String,
    detail: Option<String>,
    owner: Option<&str>,
    age_seconds: Option<f64>,
) -> (String, Option<String>) {
    if status == RunStatus::Running.as_str() && !alive(owner, age_seconds) {
        let who = owner.map_or(String::new(), |o| format!(" ({o})"));
        (RunStatus::Interrupted.as_str().into(), Some(format!("its process{who} ended before the run did")))
    } else {
        (status, detail)
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Finished or diverged already: nothing to train.
    Done { run_id: i64, status: String },
    /// Another live process trains it.
    Busy { run_id: i64, owner: String },
    /// This process now trains the unfinished row `run_id` (from its checkpoint, if any).
    Resume(i64),
    /// This process now trains the new row `run_id`.
    Fresh(i64),
}

impl Store {
    /// Claim `config`'s run for this process, atomically (see the module's text).
    pub fn claim_run(&self, config: &RunConfig, code_version: &str, machine: &str) -> Result<Claim> {
        let hash = config.hash();
        let me = this_process();
        let tx =
            rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(self.err())?;
        // Inside the transaction: the same connection's reads see the database as it is locked.
        let done = self.completed_run(&hash)?;
        if let Some((run_id, status)) = done {
            return Ok(Claim::Done { run_id, status });
        }
        let unfinished: Option<(i64, String, Option<String>, Option<f64>)> = tx
            .query_row(
                &format!(
                    "SELECT id, status, owner, {HEARTBEAT_AGE} FROM runs
                     WHERE config_hash = ?1 AND status IN ('running', 'interrupted') ORDER BY id DESC LIMIT 1"
                ),
                params![hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(self.err())?;
        let claim = match unfinished {
            Some((run_id, status, Some(owner), age))
                if status == "running" && owner != me && alive(Some(&owner), age) =>
            {
                return Ok(Claim::Busy { run_id, owner });
            }
            Some((run_id, ..)) => {
                tx.execute(
                    "UPDATE runs SET status = 'running', owner = ?2,
                                     heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
                    params![run_id, me],
                )
                .map_err(self.err())?;
                Claim::Resume(run_id)
            }
            None => {
                self.insert_run(&tx, config, RunStatus::Running, None, code_version, machine)?;
                let run_id = tx.last_insert_rowid();
                // A run that starts replaces the record of its earlier skip.
                tx.execute("DELETE FROM runs WHERE config_hash = ?1 AND status = 'skipped'", params![hash])
                    .map_err(self.err())?;
                Claim::Fresh(run_id)
            }
        };
        tx.commit().map_err(self.err())?;
        Ok(claim)
    }
}

/// Renews a run's lease from its own thread and connection until dropped.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    /// Renew run `run_id`'s lease in the database at `db` every [`HEARTBEAT`].
    pub fn start(db: &Path, run_id: i64) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, db) = (stop.clone(), db.to_path_buf());
        let thread = std::thread::spawn(move || {
            let Ok(conn) = rusqlite::Connection::open(&db) else { return };
            let _ = conn.busy_timeout(Duration::from_secs(30));
            let mut last = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() >= HEARTBEAT {
                    last = Instant::now();
                    if let Err(e) = conn.execute(
                        "UPDATE runs SET heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
                        params![run_id],
                    ) {
                        tracing::warn!("run {run_id}: its lease could not be renewed: {e}");
                    }
                }
            }
        });
        Heartbeat { stop, thread: Some(thread) }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dataset, Method};

    #[test]
    fn a_live_lease_is_busy_a_dead_one_is_taken_over_and_reads_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.sqlite")).unwrap();
        let config = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
        let Claim::Fresh(id) = store.claim_run(&config, "v", "m").unwrap() else { panic!("a fresh run") };
        // Claimed again by this process (a resumed sweep): its own lease is taken up.
        assert_eq!(store.claim_run(&config, "v", "m").unwrap(), Claim::Resume(id));
        // Another process of this host that is alive (pid 1 always is) holds it.
        let host = this_process().rsplit_once(':').unwrap().0.to_string();
        store
            .connection()
            .execute("UPDATE runs SET owner = ?1 WHERE id = ?2", params![format!("{host}:1"), id])
            .unwrap();
        assert_eq!(store.claim_run(&config, "v", "m").unwrap(), Claim::Busy { run_id: id, owner: format!("{host}:1") });
        assert_eq!(store.runs().unwrap()[0].status, RunStatus::Running);
        // One that is gone (no such pid) does not: its row reads interrupted, and is taken over.
        let gone = format!("{host}:{}", u32::MAX - 1);
        store.connection().execute("UPDATE runs SET owner = ?1 WHERE id = ?2", params![gone, id]).unwrap();
        let run = &store.runs().unwrap()[0];
        assert_eq!(run.status, RunStatus::Interrupted);
        assert!(run.detail.as_deref().unwrap().contains("ended before the run did"), "{:?}", run.detail);
        assert_eq!(store.run_rows(None).unwrap()[0].status, "interrupted");
        assert_eq!(store.claim_run(&config, "v", "m").unwrap(), Claim::Resume(id));
        // Another host's lease lives while its heartbeat is recent.
        store.connection().execute("UPDATE runs SET owner = 'elsewhere:7' WHERE id = ?1", params![id]).unwrap();
        assert!(matches!(store.claim_run(&config, "v", "m").unwrap(), Claim::Busy { .. }));
        store
            .connection()
            .execute("UPDATE runs SET heartbeat_at = '2000-01-01T00:00:00Z' WHERE id = ?1", params![id])
            .unwrap();
        assert_eq!(store.claim_run(&config, "v", "m").unwrap(), Claim::Resume(id));
        store.finish_run(id, RunStatus::Finished, None).unwrap();
        assert_eq!(store.claim_run(&config, "v", "m").unwrap(), Claim::Done { run_id: id, status: "finished".into() });
    }
}
