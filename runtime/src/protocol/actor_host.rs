//! The actor host's messages (one per node, registered as `troupe.actor_host@NODE`, in
//! `troupe.actor_hosts` and in `troupe.actor.TYPE` of each type it serves): messages for
//! keyed actors, their saved states and copies, claims and the list of activations.

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ActorCallError;
use crate::wire::Wire;

/// Messages of a node's actor host (registered as
/// [`actor_host_name`](super::groups::actor_host_name), in
/// [`ACTOR_HOSTS_GROUP`](super::groups::ACTOR_HOSTS_GROUP) and in
/// [`actor_type_group`](super::groups::actor_type_group) of each type it serves).
#[derive(RactorClusterMessage)]
pub enum ActorHostMessage {
    /// A message for an actor; answers its reply.
    #[rpc]
    Deliver(Wire<ActorEnvelope>, RpcReplyPort<ActorReply>),
    /// Keep a copy of an actor's state (from the host of its activation); answers once
    /// it is saved here.
    #[rpc]
    KeepCopy(Wire<StateCopy>, RpcReplyPort<Wire<Result<(), Fenced>>>),
    /// The newest state this host holds of an actor (`TYPE/KEY`), read after fencing
    /// the actor at the given epoch (a new activation's: older saves are refused from
    /// then on; 0 fences nothing).
    #[rpc]
    FetchState(String, u64, RpcReplyPort<Wire<Option<SavedState>>>),
    /// This host's activations.
    #[rpc]
    List(RpcReplyPort<Wire<Vec<ActivationInfo>>>),
    /// Every host's activations (this host asks the others).
    #[rpc]
    ListAll(RpcReplyPort<Wire<Vec<ActivationInfo>>>),
    /// An activation of this host's was claimed (local): the core group's answer and,
    /// when granted, the state to start from.
    Claimed(Wire<Claim>),
    /// An activation of `TYPE/KEY` ended and its lease is released (or was not this
    /// node's): pass on the messages that waited (local).
    Ended(String),
    /// Look for idle activations and for ones another node should own (local, periodic).
    Sweep,
    /// The node is leaving (SIGTERM): stop serving actor types, end every activation
    /// (saves done, leases released, messages passed on); answers how many ended, once
    /// none is left (local, from the drain).
    #[rpc]
    Leave(RpcReplyPort<u64>),
}

/// A message for one actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActorEnvelope {
    /// The actor's type.
    pub actor_type: String,
    /// Its key.
    pub key: String,
    /// The message (JSON).
    pub message: Value,
    /// How many hosts passed it on already (a host that is not the actor's owner forwards
    /// it; past [`MAX_ACTOR_HOPS`] the host that has it activates the actor itself).
    pub hops: u8,
    /// How long its sender waits for the reply, counted from when it was sent (`None`: no
    /// limit). An activation does not start a message its sender stopped waiting for, so
    /// a call that gave up is not applied later (say, once a claim that waited out a
    /// partition is granted) behind the back of a caller told "unavailable".
    pub wait_ms: Option<u64>,
    /// The call this message belongs to, the same on each of its retries (`None`: an
    /// old sender). An activation remembers the replies of the calls that changed its
    /// state, with the state, so a retry of one already applied (its reply was lost, or
    /// its save was refused yet reached a store the next activation read) gets the reply
    /// again instead of being applied twice.
    #[serde(default)]
    pub call_id: Option<u64>,
    /// When (ms since the Unix epoch, the sender's clock) the sender still waited
    /// `wait_ms` (`None`: an old sender). A host counts the wait from here too, give or
    /// take a clock skew, so a message a partition held (in a cut-off sender's socket)
    /// past its sender's wait is not started when it arrives after the heal.
    #[serde(default)]
    pub sent_ms: Option<u64>,
}

/// Forwards of one actor message at most.
pub const MAX_ACTOR_HOPS: u8 = 2;

/// The answer to a message for an actor.
pub type ActorReply = Wire<Result<Value, ActorCallError>>;

/// An actor's saved state, as a host keeps it (its own, or a copy for another host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// The epoch of the activation that saved it.
    pub epoch: u64,
    /// How many saves that activation (and the ones before it) made.
    pub seq: u64,
    /// The state (rmp-serde of the actor type's state).
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
    /// The hosts of the actor's type its writer counted for its quorum (N): a reader
    /// that does not see them all yet (it has just started) counts them too, so its N
    /// does not shrink. Empty in saves written before quorums.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The replies of the last calls that changed the state, oldest first: a retry of
    /// one of them is answered from here, not applied again (see
    /// [`ActorEnvelope::call_id`]). Empty in saves written before call ids.
    #[serde(default)]
    pub answered: Vec<Answered>,
}

/// A call that changed an actor's state, and its reply, or a call refused, kept so that
/// its retries are answered rather than applied again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    /// [`ActorEnvelope::call_id`].
    pub call_id: u64,
    /// Until when (ms since the Unix epoch, the handling node's clock) its caller may
    /// still try again: past it the entry is dropped first.
    pub until_ms: u64,
    /// The reply, as JSON (`None`: too large to keep; a retry is then told it was
    /// applied).
    #[serde(with = "serde_bytes")]
    pub reply: Option<Vec<u8>>,
    /// The call was refused, for this reason (it changed nothing, and `reply` is
    /// `None`): its other tries are refused alike, not applied on a state where they
    /// would pass (a job step's attempt its owner ran again elsewhere, arriving late).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl SavedState {
    /// Whether this save comes after `other` (a newer epoch, or the same epoch and a
    /// later save).
    pub fn is_newer_than(&self, other: &SavedState) -> bool {
        (self.epoch, self.seq) > (other.epoch, other.seq)
    }

    /// Whether a store holding `held`, and fenced at epoch `fence` (a newer activation
    /// read its state there), takes this save: `Ok(true)` to write it, `Ok(false)` if it
    /// holds this very save already, `Err` if this save comes from an activation that was
    /// replaced (fencing). Two saves of one epoch with the save count going back can only
    /// come from two activations without a core group: the later one is refused too.
    pub fn admit(&self, held: Option<&SavedState>, fence: u64) -> Result<bool, Fenced> {
        if self.epoch < fence {
            return Err(Fenced { epoch: fence });
        }
        match held {
            Some(h) if h.epoch > self.epoch || (h.epoch == self.epoch && h.seq > self.seq) => {
                Err(Fenced { epoch: h.epoch })
            }
            Some(h) => Ok(self.is_newer_than(h)),
            None => Ok(true),
        }
    }
}

/// A copy of an actor's state for its replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateCopy {
    /// `TYPE/KEY`.
    pub actor: String,
    /// The state.
    pub saved: SavedState,
}

/// Why a replica refused a copy: it holds a save of a newer activation (the sender's
/// activation was replaced and must stop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("a newer activation (epoch {epoch}) of this actor exists")]
pub struct Fenced {
    /// The newer epoch.
    pub epoch: u64,
}

/// One activation, as `troupe-node actors --json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationInfo {
    /// The actor type.
    #[serde(rename = "type")]
    pub actor_type: String,
    /// The key.
    pub key: String,
    /// The hosting node.
    pub node: String,
    /// The activation's fencing epoch.
    pub epoch: u64,
    /// Messages handled by this activation.
    #[serde(default)]
    pub handled: u64,
    /// Restarts of this activation (handler failures and panics).
    #[serde(default)]
    pub restarts: u32,
}

/// The outcome of an activation's claim, from the task that asked the core group to the
/// host that waits for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    /// `TYPE/KEY`.
    pub actor: String,
    /// What was decided.
    pub outcome: ClaimOutcome,
}

/// What a claim got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClaimOutcome {
    /// The actor is this host's at `epoch`; it starts from `state` (none: a new actor).
    Granted {
        /// The fencing epoch.
        epoch: u64,
        /// The newest saved state found.
        state: Option<SavedState>,
        /// The core group granted the lease (not a cluster too small for one): its saves
        /// must reach the replica before a reply goes out.
        leased: bool,
    },
    /// Another live host runs it.
    Held {
        /// That host's node.
        node: String,
    },
    /// No decision (no core quorum, the state could not be read).
    Failed(String),
}
