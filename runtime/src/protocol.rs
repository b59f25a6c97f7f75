//! The messages of the actors that other processes reach, and the process groups they join.
//!
//! Every payload is wrapped in [`Wire`] (rmp-serde). The variant names are the wire tags:
//! add variants freely, but do not rename one while nodes of two versions share a cluster.
//!
//! | group | members | used for |
//! |---|---|---|
//! | `troupe.membership` | every node's `Membership` actor | gossip of node info, `nodes` |
//! | `troupe.job_manager.NODE` | the `JobManager` of NODE | submit, status, watch, step results |
//! | `troupe.task.TASK` | the `WorkerPool` of every node that serves TASK | dispatch of steps |
//! | `troupe.worker_pool.NODE` | the `WorkerPool` of NODE | answers to calls, cancels |
//! | `troupe.client.NAME` | a client's `Watcher` | job events pushed to a handle |
//! | `troupe.event_hub.NODE`, `troupe.event_hubs` | every node's `EventHub` | event stream, jobs list |

use std::collections::BTreeMap;

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::spec::SpawnKind;
use crate::job::spec::{JobSpec, Priority};
use crate::job::status::{JobEvent, JobStatus};
use crate::merge::CacheMode;
use crate::task::TaskError;
use crate::wire::Wire;

/// Group of every node's membership actor.
pub const MEMBERSHIP_GROUP: &str = "troupe.membership";

/// The group holding the core member of `node` (every node has one; only core nodes vote).
pub fn core_group(node: &str) -> String {
    format!("troupe.core.{node}")
}

/// The core members that vote in the core group's Raft.
pub const CORE_VOTERS_GROUP: &str = "troupe.core_voters";

/// A slice of an owner's journal for a node that keeps a copy (see `journal_replicas`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaBatch {
    /// The owner that sends it.
    pub owner: String,
    /// The writes, in the owner's commit order.
    pub writes: Vec<ReplicaWrite>,
    /// Set when the owner waits for this batch to be durable here (a submission is
    /// answered once its job is copied, `journal_ack = "copied"`): the replica commits
    /// it at once and answers [`JobManagerMessage::ReplicaAcked`] with this token.
    #[serde(default)]
    pub ack: Option<u64>,
}

/// One journal write about one job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaWrite {
    /// The job.
    pub job: String,
    /// The owner's epoch for the job (writes from an older epoch are refused).
    pub epoch: u64,
    /// What was written.
    pub what: ReplicaWhat,
}

/// What a [`ReplicaWrite`] records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReplicaWhat {
    /// The job's record (its file and limits), encoded.
    Start(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Input number `seq`, encoded.
    Input(u64, #[serde(with = "serde_bytes")] Vec<u8>),
    /// The job ended: the copy is dropped.
    End,
}

/// A job has a new owner (the core group decided it); sent to every job manager.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMoved {
    /// The job.
    pub job: String,
    /// Its owner now.
    pub owner: String,
    /// The owner's epoch.
    pub epoch: u64,
}

/// The group holding the job manager of `node`.
pub fn job_manager_group(node: &str) -> String {
    format!("troupe.job_manager.{node}")
}

/// The first member of `group`, as a typed reference (a per-node group has one).
pub fn first_member<M: ractor::Message>(group: &str) -> Option<ractor::ActorRef<M>> {
    ractor::pg::get_members(&group.to_string())
        .into_iter()
        .next()
        .map(Into::into)
}

/// The group of worker pools that serve `task`.
pub fn task_group(task: &str) -> String {
    format!("troupe.task.{task}")
}

/// The task name of a worker group, if `group` is one.
pub fn task_of_group(group: &str) -> Option<&str> {
    group.strip_prefix("troupe.task.")
}

/// The group holding the worker pool of `node` (for replies to calls, and cancels).
pub fn worker_pool_group(node: &str) -> String {
    format!("troupe.worker_pool.{node}")
}

/// The group of a client's watcher.
pub fn client_group(client: &str) -> String {
    format!("troupe.client.{client}")
}

/// The node that owns a job, from its id (`NODE-EPOCH-SEQ`).
pub fn owner_of(job_id: &str) -> Option<&str> {
    let (rest, seq) = job_id.rsplit_once('-')?;
    let (node, epoch) = rest.rsplit_once('-')?;
    (!node.is_empty()
        && seq.chars().all(|c| c.is_ascii_digit())
        && epoch.chars().all(|c| c.is_ascii_hexdigit()))
    .then_some(node)
}

/// Why a question about one job (status, watch, cancel, resume) has no status answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JobQueryError {
    /// No such job (or step) on its owner.
    #[error("{0}")]
    NotFound(String),
    /// The job is not in a state that allows it (resuming a step that is not waiting).
    #[error("{0}")]
    Conflict(String),
    /// The owner is out of reach, or the job's supervisor is busy ending: ask again.
    #[error("{0}")]
    Unavailable(String),
}

impl JobQueryError {
    /// The answer about a job that its owner does not know.
    pub fn no_such_job(job: &str) -> Self {
        JobQueryError::NotFound(format!("no job {job} on this node"))
    }
}

/// The answer to a question about one job.
pub type JobAnswer = Wire<Result<JobStatus, JobQueryError>>;

/// One attempt of a step, sent to a worker pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRequest {
    /// The job.
    pub job: String,
    /// The step.
    pub step: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The task to run.
    pub task: String,
    /// The step's input.
    pub input: Value,
    /// Outputs of its dependencies.
    pub deps: BTreeMap<String, Value>,
    /// The node whose job manager owns the job and wants the result.
    pub owner: String,
    /// The owner's epoch for the job (see [`crate::core`]).
    #[serde(default)]
    pub epoch: u64,
    /// True for the first attempt after a user resumed the step.
    #[serde(default)]
    pub resumed: bool,
    /// Whether cached results and requests in flight may be used.
    #[serde(default)]
    pub cache: CacheMode,
    /// The request key, for tasks that merge or cache (set by the dispatcher).
    #[serde(default)]
    pub key: Option<String>,
    /// The node whose merger runs this execution and wants its result too.
    #[serde(default)]
    pub merger: Option<String>,
    /// Where this attempt sits in its job's trace (logged on every line about it).
    #[serde(default)]
    pub trace: TraceContext,
    /// The job's priority class.
    #[serde(default)]
    pub priority: Priority,
    /// Whether it continues a job under way or starts one (with `priority`, its lane in
    /// the worker pool's queue; see [`crate::lanes`]).
    #[serde(default)]
    pub stage: crate::vocab::Stage,
    /// For sub-work: the node of the attempt that made it (it runs there if that node has
    /// room; see [`crate::placement`]).
    #[serde(default)]
    pub near: Option<String>,
}

/// The span context carried with an attempt across nodes, in W3C trace-context terms:
/// every log line about a job carries the same `trace_id` on every node, so one job's logs
/// can be joined; `parent_id` names the span of the job's supervisor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// 32 hex digits, the same for every attempt of one job (and its sub-work).
    pub trace_id: String,
    /// 16 hex digits: the span that dispatched the attempt.
    pub parent_id: String,
}

impl TraceContext {
    /// The trace id of job `job`: derived from the id, so any node computes the same one.
    pub fn trace_id_of(job: &str) -> String {
        use sha2::{Digest, Sha256};
        let h = Sha256::digest(job.as_bytes());
        h[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The context of an attempt dispatched by the supervisor of `job` on node `owner`.
    pub fn for_job(job: &str, owner: &str) -> Self {
        use sha2::{Digest, Sha256};
        let h = Sha256::digest(format!("{owner}/{job}").as_bytes());
        Self {
            trace_id: Self::trace_id_of(job),
            parent_id: h[..8].iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// Where a step result came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultSource {
    /// The attempt ran the task.
    #[default]
    Executed,
    /// The attempt joined an identical request in flight.
    Merged,
    /// The attempt was answered from the cache.
    Cached,
}

/// The end of an execution run for a merger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Executed {
    /// The request key.
    pub key: String,
    /// The result as the leading request got it.
    pub result: StepResult,
    /// True if the execution was cancelled rather than finished.
    pub cancelled: bool,
}

/// Cache and merge counters of a node's merger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests of pure tasks the cache could not answer.
    pub misses: u64,
    /// Entries dropped for size or age.
    pub evictions: u64,
    /// Requests that joined one in flight.
    pub merged: u64,
    /// Entries held now.
    pub entries: u64,
}

/// Names one attempt (to cancel it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttemptRef {
    /// The job.
    pub job: String,
    /// The step.
    pub step: String,
    /// The attempt.
    pub attempt: u32,
}

/// A running attempt asks its job's supervisor for sub-work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// The attempt asking.
    pub from: AttemptRef,
    /// Its id for the request, echoed in the reply.
    pub call_id: u64,
    /// The node the attempt runs on (where the reply goes).
    pub reply_to: String,
    /// What to run.
    pub kind: SpawnKind,
}

/// The answer to a [`SpawnRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallReply {
    /// The request's id.
    pub call_id: u64,
    /// Output of the sub-work, or why it failed.
    pub result: Result<Value, TaskError>,
}

/// Resume a step waiting for a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeRequest {
    /// The job.
    pub job: String,
    /// The step.
    pub step: String,
}

/// The end of one attempt, sent back to the owner's job manager.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    /// The job.
    pub job: String,
    /// The step.
    pub step: String,
    /// The attempt.
    pub attempt: u32,
    /// The node that ran it.
    pub node: String,
    /// Output or error.
    pub result: Result<Value, TaskError>,
    /// Whether it ran, joined one in flight, or came from the cache.
    #[serde(default)]
    pub source: ResultSource,
    /// The epoch of the request it answers (a result for an older owner is discarded).
    #[serde(default)]
    pub epoch: u64,
}

/// A job submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// The job.
    pub spec: JobSpec,
    /// Push events of this job to the watcher in this group.
    pub watch: Option<WatchRequest>,
    /// Jobs submitted with the same key while one is in flight coalesce into it: the
    /// submission answers the id of the job in flight and its watcher joins it (Gearman's
    /// function + unique id). Only the node that owns the key coalesces; see
    /// [`unique_owner`].
    #[serde(default)]
    pub unique: Option<String>,
    /// Accept the job even if no node serves a task yet: its steps wait for a worker
    /// (Gearman clients may submit before any worker connects).
    #[serde(default)]
    pub wait_for_workers: bool,
    /// Set by the job manager itself once it waited for unknown tasks; never from the wire.
    #[serde(skip)]
    pub waited: bool,
}

impl SubmitRequest {
    /// A plain submission of `spec`: nobody watches it, no unique key, its tasks must be
    /// served somewhere.
    pub fn new(spec: JobSpec) -> Self {
        Self {
            spec,
            watch: None,
            unique: None,
            wait_for_workers: false,
            waited: false,
        }
    }
}

/// The node among `nodes` that coalesces submissions with unique id `unique`
/// (rendezvous hashing, as for request keys).
pub fn unique_owner<'a>(unique: &str, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    crate::merge::owner(&format!("unique:{unique}"), nodes)
}

/// A job in flight found by its unique key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueJob {
    /// The job's id.
    pub job: String,
    /// Submissions that joined it, the first included.
    pub submitters: u32,
}

/// What a running attempt tells its job's watchers before its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProgressKind {
    /// How far it is.
    Status {
        /// Done so far.
        numerator: u64,
        /// Out of.
        denominator: u64,
    },
    /// Partial data.
    Data(Vec<u8>),
    /// A warning.
    Warning(Vec<u8>),
}

/// Progress of an attempt, sent to its owner's job manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepProgress {
    /// The attempt.
    pub attempt: AttemptRef,
    /// What it says.
    pub kind: ProgressKind,
}

/// An attempt that ended without a result (its external worker went away).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostAttempt {
    /// The attempt.
    pub attempt: AttemptRef,
    /// Why, for the status.
    pub reason: String,
    /// A worker held it and vanished (counts against the step's cap on lost attempts);
    /// false for an attempt that only waited for a worker that went away.
    #[serde(default)]
    pub counts: bool,
}

/// Why a submission was refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SubmitError {
    /// The job is not valid; the message names the step.
    Invalid(String),
    /// The node cannot take jobs now.
    Unavailable(String),
    /// The cluster has too much work waiting (`admission.max_waiting_steps`): submit
    /// again after this many milliseconds.
    Overloaded {
        /// What the node saw.
        message: String,
        /// When to try again.
        retry_after_ms: u64,
    },
}

/// A request to follow a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchRequest {
    /// The job (empty in a submission: the new job).
    pub job: String,
    /// The watcher's group ([`client_group`]).
    pub group: String,
    /// Every step event, or only the end of the job.
    pub progress: bool,
    /// With `progress`: leave out the step state changes (queued, started, retrying,
    /// finished) and send only what running attempts report (progress, data) and the end
    /// (the Gearman front door needs no more, and a job's events are most of its cost).
    #[serde(default)]
    pub reports_only: bool,
}

/// Messages of the job manager (one per node, in `troupe.job_manager.NODE`).
#[derive(RactorClusterMessage)]
pub enum JobManagerMessage {
    /// Accept a job; answers its id.
    #[rpc]
    Submit(
        Wire<SubmitRequest>,
        RpcReplyPort<Wire<Result<String, SubmitError>>>,
    ),
    /// The status of a job (forwarded to its owner if that is another node).
    #[rpc]
    Status(String, RpcReplyPort<JobAnswer>),
    /// Follow a job: answers its status now; events after it go to the watcher.
    #[rpc]
    Watch(Wire<WatchRequest>, RpcReplyPort<JobAnswer>),
    /// An attempt ended (from a worker pool).
    StepFinished(Wire<StepResult>),
    /// A running attempt asks for calls or a sub-job (from a worker pool).
    Spawn(Wire<SpawnRequest>),
    /// Cancel a job; answers its status (forwarded to the owner).
    #[rpc]
    Cancel(String, RpcReplyPort<JobAnswer>),
    /// Resume a step waiting for a user; answers the job's status (forwarded to the owner).
    #[rpc]
    Resume(Wire<ResumeRequest>, RpcReplyPort<JobAnswer>),
    /// A job supervisor of this node finished its job (local).
    JobEnded(Wire<JobStatus>),
    /// Membership lost a node: attempts there are dispatched again (local).
    NodeDown(String),
    /// Drop the cached result of a request (task, input) at its key's owner; answers
    /// whether there was one.
    #[rpc]
    Invalidate(Wire<InvalidateRequest>, RpcReplyPort<bool>),
    /// A running attempt's progress, partial data or warning (from a Gearman worker).
    Progress(Wire<StepProgress>),
    /// An attempt ended without a result: run it again (from a Gearman front door).
    AttemptLost(Wire<LostAttempt>),
    /// An attempt was stolen by another node: it runs there (from a worker pool).
    Moved(Wire<AttemptMoved>),
    /// A job in flight whose unique key starts with this prefix, if this node holds one
    /// (the whole key finds that job).
    #[rpc]
    FindUnique(String, RpcReplyPort<Wire<Option<UniqueJob>>>),
    /// Journal writes of another node's jobs, to keep as a copy (from that node).
    Replicate(Wire<ReplicaBatch>),
    /// A replica committed the batch with this ack token (see [`ReplicaBatch::ack`]).
    ReplicaAcked(u64),
    /// A job changed owner (from the node that took it over).
    JobMoved(Wire<JobMoved>),
    /// Membership saw a node come up or back (local): tell it of the jobs taken from it.
    NodeUp(String),
    /// Look for copies whose owner has been down for the grace period (local, periodic).
    SweepCopies,
    /// The core group's answer to a takeover of a job: who holds it now (local).
    TakeoverDecided(String, Wire<Result<crate::vocab::Holder, String>>),
    /// The journaled jobs may resume, but these, taken over meanwhile (local).
    ResumeJournaled(Wire<Vec<JobMoved>>),
}

/// A cached result to drop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvalidateRequest {
    /// The task.
    pub task: String,
    /// The request's input.
    pub input: Value,
}

/// The group holding the merger of `node`.
pub fn merger_group(node: &str) -> String {
    format!("troupe.merger.{node}")
}

/// Messages of a node's merger (in `troupe.merger.NODE`): the owner of request keys.
#[derive(RactorClusterMessage)]
pub enum MergerMessage {
    /// A request for a mergeable or pure task whose key this node owns.
    Request(Wire<StepRequest>),
    /// An execution this merger started has ended (from a worker pool).
    Executed(Wire<Executed>),
    /// Drop a key from the cache; answers whether it was there.
    #[rpc]
    Invalidate(String, RpcReplyPort<bool>),
    /// Membership lost a node: executions there run again (local).
    NodeDown(String),
}

/// Messages of a worker pool (one per node, in `troupe.task.TASK` for each task it serves
/// and in `troupe.worker_pool.NODE`).
#[derive(RactorClusterMessage)]
pub enum WorkerPoolMessage {
    /// Run an attempt (it waits for a free slot).
    Run(Wire<StepRequest>),
    /// The answer to a running attempt's calls or sub-job.
    CallReply(Wire<CallReply>),
    /// Stop an attempt (cancelled job, timed-out attempt).
    Cancel(Wire<AttemptRef>),
    /// An idle node asks this loaded one for waiting attempts (work stealing).
    Steal(Wire<StealRequest>),
}

/// An idle node's request for waiting work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StealRequest {
    /// The idle node (stolen attempts go to its worker pool).
    pub thief: String,
    /// Attempts it can start now.
    pub max: u32,
    /// Tasks it serves.
    pub tasks: Vec<String>,
}

/// An attempt moved to another node's worker pool before it started (stolen).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptMoved {
    /// The attempt.
    pub attempt: AttemptRef,
    /// Where it runs now.
    pub node: String,
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
}

/// Group of every node's event hub.
pub const EVENT_HUBS_GROUP: &str = "troupe.event_hubs";

/// The group holding the event hub of `node`.
pub fn event_hub_group(node: &str) -> String {
    format!("troupe.event_hub.{node}")
}

/// The node of an event hub's group, if `group` is one.
pub fn node_of_event_hub_group(group: &str) -> Option<&str> {
    group.strip_prefix("troupe.event_hub.")
}

/// Messages of a node's event hub (in `troupe.event_hub.NODE` and `troupe.event_hubs`).
#[derive(RactorClusterMessage)]
pub enum EventHubMessage {
    /// Something happened on this node (local).
    Publish(Wire<crate::observe::ClusterEvent>),
    /// The hub of node NAME wants this node's events for a while (renewed every second).
    Subscribe(String),
    /// Events from another node's hub.
    Forward(Wire<Vec<crate::observe::ClusterEvent>>),
    /// The newest jobs this node owns that match.
    #[rpc]
    ListJobs(
        Wire<crate::observe::JobQuery>,
        RpcReplyPort<Wire<crate::observe::JobList>>,
    ),
    /// A page of the whole cluster's jobs, gathered by this hub from every hub it
    /// sees (for clients, which see only the nodes they are connected to).
    #[rpc]
    ListClusterJobs(
        Wire<ClusterJobsQuery>,
        RpcReplyPort<Wire<crate::observe::JobsPage>>,
    ),
    /// Send what waits for subscribers (local timer, armed by the first event waiting).
    Tick,
    /// Renew this node's subscriptions at the other hubs (local timer, HTTP nodes only).
    Renew,
}

/// A question for [`EventHubMessage::ListClusterJobs`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterJobsQuery {
    /// Only jobs in this state.
    pub state: Option<crate::JobState>,
    /// Jobs to skip (newest first).
    pub offset: usize,
    /// Page size.
    pub limit: usize,
}

/// The registered name of `node`'s actor host (also how a member of an actor type's
/// group names its node: ractor_cluster's remote shims carry their actor's name).
pub fn actor_host_name(node: &str) -> String {
    format!("troupe.actor_host@{node}")
}

/// The node of an actor host's registered name.
pub fn node_of_actor_host(name: &str) -> Option<&str> {
    name.strip_prefix("troupe.actor_host@")
}

/// The group of the actor hosts that serve actor type `actor_type`.
pub fn actor_type_group(actor_type: &str) -> String {
    format!("troupe.actor.{actor_type}")
}

/// Group of every node's actor host.
pub const ACTOR_HOSTS_GROUP: &str = "troupe.actor_hosts";

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
}

/// Forwards of one actor message at most.
pub const MAX_ACTOR_HOPS: u8 = 2;

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

/// The answer to a message for an actor.
pub type ActorReply = Wire<Result<Value, crate::actor::ActorCallError>>;

/// Messages of a node's actor host (registered as [`actor_host_name`], in
/// [`ACTOR_HOSTS_GROUP`] and in [`actor_type_group`] of each type it serves).
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
    List(RpcReplyPort<Wire<Vec<crate::actor::ActivationInfo>>>),
    /// Every host's activations (this host asks the others).
    #[rpc]
    ListAll(RpcReplyPort<Wire<Vec<crate::actor::ActivationInfo>>>),
    /// An activation of this host's was claimed (local): the core group's answer and,
    /// when granted, the state to start from.
    Claimed(Wire<crate::actor::route::Claim>),
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

/// Messages of a client's watcher.
#[derive(RactorClusterMessage)]
pub enum WatcherMessage {
    /// An event of a watched job.
    Event(Wire<JobEvent>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_hub_groups_name_their_node() {
        assert_eq!(
            node_of_event_hub_group(&event_hub_group("n-1")),
            Some("n-1")
        );
        assert_eq!(node_of_event_hub_group(EVENT_HUBS_GROUP), None);
    }

    #[test]
    fn a_waiting_step_request_is_about_half_a_kib_plus_its_data() {
        // config/default.toml states this figure for admission.max_waiting_steps.
        let r = StepRequest {
            job: "n1-19a8f3c2b11-42".into(),
            step: "process".into(),
            attempt: 1,
            task: "flood.process".into(),
            input: serde_json::json!({"ms": 5}),
            deps: Default::default(),
            owner: "n1".into(),
            epoch: 0,
            resumed: false,
            cache: Default::default(),
            key: None,
            merger: None,
            trace: TraceContext::for_job("n1-19a8f3c2b11-42", "n1"),
            priority: Default::default(),
            stage: Default::default(),
            near: None,
        };
        let heap = r.job.len() + r.step.len() + r.task.len() + r.owner.len() + 32 + 16 + 64;
        let total = std::mem::size_of::<StepRequest>() + heap;
        assert!(total <= 600, "{total} bytes");
    }

    #[test]
    fn job_ids_name_their_owner() {
        assert_eq!(owner_of("n1-19a8f3c2b11-42"), Some("n1"));
        assert_eq!(owner_of("my-node-2-ff-0"), Some("my-node-2"));
        assert_eq!(owner_of("garbage"), None);
        assert_eq!(owner_of("-ff-1"), None);
        assert_eq!(owner_of("n1-zz-1"), None);
    }
}
