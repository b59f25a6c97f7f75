//! The core group's Raft log and state machine, in redb (`core.redb` in the node's data
//! folder, apart from the journal so that neither waits on the other's commits).
//!
//! The log, the vote and the committed index are durable; the state machine
//! ([`Ownership`]) lives in memory and is rebuilt at start from the last snapshot plus the
//! committed log after it, which openraft applies again. Snapshots are written to redb when
//! openraft builds or receives one, so that the log before them can be purged.
//!
//! redb is blocking. The calls here run on the node's runtime; they are rare (one append
//! per decision, not per heartbeat) and a durable commit costs about 0.3-0.8 ms here
//! (measured on the 2-core build machine), so they are not moved to a thread.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{CoreDecision, CoreTypes, Ownership};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use troupe_runtime::wire;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

type SE = StorageError<u64>;

fn io(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

/// Opens (or creates) the core store in `dir`.
pub(crate) fn open(dir: &Path) -> Result<(LogStore, StateMachine), redb::Error> {
    std::fs::create_dir_all(dir).map_err(redb::Error::Io)?;
    let db = Arc::new(Database::create(dir.join("core.redb"))?);
    let tx = db.begin_write()?;
    tx.open_table(LOG)?;
    tx.open_table(META)?;
    tx.commit()?;
    let log = LogStore { db: db.clone() };
    let snapshot: Option<StoredSnapshot> = log.meta("snapshot").ok().flatten();
    let mut sm = Machine::default();
    if let Some(s) = snapshot {
        if let Ok(o) = wire::decode::<Ownership>(&s.data) {
            sm.ownership = o;
            sm.last_applied = s.meta.last_log_id;
            sm.membership = s.meta.last_membership.clone();
            sm.snapshot = Some(s);
        }
    }
    Ok((
        log,
        StateMachine {
            db,
            inner: Arc::new(Mutex::new(sm)),
        },
    ))
}

/// The Raft log (also its reader: redb gives every reader a consistent view).
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    // openraft's storage traits return its `StorageError`; helpers return it as it is.
    #[allow(clippy::result_large_err)]
    fn meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, SE> {
        let rtx = self
            .db
            .begin_read()
            .map_err(|e| StorageIOError::read(io(e)))?;
        let t = rtx
            .open_table(META)
            .map_err(|e| StorageIOError::read(io(e)))?;
        match t.get(key).map_err(|e| StorageIOError::read(io(e)))? {
            None => Ok(None),
            Some(v) => wire::decode(v.value())
                .map(Some)
                .map_err(|e| StorageIOError::read(io(e)).into()),
        }
    }

    // openraft's storage traits return its `StorageError`; helpers return it as it is.
    #[allow(clippy::result_large_err)]
    fn set_meta<T: Serialize>(&self, key: &str, v: &T) -> Result<(), SE> {
        let b = wire::encode(v).map_err(|e| StorageIOError::write(io(e)))?;
        let w = |e: redb::Error| -> SE { StorageIOError::write(io(e)).into() };
        let tx = self.db.begin_write().map_err(|e| w(e.into()))?;
        tx.open_table(META)
            .map_err(|e| w(e.into()))?
            .insert(key, b.as_slice())
            .map_err(|e| w(e.into()))?;
        tx.commit().map_err(|e| w(e.into()))
    }

    /// Removes the entries whose index is in `range`.
    fn remove(&self, range: impl RangeBounds<u64>) -> Result<(), redb::Error> {
        let tx = self.db.begin_write()?;
        tx.open_table(LOG)?.retain_in(range, |_, _| false)?;
        tx.commit()?;
        Ok(())
    }
}

impl RaftLogReader<CoreTypes> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<CoreTypes>>, SE> {
        let r = |e: redb::Error| -> SE { StorageIOError::read_logs(io(e)).into() };
        let rtx = self.db.begin_read().map_err(|e| r(e.into()))?;
        let t = rtx.open_table(LOG).map_err(|e| r(e.into()))?;
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for row in t.range(start..).map_err(|e| r(e.into()))? {
            let (k, v) = row.map_err(|e| r(e.into()))?;
            if !range.contains(&k.value()) {
                break;
            }
            out.push(wire::decode(v.value()).map_err(|e| StorageIOError::read_logs(io(e)))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<CoreTypes> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<CoreTypes>, SE> {
        let purged: Option<LogId<u64>> = self.meta("purged")?;
        let r = |e: redb::Error| -> SE { StorageIOError::read_logs(io(e)).into() };
        let rtx = self.db.begin_read().map_err(|e| r(e.into()))?;
        let t = rtx.open_table(LOG).map_err(|e| r(e.into()))?;
        let last = match t.last().map_err(|e| r(e.into()))? {
            Some((_, v)) => {
                let e: Entry<CoreTypes> =
                    wire::decode(v.value()).map_err(|e| StorageIOError::read_logs(io(e)))?;
                Some(e.log_id)
            }
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), SE> {
        self.set_meta("vote", vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, SE> {
        self.meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), SE> {
        self.set_meta("committed", &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, SE> {
        Ok(self.meta::<Option<LogId<u64>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<CoreTypes>) -> Result<(), SE>
    where
        I: IntoIterator<Item = Entry<CoreTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let w = |e: redb::Error| -> SE { StorageIOError::write_logs(io(e)).into() };
        let tx = self.db.begin_write().map_err(|e| w(e.into()))?;
        {
            let mut t = tx.open_table(LOG).map_err(|e| w(e.into()))?;
            for e in entries {
                let b = wire::encode(&e).map_err(|e| StorageIOError::write_logs(io(e)))?;
                t.insert(e.log_id.index, b.as_slice())
                    .map_err(|e| w(e.into()))?;
            }
        }
        tx.commit().map_err(|e| w(e.into()))?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), SE> {
        self.remove(log_id.index..)
            .map_err(|e| StorageIOError::write_logs(io(e)).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), SE> {
        self.set_meta("purged", &Some(log_id))?;
        self.remove(..=log_id.index)
            .map_err(|e| StorageIOError::write_logs(io(e)).into())
    }
}

/// A snapshot as stored: its metadata and the encoded [`Ownership`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

#[derive(Default)]
struct Machine {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    ownership: Ownership,
    snapshot: Option<StoredSnapshot>,
}

/// The state machine: who owns the jobs that changed owner. Cloning shares it.
#[derive(Clone)]
pub(crate) struct StateMachine {
    db: Arc<Database>,
    inner: Arc<Mutex<Machine>>,
}

impl StateMachine {
    /// The cluster's id as applied here, once named; and how many jobs changed owner.
    pub(crate) fn summary(&self) -> (Option<String>, usize) {
        let m = crate::locked(&self.inner);
        (m.ownership.cluster.clone(), m.ownership.len())
    }

    /// Reads the ownership state in place (no copy of it).
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Ownership) -> R) -> R {
        f(&crate::locked(&self.inner).ownership)
    }

    // openraft's storage traits return its `StorageError`; helpers return it as it is.
    #[allow(clippy::result_large_err)]
    fn store(&self, s: &StoredSnapshot) -> Result<(), SE> {
        LogStore {
            db: self.db.clone(),
        }
        .set_meta("snapshot", s)
    }
}

impl RaftSnapshotBuilder<CoreTypes> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<CoreTypes>, SE> {
        let s = {
            let m = crate::locked(&self.inner);
            let data = wire::encode(&m.ownership)
                .map_err(|e| StorageIOError::write_snapshot(None, io(e)))?;
            let id = m
                .last_applied
                .map(|l| format!("{}-{}", l.leader_id.term, l.index))
                .unwrap_or_else(|| "0-0".into());
            StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: m.last_applied,
                    last_membership: m.membership.clone(),
                    snapshot_id: id,
                },
                data,
            }
        };
        self.store(&s)?;
        crate::locked(&self.inner).snapshot = Some(s.clone());
        Ok(Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        })
    }
}

impl RaftStateMachine<CoreTypes> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), SE> {
        let m = crate::locked(&self.inner);
        Ok((m.last_applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CoreDecision>, SE>
    where
        I: IntoIterator<Item = Entry<CoreTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut m = crate::locked(&self.inner);
        let mut out = Vec::new();
        for e in entries {
            m.last_applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => CoreDecision::Nothing,
                EntryPayload::Normal(cmd) => m.ownership.apply(e.log_id.index, &cmd),
                EntryPayload::Membership(mem) => {
                    m.membership = StoredMembership::new(Some(e.log_id), mem);
                    CoreDecision::Nothing
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SE> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SE> {
        let data = snapshot.into_inner();
        let ownership: Ownership =
            wire::decode(&data).map_err(|e| StorageIOError::read_snapshot(None, io(e)))?;
        let s = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.store(&s)?;
        let mut m = crate::locked(&self.inner);
        m.ownership = ownership;
        m.last_applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        m.snapshot = Some(s);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<CoreTypes>>, SE> {
        Ok(crate::locked(&self.inner)
            .snapshot
            .clone()
            .map(|s| Snapshot {
                meta: s.meta,
                snapshot: Box::new(Cursor::new(s.data)),
            }))
    }
}
