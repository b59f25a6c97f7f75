//! The membership actor's messages (one per node, in `troupe.membership`): what each node
//! says about itself, probes and verdicts of the failure detector, the list of nodes, and
//! this node's session events.

use std::collections::BTreeMap;

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use super::merger::CacheStats;
use crate::wire::Wire;

/// Messages of the membership actor (one per node, in `troupe.membership`).
#[derive(RactorClusterMessage)]
pub enum MembershipMessage {
    /// A peer's info (gossip).
    Hello(Wire<NodeInfo>),
    /// Every node this node knows of, itself first.
    #[rpc]
    ListNodes(RpcReplyPort<Wire<Vec<NodeInfo>>>),
    /// A session event of this node (local).
    Session(Wire<SessionEvent>),
    /// Periodic work: dial missing peers, close stalled handshakes, gossip (local).
    Tick,
    /// Tell the peers this node's info now, not at the next tick (local: a task reached
    /// or left its concurrency limit).
    Announce,
    /// A probe (failure detection, wire version 2): the sender's record; answered with
    /// [`MembershipMessage::Ack`].
    Probe(Wire<Probe>),
    /// The answer to a probe: the answering node's record. One that a relay passes on
    /// names the node it was made for in [`Probe::for_node`].
    Ack(Wire<Probe>),
    /// Probe a node for another whose own probe of it went unanswered, and pass its
    /// answer on (an indirect probe).
    ProbeFor(Wire<ProbeFor>),
    /// A node's verdict on a peer whose probes went unanswered: suspect (the peer refutes
    /// by announcing itself) or down (every node probes it to confirm, and closes its
    /// connections to it unless it answers).
    Verdict(Wire<Verdict>),
    /// Judge now the probe this node sent to confirm another node's verdict of down on
    /// this peer (local: a timer).
    ConfirmDue(String),
}

/// The wire version from which nodes probe each other instead of gossiping every record
/// to every node each round; a peer that speaks only older versions is still sent a
/// record each gossip interval and judged by its silence.
pub const PROBE_WIRE_VERSION: u32 = 2;

/// A probe, or its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The sender's record (without its list of peers).
    pub record: NodeInfo,
    /// The node an indirect probe is made for: its answer goes back through the relay
    /// that sent the probe (`None`: the sender's own probe).
    #[serde(default)]
    pub for_node: Option<String>,
}

/// An indirect probe's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeFor {
    /// The node whose probe went unanswered.
    pub from: String,
    /// The node to probe.
    pub target: String,
}

/// A verdict on a silent peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The peer.
    pub node: String,
    /// Its process (`NAME~INCARNATION`) as the judge knew it: a verdict on an older
    /// process of the name does not touch a new one.
    #[serde(default)]
    pub process: Option<String>,
    /// Down (else suspect).
    pub down: bool,
    /// The node whose probes went unanswered.
    pub by: String,
    /// How long its probe waited.
    pub silent_ms: u64,
}

/// Liveness of a node as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Connected.
    Up,
    /// Doubtful (reserved for the failure detector).
    Suspect,
    /// Its connection dropped; reconnection is being tried.
    Down,
    /// Leaving (SIGTERM): finishing its attempts, taking no new work.
    Draining,
}

impl NodeState {
    /// The name in `nodes --json` (`up`, `suspect`, `down`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Suspect => "suspect",
            NodeState::Down => "down",
            NodeState::Draining => "draining",
        }
    }
}

/// What a node says about itself, gossiped to its peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// The address peers dial.
    pub address: String,
    /// As seen by the node that answers.
    pub state: NodeState,
    /// Task groups it serves.
    pub tasks: Vec<String>,
    /// Tasks it runs at once.
    pub slots: u32,
    /// Slots busy.
    pub busy: u32,
    /// Steps waiting for a slot.
    pub queued: u32,
    /// Addresses of the nodes it knows (for the mesh).
    pub peers: Vec<String>,
    /// Properties of the tasks it serves (only those that merge or cache).
    #[serde(default)]
    pub task_props: BTreeMap<String, crate::merge::TaskProps>,
    /// Its merger's counters.
    #[serde(default)]
    pub cache: CacheStats,
    /// Tasks at their concurrency limit on it right now (dispatchers skip it for them).
    #[serde(default)]
    pub saturated: Vec<String>,
    /// The cluster it belongs to, once its core group named it (a peer of another
    /// cluster is not admitted).
    #[serde(default)]
    pub cluster: Option<String>,
    /// The priority classes whose new work waits on it past their target (bit 0 high,
    /// 1 normal, 2 low): nodes refuse new jobs of those classes while most of the nodes
    /// that would run them say so (admission by waiting time).
    #[serde(default)]
    pub over_target: u8,
}

/// A session event of this node's `NodeServer`, passed to the membership actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionEvent {
    /// What happened.
    pub kind: SessionEventKind,
    /// ractor_cluster's per-process id of the session.
    pub node_id: u64,
    /// `name@host` of the peer, once known.
    pub peer_name: Option<String>,
    /// The peer's socket address.
    pub peer_addr: String,
    /// True if the peer dialled us.
    pub is_server: bool,
}

/// Kinds of [`SessionEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEventKind {
    /// TCP connection opened, handshake not done.
    Opened,
    /// Cookie handshake passed.
    Authenticated,
    /// Actors and groups exchanged.
    Ready,
    /// Closed.
    Disconnected,
}
