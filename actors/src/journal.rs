//! The node's journal: the inputs of the jobs it owns, in redb, so that a node that
//! restarts resumes its jobs (see [`troupe_runtime::job::journal`] for the fold).
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

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use troupe_runtime::job::journal::{Input, JobRecord};
use troupe_runtime::job::spec::JobSpec;
use troupe_runtime::job::status::JobStatus;
use troupe_runtime::job::validate::Limits;
use troupe_runtime::wire;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const INPUTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inputs");
const ENDED: TableDefinition<&str, &[u8]> = TableDefinition::new("ended");
const ENDED_ORDER: TableDefinition<u64, &str> = TableDefinition::new("ended_order");

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
    Start(String, Vec<u8>),
    Input(String, u64, Vec<u8>),
    End(String, Vec<u8>),
}

/// The journal's write side, shared by the node's job manager and supervisors.
#[derive(Clone, Debug)]
pub struct Journal {
    tx: mpsc::Sender<Write>,
}

/// What the journal held when the node started.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Jobs that had not ended, with their inputs in order.
    pub jobs: Vec<(JobRecord, Vec<Input>)>,
    /// Statuses of ended jobs, oldest first.
    pub ended: Vec<JobStatus>,
}

/// The fields of a [`JobRecord`], borrowed (so that starting a job does not copy its file).
#[derive(serde::Serialize)]
struct RecordRef<'a> {
    id: &'a str,
    spec: &'a JobSpec,
    limits: &'a Limits,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, reads what it holds, and starts its writer
    /// thread. `retain` ended statuses are kept.
    pub fn open(dir: &Path, retain: usize) -> Result<(Journal, Recovered), JournalError> {
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
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("troupe-journal".into())
            .spawn(move || writer(db, rx, retain))
            .map_err(|e| open_err(redb::Error::Io(e)))?;
        Ok((Journal { tx }, recovered))
    }

    /// Records that job `id` started from `spec` under `limits`.
    pub fn start(&self, id: &str, spec: &JobSpec, limits: &Limits) {
        match wire::encode(&RecordRef { id, spec, limits }) {
            Ok(b) => self.send(Write::Start(id.to_string(), b)),
            Err(e) => tracing::error!(job = id, error = %e, "cannot journal a job's start"),
        }
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

    fn send(&self, w: Write) {
        if self.tx.send(w).is_err() {
            tracing::error!("the journal's writer has stopped; this job is not journaled");
        }
    }
}

fn read_all(db: &Database) -> Result<Recovered, redb::Error> {
    let mut out = Recovered::default();
    let rtx = db.begin_read()?;
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

fn writer(db: Database, rx: mpsc::Receiver<Write>, retain: usize) {
    let mut next_order = match next_order(&db) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the journal's ended jobs; numbering anew");
            0
        }
    };
    while let Ok(first) = rx.recv() {
        // Gather what arrives within LINGER of the first write: a commit costs the same
        // for one input or hundreds, and nobody waits for it.
        let until = std::time::Instant::now() + LINGER;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let n = batch.len();
        if let Err(e) = commit(&db, batch, &mut next_order, retain) {
            tracing::error!(error = %e, writes = n, "journal commit failed; these jobs may not resume after a restart");
        }
    }
}

fn next_order(db: &Database) -> Result<u64, redb::Error> {
    let rtx = db.begin_read()?;
    match rtx.open_table(ENDED_ORDER) {
        Ok(t) => Ok(t.last()?.map_or(0, |(k, _)| k.value() + 1)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

fn commit(
    db: &Database,
    batch: Vec<Write>,
    next_order: &mut u64,
    retain: usize,
) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    {
        let mut jobs = tx.open_table(JOBS)?;
        let mut inputs = tx.open_table(INPUTS)?;
        let mut ended = tx.open_table(ENDED)?;
        let mut order = tx.open_table(ENDED_ORDER)?;
        for w in batch {
            match w {
                Write::Start(id, b) => {
                    jobs.insert(id.as_str(), b.as_slice())?;
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
