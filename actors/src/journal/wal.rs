//! The journal's write-ahead log: each group commit's writes, appended to one file and
//! made durable with one `fdatasync`, before the same writes go to redb without a flush.
//!
//! Why: a durable redb commit costs about 2.5 ms on the build machine (its page writes
//! and two syncs), a bare `fdatasync` of an append about 0.4 ms. So every group commit
//! appends its batch here and syncs once, then commits it to redb with
//! `Durability::None` (the page cache, no flush); about once a second a checkpoint makes
//! one durable redb commit, which persists all of those, and starts the next log
//! (`journal.wal.<generation>`, the generation kept in redb by that same commit). At
//! open, the log of redb's generation is replayed into redb, up to its first torn or
//! corrupt record (a crash in the middle of an append that was never acknowledged).
//!
//! Written by hand rather than with okaywal: the journal needs one file per generation,
//! replayed whole and dropped at each checkpoint, which is about a hundred lines; okaywal
//! brings segments, its own checkpoint protocol and archiving that redb already does.
//!
//! A record is `[length: u32 LE][CRC-32 of the payload: u32 LE][payload]`, the payload
//! one batch of [`Logged`] writes and its sequence number (MessagePack, as on the wire).
//! Each redb transaction records the number of the batch it applied, so a replay applies
//! only what redb lacks: redb may hold more than its last durable commit (closing it
//! persists the commits made without a flush).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use troupe_runtime::protocol::{ReplicaBatch, SavedState};
use troupe_runtime::vocab::Holder;
use troupe_runtime::wire;

use super::write::Write;

/// Bytes kept allocated to the log beyond its end while it takes new jobs (see
/// [`Wal::keep_headroom`]).
const HEADROOM: u64 = 1024 * 1024;

/// Largest record read back: a bigger length field is taken as a torn tail.
const MAX_RECORD: u32 = 256 * 1024 * 1024;

/// A write as the log keeps it: what the store needs to apply it again, without the
/// waiters (nobody waits for a replay).
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Logged {
    // Encoded records as msgpack bin: a plain `Vec<u8>` is written one integer per
    // byte, which was most of the log's encoding time (perf). Logs written that way
    // still read (serde_bytes takes a sequence too).
    Start(String, #[serde(with = "serde_bytes")] Vec<u8>),
    Input(String, u64, #[serde(with = "serde_bytes")] Vec<u8>),
    End(String, #[serde(with = "serde_bytes")] Vec<u8>, u64),
    Unconfirmed(String, u64),
    Confirmed(String),
    Keep(ReplicaBatch),
    Forget(String),
    Drop(String),
    ForgetAll,
    ActorState(String, SavedState),
    ActorFetch(String, u64),
    /// A drop that keeps the job's holder (after the variants older logs hold).
    Moved(String, Holder),
}

impl Logged {
    /// What of `w` changes the store (`None`: nothing, a `Flush`).
    pub(super) fn of(w: &Write) -> Option<Logged> {
        Some(match w {
            Write::Start(id, _, b, _) | Write::StartSent(id, _, b, _) => {
                Logged::Start(id.clone(), b.clone())
            }
            Write::Input(id, seq, b) => Logged::Input(id.clone(), *seq, b.clone()),
            Write::End(id, b, epoch) => Logged::End(id.clone(), b.clone(), *epoch),
            Write::Unconfirmed(id, epoch) => Logged::Unconfirmed(id.clone(), *epoch),
            Write::Confirmed(id) => Logged::Confirmed(id.clone()),
            Write::Keep(b) => Logged::Keep(ReplicaBatch {
                ack: None,
                synced: false,
                ..b.clone()
            }),
            Write::Forget(id) => Logged::Forget(id.clone()),
            Write::Drop(id, None) => Logged::Drop(id.clone()),
            Write::Drop(id, Some(h)) => Logged::Moved(id.clone(), h.clone()),
            Write::ForgetAll(_) => Logged::ForgetAll,
            Write::ActorState(actor, state, _) => Logged::ActorState(actor.clone(), state.clone()),
            Write::ActorFetch(actor, epoch, _) => Logged::ActorFetch(actor.clone(), *epoch),
            Write::Flush => return None,
        })
    }

    /// The write to apply again (its waiters answer nobody).
    pub(super) fn into_write(self) -> Write {
        match self {
            Logged::Start(id, b) => Write::Start(id, 0, b, None),
            Logged::Input(id, seq, b) => Write::Input(id, seq, b),
            Logged::End(id, b, epoch) => Write::End(id, b, epoch),
            Logged::Unconfirmed(id, epoch) => Write::Unconfirmed(id, epoch),
            Logged::Confirmed(id) => Write::Confirmed(id),
            Logged::Keep(b) => Write::Keep(b),
            Logged::Forget(id) => Write::Forget(id),
            Logged::Drop(id) => Write::Drop(id, None),
            Logged::Moved(id, h) => Write::Drop(id, Some(h)),
            Logged::ForgetAll => Write::ForgetAll(oneshot::channel().0),
            Logged::ActorState(actor, state) => {
                Write::ActorState(actor, state, oneshot::channel().0)
            }
            Logged::ActorFetch(actor, epoch) => {
                Write::ActorFetch(actor, epoch, oneshot::channel().0)
            }
        }
    }
}

/// One record: a group commit's batch and its number.
pub(super) type Record = (u64, Vec<Logged>);

/// The open log of one generation.
pub(super) struct Wal {
    dir: PathBuf,
    generation: u64,
    file: File,
    /// Bytes of whole, synced records: where the next append starts.
    len: u64,
    /// The number of the next batch.
    next_seq: u64,
    /// Bytes allocated to the file (its end and the headroom past it).
    allocated: u64,
}

impl Wal {
    /// The log file of `generation` in `dir`.
    fn path(dir: &Path, generation: u64) -> PathBuf {
        dir.join(format!("journal.wal.{generation}"))
    }

    /// Opens the log of `generation` (created if missing), reads its records up to the
    /// first torn or corrupt one (cut off there), and deletes the logs of every other
    /// generation (older ones were checkpointed; a newer one was never made current).
    /// Batches are numbered on from `next_seq`, or after the last one read.
    pub(super) fn open(
        dir: &Path,
        generation: u64,
        next_seq: u64,
    ) -> io::Result<(Wal, Vec<Record>)> {
        let path = Self::path(dir, generation);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (batches, len) = read_records(&bytes, &path);
        if len < bytes.len() as u64 {
            tracing::warn!(log = %path.display(), kept = len, cut = bytes.len() as u64 - len, "the journal's log ends in a torn record (a crash during an append nobody was answered for); cut there");
            file.set_len(len)?;
            file.sync_data()?;
        }
        file.seek(SeekFrom::Start(len))?;
        sync_dir(dir)?;
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            let Some(g) = name.to_str().and_then(|n| n.strip_prefix("journal.wal.")) else {
                continue;
            };
            if g.parse::<u64>().is_ok_and(|g| g != generation) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let next_seq = batches
            .last()
            .map_or(next_seq, |(seq, _)| next_seq.max(seq + 1));
        let wal = Wal {
            dir: dir.to_path_buf(),
            generation,
            file,
            len,
            next_seq,
            allocated: len,
        };
        Ok((wal, batches))
    }

    /// This log's generation.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// The number the next batch gets.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes in the log.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `batch` as one record and syncs it (`fdatasync`); returns its number. On an
    /// error the log is cut back to what it held before, so that the batch can be
    /// appended again. (The store writes and syncs apart: see [`Wal::write`].)
    #[cfg(test)]
    pub(super) fn append(&mut self, batch: &[Logged]) -> io::Result<u64> {
        let before = self.len;
        let seq = self.write(batch)?;
        self.sync(before)?;
        Ok(seq)
    }

    /// Writes `batch` as one record, without a sync: the record is in the page cache,
    /// so it outlives a crash of this process (not of the machine) and is read back at
    /// the next open. Returns its number; on an error the log is cut back.
    pub(super) fn write(&mut self, batch: &[Logged]) -> io::Result<u64> {
        let seq = self.next_seq;
        let payload = wire::encode(&(seq, batch)).map_err(io::Error::other)?;
        let mut record = Vec::with_capacity(payload.len() + 8);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        match self.file.write_all(&record) {
            Ok(()) => {
                self.len += record.len() as u64;
                self.next_seq += 1;
                Ok(seq)
            }
            Err(e) => {
                self.cut_to(self.len);
                Err(e)
            }
        }
    }

    /// Makes what was written durable (`fdatasync`). On an error the record written last
    /// (the log held `before` bytes without it) is taken back, to be appended again.
    pub(super) fn sync(&mut self, before: u64) -> io::Result<()> {
        self.file
            .sync_data()
            .inspect_err(|_| self.undo_last(before))
    }

    /// Syncs what was written without a sync ([`Wal::write`] alone): nothing to take back
    /// if it fails, as those batches were handed on already.
    pub(super) fn sync_written(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Takes back the last batch appended (`len`: the log's length before it): redb did
    /// not take it, and it is appended again with its retry.
    pub(super) fn undo_last(&mut self, len: u64) {
        self.cut_to(len);
        self.next_seq -= 1;
    }

    /// Cuts the log back to `len` bytes.
    /// Keeps [`HEADROOM`] bytes allocated to the file past its end (`fallocate`, the file's
    /// size unchanged), or says why it cannot (a full disk). A commit that starts new jobs
    /// asks for it first, so that a disk that fills refuses new jobs while the ends and
    /// inputs of jobs already accepted still find room: without it, a job accepted into
    /// the last free bytes could never have its end written.
    pub(super) fn keep_headroom(&mut self) -> io::Result<()> {
        if self.allocated >= self.len + HEADROOM {
            return Ok(());
        }
        let want = self.len + 2 * HEADROOM;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        // SAFETY: fallocate(2) on a descriptor this Wal owns; it only allocates blocks.
        let r = unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, want as libc::off_t) };
        if r != 0 {
            let e = io::Error::last_os_error();
            // A file system without fallocate has no headroom to keep: writes find out.
            if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP)) {
                self.allocated = u64::MAX;
                return Ok(());
            }
            return Err(e);
        }
        self.allocated = want;
        Ok(())
    }

    fn cut_to(&mut self, len: u64) {
        let cut = self
            .file
            .set_len(len)
            .and_then(|()| self.file.seek(SeekFrom::Start(len)).map(|_| ()));
        if let Err(e) = cut {
            tracing::warn!(log = %Self::path(&self.dir, self.generation).display(), error = %e, "cannot cut the journal's log back after a failed commit");
        }
        self.len = len;
        // Truncating may free what was allocated past the end.
        self.allocated = len;
    }

    /// Creates the (empty) log of the next generation, durably, before redb names it
    /// current. The old log stays until [`Wal::switch`].
    pub(super) fn prepare_next(&self) -> io::Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(Self::path(&self.dir, self.generation + 1))?;
        sync_dir(&self.dir)?;
        Ok(file)
    }

    /// redb names the next generation current (its checkpoint is durable): append to
    /// `next` from now on, and delete the old log.
    pub(super) fn switch(&mut self, next: File) {
        let old = Self::path(&self.dir, self.generation);
        self.generation += 1;
        self.file = next;
        self.len = 0;
        self.allocated = 0;
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(log = %old.display(), error = %e, "cannot delete a checkpointed journal log (it is deleted at the next start)");
        }
    }

    /// Deletes the prepared log of the next generation (redb did not take it).
    pub(super) fn abandon_next(&self) {
        let _ = std::fs::remove_file(Self::path(&self.dir, self.generation + 1));
    }
}

/// Makes the directory's entries (a created or deleted log) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The records in `bytes`, up to the first one that is torn (short) or corrupt (its CRC
/// or encoding), and the length of what was read.
fn read_records(bytes: &[u8], path: &Path) -> (Vec<Record>, u64) {
    let mut batches = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= 8 {
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let (len, crc) = (word(at), word(at + 4));
        if len > MAX_RECORD || bytes.len() - at - 8 < len as usize {
            break;
        }
        let payload = &bytes[at + 8..at + 8 + len as usize];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match wire::decode::<Record>(payload) {
            Ok(batch) => batches.push(batch),
            Err(e) => {
                tracing::warn!(log = %path.display(), error = %e, "unreadable record in the journal's log; read up to it");
                break;
            }
        }
        at += 8 + len as usize;
    }
    (batches, at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::tests::Scratch;

    fn batch(n: u64) -> Vec<Logged> {
        vec![
            Logged::Input("j".to_string(), n, vec![1, 2, 3]),
            Logged::Confirmed(format!("c{n}")),
        ]
    }

    /// Records as text (`ReplicaBatch` has no `PartialEq`).
    fn shown(records: &[Record]) -> String {
        format!("{records:?}")
    }

    fn open(dir: &Path, generation: u64) -> (Wal, Vec<Record>) {
        std::fs::create_dir_all(dir).expect("a scratch folder");
        Wal::open(dir, generation, 1).expect("the log opens")
    }

    /// What was appended is read back in order when the log opens again.
    #[test]
    fn appended_batches_are_read_back_in_order() {
        let scratch = Scratch::new("wal-order");
        let (mut wal, read) = open(&scratch.0, 0);
        assert!(read.is_empty());
        assert_eq!(wal.append(&batch(1)).expect("append"), 1);
        assert_eq!(wal.append(&batch(2)).expect("append"), 2);
        drop(wal);
        let (mut wal, read) = open(&scratch.0, 0);
        assert_eq!(shown(&read), shown(&[(1, batch(1)), (2, batch(2))]));
        assert_eq!(wal.append(&batch(3)).expect("append"), 3, "numbered on");
    }

    /// A crash in the middle of an append leaves a torn record: the log is read up to
    /// it, cut there, and appends go on after the last whole record.
    #[test]
    fn a_torn_or_corrupt_tail_is_cut_off() {
        let scratch = Scratch::new("wal-torn");
        let (mut wal, _) = open(&scratch.0, 0);
        wal.append(&batch(1)).expect("append");
        let whole = wal.len();
        wal.append(&batch(2)).expect("append");
        drop(wal);
        let path = Wal::path(&scratch.0, 0);
        let bytes = std::fs::read(&path).expect("the log");
        // Torn: the second record lost its last bytes.
        std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("tear it");
        let (mut wal, read) = open(&scratch.0, 0);
        assert_eq!(shown(&read), shown(&[(1, batch(1))]));
        assert_eq!(wal.len(), whole);
        wal.append(&batch(3)).expect("append after the cut");
        drop(wal);
        // Corrupt: a flipped payload byte fails its CRC.
        let mut bytes = std::fs::read(&path).expect("the log");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).expect("corrupt it");
        let (_, read) = open(&scratch.0, 0);
        assert_eq!(shown(&read), shown(&[(1, batch(1))]));
    }

    /// A checkpoint moves to the next generation's log and deletes the old one; opening
    /// a generation deletes the logs of the others.
    #[test]
    fn a_switch_starts_the_next_log_and_drops_the_old_one() {
        let scratch = Scratch::new("wal-switch");
        let (mut wal, _) = open(&scratch.0, 4);
        wal.append(&batch(1)).expect("append");
        let next = wal.prepare_next().expect("the next log");
        wal.switch(next);
        assert_eq!(wal.generation(), 5);
        assert!(!Wal::path(&scratch.0, 4).exists());
        wal.append(&batch(2)).expect("append");
        // A next log prepared but never named current (a crash before the checkpoint).
        drop(wal.prepare_next().expect("a stray next log"));
        drop(wal);
        let (_, read) = open(&scratch.0, 5);
        assert_eq!(shown(&read), shown(&[(2, batch(2))]));
        assert!(!Wal::path(&scratch.0, 6).exists());
    }

    /// Every write that changes the store survives the trip through the log.
    /// A log written before records were kept as bytes (each byte an integer) reads
    /// back the same.
    #[test]
    fn records_of_a_log_written_byte_by_byte_still_read() {
        #[derive(Serialize)]
        enum Before {
            Start(String, Vec<u8>),
            Input(String, u64, Vec<u8>),
            End(String, Vec<u8>, u64),
        }
        let bytes: Vec<u8> = (0..=255).collect();
        let before = vec![
            Before::Start("j".to_string(), bytes.clone()),
            Before::Input("j".to_string(), 2, bytes.clone()),
            Before::End("j".to_string(), bytes.clone(), 7),
        ];
        let old = wire::encode(&(5u64, &before)).expect("encodes");
        let now = vec![
            Logged::Start("j".to_string(), bytes.clone()),
            Logged::Input("j".to_string(), 2, bytes.clone()),
            Logged::End("j".to_string(), bytes.clone(), 7),
        ];
        let new = wire::encode(&(5u64, &now)).expect("encodes");
        assert!(new.len() < old.len(), "bytes are kept as bin, not integers");
        let read_old: Record = wire::decode(&old).expect("an old record reads");
        let read_new: Record = wire::decode(&new).expect("a new record reads");
        let expected = shown(&[(5, now)]);
        assert_eq!(shown(&[read_old]), expected);
        assert_eq!(shown(&[read_new]), expected);
    }

    #[test]
    fn writes_are_logged_without_their_waiters() {
        let w = Write::Start("j".to_string(), 3, vec![9], None);
        let logged = Logged::of(&w).expect("a start is logged");
        assert!(matches!(&logged, Logged::Start(id, b) if id == "j" && b == &vec![9]));
        assert!(
            matches!(logged.into_write(), Write::Start(id, 0, b, None) if id == "j" && b == vec![9])
        );
        assert!(Logged::of(&Write::Flush).is_none());
    }
}
