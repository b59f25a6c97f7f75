//! The messages of the actors that other processes reach, and the process groups they join.
//!
//! Every payload is wrapped in [`Wire`](crate::wire::Wire) (rmp-serde). The variant names
//! are the wire tags: add variants freely, but do not rename one while nodes of two
//! versions share a cluster.
//!
//! One submodule per actor holds that actor's message enum and the payloads only it
//! receives; every item is also exported here, so `protocol::X` names any of them.
//!
//! | group | members | used for | messages |
//! |---|---|---|---|
//! | `troupe.membership` | every node's `Membership` actor | gossip of node info, `nodes` | [`membership`] |
//! | `troupe.job_manager.NODE` | the `JobManager` of NODE | submit, status, watch, step results, copies | [`job_manager`], [`replica`] |
//! | `troupe.task.TASK` | the `WorkerPool` of every node that serves TASK | dispatch of steps | [`worker_pool`] |
//! | `troupe.worker_pool.NODE` | the `WorkerPool` of NODE | answers to calls, cancels, stealing | [`worker_pool`] |
//! | `troupe.merger.NODE` | the `Merger` of NODE | merged requests, cached results | [`merger`] |
//! | `troupe.client.NAME` | a client's `Watcher` | job events pushed to a handle | [`watcher`] |
//! | `troupe.event_hub.NODE`, `troupe.event_hubs` | every node's `EventHub` | event stream, jobs list | [`event_hub`] |
//! | `troupe.actor.TYPE`, `troupe.actor_hosts` | every node's `ActorHost` | keyed actors, saved states | [`actor_host`] |
//! | `troupe.core.NODE`, `troupe.core_voters` | every node's `Core` member | the core group's Raft | `troupe_actors::core` |
//! | `troupe.gearman_admin` | the `GearmanAdmin` of every node with `--gearman` | gearadmin's `status` and `workers` for the whole cluster | [`gearman_admin`] |
//!
//! [`groups`] builds and reads these names.

pub mod actor_host;
pub mod event_hub;
pub mod gearman_admin;
pub mod groups;
pub mod job_manager;
pub mod membership;
pub mod merger;
pub mod replica;
pub mod watcher;
pub mod worker_pool;

pub use actor_host::{
    ActivationInfo, ActorEnvelope, ActorHostMessage, ActorReply, Answered, Claim, ClaimOutcome,
    Fenced, SavedState, StateCopy, MAX_ACTOR_HOPS,
};
pub use event_hub::{cluster_jobs, ClusterJobsQuery, EventHubMessage};
pub use gearman_admin::{
    FunctionLine, GearmanAdminMessage, GearmanReport, JobLine, WorkerLine, GEARMAN_ADMIN_GROUP,
};
pub use groups::{
    actor_host_name, actor_type_group, client_group, core_group, event_hub_group, first_member,
    job_manager_group, membership_name, merger_group, node_of_actor_host, node_of_event_hub_group,
    task_group, task_of_group, worker_pool_group, ACTOR_HOSTS_GROUP, CORE_VOTERS_GROUP,
    EVENT_HUBS_GROUP, MEMBERSHIP_GROUP,
};
pub use job_manager::{
    submit, unique_owner, AttemptMoved, CallWaiting, InvalidateRequest, JobAnswer,
    JobManagerMessage, JobMoved, JobQueryError, LostAttempt, ProgressKind, ResultSource,
    ResumeRequest, SpawnRequest, StepProgress, StepResult, SubmitError, SubmitFailure,
    SubmitRequest, UniqueJob, WatchRequest, CALL_WAITING_EVERY,
};
pub use membership::{MembershipMessage, NodeInfo, NodeState, SessionEvent, SessionEventKind};
pub use merger::{merger_execution_ended, CacheStats, Executed, MergerMessage};
pub use replica::{ReplicaBatch, ReplicaWhat, ReplicaWrite};
pub use watcher::WatcherMessage;
pub use worker_pool::{
    AbandonedRun, AttemptRef, CallReply, StealRequest, StepRequest, TraceContext, WorkerPoolMessage,
};
