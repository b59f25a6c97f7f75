//! The journal's writer thread: the one place that commits to the journal's file.
//!
//! A thread rather than a task: redb is blocking, and a durable commit waits for fsync,
//! which must not stall the node's async runtime. The handle sends it [`Write`]s down a
//! queue (see `queue`: it wakes the writer only when it must act); it gathers what
//! arrives within the commit window of the first and commits it in one transaction (a
//! group commit, written by hand: a redb commit costs 0.3-0.8 ms whatever its size). A
//! write that somebody waits for (a submission's start with `journal_ack = "local"`, an
//! actor's save) is urgent: the writer takes only what is already queued and commits at
//! once, so contention rather than the timer sets the batch size. (With `copied` a
//! submission waits for a replica's receipt, not for this commit.)
//!
//! Once a commit's batch is written to the log's file, before its sync, it hands
//! replication what to send (see `replication`): a job's end is published once its
//! replicas hold it, and a crash of this process from then on finds it in the log, so the
//! end's latency is a round trip to a replica rather than a disk flush. Once the commit is
//! durable it answers those who wait for it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::queue::{self, RecvError};
use super::replication::{self, Replicator};
use super::store::Store;
use super::write::{CommitFailed, Waiter, Write};

/// Most writes one commit takes (a bound on a transaction's size).
const MAX_BATCH: usize = 4096;

/// Most writes of failed commits kept for the next one (past it the oldest are lost,
/// logged): a full disk must not grow the node's memory without end.
const MAX_RETRY: usize = 100_000;

/// The replicator, shared by the writer thread and the journal's handle (which sends
/// submitted starts ahead of the commit); `None` when nothing is copied.
pub(super) type SharedReplicator = Arc<Mutex<Option<Replicator>>>;

/// Starts the writer thread on `store`; it gathers writes nobody waits for for `linger` (`journal_commit_window_ms`: 10 ms by
/// default; on the 2-core build machine 2 ms batches halved the overhead benchmark's
/// steps/s) and, with a `replicator`, copies what it commits. It stops when every sender
/// is dropped.
///
/// A commit nobody waits for is written to the log and handed on but synced later, with
/// the next commit that somebody waits for or at the end of the commit window, whichever
/// comes first: syncing every commit was 13% of a busy owner's CPU, and its answers and
/// ends wait for a replica's receipt, not for this disk. So what nobody waited for is on
/// disk within one commit window, as the journal promises. Commits somebody waits for
/// sync at once: a submission answered by the local commit, a `synced` start
/// (`sync_starts`), another owner's `synced` copy, an actor's save, an end that this
/// commit alone confirms.
pub(super) fn spawn(
    store: Arc<Store>,
    replicator: SharedReplicator,
    linger: Duration,
    sync_starts: bool,
) -> std::io::Result<queue::Sender> {
    let (tx, rx) = queue::channel(MAX_BATCH);
    std::thread::Builder::new()
        .name("troupe-journal".into())
        .spawn(move || run(&store, rx, replicator, linger, sync_starts))?;
    Ok(tx)
}

/// Syncs the log's batches written without a sync; a failure is logged (the next commit
/// that syncs fails too, and says so to whoever waits for it).
fn sync_log(store: &Store) {
    if let Err(e) = store.sync_log() {
        tracing::error!(journal = %store.path().display(), error = %e, "cannot sync the journal's log: the last commit window of writes may not survive a power loss");
    }
}

fn run(
    store: &Store,
    rx: queue::Receiver,
    replicator: SharedReplicator,
    linger: Duration,
    sync_starts: bool,
) {
    // The writes of a failed commit that nobody waits for (a job's inputs and end,
    // copies): they go first into the next commit, so a full disk delays them, no more.
    let mut retry: Vec<Write> = Vec::new();
    // When the oldest commit written without a sync was made.
    let mut unsynced: Option<Instant> = None;
    loop {
        let wait = match unsynced {
            Some(since) => linger.saturating_sub(since.elapsed()),
            None => replication::CHECK_EVERY,
        };
        let first = match rx.recv_timeout(wait) {
            Ok(w) => Some(w),
            Err(RecvError::Timeout) => {
                if unsynced.take().is_some() {
                    sync_log(store);
                }
                if let Some(r) = crate::locked(&replicator).as_mut() {
                    r.check_if_due(store);
                }
                if retry.is_empty() {
                    continue;
                }
                None
            }
            Err(RecvError::Disconnected) => {
                if unsynced.is_some() {
                    sync_log(store);
                }
                break;
            }
        };
        let mut batch = std::mem::take(&mut retry);
        if let Some(first) = first {
            batch.extend(rx.gather(first, linger));
        }
        let acked = batch.iter().any(|w| matches!(w, Write::Flush));
        if acked {
            batch.retain(|w| !matches!(w, Write::Flush));
            if let Some(r) = crate::locked(&replicator).as_mut() {
                r.ends_acked();
            }
            if batch.is_empty() {
                continue;
            }
        }
        // An end nobody else holds is confirmed by this very commit: it says so, or a
        // crash right after the end is published would leave it, after the restart,
        // waiting for the core group's record (forever on a node alone).
        let (outgoing, confirmed) = match crate::locked(&replicator).as_ref() {
            Some(r) => {
                let outgoing = replication::writes_to_copy(&batch);
                let confirmed = r.confirmed_by_commit(&outgoing);
                (outgoing, confirmed)
            }
            None => (Vec::new(), Vec::new()),
        };
        let confirms = !confirmed.is_empty();
        batch.extend(confirmed.into_iter().map(Write::Confirmed));
        let again: Vec<Write> = batch.iter().filter_map(Write::again).collect();
        let n = batch.len();
        let waiting = take_waiters(&mut batch);
        let acks = replication::acks_after_commit(&batch);
        let sent_ahead = replication::sent_ahead(&batch);
        let committing = Instant::now();
        // Copies (inputs, ends) go to the replicas once the batch is in the log's file,
        // before its sync: an owner publishes an end once the replicas hold it, and a
        // crash of this process after that finds the end in the log at the restart. (A
        // crash of the machine within the sync loses it here: the job runs again from
        // what was synced, see ARCHITECTURE.md, "Journal".)
        let copy = || {
            if let Some(r) = crate::locked(&replicator).as_mut() {
                r.send_copies(store, outgoing);
            }
        };
        let sync = !waiting.is_empty()
            || !acks.is_empty()
            || confirms
            || (sync_starts && !sent_ahead.is_empty())
            || batch.iter().any(Write::is_answered_by_redb)
            || unsynced.is_some_and(|since| since.elapsed() >= linger);
        let committed = store.commit(batch, !waiting.is_empty(), sync, copy);
        let took = committing.elapsed();
        metrics::histogram!(troupe_runtime::observe::metric::JOURNAL_COMMIT_SECONDS)
            .record(took.as_secs_f64());
        tracing::trace!(writes = n, us = took.as_micros() as u64, "journal commit");
        match committed {
            Ok(answers) => {
                if sync {
                    unsynced = None;
                } else {
                    unsynced.get_or_insert(committing);
                }
                if let Some(r) = crate::locked(&replicator).as_mut() {
                    r.check_if_due(store);
                    r.committed_here(&sent_ahead);
                }
                for (w, r) in answers.saved {
                    let _ = w.send(r);
                }
                for (w, r) in answers.fetched {
                    let _ = w.send(r);
                }
                for w in answers.forgot {
                    let _ = w.send(());
                }
                // Durable here, and no replica to wait for (or not asked to).
                for (_, w) in waiting {
                    let _ = w.done.send(Ok(()));
                }
                for (owner, token) in acks {
                    replication::answer_ack(&owner, token);
                }
            }
            Err(e) => {
                let why = CommitFailed {
                    folder: store.path().parent().unwrap_or(store.path()).to_path_buf(),
                    reason: e.to_string(),
                };
                tracing::error!(folder = %why.folder.display(), error = %e, writes = n, "journal commit failed: submissions are refused until a commit succeeds again (the other writes are kept and committed then); free space in that folder");
                // Nothing of the batch is durable: those who wait are told so (an actor's
                // save by its dropped waiter), and a submission is refused; the rest is
                // kept for the next commit.
                for (_, w) in waiting {
                    let _ = w.done.send(Err(why.clone()));
                }
                if let Some(r) = crate::locked(&replicator).as_ref() {
                    r.commit_failed(&sent_ahead, &why);
                }
                retry = again;
                if retry.len() > MAX_RETRY {
                    let lost = retry.len() - MAX_RETRY;
                    tracing::error!(folder = %why.folder.display(), lost, "journal writes of failed commits dropped, the oldest first: the commits kept failing");
                    retry.drain(..lost);
                }
                // redb refuses everything after an I/O error until it is opened again.
                if let Err(e) = store.reopen() {
                    tracing::warn!(folder = %why.folder.display(), error = %e, "cannot reopen the journal yet; the next commit tries again");
                }
            }
        }
    }
}

/// Takes out of `batch` the submissions that wait for their job's start, by job.
fn take_waiters(batch: &mut [Write]) -> Vec<(String, Waiter)> {
    let mut waiting = Vec::new();
    for w in batch.iter_mut() {
        if let Write::Start(id, _, _, waiter) = w {
            if let Some(waiter) = waiter.take() {
                waiting.push((id.clone(), waiter));
            }
        }
    }
    waiting
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;
    use troupe_runtime::protocol::{ReplicaBatch, SavedState};

    use crate::journal::tests::{fetch_write as fetch, input_write as input};

    fn save() -> Write {
        let state = SavedState {
            epoch: 1,
            seq: 1,
            state: Vec::new(),
            hosts: Vec::new(),
            answered: Vec::new(),
        };
        Write::ActorState("t/k".to_string(), state, oneshot::channel().0)
    }

    /// Only writes somebody waits for cut the commit window short.
    #[test]
    fn only_writes_somebody_waits_for_are_urgent() {
        let start = |waiter: Option<Waiter>| Write::Start("j".to_string(), 0, Vec::new(), waiter);
        // A replica acks a copy on receipt, unless its owner waits for the commit here.
        let keep = |ack: Option<u64>| {
            Write::Keep(ReplicaBatch {
                owner: "n2".to_string(),
                writes: Vec::new(),
                ack,
                synced: ack.is_some(),
            })
        };
        let sent = |synced| {
            Write::StartSent(
                "j".to_string(),
                0,
                Vec::new(),
                super::super::write::SentAhead { wait: 1, synced },
            )
        };
        assert!(keep(Some(7)).is_urgent());
        assert!(!keep(None).is_urgent());
        assert!(sent(true).is_urgent());
        assert!(!sent(false).is_urgent());
        let waiter = Waiter {
            done: oneshot::channel().0,
        };
        assert!(start(Some(waiter)).is_urgent());
        assert!(save().is_urgent());
        assert!(fetch().is_urgent());
        assert!(!start(None).is_urgent());
        assert!(!input(1).is_urgent());
        assert!(!Write::End("j".to_string(), Vec::new(), 0).is_urgent());
        assert!(!Write::Drop("j".to_string(), None).is_urgent());
        assert!(!Write::Forget("j".to_string()).is_urgent());
    }

    /// Writes that arrive within the commit window of the first share its commit.
    #[test]
    fn writes_within_the_commit_window_share_a_commit() {
        let (tx, rx) = queue::channel(MAX_BATCH);
        let later = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = tx.send(input(2));
        });
        let batch = rx.gather(input(1), Duration::from_millis(500));
        assert_eq!(batch.len(), 2);
        later.join().expect("the sender thread ends");
    }

    /// An urgent first write is committed with what is already queued, without waiting
    /// for the window.
    #[test]
    fn an_urgent_write_takes_only_what_is_already_queued() {
        let (tx, rx) = queue::channel(MAX_BATCH);
        assert!(tx.send(input(1)).is_ok());
        assert!(tx.send(input(2)).is_ok());
        let began = Instant::now();
        let batch = rx.gather(fetch(), Duration::from_secs(60));
        assert!(began.elapsed() < Duration::from_secs(30));
        assert_eq!(batch.len(), 3);
    }

    /// An urgent write arriving in a lingering batch ends the wait: the batch takes what
    /// is queued behind it and goes.
    #[test]
    fn an_urgent_write_ends_the_commit_window_early() {
        let (tx, rx) = queue::channel(MAX_BATCH);
        assert!(tx.send(save()).is_ok());
        assert!(tx.send(input(2)).is_ok());
        let began = Instant::now();
        let batch = rx.gather(input(1), Duration::from_secs(60));
        assert!(began.elapsed() < Duration::from_secs(30));
        assert_eq!(batch.len(), 3);
    }

    /// A batch is bounded: what is past [`MAX_BATCH`] waits for the next commit.
    #[test]
    fn a_commit_takes_at_most_max_batch_writes() {
        let (tx, rx) = queue::channel(MAX_BATCH);
        for seq in 2..=(MAX_BATCH as u64 + 3) {
            assert!(tx.send(input(seq)).is_ok());
        }
        let batch = rx.gather(input(1), Duration::from_secs(60));
        assert_eq!(batch.len(), MAX_BATCH);
        assert_eq!(rx.try_iter().count(), 3);
    }

    /// The submissions waiting on a batch are taken out by job, and their writes stay.
    #[test]
    fn the_waiting_submissions_are_taken_out_of_a_batch() {
        let waiter = || Waiter {
            done: oneshot::channel().0,
        };
        let mut batch = vec![
            Write::Start("j1".to_string(), 0, Vec::new(), Some(waiter())),
            Write::Start("j2".to_string(), 0, Vec::new(), None),
            input(1),
            Write::Start("j3".to_string(), 0, Vec::new(), Some(waiter())),
        ];
        let waiting = take_waiters(&mut batch);
        let taken: Vec<_> = waiting.iter().map(|(j, _)| j.as_str()).collect();
        assert_eq!(taken, vec!["j1", "j3"]);
        assert_eq!(batch.len(), 4);
        assert!(batch.iter().all(|w| !w.is_urgent()));
    }
}
