//! The Gearman front door: a node started with `--gearman HOST:PORT` serves Gearman's
//! binary and admin protocols, so Gearman clients and workers in any language use the
//! cluster as their job server.
//!
//! - A client's `SUBMIT_JOB*` becomes a one-step Troupe job of the task named by the
//!   function, with the job's id as the Gearman handle (any node answers `GET_STATUS`
//!   for it). A non-empty unique id coalesces submissions cluster-wide: the node chosen
//!   by rendezvous hashing of the unique id holds the job in flight for it.
//! - An external worker's `CAN_DO` makes this node's [`workers::GearmanWorkers`] actor a
//!   member of that task's worker group, so steps of that task from anywhere (Gearman
//!   clients, job files, re-entrant calls) can be dispatched to it; they wait on the
//!   [`board::Board`] in priority lanes until a worker grabs them. Workers are woken with
//!   `NOOP`, never polled.
//! - [`clients::GearmanClients`] receives the events of the jobs this node's clients
//!   wait on and turns them into `WORK_*` packets.
//!
//! [`listener::GearmanListener`] accepts connections; each runs in its own task
//! ([`connection`]). What the actors and connections share lives in [`GearmanShared`],
//! kept in the node's [`crate::ClusterView`] so that it outlives a restart of any of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use troupe_runtime::gearman::packet::{response, PacketType};
use troupe_runtime::observe::Throttle;

pub(crate) mod admin;
pub(crate) mod board;
pub(crate) mod clients;
pub(crate) mod connection;
pub(crate) mod listener;
pub(crate) mod routes;
pub(crate) mod workers;

use board::{Board, ConnId};
use routes::Routes;

/// The step id of a job submitted by a Gearman client (its one step).
pub(crate) const STEP: &str = "gearman";

/// Packets a connection may have waiting to be written before it counts as stuck and is
/// closed (a client that never reads must not make the node hold its output for ever).
pub(crate) const OUTBOX_PACKETS: usize = 8192;
/// Bytes a connection may have waiting to be written before it is closed, likewise.
pub(crate) const OUTBOX_BYTES: usize = 32 * 1024 * 1024;

/// The way to one connection's socket.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Bytes>,
    close: CancellationToken,
    /// Bytes queued and not yet written.
    pending: Arc<AtomicUsize>,
    /// The client asked for `WORK_EXCEPTION` packets (`OPTION_REQ exceptions`).
    pub exceptions: Arc<AtomicBool>,
}

impl Outbox {
    /// A new outbox and the receiving end its writer drains.
    pub fn new() -> (Self, Drain) {
        let (tx, rx) = mpsc::channel(OUTBOX_PACKETS);
        let close = CancellationToken::new();
        let pending = Arc::<AtomicUsize>::default();
        (
            Self {
                tx,
                close: close.clone(),
                pending: pending.clone(),
                exceptions: Arc::default(),
            },
            Drain { rx, close, pending },
        )
    }

    /// Queues a packet; a connection that does not keep up is closed.
    pub fn send(&self, packet: Bytes) {
        let len = packet.len();
        if self.pending.fetch_add(len, Ordering::Relaxed) + len > OUTBOX_BYTES
            || self.tx.try_send(packet).is_err()
        {
            self.close.cancel();
        }
    }

    /// Fires when the connection must close.
    pub fn closed(&self) -> &CancellationToken {
        &self.close
    }
}

/// The writer's end of an outbox. It holds no sender: when every [`Outbox`] of the
/// connection is gone, `rx` ends and the writer closes the socket.
#[derive(Debug)]
pub struct Drain {
    /// Packets to write.
    pub rx: mpsc::Receiver<Bytes>,
    close: CancellationToken,
    pending: Arc<AtomicUsize>,
}

impl Drain {
    /// The writer wrote `len` bytes.
    pub fn written(&self, len: usize) {
        self.pending.fetch_sub(len, Ordering::Relaxed);
    }

    /// The writer gives up (the peer does not read): the connection closes.
    pub fn give_up(&self) {
        self.close.cancel();
    }
}

/// What the Gearman actors and connections of a node share.
#[derive(Debug)]
pub struct GearmanShared {
    /// Workers, abilities, waiting attempts, held handles.
    pub board: Mutex<Board>,
    /// Which connections wait on which job.
    pub routes: Mutex<Routes>,
    outboxes: Mutex<HashMap<ConnId, Outbox>>,
    next_conn: AtomicU64,
    /// Rate-limits the log lines about bad input.
    pub throttle: Throttle,
}

/// Locks `m`, also if a panic elsewhere poisoned it (the data stays consistent: every
/// change under these locks is a single method call of plain data).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GearmanShared {
    /// Empty shared state of node `node`.
    pub fn new(node: &str) -> Self {
        Self {
            board: Mutex::new(Board::new(node)),
            routes: Mutex::default(),
            outboxes: Mutex::default(),
            next_conn: AtomicU64::new(1),
            throttle: Throttle::default(),
        }
    }

    /// Registers a new connection's outbox; answers its id.
    pub fn open(&self, outbox: Outbox) -> ConnId {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        lock(&self.outboxes).insert(id, outbox);
        id
    }

    /// Forgets a connection's outbox.
    pub fn close(&self, id: ConnId) {
        lock(&self.outboxes).remove(&id);
    }

    /// The outbox of connection `id`, if it is open.
    pub fn outbox(&self, id: ConnId) -> Option<Outbox> {
        lock(&self.outboxes).get(&id).cloned()
    }

    /// Sends `packet` to connection `id`, if it is open.
    pub fn send(&self, id: ConnId, packet: Bytes) {
        if let Some(o) = lock(&self.outboxes).get(&id) {
            o.send(packet);
        }
    }

    /// Sends `NOOP` to the sleeping workers `conns` (as [`board::Board::wakeups`] chose).
    pub fn wake(&self, conns: Vec<ConnId>) {
        if conns.is_empty() {
            return;
        }
        let noop = response(PacketType::NOOP, &[]);
        for c in conns {
            self.send(c, noop.clone());
        }
    }
}
