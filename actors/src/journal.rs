//! The node's journal: the inputs of the jobs it owns, in redb, so that a node that
//! restarts resumes its jobs (see [`crate::job_supervisor::replay`] for the fold).
//!
//! Writes are group commits by hand: the job supervisors serialize each input on their
//! own task and send the bytes down a channel; one writer thread (redb is blocking, and a
//! durable commit waits for fsync, which must not stall the node's async runtime) gathers
//! what arrives within 10 ms and commits it in one durable transaction. Under load a
//! commit carries hundreds of inputs (notes/floors.md: a redb commit costs 0.3-0.8 ms
//! whatever its size; 2 ms batches halved the overhead benchmark's steps/s, 10 ms cost
//! 30%). Journaling is asynchronous: a crash can lose the last 10 ms of inputs, and the
//! replay then runs those steps again (execution is at-least-once).
//!
//! Tables: `jobs` (id -> the job's [`JobRecord`]), `inputs` ((id, seq) -> [`Input`]),
//! `ended` (id -> final status) and `ended_order` (n -> id), which keeps the newest
//! `retain_finished_jobs` ended statuses.
//!
//! Copies for other nodes (`journal_replicas`): after each commit the writer sends what it
//! committed to the next live nodes in each job's rendezvous order (the owner left out);
//! a node that becomes a job's replica (a replica left, a node joined) first gets the
//! job's whole journal. The copies a node keeps for others are in `copies` (id -> owner,
//! epoch, record) and `copy_inputs` ((id, seq) -> input), and are what a takeover replays.
//! Copies of inputs are asynchronous too: they trail the owner by one commit window and a
//! message.
//!
//! A submission is answered once its job is durable (`journal_ack`): [`Journal::accept`]
//! gives a receiver that fires when the job's start is committed here and, for `copied`,
//! when a replica answers that it committed its copy too ([`JobManagerMessage::ReplicaAcked`]).
//! A commit that someone waits for does not linger: the writer takes what is queued and
//! commits at once (group commit by contention rather than by timer).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;
use troupe_runtime::config::JournalAck;
use troupe_runtime::job::spec::JobSpec;
use troupe_runtime::job::status::JobStatus;
use troupe_runtime::job::validate::Limits;
use troupe_runtime::protocol::{
    first_member, job_manager_group, Fenced, JobManagerMessage, ReplicaBatch, ReplicaWhat,
    ReplicaWrite, SavedState,
};
use troupe_runtime::wire::{self, Wire};

use crate::job_supervisor::replay::JobRecord;
use crate::job_supervisor::run::Input;
use crate::ClusterView;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const INPUTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inputs");
const ENDED: TableDefinition<&str, &[u8]> = TableDefinition::new("ended");
const ENDED_ORDER: TableDefinition<u64, &str> = TableDefinition::new("ended_order");
const COPIES: TableDefinition<&str, &[u8]> = TableDefinition::new("copies");
const COPY_INPUTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("copy_inputs");
const ACTOR_STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("actor_states");
/// Actor -> the epoch of the newest activation that read its state here (older saves are
/// refused).
const ACTOR_FENCES: TableDefinition<&str, u64> = TableDefinition::new("actor_fences");

/// Someone waiting for an actor's state to be saved: told whether it was, or that a
/// newer activation's save is already here.
type StateWaiter = oneshot::Sender<Result<(), Fenced>>;

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

enum Write {
    Start(String, u64, Vec<u8>, Option<Waiter>),
    Input(String, u64, Vec<u8>),
    End(String, Vec<u8>),
    /// Another node's writes, kept as a copy.
    Keep(ReplicaBatch),
    /// Drop the copy of a job (taken over here, or ended).
    Forget(String),
    /// Drop a job of this node's that another node took over (no status kept).
    Drop(String),
    /// An actor's state (this node's activation's, or a copy of another node's). Urgent:
    /// somebody waits for it.
    ActorState(String, SavedState, StateWaiter),
    /// Fence an actor at an epoch and read its state, in one transaction (urgent).
    ActorFetch(String, u64, oneshot::Sender<Option<SavedState>>),
}

/// Someone waiting for a job's start to be durable.
struct Waiter {
    done: oneshot::Sender<()>,
    /// Wait for a replica's commit too.
    copied: bool,
}

/// A submission waiting for its job's start to be committed here and on a replica.
struct Wait {
    done: oneshot::Sender<()>,
    local: bool,
    copy: bool,
    since: Instant,
}

/// Submissions whose job's start went to replicas ahead of the local commit, and the ack
/// tokens of the batches that carried them (a job's copies may go to more than one node:
/// the first ack counts).
#[derive(Default)]
struct Pending {
    next_token: u64,
    by_token: HashMap<u64, Vec<u64>>,
    waits: HashMap<u64, Wait>,
    next_wait: u64,
}

impl Pending {
    /// Marks wait `id` committed here (`local`) or on a replica; answers it once both are.
    fn mark(&mut self, id: u64, local: bool) {
        let Some(w) = self.waits.get_mut(&id) else {
            return;
        };
        if local {
            w.local = true;
        } else {
            w.copy = true;
        }
        if w.local && w.copy {
            if let Some(w) = self.waits.remove(&id) {
                let _ = w.done.send(());
            }
        }
    }

    /// Drops waits nobody waits for any more (the job manager answered at `ACK_WAIT`).
    fn purge(&mut self) {
        self.waits
            .retain(|_, w| !w.done.is_closed() && w.since.elapsed() < PENDING_FOR);
        let waits = &self.waits;
        self.by_token
            .retain(|_, ids| ids.iter().any(|id| waits.contains_key(id)));
    }
}

/// How long a wait stays pending at most (its submission was answered at `ACK_WAIT`).
const PENDING_FOR: Duration = Duration::from_secs(5);

/// The journal's write side, shared by the node's job manager and supervisors.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Write>,
    db: Arc<Database>,
    path: PathBuf,
    ack: JournalAck,
    pending: Arc<std::sync::Mutex<Pending>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

/// Where the writer sends copies of what it commits.
pub struct Replication {
    /// Who is alive.
    pub view: Arc<ClusterView>,
    /// Copies per job.
    pub copies: usize,
}

/// How long a submission waits for a replica to commit its job's copy.
pub const ACK_WAIT: Duration = Duration::from_secs(1);

/// A copy this node keeps of another node's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInfo {
    /// The job.
    pub job: String,
    /// Its owner when the copy was last written.
    pub owner: String,
    /// That owner's epoch.
    pub epoch: u64,
}

/// What the journal held when the node started.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Jobs that had not ended, with their inputs in order.
    pub jobs: Vec<(JobRecord, Vec<Input>)>,
    /// Statuses of ended jobs, oldest first.
    pub ended: Vec<JobStatus>,
    /// Copies of other nodes' jobs.
    pub copies: Vec<CopyInfo>,
}

/// The fields of a [`JobRecord`], borrowed (so that starting a job does not copy its file).
#[derive(serde::Serialize)]
struct RecordRef<'a> {
    id: &'a str,
    spec: &'a JobSpec,
    limits: &'a Limits,
    epoch: u64,
}

/// The head of a kept copy.
#[derive(serde::Serialize, serde::Deserialize)]
struct CopyHead {
    owner: String,
    epoch: u64,
    #[serde(with = "serde_bytes")]
    record: Vec<u8>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, reads what it holds, and starts its writer
    /// thread. `retain` ended statuses are kept; with `replication`, what is committed is
    /// also sent to the jobs' replicas.
    pub fn open(
        dir: &Path,
        retain: usize,
        replication: Option<Replication>,
        ack: JournalAck,
    ) -> Result<(Journal, Recovered), JournalError> {
        let path = dir.join("journal.redb");
        let open_err = |e: redb::Error| JournalError::Open {
            path: path.clone(),
            source: Box::new(e),
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        let db = Database::create(&path).map_err(|e| open_err(e.into()))?;
        let recovered = read_all(&db).map_err(|e| JournalError::Read {
            path: path.clone(),
            source: Box::new(e),
        })?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let pending = Arc::new(std::sync::Mutex::new(Pending::default()));
        let replicator = replication.filter(|r| r.copies > 0).map(|r| Replicator {
            pending: pending.clone(),
            me: r.view.node.clone(),
            view: r.view,
            copies: r.copies,
            epochs: recovered
                .jobs
                .iter()
                .map(|(r, _)| (r.id.clone(), r.epoch))
                .collect(),
            targets: HashMap::new(),
            live: Vec::new(),
            checked: Instant::now(),
        });
        let wdb = db.clone();
        std::thread::Builder::new()
            .name("troupe-journal".into())
            .spawn(move || writer(wdb, rx, retain, replicator))
            .map_err(|e| open_err(redb::Error::Io(e)))?;
        Ok((
            Journal {
                tx,
                db,
                path,
                ack,
                pending,
            },
            recovered,
        ))
    }

    /// Records that job `id` started from `spec` under `limits`, owned here at `epoch`.
    pub fn start(&self, id: &str, epoch: u64, spec: &JobSpec, limits: &Limits) {
        self.record_start(id, epoch, spec, limits, None);
    }

    /// Records a newly submitted job; the receiver fires when it is as durable as
    /// `journal_ack` asks (`None`: answer at once). It is dropped unfired if the commit
    /// fails.
    pub fn accept(
        &self,
        id: &str,
        spec: &JobSpec,
        limits: &Limits,
    ) -> Option<oneshot::Receiver<()>> {
        let copied = match self.ack {
            JournalAck::None => {
                self.start(id, 0, spec, limits);
                return None;
            }
            JournalAck::Local => false,
            JournalAck::Copied => true,
        };
        let (done, rx) = oneshot::channel();
        self.record_start(id, 0, spec, limits, Some(Waiter { done, copied }));
        Some(rx)
    }

    fn record_start(
        &self,
        id: &str,
        epoch: u64,
        spec: &JobSpec,
        limits: &Limits,
        waiter: Option<Waiter>,
    ) {
        match wire::encode(&RecordRef {
            id,
            spec,
            limits,
            epoch,
        }) {
            Ok(b) => self.send(Write::Start(id.to_string(), epoch, b, waiter)),
            Err(e) => tracing::error!(job = id, error = %e, "cannot journal a job's start"),
        }
    }

    /// A replica committed the batch that carried `token`: its submissions are durable.
    pub fn acked(&self, token: u64) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = p.by_token.remove(&token) {
            for id in ids {
                p.mark(id, false);
            }
        }
    }

    /// Keeps another node's journal writes as a copy.
    pub fn keep(&self, batch: ReplicaBatch) {
        self.send(Write::Keep(batch));
    }

    /// Drops this node's journal of `job`, which another node took over.
    pub fn drop_job(&self, job: &str) {
        self.send(Write::Drop(job.to_string()));
    }

    /// Drops the copy of `job`.
    pub fn forget(&self, job: &str) {
        self.send(Write::Forget(job.to_string()));
    }

    /// The copy kept of another node's job: its record and inputs in order.
    pub fn copy(&self, job: &str) -> Result<Option<(JobRecord, Vec<Input>)>, JournalError> {
        let err = |e: redb::Error| JournalError::Read {
            path: self.path.clone(),
            source: Box::new(e),
        };
        let rtx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let copies = match rtx.open_table(COPIES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e.into())),
        };
        let Some(head) = copies.get(job).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        let bad = |what: &str, e: wire::WireError| {
            err(redb::Error::Corrupted(format!(
                "copy of job {job}: {what}: {e}"
            )))
        };
        let head: CopyHead = wire::decode(head.value()).map_err(|e| bad("head", e))?;
        let record: JobRecord = wire::decode(&head.record).map_err(|e| bad("record", e))?;
        let inputs_t = rtx.open_table(COPY_INPUTS).map_err(|e| err(e.into()))?;
        let mut inputs = Vec::new();
        let mut next = 1;
        for row in inputs_t
            .range((job, 0)..=(job, u64::MAX))
            .map_err(|e| err(e.into()))?
        {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            if k.value().1 != next {
                // A gap: what follows it cannot be applied in order.
                tracing::warn!(
                    job,
                    missing = next,
                    "the copy of this job has a gap; it resumes from before it"
                );
                break;
            }
            next += 1;
            inputs.push(wire::decode::<Input>(v.value()).map_err(|e| bad("input", e))?);
        }
        Ok(Some((record, inputs)))
    }

    /// Records input number `seq` (from 1) of job `id`.
    pub fn input(&self, id: &str, seq: u64, input: &Input) {
        match wire::encode(input) {
            Ok(b) => self.send(Write::Input(id.to_string(), seq, b)),
            Err(e) => tracing::error!(job = id, error = %e, "cannot journal a job's input"),
        }
    }

    /// Records that a job ended with `status` (its inputs are dropped).
    pub fn end(&self, status: &JobStatus) {
        match wire::encode(status) {
            Ok(b) => self.send(Write::End(status.id.clone(), b)),
            Err(e) => tracing::error!(job = %status.id, error = %e, "cannot journal a job's end"),
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

fn read_all(db: &Database) -> Result<Recovered, redb::Error> {
    let mut out = Recovered::default();
    let rtx = db.begin_read()?;
    if let Ok(copies) = rtx.open_table(COPIES) {
        for row in copies.iter()? {
            let (id, v) = row?;
            if let Ok(h) = wire::decode::<CopyHead>(v.value()) {
                out.copies.push(CopyInfo {
                    job: id.value().to_string(),
                    owner: h.owner,
                    epoch: h.epoch,
                });
            }
        }
    }
    let jobs = match rtx.open_table(JOBS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    let inputs = rtx.open_table(INPUTS)?;
    for row in jobs.iter()? {
        let (id, rec) = row?;
        let id = id.value().to_string();
        let record: JobRecord = match wire::decode(rec.value()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(job = %id, error = %e, "unreadable journaled job; skipped");
                continue;
            }
        };
        let mut ins = Vec::new();
        for row in inputs.range((id.as_str(), 0)..=(id.as_str(), u64::MAX))? {
            let (_, v) = row?;
            match wire::decode::<Input>(v.value()) {
                Ok(i) => ins.push(i),
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "unreadable journaled input; the job resumes from before it");
                    break;
                }
            }
        }
        out.jobs.push((record, ins));
    }
    let ended = rtx.open_table(ENDED)?;
    let order = rtx.open_table(ENDED_ORDER)?;
    for row in order.iter()? {
        let (_, id) = row?;
        if let Some(v) = ended.get(id.value())? {
            if let Ok(st) = wire::decode::<JobStatus>(v.value()) {
                out.ended.push(st);
            }
        }
    }
    Ok(out)
}

/// Most writes one commit takes (a bound on a transaction's size).
const MAX_BATCH: usize = 4096;

/// How long the writer gathers writes before it commits them.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// How often the writer checks that every job's replicas are still the right nodes.
const CHECK_EVERY: Duration = Duration::from_secs(1);

fn writer(
    db: Arc<Database>,
    rx: mpsc::Receiver<Write>,
    retain: usize,
    mut replicator: Option<Replicator>,
) {
    let mut next_order = match next_order(&db) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the journal's ended jobs; numbering anew");
            0
        }
    };
    loop {
        let first = match rx.recv_timeout(CHECK_EVERY) {
            Ok(w) => w,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(r) = &mut replicator {
                    r.check(&db);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        // Gather what arrives within LINGER of the first write: a commit costs the same
        // for one input or hundreds, and nobody waits for it. Once somebody waits (a
        // submission, an owner's ack), take only what is already queued.
        let until = std::time::Instant::now() + LINGER;
        let mut urgent = first.is_urgent();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let next = if urgent {
                rx.try_recv().ok()
            } else {
                let left = until.saturating_duration_since(std::time::Instant::now());
                rx.recv_timeout(left).ok()
            };
            match next {
                Some(w) => {
                    urgent |= w.is_urgent();
                    batch.push(w);
                }
                None => break,
            }
        }
        let n = batch.len();
        let mut waiting: Vec<(String, Waiter)> = Vec::new();
        let mut acks: Vec<(String, u64)> = Vec::new();
        for w in batch.iter_mut() {
            match w {
                Write::Start(id, _, _, waiter) => {
                    if let Some(waiter) = waiter.take() {
                        waiting.push((id.clone(), waiter));
                    }
                }
                Write::Keep(b) => {
                    if let Some(token) = b.ack {
                        acks.push((b.owner.clone(), token));
                    }
                }
                _ => {}
            }
        }
        // Submissions waiting for a copy: their starts go to the replicas now, so that
        // both disks commit at once (one fsync's wait instead of two in a row).
        let (ahead, ahead_jobs) = match &mut replicator {
            Some(r) => r.send_ahead(&batch, &mut waiting),
            None => (Vec::new(), std::collections::HashSet::new()),
        };
        let outgoing: Vec<(String, Option<u64>, ReplicaWhat)> = match &replicator {
            Some(_) => batch
                .iter()
                .filter_map(|w| match w {
                    Write::Start(id, _, _, _) if ahead_jobs.contains(id) => None,
                    Write::Start(id, epoch, b, _) => {
                        Some((id.clone(), Some(*epoch), ReplicaWhat::Start(b.clone())))
                    }
                    Write::Input(id, seq, b) => {
                        Some((id.clone(), None, ReplicaWhat::Input(*seq, b.clone())))
                    }
                    Write::End(id, _) => Some((id.clone(), None, ReplicaWhat::End)),
                    Write::Drop(id) => Some((id.clone(), None, ReplicaWhat::End)),
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        let committing = Instant::now();
        let mut saved: Vec<(StateWaiter, Result<(), Fenced>)> = Vec::new();
        let mut fetched: Vec<(oneshot::Sender<Option<SavedState>>, Option<SavedState>)> =
            Vec::new();
        let committed = commit(
            &db,
            batch,
            &mut next_order,
            retain,
            &mut Outcomes {
                saved: &mut saved,
                fetched: &mut fetched,
            },
        );
        let took = committing.elapsed();
        metrics::histogram!(troupe_runtime::observe::metric::JOURNAL_COMMIT_SECONDS)
            .record(took.as_secs_f64());
        tracing::trace!(writes = n, us = took.as_micros() as u64, "journal commit");
        match committed {
            Ok(()) => {
                if let Some(r) = &mut replicator {
                    r.after_commit(&db, outgoing);
                    if r.checked.elapsed() >= CHECK_EVERY {
                        r.check(&db);
                    }
                    let mut p = r.pending.lock().unwrap_or_else(|e| e.into_inner());
                    for id in ahead {
                        p.mark(id, true);
                    }
                }
                for (w, r) in saved {
                    let _ = w.send(r);
                }
                for (w, r) in fetched {
                    let _ = w.send(r);
                }
                // Durable here, and no replica to wait for (or not asked to).
                for (_, w) in waiting {
                    let _ = w.done.send(());
                }
                for (owner, token) in acks {
                    if let Some(jm) = first_member::<JobManagerMessage>(&job_manager_group(&owner))
                    {
                        let _ = jm.cast(JobManagerMessage::ReplicaAcked(token));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = n, "journal commit failed; these jobs may not resume after a restart");
                if let Some(r) = &replicator {
                    let mut p = r.pending.lock().unwrap_or_else(|e| e.into_inner());
                    for id in ahead {
                        p.waits.remove(&id);
                    }
                }
            }
        }
    }
}

impl Write {
    /// Somebody waits for this write's commit.
    fn is_urgent(&self) -> bool {
        match self {
            Write::Start(_, _, _, w) => w.is_some(),
            Write::Keep(b) => b.ack.is_some(),
            Write::ActorState(..) | Write::ActorFetch(..) => true,
            _ => false,
        }
    }
}

/// Sends what the writer committed to each job's replicas (runs on the writer thread).
struct Replicator {
    /// Submissions waiting for a replica's commit (shared with [`Journal::acked`]).
    pending: Arc<std::sync::Mutex<Pending>>,
    me: String,
    view: Arc<ClusterView>,
    copies: usize,
    /// This node's epoch of each job it journals.
    epochs: HashMap<String, u64>,
    /// The replicas each live job's writes went to last.
    targets: HashMap<String, Vec<String>>,
    /// The live nodes at the last look.
    live: Vec<String>,
    checked: Instant,
}

impl Replicator {
    fn targets_for(&self, job: &str) -> Vec<String> {
        troupe_runtime::merge::ranked(
            job,
            self.live
                .iter()
                .map(String::as_str)
                .filter(|n| *n != self.me),
        )
        .into_iter()
        .take(self.copies)
        .map(str::to_string)
        .collect()
    }

    /// Sends `writes` to their jobs' replicas (a job's new replica gets its whole journal).
    fn after_commit(&mut self, db: &Database, writes: Vec<(String, Option<u64>, ReplicaWhat)>) {
        if writes.is_empty() {
            return;
        }
        self.live = crate::live_nodes(&self.view);
        let mut out: HashMap<String, Vec<ReplicaWrite>> = HashMap::new();
        for (job, epoch, what) in writes {
            if let Some(e) = epoch {
                self.epochs.insert(job.clone(), e);
            }
            let epoch = self.epochs.get(&job).copied().unwrap_or(0);
            let now = self.targets_for(&job);
            let before = self.targets.get(&job);
            let is_start = matches!(what, ReplicaWhat::Start(_));
            let is_end = matches!(what, ReplicaWhat::End);
            for node in &now {
                let had = before.is_some_and(|b| b.contains(node));
                if had || is_start || is_end {
                    out.entry(node.clone()).or_default().push(ReplicaWrite {
                        job: job.clone(),
                        epoch,
                        what: what.clone(),
                    });
                } else {
                    // A new replica for a job under way: the whole journal so far (this
                    // write included, it is committed).
                    out.entry(node.clone())
                        .or_default()
                        .extend(history(db, &job, epoch));
                }
            }
            if is_end {
                self.targets.remove(&job);
                self.epochs.remove(&job);
            } else {
                self.targets.insert(job, now);
            }
        }
        self.send(out);
    }

    /// Sends the starts of the submissions in `waiting` that want a copy to their jobs'
    /// replicas before the local commit, each batch with an ack token. Those with a
    /// replica to wait for leave `waiting`; returns their wait ids and jobs.
    fn send_ahead(
        &mut self,
        batch: &[Write],
        waiting: &mut Vec<(String, Waiter)>,
    ) -> (Vec<u64>, std::collections::HashSet<String>) {
        let mut ids = Vec::new();
        let mut jobs = std::collections::HashSet::new();
        if !waiting.iter().any(|(_, w)| w.copied) {
            return (ids, jobs);
        }
        self.live = crate::live_nodes(&self.view);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.purge();
        let mut carried: HashMap<String, Vec<u64>> = HashMap::new();
        for (job, w) in std::mem::take(waiting) {
            let targets = if w.copied {
                self.targets_for(&job)
            } else {
                Vec::new()
            };
            if targets.is_empty() {
                waiting.push((job, w));
                continue;
            }
            p.next_wait += 1;
            let id = p.next_wait;
            p.waits.insert(
                id,
                Wait {
                    done: w.done,
                    local: false,
                    copy: false,
                    since: Instant::now(),
                },
            );
            for node in &targets {
                carried.entry(node.clone()).or_default().push(id);
            }
            ids.push(id);
            self.epochs.insert(job.clone(), 0);
            self.targets.insert(job.clone(), targets);
            jobs.insert(job);
        }
        let mut out: HashMap<String, Vec<ReplicaWrite>> = HashMap::new();
        for w in batch {
            if let Write::Start(job, epoch, b, _) = w {
                if !jobs.contains(job) {
                    continue;
                }
                for node in self.targets.get(job).into_iter().flatten() {
                    out.entry(node.clone()).or_default().push(ReplicaWrite {
                        job: job.clone(),
                        epoch: *epoch,
                        what: ReplicaWhat::Start(b.clone()),
                    });
                }
            }
        }
        let mut tokens = HashMap::new();
        for (node, carried) in carried {
            let token = p.next_token;
            p.next_token += 1;
            p.by_token.insert(token, carried);
            tokens.insert(node, token);
        }
        drop(p);
        self.send_with(out, &tokens);
        (ids, jobs)
    }

    /// Gives every live job whose replicas changed its whole journal at the new ones.
    fn check(&mut self, db: &Database) {
        self.checked = Instant::now();
        let live = crate::live_nodes(&self.view);
        if live == self.live && self.targets.len() == self.epochs.len() {
            return;
        }
        self.live = live;
        let mut out: HashMap<String, Vec<ReplicaWrite>> = HashMap::new();
        let jobs: Vec<(String, u64)> = self.epochs.iter().map(|(j, e)| (j.clone(), *e)).collect();
        for (job, epoch) in jobs {
            let now = self.targets_for(&job);
            let before = self.targets.get(&job).cloned().unwrap_or_default();
            for node in now.iter().filter(|n| !before.contains(n)) {
                out.entry(node.clone())
                    .or_default()
                    .extend(history(db, &job, epoch));
            }
            self.targets.insert(job, now);
        }
        self.send(out);
    }

    fn send(&self, out: HashMap<String, Vec<ReplicaWrite>>) {
        self.send_with(out, &HashMap::new());
    }

    /// Sends each node its writes, asking those in `tokens` to ack with their token.
    fn send_with(&self, out: HashMap<String, Vec<ReplicaWrite>>, tokens: &HashMap<String, u64>) {
        for (node, writes) in out {
            if writes.is_empty() {
                continue;
            }
            let n = writes.len() as u64;
            match first_member::<JobManagerMessage>(&job_manager_group(&node)) {
                Some(jm) => {
                    let batch = ReplicaBatch {
                        owner: self.me.clone(),
                        writes,
                        ack: tokens.get(&node).copied(),
                    };
                    if jm
                        .cast(JobManagerMessage::Replicate(Wire::new(batch)))
                        .is_ok()
                    {
                        metrics::counter!(troupe_runtime::observe::metric::REPLICA_WRITES, "direction" => "out")
                            .increment(n);
                    }
                }
                None => {
                    tracing::debug!(node = %node, "a replica is not reachable; its copy catches up when it is")
                }
            }
        }
    }
}

/// The whole journal of `job` as replica writes (empty if it cannot be read).
fn history(db: &Database, job: &str, epoch: u64) -> Vec<ReplicaWrite> {
    let read = || -> Result<Vec<ReplicaWrite>, redb::Error> {
        let rtx = db.begin_read()?;
        let jobs = rtx.open_table(JOBS)?;
        let Some(rec) = jobs.get(job)? else {
            return Ok(Vec::new());
        };
        let mut out = vec![ReplicaWrite {
            job: job.to_string(),
            epoch,
            what: ReplicaWhat::Start(rec.value().to_vec()),
        }];
        let inputs = rtx.open_table(INPUTS)?;
        for row in inputs.range((job, 0)..=(job, u64::MAX))? {
            let (k, v) = row?;
            out.push(ReplicaWrite {
                job: job.to_string(),
                epoch,
                what: ReplicaWhat::Input(k.value().1, v.value().to_vec()),
            });
        }
        Ok(out)
    };
    read().unwrap_or_else(|e| {
        tracing::error!(job, error = %e, "cannot read a job's journal to copy it");
        Vec::new()
    })
}

fn next_order(db: &Database) -> Result<u64, redb::Error> {
    let rtx = db.begin_read()?;
    match rtx.open_table(ENDED_ORDER) {
        Ok(t) => Ok(t.last()?.map_or(0, |(k, _)| k.value() + 1)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// What a commit answers once it is durable.
struct Outcomes<'a> {
    saved: &'a mut Vec<(StateWaiter, Result<(), Fenced>)>,
    fetched: &'a mut Vec<(oneshot::Sender<Option<SavedState>>, Option<SavedState>)>,
}

fn commit(
    db: &Database,
    batch: Vec<Write>,
    next_order: &mut u64,
    retain: usize,
    out: &mut Outcomes<'_>,
) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    {
        let mut states = tx.open_table(ACTOR_STATES)?;
        let mut fences = tx.open_table(ACTOR_FENCES)?;
        let mut jobs = tx.open_table(JOBS)?;
        let mut inputs = tx.open_table(INPUTS)?;
        let mut ended = tx.open_table(ENDED)?;
        let mut order = tx.open_table(ENDED_ORDER)?;
        let mut copies = tx.open_table(COPIES)?;
        let mut copy_inputs = tx.open_table(COPY_INPUTS)?;
        for w in batch {
            match w {
                Write::Keep(batch) => {
                    for r in batch.writes {
                        match r.what {
                            ReplicaWhat::Start(record) => {
                                let head = CopyHead {
                                    owner: batch.owner.clone(),
                                    epoch: r.epoch,
                                    record,
                                };
                                if let Ok(b) = wire::encode(&head) {
                                    copies.insert(r.job.as_str(), b.as_slice())?;
                                }
                            }
                            ReplicaWhat::Input(seq, b) => {
                                copy_inputs.insert((r.job.as_str(), seq), b.as_slice())?;
                            }
                            ReplicaWhat::End => {
                                copies.remove(r.job.as_str())?;
                                copy_inputs.retain_in(
                                    (r.job.as_str(), 0)..=(r.job.as_str(), u64::MAX),
                                    |_, _| false,
                                )?;
                            }
                        }
                    }
                }
                Write::Drop(id) => {
                    jobs.remove(id.as_str())?;
                    inputs.retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false)?;
                }
                Write::Forget(id) => {
                    copies.remove(id.as_str())?;
                    copy_inputs
                        .retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false)?;
                }
                Write::Start(id, _, b, _) => {
                    jobs.insert(id.as_str(), b.as_slice())?;
                }
                Write::ActorState(actor, state, waiter) => {
                    // Fencing: a save older than the one here (an activation that was
                    // replaced) is refused, and its activation learns it must stop.
                    let held = match states.get(actor.as_str())? {
                        Some(v) => wire::decode::<SavedState>(v.value()).ok(),
                        None => None,
                    };
                    let fence = fences.get(actor.as_str())?.map_or(0, |v| v.value());
                    let result = match state.admit(held.as_ref(), fence) {
                        Err(f) => Err(f),
                        Ok(false) => Ok(()),
                        Ok(true) => match wire::encode(&state) {
                            Ok(b) => {
                                states.insert(actor.as_str(), b.as_slice())?;
                                Ok(())
                            }
                            Err(e) => {
                                tracing::error!(actor, error = %e, "cannot encode an actor's state");
                                continue;
                            }
                        },
                    };
                    out.saved.push((waiter, result));
                }
                Write::ActorFetch(actor, epoch, reply) => {
                    let fence = fences.get(actor.as_str())?.map_or(0, |v| v.value());
                    if epoch > fence {
                        fences.insert(actor.as_str(), epoch)?;
                    }
                    let held = match states.get(actor.as_str())? {
                        Some(v) => wire::decode::<SavedState>(v.value()).ok(),
                        None => None,
                    };
                    out.fetched.push((reply, held));
                }
                Write::Input(id, seq, b) => {
                    inputs.insert((id.as_str(), seq), b.as_slice())?;
                }
                Write::End(id, b) => {
                    jobs.remove(id.as_str())?;
                    inputs.retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false)?;
                    ended.insert(id.as_str(), b.as_slice())?;
                    order.insert(*next_order, id.as_str())?;
                    *next_order += 1;
                }
            }
        }
        // Keep the newest `retain` ended statuses.
        let excess = (order.len()? as usize).saturating_sub(retain.max(1));
        for _ in 0..excess {
            let Some((_, id)) = order.pop_first()? else {
                break;
            };
            ended.remove(id.value())?;
        }
    }
    tx.commit()?;
    Ok(())
}
