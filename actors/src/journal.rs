//! The node's journal: the inputs of the jobs it owns, in redb, so that a node that
//! restarts resumes its jobs (see [`crate::job_supervisor::replay`] for the fold), and a
//! node that holds a copy can take over the jobs of one that stays down.
//!
//! What it guarantees:
//! - Journaling is asynchronous: writes are committed in groups within the commit window
//!   (`journal_commit_window_ms`, 10 ms), so a crash can lose the last window of inputs,
//!   and the replay then runs those steps again (execution is at-least-once).
//! - A submission is answered once its job is as durable as `journal_ack` asks:
//!   [`Journal::accept`] gives a receiver that fires, for `copied`, once a replica answers
//!   that it holds the job's start (in memory, committed in its next group commit;
//!   [`JobManagerMessage::ReplicaAcked`](troupe_runtime::protocol::JobManagerMessage::ReplicaAcked))
//!   while the start is queued for the commit here, waited for at most [`ACK_WAIT`]; for
//!   `synced` once it is committed here and a replica committed it too; for `local` (or
//!   `copied`/`synced` with no live replica) once it is committed here. So the crash of
//!   any one node loses no answered job; the crash of the owner and its replica within one
//!   window of the answer does (ARCHITECTURE.md has the table). If the commit here fails
//!   (a full disk) before a replica answered, the receiver says why
//!   ([`write::CommitFailed`]) and the submission is refused; the writer reopens the file,
//!   which redb requires after an I/O error, so commits succeed again once there is space.
//! - Copies for other nodes (`journal_replicas`) trail the owner by one commit window and
//!   a message; a takeover replays the copy up to its first gap.
//! - A keyed actor's save is answered once committed, and refused if a newer activation
//!   read the state here first (fencing, see `actor_host`); a failed commit drops its
//!   waiter, and the activation stops.
//!
//! How the parts fit. [`Journal`] is the handle the job manager, the job supervisors and
//! the actor host share: it encodes each write on the caller's task and sends it down a
//! channel. Four submodules do the rest:
//! - `store`: the redb file, its tables, the reads (at start, for a takeover, for a new
//!   replica) and the commit of a batch of writes (the log, then redb, then now and then
//!   a checkpoint);
//! - `wal`: the write-ahead log that makes a commit cost one `fdatasync` rather than a
//!   durable redb commit, replayed at open;
//! - `writer`: the one thread that commits, in group commits (what arrives within the
//!   commit window, or at once when somebody waits), and answers the waiting committers;
//! - `replication`: on the writer thread, the copies of each commit sent to the jobs'
//!   replicas, the replica set of each job, and the acks that answer `copied` and
//!   `synced` submissions.

mod queue;
mod replication;
mod store;
mod wal;
mod write;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::job_supervisor::replay::JobRecord;
use crate::job_supervisor::run::Input;
use tokio::sync::oneshot;
use troupe_runtime::config::JournalAck;
use troupe_runtime::job::spec::JobSpec;
use troupe_runtime::job::status::JobStatus;
use troupe_runtime::job::validate::Limits;
use troupe_runtime::protocol::{Fenced, ReplicaBatch, SavedState};
use troupe_runtime::vocab::Holder;
use troupe_runtime::wire;

pub(crate) use replication::EndConfirmation;

/// Tells `owner` that this node holds the copies its batch `token` carried.
pub(crate) fn ack_to(owner: &str, token: u64) {
    replication::answer_ack(owner, token);
}
pub(crate) use replication::Replication;
pub(crate) use store::Recovered;
pub(crate) use write::Durable;

use replication::{Pending, Replicator};
use store::Store;
use write::{Waiter, Write};

/// An end goes to its holders from the ending actor's thread, ahead of the writer's
/// commit ([`Journal::end_confirmed`]), while at most this many ends wait for their
/// confirmation: alone, an end's latency is then one round trip to a replica, overlapped
/// with the local write, instead of the writer's wake-up and write plus the round trip.
/// With more waiting, the writer copies them, one batch per replica per commit, which
/// costs less CPU per end than a message each.
const AHEAD_WHILE_WAITING: usize = 4;

/// How long a submission waits for a replica to commit its job's copy.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(1);

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The folder or file could not be opened (another node process with the same data
    /// folder holds it, or it is not writable).
    #[error("cannot open the journal {path}: {source}. Is another node running with the same --data folder (or the same --name and no --data)?")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<redb::Error>,
    },
    /// Reading it failed.
    #[error("cannot read the journal {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<redb::Error>,
    },
}

/// The journal's write side, shared by the node's job manager and supervisors.
#[derive(Clone)]
pub struct Journal {
    tx: queue::Sender,
    store: Arc<Store>,
    ack: JournalAck,
    /// Submissions waiting for a replica's ack (shared with the writer's replicator).
    pending: Arc<Mutex<Pending>>,
    /// The copies to replicas (shared with the writer thread): submitted starts are sent
    /// from here, ahead of the commit.
    replicator: writer::SharedReplicator,
    /// Whether what is committed is copied to replicas (then ends wait to be confirmed).
    copied: bool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.store.path())
            .finish()
    }
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, reads what it holds, and starts its writer
    /// thread, which commits what nobody waits for every `commit_window`. `retain` ended
    /// statuses are kept; with `replication`, what is committed is also sent to the jobs'
    /// replicas.
    pub fn open(
        dir: &Path,
        retain: usize,
        replication: Option<Replication>,
        ack: JournalAck,
        commit_window: Duration,
    ) -> Result<(Journal, Recovered), JournalError> {
        let (store, recovered) = Store::open(dir, retain)?;
        let store = Arc::new(store);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let replicator = Replicator::new(replication, pending.clone(), &recovered);
        let copied = replicator.is_some();
        let replicator = Arc::new(Mutex::new(replicator));
        let sync_starts = ack == JournalAck::Synced;
        let tx = writer::spawn(
            store.clone(),
            replicator.clone(),
            commit_window,
            sync_starts,
        )
        .map_err(|e| JournalError::Open {
            path: store.path().to_path_buf(),
            source: Box::new(redb::Error::Io(e)),
        })?;
        Ok((
            Journal {
                tx,
                store,
                ack,
                pending,
                replicator,
                copied,
            },
            recovered,
        ))
    }

    /// Records that job `id`, submitted at `submitted_at_ms`, started from `spec` under
    /// `limits`, owned here at `epoch`.
    pub fn start(
        &self,
        id: &str,
        epoch: u64,
        spec: &JobSpec,
        limits: &Limits,
        submitted_at_ms: u64,
    ) {
        self.record_start(id, epoch, spec, limits, submitted_at_ms, None);
    }

    /// Records a newly submitted job; the receiver fires when it is as durable as
    /// `journal_ack` asks (`None`: answer at once), or with why not if the commit fails
    /// (dropped unfired if the writer has stopped).
    ///
    /// `copied` (the default): the job's start goes to its replicas from here, before the
    /// writer's commit, and the receiver fires once a replica holds it in memory; both
    /// sides then commit it in their next group commit. A job with no live replica waits
    /// for the local commit instead, as with `local`.
    pub fn accept(
        &self,
        id: &str,
        spec: &JobSpec,
        limits: &Limits,
        submitted_at_ms: u64,
    ) -> Option<oneshot::Receiver<Durable>> {
        if self.ack == JournalAck::None {
            self.start(id, 0, spec, limits, submitted_at_ms);
            return None;
        }
        let b = match store::encode_record(id, 0, spec, limits, submitted_at_ms) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(job = id, error = %e, "cannot journal a job's start");
                return None;
            }
        };
        let (done, rx) = oneshot::channel();
        let done = match self.ack {
            JournalAck::Copied | JournalAck::Synced => {
                let synced = self.ack == JournalAck::Synced;
                let mut guard = crate::locked(&self.replicator);
                match guard.as_mut() {
                    Some(r) => match r.start_ahead(&self.store, id, 0, &b, done, synced) {
                        Ok((wait, first)) => {
                            // Queued before the lock is let go: the writer copies what
                            // follows (inputs, the end) after this start.
                            let ahead = write::SentAhead { wait, synced };
                            self.send(Write::StartSent(id.to_string(), 0, b, ahead));
                            drop(guard);
                            if first {
                                self.flush_starts_soon();
                            }
                            return Some(rx);
                        }
                        Err(done) => done,
                    },
                    None => done,
                }
            }
            JournalAck::Local | JournalAck::None => done,
        };
        self.send(Write::Start(id.to_string(), 0, b, Some(Waiter { done })));
        Some(rx)
    }

    /// Sends the starts held for the replicas (`Replicator::start_ahead`) once this
    /// thread is free: a spawned task runs after the actor that submits has handled the
    /// messages ready now (on the node's one-thread runtime), so a burst of submissions
    /// goes to each replica as one batch with one ack, not a message each way per job.
    /// Hand-made rather than a timer: it adds no wait when submissions come one at a time.
    fn flush_starts_soon(&self) {
        let journal = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { journal.flush_starts() });
            }
            Err(_) => self.flush_starts(),
        }
    }

    /// Sends the starts held for the replicas now.
    fn flush_starts(&self) {
        if let Some(r) = crate::locked(&self.replicator).as_mut() {
            r.flush_starts();
        }
    }

    fn record_start(
        &self,
        id: &str,
        epoch: u64,
        spec: &JobSpec,
        limits: &Limits,
        submitted_at_ms: u64,
        waiter: Option<Waiter>,
    ) {
        match store::encode_record(id, epoch, spec, limits, submitted_at_ms) {
            Ok(b) => self.send(Write::Start(id.to_string(), epoch, b, waiter)),
            Err(e) => tracing::error!(job = id, error = %e, "cannot journal a job's start"),
        }
    }

    /// A replica committed the batch that carried `token`: its submissions are durable,
    /// or it holds the ends it carried.
    pub fn acked(&self, token: u64) {
        let ends = crate::locked(&self.pending).acked(token);
        if ends {
            // Taken in here rather than by the writer, which may be in a commit: whoever
            // waits for those ends hears at once.
            if let Some(r) = crate::locked(&self.replicator).as_mut() {
                r.ends_acked();
            }
        }
    }

    /// Records that a job ended with `status`, as [`Journal::end`] does, and, when this
    /// journal is copied to replicas, returns what they say of the end: confirmed once
    /// every holder of a copy acked it or the core group recorded it, or moved (another
    /// node holds the job now). `None`: nothing is copied, the end stands at once. The
    /// end is journaled as unconfirmed (at `epoch`, the job's here) until
    /// [`Journal::confirmed`], so that a restart does not publish it.
    ///
    /// With `core_only` (a job resumed after a restart, or taken over: stale copies may
    /// be held by nodes this one does not know of) only the core group's record confirms.
    /// Otherwise, while at most `AHEAD_WHILE_WAITING` ends wait, the end is sent to its
    /// holders from here rather than by the writer (`Replicator::end_ahead`).
    pub fn end_confirmed(
        &self,
        status: &JobStatus,
        epoch: u64,
        core_only: bool,
    ) -> Option<oneshot::Receiver<EndConfirmation>> {
        let mut ahead = false;
        let rx = self.copied.then(|| {
            let (tx, rx) = oneshot::channel();
            let mut p = crate::locked(&self.pending);
            p.wait_for_end(&status.id, tx);
            if core_only {
                p.core_only.insert(status.id.clone());
                p.unconfirmed.push((status.id.clone(), epoch));
            }
            ahead = !core_only && p.ends_waiting() <= AHEAD_WHILE_WAITING;
            drop(p);
            self.send(Write::Unconfirmed(status.id.clone(), epoch));
            rx
        });
        match self.end_write(status, epoch) {
            Some(end) if ahead => {
                // Queued and sent ahead under the replicator's lock, which the writer
                // takes to copy what it wrote: it finds the job's end gone ahead, and
                // copies none of the job's writes.
                let mut r = crate::locked(&self.replicator);
                self.send(end);
                if let Some(r) = r.as_mut() {
                    r.end_ahead(&status.id);
                }
            }
            Some(end) => self.send(end),
            None => {}
        }
        if rx.is_some() {
            self.send(Write::Flush);
        }
        rx
    }

    /// The end of `job` is confirmed, or the job moved on: a restart publishes it (or
    /// forgets it) without asking the core group.
    pub fn confirmed(&self, job: &str) {
        if self.copied {
            self.send(Write::Confirmed(job.to_string()));
        }
    }

    /// Whether ends wait to be confirmed ([`Journal::end_confirmed`]).
    pub fn confirms_ends(&self) -> bool {
        self.copied
    }

    /// The core group recorded the end of `job` (`None`), or says `holder` holds the job
    /// now: tells whoever waits for the end; false if nobody does.
    pub fn end_recorded(&self, job: &str, holder: Option<Holder>) -> bool {
        // An end sent ahead and not written here yet (a full disk) is not published on
        // the record either: its writer confirms it once written. Under the replicator's
        // lock, which the writer holds when it finds the end written.
        if holder.is_none() {
            if let Some(r) = crate::locked(&self.replicator).as_mut() {
                if r.confirm_once_written(job) {
                    return true;
                }
            }
        }
        let mut p = crate::locked(&self.pending);
        p.core_only.remove(job);
        let what = match holder {
            None => EndConfirmation::Confirmed,
            Some(h) => {
                // No holder of a copy is owed this node's end any more.
                p.moved_away.push(job.to_string());
                EndConfirmation::Moved(h)
            }
        };
        let told = p.end_is(job, what);
        drop(p);
        self.send(Write::Flush);
        told
    }

    /// Takes the ends of this node's jobs that some holder of a copy did not ack within
    /// `CONFIRM_WITHIN` (job, epoch): the core group is to record them, so that no stale
    /// copy is handed the job.
    pub fn unconfirmed_ends(&self) -> Vec<(String, u64)> {
        crate::locked(&self.pending).take_unconfirmed()
    }

    /// Drops every copy of other nodes' jobs kept here (this node leaves); the receiver
    /// answers once that is committed, and fails if the commit did.
    pub fn forget_all(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Write::ForgetAll(tx));
        rx
    }

    /// `node` dropped every copy it kept of this node's jobs (it drained): no end waits
    /// for its ack any more, and it gets no new copy while it stays up.
    pub fn copies_dropped_by(&self, node: &str) {
        crate::locked(&self.pending)
            .dropped_by
            .push(node.to_string());
        self.send(Write::Flush);
    }

    /// Keeps another node's journal writes as a copy.
    pub fn keep(&self, batch: ReplicaBatch) {
        self.send(Write::Keep(batch));
    }

    /// Drops this node's journal of `job`, which `holder` took over (its end here too,
    /// if it ended here: the holder's end is the job's), and keeps the holder, so that
    /// after a restart this node sends questions about the job there.
    pub fn drop_job(&self, job: &str, holder: &Holder) {
        self.send(Write::Drop(job.to_string(), Some(holder.clone())));
    }

    /// Drops the copy of `job`.
    pub fn forget(&self, job: &str) {
        self.send(Write::Forget(job.to_string()));
    }

    /// Whether this node's journal holds its job `job`, running or ended. A journal that
    /// cannot be read says it does (a job is then not taken over on its word).
    pub fn holds(&self, job: &str) -> bool {
        self.store.holds(job).unwrap_or_else(|e| {
            tracing::warn!(job, error = %e, "cannot read the journal; the job is taken as held");
            true
        })
    }

    /// The copy kept of another node's job: its record and inputs in order.
    pub fn copy(&self, job: &str) -> Result<Option<(JobRecord, Vec<Input>)>, JournalError> {
        self.store.copy(job)
    }

    /// Records input number `seq` (from 1) of job `id`.
    pub fn input(&self, id: &str, seq: u64, input: &Input) {
        if let Some(b) = self.encode_input(id, input) {
            self.input_encoded(id, seq, b);
        }
    }

    /// An input of job `id` encoded for [`Journal::input_encoded`] (`None`, logged, if it
    /// cannot be).
    pub fn encode_input(&self, id: &str, input: &Input) -> Option<Vec<u8>> {
        wire::encode(input)
            .map_err(|e| tracing::error!(job = id, error = %e, "cannot journal a job's input"))
            .ok()
    }

    /// Records input number `seq` (from 1) of job `id`, encoded.
    pub fn input_encoded(&self, id: &str, seq: u64, b: Vec<u8>) {
        self.send(Write::Input(id.to_string(), seq, b));
    }

    /// Records that a job ended with `status`, run here at `epoch` (its inputs are
    /// dropped).
    pub fn end(&self, status: &JobStatus, epoch: u64) {
        if let Some(end) = self.end_write(status, epoch) {
            self.send(end);
        }
    }

    /// The write of a job's end, encoded; `None` (logged) if the status cannot be.
    fn end_write(&self, status: &JobStatus, epoch: u64) -> Option<Write> {
        match wire::encode(status) {
            Ok(b) => Some(Write::End(status.id.clone(), b, epoch)),
            Err(e) => {
                tracing::error!(job = %status.id, error = %e, "cannot journal a job's end");
                None
            }
        }
    }

    /// Saves an actor's state; the receiver says, once committed, whether it was kept
    /// (a save of a newer activation already here refuses it). Dropped unfired if the
    /// commit fails.
    pub fn save_actor(
        &self,
        actor: &str,
        saved: SavedState,
    ) -> oneshot::Receiver<Result<(), Fenced>> {
        let (tx, rx) = oneshot::channel();
        self.send(Write::ActorState(actor.to_string(), saved, tx));
        rx
    }

    /// Fences `actor` at `epoch` (saves of older activations are refused from now on)
    /// and reads the newest state saved here, both in one commit of the writer, so no save
    /// slips in between. `None` from the receiver's error: the commit failed.
    pub fn fetch_and_fence(
        &self,
        actor: &str,
        epoch: u64,
    ) -> oneshot::Receiver<Option<SavedState>> {
        let (tx, rx) = oneshot::channel();
        self.send(Write::ActorFetch(actor.to_string(), epoch, tx));
        rx
    }

    fn send(&self, w: Write) {
        if self.tx.send(w).is_err() {
            tracing::error!("the journal's writer has stopped; this job is not journaled");
        }
    }
}

#[cfg(test)]
mod tests {
    //! The handle and its writer thread together; the fixtures the submodules' tests share.

    use super::*;
    use troupe_runtime::job::status::JobState;
    use troupe_runtime::protocol::ReplicaWhat;

    /// A fresh folder for one test's journal, removed when dropped.
    pub(super) struct Scratch(pub(super) PathBuf);

    impl Scratch {
        pub(super) fn new(test: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("troupe-journal-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A one-step job file.
    pub(super) fn spec() -> JobSpec {
        JobSpec::parse("[[steps]]\nid = \"a\"\ntask = \"troupe.echo\"\n", "t.toml")
            .expect("a valid job file")
    }

    /// The record of job `id` started from [`spec`] at `epoch`.
    pub(super) fn record(id: &str, epoch: u64) -> JobRecord {
        JobRecord {
            id: id.to_string(),
            spec: spec(),
            limits: Limits::default(),
            epoch,
            submitted_at_ms: 0,
        }
    }

    /// An input of step `a`.
    pub(super) fn input(attempt: u32) -> Input {
        Input::TimedOut {
            step: "a".to_string(),
            attempt,
        }
    }

    /// The final status of job `id`.
    pub(super) fn status(id: &str) -> JobStatus {
        JobStatus {
            id: id.to_string(),
            name: String::new(),
            state: JobState::Succeeded,
            steps: Default::default(),
            output: None,
            error: None,
            stats: Default::default(),
            elapsed_ms: Some(1),
            submitted_at_ms: 0,
        }
    }

    /// `value` as the journal stores it.
    pub(super) fn encoded<T: serde::Serialize>(value: &T) -> Vec<u8> {
        wire::encode(value).expect("test values encode")
    }

    /// A job input's write nobody waits for (the writer's and the queue's tests).
    pub(super) fn input_write(seq: u64) -> Write {
        Write::Input("j".to_string(), seq, Vec::new())
    }

    /// An actor's fetch: a write somebody waits for.
    pub(super) fn fetch_write() -> Write {
        Write::ActorFetch("t/k".to_string(), 0, oneshot::channel().0)
    }

    /// Waits until every write sent before it is committed (a fetch is urgent, and the
    /// writer commits in order).
    async fn committed(journal: &Journal) {
        journal
            .fetch_and_fence("barrier", 0)
            .await
            .expect("the writer answers");
    }

    fn open(scratch: &Scratch, ack: JournalAck) -> Journal {
        Journal::open(&scratch.0, 10, None, ack, Duration::from_millis(10))
            .expect("the journal opens")
            .0
    }

    /// A submission with `journal_ack = "local"` is answered once its start is committed.
    #[tokio::test]
    async fn a_locally_acked_submission_is_answered_once_its_start_is_durable() {
        let scratch = Scratch::new("local-ack");
        let journal = open(&scratch, JournalAck::Local);
        let durable = journal
            .accept("n1-1-1", &spec(), &Limits::default(), 0)
            .expect("a receiver to wait on");
        assert_eq!(durable.await, Ok(Ok(())));
        let held = journal.store.read_all().expect("readable");
        assert_eq!(held.jobs, vec![(record("n1-1-1", 0), Vec::new())]);
    }

    /// With `journal_ack = "none"` a submission is answered at once, and still journaled.
    #[tokio::test]
    async fn an_unacked_submission_is_answered_at_once_and_still_journaled() {
        let scratch = Scratch::new("no-ack");
        let journal = open(&scratch, JournalAck::None);
        assert!(journal
            .accept("n1-1-1", &spec(), &Limits::default(), 0)
            .is_none());
        committed(&journal).await;
        let held = journal.store.read_all().expect("readable");
        assert_eq!(held.jobs, vec![(record("n1-1-1", 0), Vec::new())]);
    }

    /// A node without replicas answers a `copied` submission on its own commit (as a
    /// submission whose replicas are all down would be).
    #[tokio::test]
    async fn a_copied_submission_without_replication_is_answered_by_the_local_commit() {
        let scratch = Scratch::new("copied-alone");
        let journal = open(&scratch, JournalAck::Copied);
        let durable = journal
            .accept("n1-1-1", &spec(), &Limits::default(), 0)
            .expect("a receiver to wait on");
        assert_eq!(durable.await, Ok(Ok(())));
    }

    /// A job's inputs are kept in order until it ends; then only its status is kept.
    #[tokio::test]
    async fn a_job_keeps_its_inputs_until_it_ends_and_then_only_its_status() {
        let scratch = Scratch::new("inputs-end");
        let journal = open(&scratch, JournalAck::None);
        journal.start("n1-1-1", 2, &spec(), &Limits::default(), 0);
        journal.input("n1-1-1", 1, &input(1));
        journal.input("n1-1-1", 2, &input(2));
        committed(&journal).await;
        let held = journal.store.read_all().expect("readable");
        assert_eq!(
            held.jobs,
            vec![(record("n1-1-1", 2), vec![input(1), input(2)])]
        );
        journal.end(&status("n1-1-1"), 0);
        committed(&journal).await;
        let held = journal.store.read_all().expect("readable");
        assert!(held.jobs.is_empty());
        assert_eq!(held.ended, vec![status("n1-1-1")]);
    }

    /// A job another node took over is dropped from the journal without a status, and
    /// its holder is kept.
    #[tokio::test]
    async fn a_job_taken_over_elsewhere_is_dropped_without_a_status() {
        let scratch = Scratch::new("drop");
        let journal = open(&scratch, JournalAck::None);
        journal.start("n1-1-1", 0, &spec(), &Limits::default(), 0);
        journal.input("n1-1-1", 1, &input(1));
        let holder = Holder {
            node: "n2".to_string(),
            epoch: 7,
        };
        journal.drop_job("n1-1-1", &holder);
        committed(&journal).await;
        let held = journal.store.read_all().expect("readable");
        assert!(held.jobs.is_empty());
        assert!(held.ended.is_empty());
        assert_eq!(held.moved, vec![("n1-1-1".to_string(), holder)]);
    }

    /// A copy kept for another node is read back for a takeover, and gone once forgotten.
    #[tokio::test]
    async fn a_kept_copy_is_read_back_until_it_is_forgotten() {
        let scratch = Scratch::new("copy");
        let journal = open(&scratch, JournalAck::None);
        let write = |what| troupe_runtime::protocol::ReplicaWrite {
            job: "n2-1-1".to_string(),
            epoch: 0,
            what,
            ahead: false,
        };
        journal.keep(ReplicaBatch {
            owner: "n2".to_string(),
            writes: vec![
                write(ReplicaWhat::Start(encoded(&record("n2-1-1", 0)))),
                write(ReplicaWhat::Input(1, encoded(&input(1)))),
            ],
            ack: None,
            synced: false,
        });
        committed(&journal).await;
        assert_eq!(
            journal.copy("n2-1-1").expect("readable"),
            Some((record("n2-1-1", 0), vec![input(1)]))
        );
        journal.forget("n2-1-1");
        committed(&journal).await;
        assert_eq!(journal.copy("n2-1-1").expect("readable"), None);
    }

    /// The writer thread lets go of the file once the last handle is dropped, so the
    /// journal can be opened again (as a restarted node does).
    #[tokio::test]
    async fn the_journal_opens_again_once_its_last_handle_is_dropped() {
        let scratch = Scratch::new("reopen");
        let journal = open(&scratch, JournalAck::None);
        journal.start("n1-1-1", 0, &spec(), &Limits::default(), 0);
        committed(&journal).await;
        drop(journal);
        let recovered = reopen(&scratch).await;
        assert_eq!(recovered.jobs, vec![(record("n1-1-1", 0), Vec::new())]);
    }

    /// What the journal in `scratch` holds, read as a restarted node reads it (once the
    /// dropped handle's writer let go of the file).
    async fn reopen(scratch: &Scratch) -> Recovered {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Journal::open(
                &scratch.0,
                10,
                None,
                JournalAck::None,
                Duration::from_millis(10),
            ) {
                Ok((_, recovered)) => return recovered,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("the journal did not open again: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// A copied journal on a node alone: the end of a job nobody else holds is confirmed
    /// by its commit, and that commit says so. A crash right after the end is published
    /// (before the job's supervisor journals the confirmation) must not leave the end
    /// waiting, after the restart, for a core group that cannot form.
    #[tokio::test]
    async fn an_end_confirmed_by_its_own_commit_is_durably_confirmed_by_it() {
        let scratch = Scratch::new("alone");
        let replication = Replication {
            view: Arc::new(crate::ClusterView::new("n1")),
            copies: 1,
        };
        let journal = Journal::open(
            &scratch.0,
            10,
            Some(replication),
            JournalAck::Copied,
            Duration::from_millis(10),
        )
        .expect("the journal opens")
        .0;
        journal.start("n1-1-1", 0, &spec(), &Limits::default(), 0);
        let confirmed = journal
            .end_confirmed(&status("n1-1-1"), 0, false)
            .expect("a copied journal confirms ends");
        let what = tokio::time::timeout(Duration::from_secs(10), confirmed)
            .await
            .expect("confirmed in time")
            .expect("the writer answers");
        assert!(matches!(what, EndConfirmation::Confirmed));
        drop(journal);
        let recovered = reopen(&scratch).await;
        assert!(
            recovered.unconfirmed.is_empty(),
            "the end waits for the core group after a restart: {:?}",
            recovered.unconfirmed
        );
        assert_eq!(recovered.ended.len(), 1);
    }
}
