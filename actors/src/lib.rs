//! # troupe-actors
//!
//! The system actors of a Troupe node, one per module, each with its messages beside it.
//! [`node_root::NodeRoot`] starts and supervises them; the drawing of the tree, with what
//! each actor does, is in the repository's `ARCHITECTURE.md` ("Actor tree"), kept in one
//! place so that it cannot drift from a second copy.
//!
//! Actors find each other through ractor's registry by the per-node names of [`names`],
//! so a restarted actor is found again without anyone holding a stale reference.
//!
//! Beside the tree, in the [`NodeContext`] every actor gets: the [`ClusterView`] (what this
//! node knows of the cluster: who is up, down or saturated, sessions, task properties) and
//! the [`scheduler::Scheduler`] (this node's slots, waiting attempts, placement and
//! stealing), both plain structs that outlive a restart of any actor.

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, RwLock};

use ractor::{ActorCell, ActorId, ActorRef};
use ractor_cluster::NodeSessionMessage;
use troupe_runtime::config::NodeConfig;
use troupe_runtime::merge::TaskProps;
use troupe_runtime::protocol::{
    first_member, task_group, worker_pool_group, AttemptRef, JobManagerMessage, WorkerPoolMessage,
};
use troupe_runtime::TaskRegistry;

mod actor_host;
pub mod cluster_identity;
mod core;
mod dispatcher;
pub mod drain;
mod event_hub;
mod gearman;
pub mod health;
mod job_manager;
mod job_supervisor;
mod journal;
mod light_jobs;
mod membership;
mod merger;
mod node_root;
pub mod scheduler;
#[cfg(any(test, feature = "simulation"))]
pub mod simulation;
mod supervision;
pub mod task_runtime;
pub mod telemetry;
mod tls_listener;
#[cfg(test)]
mod wire_golden;
mod worker_pool;

pub use node_root::{start_node, start_node_with_context, NodeRoot, NodeRootMessage, StartError};
pub use worker_pool::panic_message;

/// Registered names of the system actors: a base name, made per-node by [`names::of`].
///
/// Why per node: ractor_cluster spawns a `RemoteActor` shim for every remotely reachable
/// actor of a peer, carrying the peer actor's *name*; when the shim stops (the peer left,
/// or a duplicate connection lost the election), ractor unregisters that name from this
/// process's registry, which removes *our own* actor of the same name. Names that include
/// the node name cannot collide with a peer's.
pub mod names {
    /// The node's root supervisor.
    pub const NODE_ROOT: &str = "troupe.node_root";
    /// The ractor_cluster node server.
    pub const NODE_SERVER: &str = troupe_runtime::cluster::NODE_SERVER_NAME;
    /// The membership actor.
    pub const MEMBERSHIP: &str = "troupe.membership";
    /// The job manager.
    pub const JOB_MANAGER: &str = "troupe.job_manager";
    /// The node's member of the core group (Raft).
    pub const CORE: &str = "troupe.core";
    /// The dispatcher.
    pub const DISPATCHER: &str = "troupe.dispatcher";
    /// The event hub.
    pub const EVENT_HUB: &str = "troupe.event_hub";
    /// The worker pool.
    pub const WORKER_POOL: &str = "troupe.worker_pool";
    /// The merger (owner of request keys: merging and the result cache).
    pub const MERGER: &str = "troupe.merger";
    /// The TLS listener (nodes with TLS only).
    pub const TLS_LISTENER: &str = "troupe.tls_listener";
    /// The Gearman listener (nodes with `--gearman` only).
    pub const GEARMAN_LISTENER: &str = "troupe.gearman_listener";
    /// The stand-in for external Gearman workers in task groups.
    pub const GEARMAN_WORKERS: &str = "troupe.gearman_workers";
    /// The watcher of the jobs of Gearman clients.
    pub const GEARMAN_CLIENTS: &str = "troupe.gearman_clients";
    /// The reporter of this node's Gearman front door to the admin answers of others.
    pub const GEARMAN_ADMIN: &str = "troupe.gearman_admin_reporter";
    /// The host of keyed-actor activations (see `troupe_runtime::protocol::actor_host_name`).
    pub const ACTOR_HOST: &str = "troupe.actor_host";

    /// The registered name of system actor `base` on node `node`.
    pub fn of(base: &str, node: &str) -> String {
        format!("{base}@{node}")
    }

    #[cfg(test)]
    mod tests {
        /// Clients find a node's membership actor by the name runtime gives it.
        #[test]
        fn the_membership_actor_has_the_name_clients_look_for() {
            assert_eq!(
                super::of(super::MEMBERSHIP, "n1"),
                troupe_runtime::protocol::membership_name("n1")
            );
        }
    }
}

/// The registered actor `name`, if it runs, as a typed reference.
pub fn find<M: ractor::Message>(name: &str) -> Option<ActorRef<M>> {
    ractor::registry::where_is(name).map(Into::into)
}

/// System actor `base` of node `node`, if it runs.
pub fn find_on<M: ractor::Message>(base: &str, node: &str) -> Option<ActorRef<M>> {
    find(&names::of(base, node))
}

/// The job manager of node `node`, if reachable (through its process group, so a peer's
/// too).
pub(crate) fn job_manager_of(node: &str) -> Option<ActorRef<JobManagerMessage>> {
    first_member(&job_manager_group_of(node))
}

/// The nodes whose job manager is visible and that membership has not marked down,
/// this node included.
pub fn live_nodes(view: &ClusterView) -> Vec<String> {
    let prefix = troupe_runtime::protocol::job_manager_group("");
    let mut v: Vec<String> = ractor::pg::which_groups()
        .into_iter()
        .filter_map(|g| g.strip_prefix(&prefix).map(str::to_string))
        .filter(|n| {
            !view.is_down(n) && !ractor::pg::get_members(&job_manager_group_of(n)).is_empty()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn job_manager_group_of(node: &str) -> String {
    troupe_runtime::protocol::job_manager_group(node)
}

/// Locks a mutex of shared node state; a panic elsewhere while holding it does not make
/// the state unusable (every holder leaves it consistent between statements).
pub(crate) fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Events an HTTP stream may fall behind by before it skips some.
pub const EVENT_BUFFER: usize = 4096;

/// What this node knows of the cluster, shared by its actors without messages.
#[derive(Debug)]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    /// What tells this process from another started under the same name (its cluster
    /// name is `NODE~INCARNATION`, see `troupe_runtime::cluster::member_name`).
    pub incarnation: String,
    names: RwLock<HashMap<u64, String>>,
    /// Properties of tasks that merge or cache, from this node and its peers' gossip.
    props: RwLock<HashMap<String, TaskProps>>,
    /// Counters of this node's merger.
    pub cache: merger::CacheCounters,
    /// Nodes membership saw leave and not come back (their groups may linger briefly).
    down: RwLock<std::collections::HashSet<String>>,
    /// Tasks each peer said are at their concurrency limit there.
    saturated: RwLock<HashMap<String, std::collections::HashSet<String>>>,
    /// Attempts waiting for a slot on each peer, as last gossiped.
    peer_waiting: RwLock<HashMap<String, u32>>,
    /// The priority classes each node (this one included) said wait past their target
    /// (bit `c` for class `c`), as last gossiped; see `scheduler::standing`.
    over_target: RwLock<HashMap<String, u8>>,
    sessions: Mutex<HashMap<u64, ActorRef<NodeSessionMessage>>>,
    /// Sessions still in their handshake, oldest first.
    pub(crate) pending_handshakes: Mutex<std::collections::VecDeque<u64>>,
    /// This node's event stream: its jobs' events, events forwarded by other hubs, and
    /// membership changes (the HTTP server subscribes).
    pub events: tokio::sync::broadcast::Sender<Arc<troupe_runtime::observe::ClusterEvent>>,
    /// What the Gearman front door's actors and connections share.
    pub gearman: Arc<gearman::GearmanShared>,
    /// Notified when something inside the node (Gearman's admin `shutdown`) asks the
    /// process to stop as on SIGTERM.
    pub shutdown: tokio::sync::Notify,
    /// Set when the node starts leaving (see [`drain`]): it takes no new work.
    pub draining: std::sync::atomic::AtomicBool,
    /// Jobs this node owns that have not ended.
    pub owned_jobs: AtomicU32,
    /// What the journal held at start, until the job manager resumes it.
    pub recovered: Mutex<Option<journal::Recovered>>,
    /// When the node started.
    pub started: std::time::Instant,
    /// Attempts whose result waits here for its owner to be reachable again
    /// (`worker_pool::send_result`): an owner asking which of its attempts this node
    /// holds is told these are held, so it does not run them again.
    pub(crate) held_results: Mutex<std::collections::HashSet<AttemptRef>>,
}

impl ClusterView {
    /// A view for the node `node`.
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            incarnation: membership::new_incarnation(),
            names: RwLock::default(),
            sessions: Mutex::default(),
            props: RwLock::default(),
            cache: merger::CacheCounters::default(),
            down: RwLock::default(),
            saturated: RwLock::default(),
            peer_waiting: RwLock::default(),
            over_target: RwLock::default(),
            events: tokio::sync::broadcast::channel(EVENT_BUFFER).0,
            pending_handshakes: Mutex::default(),
            gearman: Arc::new(gearman::GearmanShared::new(node)),
            shutdown: tokio::sync::Notify::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            owned_jobs: AtomicU32::new(0),
            recovered: Mutex::default(),
            started: std::time::Instant::now(),
            held_results: Mutex::default(),
        }
    }

    /// The node name of the process an actor lives in.
    pub fn node_of(&self, id: ActorId) -> String {
        match id {
            ActorId::Local(_) => self.node.clone(),
            ActorId::Remote { node_id, .. } => self
                .names
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&node_id)
                .cloned()
                .unwrap_or_else(|| format!("session-{node_id}")),
        }
    }

    /// The properties of `task` as far as this node knows (plain if unknown).
    pub fn props(&self, task: &str) -> TaskProps {
        self.props
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(task)
            .copied()
            .unwrap_or_default()
    }

    /// Records task properties (from the registry or from gossip).
    pub fn learn_props(&self, props: impl IntoIterator<Item = (String, TaskProps)>) {
        let mut m = self.props.write().unwrap_or_else(|p| p.into_inner());
        for (k, v) in props {
            if v != TaskProps::PLAIN {
                m.insert(k, v);
            }
        }
    }

    /// Marks `node` as down (true) or up again (false).
    pub fn set_down(&self, node: &str, down: bool) {
        let mut d = self.down.write().unwrap_or_else(|p| p.into_inner());
        if down {
            d.insert(node.to_string());
        } else {
            d.remove(node);
        }
    }

    /// Records the tasks `node` says are at their concurrency limit there.
    pub fn set_saturated(&self, node: &str, tasks: std::collections::HashSet<String>) {
        let mut m = self.saturated.write().unwrap_or_else(|p| p.into_inner());
        if tasks.is_empty() {
            m.remove(node);
        } else {
            m.insert(node.to_string(), tasks);
        }
    }

    /// Records how many attempts wait on peer `node`.
    pub fn set_peer_waiting(&self, node: &str, waiting: u32) {
        self.peer_waiting
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), waiting);
    }

    /// Records the classes `node` says wait past their target.
    pub fn set_over_target(&self, node: &str, classes: u8) {
        let mut m = self.over_target.write().unwrap_or_else(|p| p.into_inner());
        if classes == 0 {
            m.remove(node);
        } else {
            m.insert(node.to_string(), classes);
        }
    }

    /// The classes `node` said wait past their target (0 if none, or unknown).
    pub fn over_target(&self, node: &str) -> u8 {
        self.over_target
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .copied()
            .unwrap_or(0)
    }

    /// Attempts waiting for a slot on the live peers, as last gossiped.
    pub fn peers_waiting(&self) -> u64 {
        self.peer_waiting
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(n, _)| !self.is_down(n))
            .map(|(_, &w)| w as u64)
            .sum()
    }

    /// The worker pools of `task` with their nodes, leaving out nodes membership saw leave
    /// and connections that closed (their process-group entries can outlive the
    /// connection by a moment, and what is sent to them is lost).
    pub fn live_pools(&self, task: &str) -> Vec<(ActorCell, String)> {
        let members = ractor::pg::get_members(&task_group(task));
        let open = self.sessions();
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        members
            .into_iter()
            .filter_map(|c| {
                let n = match c.get_id() {
                    ActorId::Local(_) => self.node.clone(),
                    ActorId::Remote { node_id, .. } if open.contains_key(&node_id) => {
                        names.get(&node_id)?.clone()
                    }
                    ActorId::Remote { .. } => return None,
                };
                Some((c, n))
            })
            .filter(|(_, n)| !self.is_down(n))
            .collect()
    }

    /// `node`'s worker pool, as seen on a connection open now: a closed connection's
    /// entry lingers in the group for a moment, and what is sent to it is lost. Of
    /// several, the newest connection's.
    pub fn pool_of(&self, node: &str) -> Option<ActorRef<WorkerPoolMessage>> {
        let members = ractor::pg::get_members(&worker_pool_group(node));
        // The session callback drops a closed connection at once, before membership
        // handles its close.
        let open = self.sessions();
        members
            .into_iter()
            .filter(|c| match c.get_id() {
                ActorId::Local(_) => true,
                ActorId::Remote { node_id, .. } => open.contains_key(&node_id),
            })
            .max_by_key(session_order)
            .map(Into::into)
    }

    /// The live peer with the most attempts waiting (as gossiped), if any has some.
    pub fn busiest_peer(&self) -> Option<(String, u32)> {
        self.peer_waiting
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(n, &w)| w > 0 && !self.is_down(n) && **n != self.node)
            .max_by_key(|(_, &w)| w)
            .map(|(n, &w)| (n.clone(), w))
    }

    /// True if peer `node` said `task` is at its concurrency limit there.
    pub fn is_saturated(&self, node: &str, task: &str) -> bool {
        self.saturated
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .is_some_and(|t| t.contains(task))
    }

    /// True once this node started leaving.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True if membership saw `node` leave.
    pub fn is_down(&self, node: &str) -> bool {
        self.down
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(node)
    }

    pub(crate) fn set_session_name(&self, node_id: u64, name: Option<String>) {
        let mut m = self.names.write().unwrap_or_else(|p| p.into_inner());
        match name {
            Some(n) => m.insert(node_id, n),
            None => m.remove(&node_id),
        };
    }

    pub(crate) fn sessions(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, ActorRef<NodeSessionMessage>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An actor's place in the order of the connections it was seen on (local first, then by
/// ractor_cluster's session id, which grows with each connection), then by pid.
pub(crate) fn session_order(c: &ActorCell) -> (u64, u64) {
    match c.get_id() {
        ActorId::Local(p) => (0, p),
        ActorId::Remote { node_id, pid } => (node_id, pid),
    }
}

/// Everything a node's actors share.
#[derive(Clone, Debug)]
pub struct NodeContext {
    /// The node's configuration.
    pub config: Arc<NodeConfig>,
    /// The tasks this node serves.
    pub registry: TaskRegistry,
    /// Shared knowledge of the cluster.
    pub view: Arc<ClusterView>,
    /// This node's scheduling: slots, waiting attempts, placement, stealing.
    pub scheduler: Arc<scheduler::Scheduler>,
    /// Calls and sub-jobs of running attempts waiting for their answers.
    pub calls: Arc<worker_pool::PendingCalls>,
    /// The runtime user code (tasks, keyed actors' handlers) runs on, apart from the actors.
    pub tasks: task_runtime::TaskRuntime,
    /// Mutual TLS settings, when the node uses TLS.
    pub tls: Option<troupe_runtime::tls::TlsConfig>,
    /// The journal of the jobs this node owns (off with `journal = false`).
    pub journal: Option<journal::Journal>,
    /// This node's Raft node in the core group.
    pub core: core::CoreNode,
}
