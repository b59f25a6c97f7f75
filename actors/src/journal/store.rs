//! The journal's file (`journal.redb` in the node's data folder): its tables, opening it
//! and reading what it held, the reads a takeover and a new replica need, and the one
//! transaction in which the writer thread applies a batch of writes.
//!
//! Tables: `jobs` (id -> the job's [`JobRecord`]), `inputs` ((id, seq) -> [`Input`]),
//! `ended` (id -> final status) and `ended_order` (n -> id), which keeps the newest
//! `retain_finished_jobs` ended statuses. The copies this node keeps of other nodes' jobs
//! are `copies` (id -> owner, epoch, record) and `copy_inputs` ((id, seq) -> input).
//! Keyed actors' saves are `actor_states` (actor -> [`SavedState`]) and `actor_fences`.
//!
//! Only the writer thread writes here (redb is blocking and a durable commit waits for
//! fsync); reads take a read transaction and may run anywhere.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use crate::job_supervisor::replay::JobRecord;
use crate::job_supervisor::run::Input;
use crate::locked;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use tokio::sync::oneshot;
use troupe_runtime::job::spec::JobSpec;
use troupe_runtime::job::status::JobStatus;
use troupe_runtime::job::validate::Limits;
use troupe_runtime::protocol::{Fenced, ReplicaWhat, ReplicaWrite, SavedState};
use troupe_runtime::vocab::Holder;
use troupe_runtime::wire;

use super::wal::{Logged, Record, Wal};
use super::write::{StateWaiter, Write};
use super::JournalError;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const INPUTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inputs");
const ENDED: TableDefinition<&str, &[u8]> = TableDefinition::new("ended");
const ENDED_ORDER: TableDefinition<u64, &str> = TableDefinition::new("ended_order");
const COPIES: TableDefinition<&str, &[u8]> = TableDefinition::new("copies");
const COPY_INPUTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("copy_inputs");
/// Ends of this node's jobs not confirmed yet (job, its epoch here): see `Write::Unconfirmed`.
const UNCONFIRMED: TableDefinition<&str, u64> = TableDefinition::new("unconfirmed_ends");
/// The epoch each ended job (of those kept in `ended`) ran at here, if not 0: a taken-over
/// job's former owner's writes stay fenced after a restart.
const ENDED_EPOCHS: TableDefinition<&str, u64> = TableDefinition::new("ended_epochs");
/// This node's jobs that another node took over -> their holder (encoded): a restarted
/// node sends questions about them there. Kept as long as ended statuses (`ended_order`).
const MOVED: TableDefinition<&str, &[u8]> = TableDefinition::new("moved");
const ACTOR_STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("actor_states");
/// Actor -> the epoch of the newest activation that read its state here (older saves are
/// refused).
const ACTOR_FENCES: TableDefinition<&str, u64> = TableDefinition::new("actor_fences");
/// The journal's own bookkeeping: [`WAL_GENERATION`] and [`APPLIED`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The generation of the log that holds what was committed after redb's last durable
/// commit (see `wal`).
const WAL_GENERATION: &str = "wal_generation";
/// The number of the last log batch applied to redb.
const APPLIED: &str = "applied";

/// The log generation `db` names (0 for a new journal) and the last batch it applied.
fn wal_position(db: &Database) -> Result<(u64, u64), redb::Error> {
    let rtx = db.begin_read()?;
    match rtx.open_table(META) {
        Ok(t) => Ok((
            t.get(WAL_GENERATION)?.map_or(0, |v| v.value()),
            t.get(APPLIED)?.map_or(0, |v| v.value()),
        )),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok((0, 0)),
        Err(e) => Err(e.into()),
    }
}

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
    /// The epochs ended jobs ran at here, where not 0.
    pub ended_epochs: std::collections::HashMap<String, u64>,
    /// Ended jobs whose end was not confirmed before the node stopped (job, epoch): their
    /// ends are not published until the core group records them.
    pub unconfirmed: Vec<(String, u64)>,
    /// This node's jobs another node took over, and their holders.
    pub moved: Vec<(String, Holder)>,
}

/// The fields of a [`JobRecord`], borrowed (so that starting a job does not copy its file).
#[derive(serde::Serialize)]
struct RecordRef<'a> {
    id: &'a str,
    spec: &'a JobSpec,
    limits: &'a Limits,
    epoch: u64,
    submitted_at_ms: u64,
}

/// The head of a kept copy.
#[derive(serde::Serialize, serde::Deserialize)]
struct CopyHead {
    owner: String,
    epoch: u64,
    #[serde(with = "serde_bytes")]
    record: Vec<u8>,
}

/// The row of table `jobs` for a job that starts: its [`JobRecord`], encoded.
pub(super) fn encode_record(
    id: &str,
    epoch: u64,
    spec: &JobSpec,
    limits: &Limits,
    submitted_at_ms: u64,
) -> Result<Vec<u8>, impl std::error::Error> {
    wire::encode(&RecordRef {
        id,
        spec,
        limits,
        epoch,
        submitted_at_ms,
    })
}

/// What a commit answers once it is durable: each actor save's verdict and each fetch's
/// state, with who waits for them.
#[derive(Default)]
pub(super) struct Answers {
    /// Saves of actor states: kept (or already older than what is here), or fenced.
    pub(super) saved: Vec<(StateWaiter, Result<(), Fenced>)>,
    /// Fetches (with their fence): the newest state held here.
    pub(super) fetched: Vec<(oneshot::Sender<Option<SavedState>>, Option<SavedState>)>,
    /// Drops of every copy, committed.
    pub(super) forgot: Vec<oneshot::Sender<()>>,
}

/// How often the writer makes one durable redb commit, which persists the commits made
/// without a flush since the last one and lets the log start again (see `wal`).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// A log this long is checkpointed at once.
const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;
/// How long committed batches may wait to be applied to redb together (see
/// [`Store::commit`]).
const APPLY_EVERY: Duration = Duration::from_millis(100);
/// Most writes waiting to be applied to redb.
const APPLY_MAX: usize = 20_000;

/// Batches committed to the log and not yet applied to redb, oldest first.
#[derive(Default)]
struct Unapplied {
    writes: Vec<Write>,
    /// The log's number of the last of them.
    seq: u64,
    /// When the oldest was committed.
    since: Option<Instant>,
    /// The number the next ended job gets in `ended_order`.
    next_order: u64,
}

/// The journal's redb database, its write-ahead log, and where they are.
pub(super) struct Store {
    /// None between a failed commit and a successful reopen: redb fails every operation
    /// after an I/O error until the database is opened again.
    db: RwLock<Option<Database>>,
    /// What was committed since redb's last durable commit (the writer's alone).
    wal: Mutex<Wal>,
    /// When redb last committed durably.
    checkpointed: Mutex<Instant>,
    /// What the log holds and redb does not yet.
    unapplied: Mutex<Unapplied>,
    /// Ended statuses kept (a replay keeps as many as the writer does).
    retain: usize,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) `journal.redb` in `dir`, replays its log into it, and reads
    /// what it holds; `retain` ended statuses are kept.
    pub(super) fn open(dir: &Path, retain: usize) -> Result<(Store, Recovered), JournalError> {
        let path = dir.join("journal.redb");
        let open_err = |e: redb::Error| JournalError::Open {
            path: path.clone(),
            source: Box::new(e),
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        let db = Database::create(&path).map_err(|e| open_err(e.into()))?;
        let (generation, applied) = wal_position(&db).map_err(open_err)?;
        let (wal, logged) =
            Wal::open(dir, generation, applied + 1).map_err(|e| open_err(redb::Error::Io(e)))?;
        let store = Store {
            db: RwLock::new(Some(db)),
            wal: Mutex::new(wal),
            checkpointed: Mutex::new(Instant::now()),
            unapplied: Mutex::new(Unapplied::default()),
            retain,
            path: path.clone(),
        };
        if !logged.is_empty() {
            tracing::info!(batches = logged.len(), "replaying the journal's log");
            store.replay(logged).map_err(open_err)?;
            store.checkpoint().map_err(open_err)?;
        }
        locked(&store.unapplied).next_order = store.next_order().map_err(open_err)?;
        let recovered = store.read_all().map_err(|e| store.read_error(e))?;
        Ok((store, recovered))
    }

    /// Applies again the batches read from the log that redb lacks (their answers go to
    /// nobody).
    fn replay(&self, logged: Vec<Record>) -> Result<(), redb::Error> {
        let applied = match &*self.db()? {
            Some(db) => wal_position(db)?.1,
            None => return Err(redb::Error::DatabaseClosed),
        };
        let mut next_order = self.next_order()?;
        // What waited to be applied is in the log: it is applied from there.
        let mut unapplied = locked(&self.unapplied);
        *unapplied = Unapplied::default();
        for (seq, batch) in logged.into_iter().filter(|(seq, _)| *seq > applied) {
            let writes = batch.into_iter().map(Logged::into_write).collect();
            self.apply(writes, seq, &mut next_order, self.retain)?;
        }
        unapplied.next_order = next_order;
        Ok(())
    }

    /// Applies to redb, in one transaction, the batches waiting to be and then `batch`
    /// (the log's batch `seq`), if any. On an error redb is left as it was: the caller
    /// closes it, and reopening it applies the log again.
    fn apply_unapplied(
        &self,
        u: &mut Unapplied,
        batch: Vec<Write>,
        seq: Option<u64>,
    ) -> Result<Answers, redb::Error> {
        let mut writes = std::mem::take(&mut u.writes);
        let seq = seq.unwrap_or(u.seq);
        u.since = None;
        if writes.is_empty() && batch.is_empty() {
            return Ok(Answers::default());
        }
        writes.extend(batch);
        compact(&mut writes);
        let mut next = u.next_order;
        let answers = self.apply(writes, seq, &mut next, self.retain)?;
        u.next_order = next;
        Ok(answers)
    }

    /// Brings redb up to the log before a read: applies what waits to be. If that fails,
    /// redb is closed (the next commit reopens it and applies the log) and so is the read.
    fn catch_up(&self) -> Result<(), redb::Error> {
        let mut u = locked(&self.unapplied);
        if u.writes.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.apply_unapplied(&mut u, Vec::new(), None) {
            drop(u);
            tracing::warn!(journal = %self.path.display(), error = %e, "cannot apply the journal's log to redb; it is tried again at the next commit");
            *self.db.write().unwrap_or_else(PoisonError::into_inner) = None;
            return Err(e);
        }
        Ok(())
    }

    /// Makes everything committed so far durable in redb (one durable commit, which names
    /// the log's next generation) and starts that log, dropping the old one.
    fn checkpoint(&self) -> Result<(), redb::Error> {
        // The next log starts empty: redb must hold everything the old one does.
        self.catch_up()?;
        let mut wal = locked(&self.wal);
        let next = wal.prepare_next()?;
        let named = (|| {
            let guard = self.db()?;
            let Some(db) = &*guard else {
                return Err(redb::Error::DatabaseClosed);
            };
            let tx = db.begin_write()?;
            tx.open_table(META)?
                .insert(WAL_GENERATION, wal.generation() + 1)?;
            tx.commit()?;
            Ok(())
        })();
        match named {
            Ok(()) => {
                wal.switch(next);
                *locked(&self.checkpointed) = Instant::now();
                Ok(())
            }
            Err(e) => {
                wal.abandon_next();
                Err(e)
            }
        }
    }

    /// The file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The database, unless it is closed after an I/O error and could not be reopened.
    fn db(&self) -> Result<RwLockReadGuard<'_, Option<Database>>, redb::Error> {
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        if db.is_none() {
            return Err(redb::Error::DatabaseClosed);
        }
        Ok(db)
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, redb::Error> {
        match &*self.db()? {
            Some(db) => Ok(db.begin_read()?),
            None => Err(redb::Error::DatabaseClosed),
        }
    }

    /// Closes the database and opens it again: after an I/O error (a full disk) redb
    /// refuses every operation until then. Fails while the cause lasts (opening may need to
    /// write, to repair the file) or while a read still holds the old one; the next commit
    /// tries again.
    ///
    /// redb comes back as of its last durable commit: what the log holds since is applied
    /// again.
    pub(super) fn reopen(&self) -> Result<(), redb::Error> {
        {
            let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
            // The old one lets go of the file (and its lock) first.
            *db = None;
            *db = Some(Database::create(&self.path)?);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let logged = {
            let mut wal = locked(&self.wal);
            // Numbers go on from the log's: redb's record of the last batch it applied
            // must never count past a batch still to come.
            let (again, logged) = Wal::open(dir, wal.generation(), wal.next_seq())?;
            *wal = again;
            logged
        };
        if let Err(e) = self.replay(logged) {
            *self.db.write().unwrap_or_else(PoisonError::into_inner) = None;
            return Err(e);
        }
        Ok(())
    }

    fn read_error(&self, e: redb::Error) -> JournalError {
        JournalError::Read {
            path: self.path.clone(),
            source: Box::new(e),
        }
    }

    /// Everything the journal holds: jobs that had not ended, ended statuses, copies.
    pub(super) fn read_all(&self) -> Result<Recovered, redb::Error> {
        self.catch_up()?;
        let mut out = Recovered::default();
        let rtx = self.begin_read()?;
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
        if let Ok(t) = rtx.open_table(ENDED_EPOCHS) {
            for row in t.iter()? {
                let (id, epoch) = row?;
                out.ended_epochs
                    .insert(id.value().to_string(), epoch.value());
            }
        }
        if let Ok(t) = rtx.open_table(MOVED) {
            for row in t.iter()? {
                let (id, h) = row?;
                if let Ok(h) = wire::decode::<Holder>(h.value()) {
                    out.moved.push((id.value().to_string(), h));
                }
            }
        }
        if let Ok(t) = rtx.open_table(UNCONFIRMED) {
            for row in t.iter()? {
                let (id, epoch) = row?;
                out.unconfirmed
                    .push((id.value().to_string(), epoch.value()));
            }
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

    /// Whether this node's own journal holds `job`: running or ended (its status kept).
    pub(super) fn holds(&self, job: &str) -> Result<bool, redb::Error> {
        self.catch_up()?;
        let rtx = self.begin_read()?;
        for table in [JOBS, ENDED] {
            match rtx.open_table(table) {
                Ok(t) => {
                    if t.get(job)?.is_some() {
                        return Ok(true);
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// The copy kept of another node's job: its record and inputs in order (up to the
    /// first gap).
    pub(super) fn copy(&self, job: &str) -> Result<Option<(JobRecord, Vec<Input>)>, JournalError> {
        let err = |e: redb::Error| self.read_error(e);
        self.catch_up().map_err(err)?;
        let rtx = self.begin_read().map_err(err)?;
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
        for (next, row) in (1u64..).zip(
            inputs_t
                .range((job, 0)..=(job, u64::MAX))
                .map_err(|e| err(e.into()))?,
        ) {
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
            inputs.push(wire::decode::<Input>(v.value()).map_err(|e| bad("input", e))?);
        }
        Ok(Some((record, inputs)))
    }

    /// The whole journal of this node's `job` as replica writes, for a node that becomes
    /// one of its replicas (empty if it cannot be read).
    pub(super) fn history(&self, job: &str, epoch: u64) -> Vec<ReplicaWrite> {
        let read = || -> Result<Vec<ReplicaWrite>, redb::Error> {
            self.catch_up()?;
            let rtx = self.begin_read()?;
            let jobs = rtx.open_table(JOBS)?;
            let Some(rec) = jobs.get(job)? else {
                return Ok(Vec::new());
            };
            let mut out = vec![ReplicaWrite {
                job: job.to_string(),
                epoch,
                what: ReplicaWhat::Start(rec.value().to_vec()),
                ahead: false,
            }];
            let inputs = rtx.open_table(INPUTS)?;
            for row in inputs.range((job, 0)..=(job, u64::MAX))? {
                let (k, v) = row?;
                out.push(ReplicaWrite {
                    job: job.to_string(),
                    epoch,
                    what: ReplicaWhat::Input(k.value().1, v.value().to_vec()),
                    ahead: false,
                });
            }
            Ok(out)
        };
        read().unwrap_or_else(|e| {
            tracing::error!(job, error = %e, "cannot read a job's journal to copy it");
            Vec::new()
        })
    }

    /// The number the next ended job gets in `ended_order`, as redb has it.
    fn next_order(&self) -> Result<u64, redb::Error> {
        let rtx = self.begin_read()?;
        match rtx.open_table(ENDED_ORDER) {
            Ok(t) => Ok(t.last()?.map_or(0, |(k, _)| k.value() + 1)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Commits `batch` durably: appends it to the log (one `fdatasync`); redb gets it
    /// later, with the batches of up to [`APPLY_EVERY`], in one transaction without a
    /// flush (see `wal`), in which a job that ended costs only its end: its start and
    /// inputs, written and removed again, are never written ([`compact`]). A batch whose
    /// answers come from redb (an actor's save or fetch, a forget) is applied at once, and
    /// so is everything before a read; so is a batch with `apply_now`, which the writer
    /// sets when a submission waits for this commit: a full disk then refuses the
    /// submission, rather than accepting a job into the log's last free bytes whose end
    /// it then cannot write. Checkpoints when one is due. Keeps the newest
    /// `retain` ended statuses. Returns what to answer now that it is durable (nothing
    /// is answered if it fails: the waiters are dropped, and the log is cut back for the
    /// batch's retry).
    ///
    /// `written` runs once the batch is in the log's file, before the sync (and, if the
    /// batch changes nothing, at once): what it sends elsewhere outlives a crash of this
    /// process.
    ///
    /// Why later: applying each group commit to redb was 13% of a busy owner's CPU
    /// (profiled at 3,000 one-step jobs/s), most of it writing records that the job's end
    /// removed a millisecond later; the log already makes the batch durable.
    ///
    /// Without `sync` the batch is written to the log but not synced: the writer syncs it
    /// with a later commit or [`Store::sync_log`] within its commit window, when nobody
    /// waits for this one.
    pub(super) fn commit(
        &self,
        batch: Vec<Write>,
        apply_now: bool,
        sync: bool,
        written: impl FnOnce(),
    ) -> Result<Answers, redb::Error> {
        if self
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            self.reopen()?;
        }
        let logged: Vec<Logged> = batch.iter().filter_map(Logged::of).collect();
        if logged.is_empty() {
            written();
            return Ok(Answers::default());
        }
        let starts = batch
            .iter()
            .any(|w| matches!(w, Write::Start(..) | Write::StartSent(..)));
        let (before, seq) = {
            let mut wal = locked(&self.wal);
            if starts {
                wal.keep_headroom()?;
            }
            let before = wal.len();
            let seq = wal.write(&logged)?;
            // Written, not yet synced: what a crash of this process cannot take back.
            written();
            if sync {
                wal.sync(before)?;
            }
            (before, seq)
        };
        let answers = {
            let mut u = locked(&self.unapplied);
            let now = apply_now
                || batch.iter().any(Write::is_answered_by_redb)
                || u.since.is_some_and(|t| t.elapsed() >= APPLY_EVERY)
                || u.writes.len() + batch.len() >= APPLY_MAX;
            if now {
                match self.apply_unapplied(&mut u, batch, Some(seq)) {
                    Ok(a) => a,
                    Err(e) => {
                        // The batches applied with it stay in the log, which the reopen
                        // applies again; this one is retried.
                        drop(u);
                        locked(&self.wal).undo_last(before);
                        return Err(e);
                    }
                }
            } else {
                u.writes.extend(batch);
                u.seq = seq;
                u.since.get_or_insert_with(Instant::now);
                Answers::default()
            }
        };
        let due = locked(&self.checkpointed).elapsed() >= CHECKPOINT_EVERY
            || locked(&self.wal).len() >= CHECKPOINT_BYTES;
        if due {
            if let Err(e) = self.checkpoint() {
                // What the log holds stays durable; redb, closed by the error, is opened
                // again (and the log replayed) by the next commit.
                tracing::warn!(journal = %self.path.display(), error = %e, "journal checkpoint failed; the log keeps the writes and it is tried again");
                *locked(&self.checkpointed) = Instant::now();
                *self.db.write().unwrap_or_else(PoisonError::into_inner) = None;
            }
        }
        Ok(answers)
    }

    /// Syncs the log's batches written without a sync.
    pub(super) fn sync_log(&self) -> std::io::Result<()> {
        locked(&self.wal).sync_written()
    }

    /// Applies `batch` (the log's batch `seq`) to redb in one transaction without a flush
    /// (the log holds it).
    fn apply(
        &self,
        batch: Vec<Write>,
        seq: u64,
        next_order: &mut u64,
        retain: usize,
    ) -> Result<Answers, redb::Error> {
        let mut out = Answers::default();
        let guard = self.db()?;
        let Some(db) = &*guard else {
            return Err(redb::Error::DatabaseClosed);
        };
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::None)?;
        tx.open_table(META)?.insert(APPLIED, seq)?;
        {
            let mut states = tx.open_table(ACTOR_STATES)?;
            let mut fences = tx.open_table(ACTOR_FENCES)?;
            let mut jobs = tx.open_table(JOBS)?;
            let mut inputs = tx.open_table(INPUTS)?;
            let mut ended = tx.open_table(ENDED)?;
            let mut order = tx.open_table(ENDED_ORDER)?;
            let mut copies = tx.open_table(COPIES)?;
            let mut copy_inputs = tx.open_table(COPY_INPUTS)?;
            let mut unconfirmed = tx.open_table(UNCONFIRMED)?;
            let mut ended_epochs = tx.open_table(ENDED_EPOCHS)?;
            let mut moved = tx.open_table(MOVED)?;
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
                    Write::Drop(id, holder) => {
                        jobs.remove(id.as_str())?;
                        inputs
                            .retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false)?;
                        if let Some(h) = holder {
                            // An end here is not the job's: the holder's is.
                            unconfirmed.remove(id.as_str())?;
                            ended.remove(id.as_str())?;
                            ended_epochs.remove(id.as_str())?;
                            if let Ok(b) = wire::encode(&h) {
                                moved.insert(id.as_str(), b.as_slice())?;
                                order.insert(*next_order, id.as_str())?;
                                *next_order += 1;
                            }
                        }
                    }
                    Write::Flush => {}
                    Write::Unconfirmed(id, epoch) => {
                        unconfirmed.insert(id.as_str(), epoch)?;
                    }
                    Write::Confirmed(id) => {
                        unconfirmed.remove(id.as_str())?;
                    }
                    Write::ForgetAll(done) => {
                        copies.retain(|_, _| false)?;
                        copy_inputs.retain(|_, _| false)?;
                        out.forgot.push(done);
                    }
                    Write::Forget(id) => {
                        copies.remove(id.as_str())?;
                        copy_inputs
                            .retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false)?;
                    }
                    Write::Start(id, _, b, _) | Write::StartSent(id, _, b, _) => {
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
                    Write::End(id, b, epoch) => {
                        if epoch > 0 {
                            ended_epochs.insert(id.as_str(), epoch)?;
                        }
                        jobs.remove(id.as_str())?;
                        inputs
                            .retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false)?;
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
                ended_epochs.remove(id.value())?;
                moved.remove(id.value())?;
            }
        }
        tx.commit()?;
        Ok(out)
    }
}

/// Drops from `batch` (writes in commit order) what a later write in it undoes: a job's
/// start and inputs before its end or drop (which remove them), an end's unconfirmed
/// mark before its confirmation, a copy's start and inputs before its end, forget or a
/// forget-all. What is left leaves redb as the whole batch would.
fn compact(batch: &mut Vec<Write>) {
    use std::collections::HashMap;
    let mut own_end: HashMap<String, usize> = HashMap::new();
    let mut confirmed: HashMap<String, usize> = HashMap::new();
    // A copy's end by (write, write within the copied batch; MAX for a whole forget).
    let mut copy_end: HashMap<String, (usize, usize)> = HashMap::new();
    let mut forget_all = None;
    for (i, w) in batch.iter().enumerate() {
        match w {
            Write::End(id, ..) => {
                own_end.insert(id.clone(), i);
            }
            Write::Drop(id, holder) => {
                own_end.insert(id.clone(), i);
                if holder.is_some() {
                    // It drops an unconfirmed mark too.
                    confirmed.insert(id.clone(), i);
                }
            }
            Write::Confirmed(id) => {
                confirmed.insert(id.clone(), i);
            }
            Write::Forget(id) => {
                copy_end.insert(id.clone(), (i, usize::MAX));
            }
            Write::ForgetAll(_) => forget_all = Some(i),
            Write::Keep(b) => {
                for (j, r) in b.writes.iter().enumerate() {
                    if matches!(r.what, ReplicaWhat::End) {
                        copy_end.insert(r.job.clone(), (i, j));
                    }
                }
            }
            _ => {}
        }
    }
    if own_end.is_empty() && confirmed.is_empty() && copy_end.is_empty() && forget_all.is_none() {
        return;
    }
    let undone = |m: &HashMap<String, usize>, id: &str, i: usize| m.get(id).is_some_and(|&e| i < e);
    let mut i = 0;
    batch.retain_mut(|w| {
        let keep = match w {
            Write::Start(id, ..) | Write::StartSent(id, ..) | Write::Input(id, ..) => {
                !undone(&own_end, id, i)
            }
            Write::Unconfirmed(id, _) => !undone(&confirmed, id, i),
            Write::Keep(b) => {
                let mut j = 0;
                b.writes.retain(|r| {
                    let gone = forget_all.is_some_and(|f| i < f)
                        || (!matches!(r.what, ReplicaWhat::End)
                            && copy_end.get(&r.job).is_some_and(|&e| (i, j) < e));
                    j += 1;
                    !gone
                });
                !b.writes.is_empty()
            }
            _ => true,
        };
        i += 1;
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::tests::{encoded, input, record, status, Scratch};
    use troupe_runtime::protocol::ReplicaBatch;

    fn start(id: &str, epoch: u64) -> Write {
        let b = encode_record(id, epoch, &record(id, epoch).spec, &Limits::default(), 0)
            .expect("a record encodes");
        Write::Start(id.to_string(), epoch, b, None)
    }

    fn input_write(id: &str, seq: u64) -> Write {
        Write::Input(id.to_string(), seq, encoded(&input(seq as u32)))
    }

    fn end(id: &str) -> Write {
        Write::End(id.to_string(), encoded(&status(id)), 0)
    }

    fn commit(store: &Store, batch: Vec<Write>) -> Answers {
        store
            .commit(batch, false, true, || {})
            .expect("the commit succeeds")
    }

    fn saved(epoch: u64, seq: u64) -> SavedState {
        SavedState {
            epoch,
            seq,
            state: vec![seq as u8],
            hosts: Vec::new(),
            answered: Vec::new(),
        }
    }

    /// What a replica write says, for comparing.
    fn summary(w: &ReplicaWrite) -> (String, u64, String) {
        let what = match &w.what {
            ReplicaWhat::Start(_) => "start".to_string(),
            ReplicaWhat::Input(seq, _) => format!("input {seq}"),
            ReplicaWhat::End => "end".to_string(),
        };
        (w.job.clone(), w.epoch, what)
    }

    /// A store opened again holds the jobs that had not ended, each with its inputs in
    /// order.
    #[test]
    fn unended_jobs_are_recovered_with_their_inputs_in_order() {
        let scratch = Scratch::new("store-recover");
        let (store, held) = Store::open(&scratch.0, 10).expect("opens");
        assert!(held.jobs.is_empty() && held.ended.is_empty() && held.copies.is_empty());
        commit(
            &store,
            vec![
                start("j1", 0),
                input_write("j1", 2),
                input_write("j1", 1),
                start("j2", 3),
                input_write("j2", 1),
            ],
        );
        drop(store);
        let (_, held) = Store::open(&scratch.0, 10).expect("opens again");
        assert_eq!(
            held.jobs,
            vec![
                (record("j1", 0), vec![input(1), input(2)]),
                (record("j2", 3), vec![input(1)]),
            ]
        );
    }

    /// An ended job leaves its status only, and only the newest `retain` statuses stay,
    /// oldest first.
    #[test]
    fn only_the_newest_retained_statuses_of_ended_jobs_stay() {
        let scratch = Scratch::new("store-retain");
        let (store, _) = Store::open(&scratch.0, 2).expect("opens");
        commit(
            &store,
            vec![start("j1", 0), input_write("j1", 1), end("j1")],
        );
        commit(&store, vec![start("j2", 0), end("j2")]);
        commit(&store, vec![start("j3", 0), end("j3")]);
        let held = store.read_all().expect("readable");
        assert!(held.jobs.is_empty());
        assert_eq!(held.ended, vec![status("j2"), status("j3")]);
    }

    /// A job that ended here, its end unconfirmed, then learned another node took it
    /// over: its end here is dropped with it (the holder's end is the job's) and its
    /// holder kept, also after a restart (the log replayed), until trimmed like an end.
    #[test]
    fn an_end_here_of_a_job_taken_over_is_dropped_and_its_holder_kept() {
        let scratch = Scratch::new("store-moved");
        let holder = Holder {
            node: "n2".to_string(),
            epoch: 7,
        };
        let (store, _) = Store::open(&scratch.0, 2).expect("opens");
        commit(&store, vec![start("j1", 0), input_write("j1", 1)]);
        commit(
            &store,
            vec![Write::Unconfirmed("j1".to_string(), 0), end("j1")],
        );
        let held = store.read_all().expect("readable");
        assert_eq!(held.unconfirmed, vec![("j1".to_string(), 0)]);
        commit(
            &store,
            vec![Write::Drop("j1".to_string(), Some(holder.clone()))],
        );
        drop(store);
        let (store, held) = Store::open(&scratch.0, 2).expect("opens again");
        assert!(held.jobs.is_empty() && held.ended.is_empty(), "{held:?}");
        assert!(held.unconfirmed.is_empty());
        assert_eq!(held.moved, vec![("j1".to_string(), holder)]);
        // Kept as long as ended statuses are: two newer ends push it out.
        commit(&store, vec![start("j2", 0), end("j2")]);
        commit(&store, vec![start("j3", 0), end("j3")]);
        let held = store.read_all().expect("readable");
        assert!(held.moved.is_empty(), "{:?}", held.moved);
        assert_eq!(held.ended, vec![status("j2"), status("j3")]);
    }

    /// What a job's end undoes is not written: a start and its inputs before the end, an
    /// unconfirmed mark before its confirmation, a copy's start and inputs before its end
    /// or a forget; what comes after an end (a job started again) stays.
    #[test]
    fn writes_a_later_write_undoes_are_dropped() {
        let copy = |job: &str, what| ReplicaWrite {
            job: job.to_string(),
            epoch: 1,
            what,
            ahead: false,
        };
        let keep = |writes| {
            Write::Keep(ReplicaBatch {
                owner: "n2".to_string(),
                writes,
                ack: None,
                synced: false,
            })
        };
        let mut batch = vec![
            start("j1", 0),
            input_write("j1", 1),
            start("j2", 0),
            Write::Unconfirmed("j1".to_string(), 0),
            keep(vec![
                copy("c1", ReplicaWhat::Start(vec![1])),
                copy("c2", ReplicaWhat::Start(vec![2])),
                copy("c1", ReplicaWhat::Input(1, vec![3])),
            ]),
            end("j1"),
            input_write("j2", 1),
            keep(vec![copy("c1", ReplicaWhat::End)]),
            Write::Confirmed("j1".to_string()),
            start("j1", 1),
            Write::Unconfirmed("j2".to_string(), 0),
        ];
        compact(&mut batch);
        let left: Vec<String> = batch
            .iter()
            .map(|w| match w {
                Write::Start(id, epoch, ..) => format!("start {id} {epoch}"),
                Write::Input(id, seq, _) => format!("input {id} {seq}"),
                Write::End(id, ..) => format!("end {id}"),
                Write::Unconfirmed(id, _) => format!("unconfirmed {id}"),
                Write::Confirmed(id) => format!("confirmed {id}"),
                Write::Keep(b) => format!(
                    "keep {}",
                    b.writes
                        .iter()
                        .map(|r| summary(r).0 + &summary(r).2)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                _ => "other".to_string(),
            })
            .collect();
        assert_eq!(
            left,
            vec![
                "start j2 0",
                "keep c2start",
                "end j1",
                "input j2 1",
                "keep c1end",
                "confirmed j1",
                "start j1 1",
                "unconfirmed j2",
            ]
        );
    }

    /// Batches wait to be applied to redb together, and nothing is lost by it: a read
    /// sees them, a reopen applies them from the log, and a batch answered from redb (an
    /// actor's fetch) is applied at once.
    #[test]
    fn batches_applied_later_are_read_and_survive_a_reopen() {
        let scratch = Scratch::new("store-later");
        let (store, _) = Store::open(&scratch.0, 10).expect("opens");
        commit(&store, vec![start("j1", 0)]);
        commit(&store, vec![start("j2", 0), input_write("j2", 1)]);
        assert!(
            !locked(&store.unapplied).writes.is_empty(),
            "the batches wait to be applied"
        );
        assert!(
            store.holds("j1").expect("readable"),
            "a read applies them first"
        );
        assert!(locked(&store.unapplied).writes.is_empty());
        commit(&store, vec![end("j1"), input_write("j2", 2)]);
        let (tx, _rx) = oneshot::channel();
        commit(&store, vec![Write::ActorFetch("a".to_string(), 1, tx)]);
        assert!(
            locked(&store.unapplied).writes.is_empty(),
            "a fetch is answered from redb: its batch and those before are applied"
        );
        commit(&store, vec![start("j3", 0), end("j3")]);
        // As after a failed commit: redb reopened, the log applied again.
        store.reopen().expect("reopens");
        let held = store.read_all().expect("readable");
        assert_eq!(held.ended, vec![status("j1"), status("j3")]);
        assert_eq!(held.jobs, vec![(record("j2", 0), vec![input(1), input(2)])]);
        assert_eq!(store.next_order().expect("readable"), 2);
        drop(store);
        let (_, again) = Store::open(&scratch.0, 10).expect("opens again");
        assert_eq!(again.ended, held.ended);
        assert_eq!(again.jobs, held.jobs);
    }

    /// redb commits without a flush; what a crash takes from it (everything since its
    /// last durable commit) comes back from the log at open. Here the redb file is lost
    /// whole and only the log is left.
    #[test]
    fn what_redb_lost_comes_back_from_the_log() {
        let scratch = Scratch::new("store-wal");
        let (store, _) = Store::open(&scratch.0, 10).expect("opens");
        commit(&store, vec![start("j1", 0), input_write("j1", 1)]);
        commit(&store, vec![start("j2", 0), end("j2")]);
        let log = std::fs::read(scratch.0.join("journal.wal.0")).expect("the log");
        drop(store);
        let crashed = Scratch::new("store-wal-crashed");
        std::fs::create_dir_all(&crashed.0).expect("a folder");
        std::fs::write(crashed.0.join("journal.wal.0"), log).expect("the log alone");
        let (_, held) = Store::open(&crashed.0, 10).expect("opens from the log");
        assert_eq!(held.jobs, vec![(record("j1", 0), vec![input(1)])]);
        assert_eq!(held.ended, vec![status("j2")]);
        // The replay was checkpointed: the next open has nothing to replay.
        assert!(crashed.0.join("journal.wal.1").exists());
        assert!(!crashed.0.join("journal.wal.0").exists());
    }

    /// What a commit hands on (copies to replicas, whose acks publish an end) is handed on
    /// once the batch is in the log's file and before redb has it: a crash of the process
    /// from then on finds it in the log.
    #[test]
    fn a_batch_is_in_the_log_when_the_commit_hands_it_on() {
        let scratch = Scratch::new("store-written");
        let (store, _) = Store::open(&scratch.0, 10).expect("opens");
        let mut seen = None;
        store
            .commit(vec![start("j1", 0), end("j1")], false, true, || {
                let log = std::fs::read(scratch.0.join("journal.wal.0")).expect("the log");
                let in_redb = store.read_all().expect("readable").ended.len();
                seen = Some((log, in_redb));
            })
            .expect("the commit succeeds");
        let (log, in_redb) = seen.expect("handed on once");
        assert_eq!(in_redb, 0, "handed on before redb applied it");
        drop(store);
        let crashed = Scratch::new("store-written-crashed");
        std::fs::create_dir_all(&crashed.0).expect("a folder");
        std::fs::write(crashed.0.join("journal.wal.0"), log).expect("the log alone");
        let (_, held) = Store::open(&crashed.0, 10).expect("opens from the log");
        assert!(held.jobs.is_empty());
        assert_eq!(held.ended, vec![status("j1")]);
    }

    /// After a checkpoint and a reopen (as after a failed commit) batches are numbered on:
    /// a crash then loses none of them to the replay's skipping of what redb holds.
    #[test]
    fn batches_after_a_checkpoint_and_a_reopen_are_replayed() {
        let scratch = Scratch::new("store-wal-seq");
        let (store, _) = Store::open(&scratch.0, 10).expect("opens");
        commit(&store, vec![start("j1", 0)]);
        store.checkpoint().expect("a checkpoint");
        // redb as a crash would leave it: as of the checkpoint.
        let durable = std::fs::read(scratch.0.join("journal.redb")).expect("the file");
        store.reopen().expect("reopens");
        commit(&store, vec![start("j2", 0)]);
        let log = std::fs::read(scratch.0.join("journal.wal.1")).expect("the new log");
        drop(store);
        let crashed = Scratch::new("store-wal-seq-crashed");
        std::fs::create_dir_all(&crashed.0).expect("a folder");
        std::fs::write(crashed.0.join("journal.redb"), durable).expect("redb");
        std::fs::write(crashed.0.join("journal.wal.1"), log).expect("the log");
        let (_, held) = Store::open(&crashed.0, 10).expect("opens");
        let ids: Vec<_> = held.jobs.iter().map(|(r, _)| r.id.as_str()).collect();
        assert_eq!(ids, vec!["j1", "j2"]);
    }

    /// Closing redb persists the commits made without a flush, and their batches stay in
    /// the log: opening again applies none of them twice (an end applied twice would be
    /// counted twice among the retained statuses).
    #[test]
    fn a_batch_redb_holds_is_not_applied_again() {
        let scratch = Scratch::new("store-wal-twice");
        let (store, _) = Store::open(&scratch.0, 1).expect("opens");
        commit(&store, vec![start("j1", 0), end("j1")]);
        commit(&store, vec![start("j2", 0)]);
        drop(store);
        let (store, held) = Store::open(&scratch.0, 1).expect("opens again");
        assert_eq!(held.ended, vec![status("j1")]);
        assert_eq!(held.jobs, vec![(record("j2", 0), Vec::new())]);
        assert_eq!(store.next_order().expect("readable"), 1);
    }

    /// A kept copy is read back up to its first missing input, listed at start with its
    /// owner and epoch, and gone once forgotten.
    #[test]
    fn a_copy_is_read_back_up_to_its_first_gap() {
        let scratch = Scratch::new("store-copy");
        let (store, _) = Store::open(&scratch.0, 10).expect("opens");
        let write = |what| ReplicaWrite {
            job: "j".to_string(),
            epoch: 3,
            what,
            ahead: false,
        };
        let batch = ReplicaBatch {
            owner: "n2".to_string(),
            writes: vec![
                write(ReplicaWhat::Start(encoded(&record("j", 3)))),
                write(ReplicaWhat::Input(1, encoded(&input(1)))),
                write(ReplicaWhat::Input(2, encoded(&input(2)))),
                write(ReplicaWhat::Input(4, encoded(&input(4)))),
            ],
            ack: None,
            synced: false,
        };
        commit(&store, vec![Write::Keep(batch)]);
        assert_eq!(
            store.copy("j").expect("readable"),
            Some((record("j", 3), vec![input(1), input(2)]))
        );
        assert_eq!(
            store.read_all().expect("readable").copies,
            vec![CopyInfo {
                job: "j".to_string(),
                owner: "n2".to_string(),
                epoch: 3,
            }]
        );
        commit(&store, vec![Write::Forget("j".to_string())]);
        assert_eq!(store.copy("j").expect("readable"), None);
        assert!(store.read_all().expect("readable").copies.is_empty());
    }

    /// A job's history for a new replica is its start, then every input in order, at the
    /// epoch asked for; an unknown job has none.
    #[test]
    fn a_jobs_history_is_its_start_then_its_inputs_in_order() {
        let scratch = Scratch::new("store-history");
        let (store, _) = Store::open(&scratch.0, 10).expect("opens");
        commit(
            &store,
            vec![start("j", 5), input_write("j", 1), input_write("j", 2)],
        );
        let history: Vec<_> = store.history("j", 5).iter().map(summary).collect();
        let row = |what: &str| ("j".to_string(), 5, what.to_string());
        assert_eq!(history, vec![row("start"), row("input 1"), row("input 2")]);
        assert!(store.history("other", 0).is_empty());
    }

    /// A fetch fences the actor in the commit that reads it: a save of the older
    /// activation later in the same batch is refused, and one of the newer is kept.
    #[test]
    fn a_fetch_fences_the_saves_that_follow_it_in_the_same_commit() {
        let scratch = Scratch::new("store-fence");
        let (store, _) = Store::open(&scratch.0, 10).expect("opens");
        let (s1, _r1) = oneshot::channel();
        let (fetch, _rf) = oneshot::channel();
        let (s2, _r2) = oneshot::channel();
        let (s3, _r3) = oneshot::channel();
        let answers = commit(
            &store,
            vec![
                Write::ActorState("t/k".to_string(), saved(3, 1), s1),
                Write::ActorFetch("t/k".to_string(), 7, fetch),
                Write::ActorState("t/k".to_string(), saved(3, 2), s2),
                Write::ActorState("t/k".to_string(), saved(7, 2), s3),
            ],
        );
        let verdicts: Vec<_> = answers.saved.into_iter().map(|(_, r)| r).collect();
        assert_eq!(verdicts, vec![Ok(()), Err(Fenced { epoch: 7 }), Ok(())]);
        let fetched: Vec<_> = answers.fetched.into_iter().map(|(_, s)| s).collect();
        assert_eq!(fetched, vec![Some(saved(3, 1))]);
    }
}
