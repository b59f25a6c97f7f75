//! The job manager's messages (one per node, in `troupe.job_manager.NODE`): the front door
//! for jobs (submit, status, watch, cancel, resume), step results and sub-work from worker
//! pools, and the copies and takeovers of jobs between nodes.
//!
//! [`submit`] is the one way the front doors (the client, HTTP, Gearman, the actor host)
//! send a submission; each maps a [`SubmitFailure`] to its own error with `From`.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::replica::ReplicaBatch;
use super::worker_pool::AttemptRef;
use crate::error::TaskError;
use crate::job::spec::{JobSpec, SpawnKind};
use crate::job::status::JobStatus;
use crate::vocab::Holder;
use crate::wire::{Wire, WireError};

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
    /// Every job in flight here whose unique key starts with this prefix, as (unique
    /// key, job id) pairs (for the Gearman admin `show unique jobs`).
    #[rpc]
    Uniques(String, RpcReplyPort<Wire<Vec<(String, String)>>>),
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
    /// Which of these jobs (this node's, by their ids) it knows nothing of: neither runs,
    /// nor journaled, nor ended, nor moved. Asked by the holders of their copies when this
    /// node comes up: a job answered before the owner's own commit lives only in its
    /// copies if the owner restarted within that commit window, and is taken over.
    #[rpc]
    Unknown(Wire<Vec<String>>, RpcReplyPort<Wire<Vec<String>>>),
    /// The owner `0` knows nothing of these jobs, of which this node keeps copies: ask
    /// the core group for them (local, the answer to `Unknown`).
    Forsaken(String, Wire<Vec<String>>),
    /// Which of these jobs (this node's, by their ids) ended here: its journal holds
    /// their ends. Asked by the holders of their copies about the jobs it knows: a copy
    /// kept on an end sent ahead of the owner's write is stale once the owner wrote it,
    /// and the end sent again then can be missed (the owner restarted, a connection
    /// broke).
    #[rpc]
    Ended(Wire<Vec<String>>, RpcReplyPort<Wire<Vec<String>>>),
    /// The owner `0` holds the ends of these jobs, of which this node keeps copies: drop
    /// the copies (local, the answer to `Ended`).
    CopiesEnded(String, Wire<Vec<String>>),
    /// The core group's answer to a takeover of a job: who holds it now (local).
    TakeoverDecided(String, Wire<Result<Holder, String>>),
    /// The journaled jobs may resume, but these, taken over meanwhile (local).
    ResumeJournaled(Wire<Vec<JobMoved>>),
    /// The core group recorded the end of this job of this node's, journaled before a
    /// restart and not confirmed then: it is published now (local).
    EndRecorded(String),
    /// This node leaves: drop every copy of other nodes' jobs it keeps and keep no new
    /// one; answers whether the drop was committed (local, from the drain).
    #[rpc]
    DropCopies(RpcReplyPort<bool>),
    /// The named node (draining) dropped every copy of this node's jobs it kept: no end
    /// waits for its ack any more, and it gets no new copy until it comes back.
    #[rpc]
    CopiesDropped(String, RpcReplyPort<bool>),
    /// The job file a job of this node's was submitted with (`troupe-node rerun`): kept
    /// while the job runs and with its status once it ended.
    #[rpc]
    Spec(String, RpcReplyPort<Wire<Result<JobSpec, JobQueryError>>>),
    /// This node leaves: hand the statuses of the jobs that ended here to nodes that
    /// stay; answers how many were handed (local, from the drain).
    #[rpc]
    HandEnds(RpcReplyPort<u64>),
    /// Keep these final statuses of jobs of a node that left gracefully, to answer for
    /// them while it is gone (from that node).
    HandedEnds(Wire<Vec<JobStatus>>),
    /// The final status of a job of a node that left, if one was handed here.
    #[rpc]
    HandedEnd(String, RpcReplyPort<Wire<Option<JobStatus>>>),
    /// A running attempt still waits for the answer to a call or sub-job it asked for
    /// (from a worker pool, every [`CALL_WAITING_EVERY`] while it waits).
    CallWaiting(Wire<CallWaiting>),
}

/// How often an attempt waiting for the answer to a call or sub-job tells the job's
/// owner it still waits ([`JobManagerMessage::CallWaiting`]).
pub const CALL_WAITING_EVERY: Duration = Duration::from_secs(5);

/// A running attempt still waits for the answer to its call `call_id`: the owner answers
/// it again if the call's sub-work has ended, or with an error if the request never
/// reached it, so that an answer or a request lost with a closed connection does not
/// leave the attempt waiting for ever (messages between nodes are not acknowledged).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallWaiting {
    /// The attempt waiting.
    pub from: AttemptRef,
    /// Its id for the call.
    pub call_id: u64,
    /// The node the attempt runs on (where the answer goes).
    pub reply_to: String,
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
    /// Journal the job (and copy it to `journal_replicas`), so that it survives its
    /// owner's crash (the default). A Gearman foreground job turns it off: its one waiter
    /// is the client's connection to the owner, which that crash closes, so a copy would
    /// serve nobody (`gearman_journal_foreground`).
    #[serde(default = "by_default")]
    pub journaled: bool,
    /// Count the job against `limits.max_jobs_per_client` (the default). The Gearman
    /// front door does not: its connections share one watcher group (or none, for
    /// background jobs), and it bounds its queues itself (`maxqueue`), as gearmand does.
    #[serde(default = "by_default")]
    pub counted_per_client: bool,
}

fn by_default() -> bool {
    true
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
            journaled: true,
            counted_per_client: true,
        }
    }
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

/// Why [`submit`] got no job id: the job manager refused the job, or its answer did not
/// arrive. Each front door turns it into its own error with `From`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitFailure {
    /// The job manager answered and refused the job.
    #[error("the job was refused: {0:?}")]
    Refused(SubmitError),
    /// No answer within the timeout.
    #[error("the job manager did not answer within {0:?}")]
    Timeout(Duration),
    /// The job manager dropped the request (it stopped, or the session to it closed).
    #[error("the job manager dropped the request")]
    Dropped,
    /// The request could not be sent to the job manager.
    #[error("the job manager cannot be reached: {0}")]
    Unreachable(String),
    /// The answer could not be decoded.
    #[error(transparent)]
    Unreadable(WireError),
}

impl From<SubmitError> for SubmitFailure {
    fn from(e: SubmitError) -> Self {
        SubmitFailure::Refused(e)
    }
}

/// A job submitted on behalf of a running task or actor handler that got no id: a refusal
/// is permanent (submitting it again would be refused again), no answer is transient.
impl From<SubmitFailure> for TaskError {
    fn from(e: SubmitFailure) -> Self {
        match e {
            SubmitFailure::Refused(e) => {
                TaskError::permanent(format!("the job was refused: {e:?}"))
            }
            SubmitFailure::Unreadable(e) => TaskError::transient(e.to_string()),
            SubmitFailure::Timeout(_) | SubmitFailure::Dropped | SubmitFailure::Unreachable(_) => {
                TaskError::transient("the job manager did not answer the submission")
            }
        }
    }
}

/// Sends `request` to `manager` and waits up to `timeout` for the id of the job it
/// accepted. The one way the front doors (the client, HTTP, Gearman, the actor host)
/// submit a job.
pub async fn submit(
    manager: &ActorRef<JobManagerMessage>,
    request: SubmitRequest,
    timeout: Duration,
) -> Result<String, SubmitFailure> {
    let answer = manager
        .call(
            |reply| JobManagerMessage::Submit(Wire::new(request), reply),
            Some(timeout),
        )
        .await;
    match answer {
        Ok(CallResult::Success(answer)) => answer
            .into_inner()
            .map_err(SubmitFailure::Unreadable)?
            .map_err(SubmitFailure::Refused),
        Ok(CallResult::Timeout) => Err(SubmitFailure::Timeout(timeout)),
        Ok(CallResult::SenderError) => Err(SubmitFailure::Dropped),
        Err(e) => Err(SubmitFailure::Unreachable(e.to_string())),
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

/// A request to follow a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchRequest {
    /// The job (empty in a submission: the new job).
    pub job: String,
    /// The watcher's group ([`client_group`](super::groups::client_group)).
    pub group: String,
    /// Every step event, or only the end of the job.
    pub progress: bool,
    /// With `progress`: leave out the step state changes (queued, started, retrying,
    /// finished) and send only what running attempts report (progress, data) and the end
    /// (the Gearman front door needs no more, and a job's events are most of its cost).
    #[serde(default)]
    pub reports_only: bool,
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
    /// How long the attempt held its worker slot, in microseconds: the owner's placement
    /// sizes the node's prefetch by it. Absent for a result that did not run here, and
    /// from older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_us: Option<u64>,
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

/// An attempt moved to another node's worker pool before it started (stolen).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptMoved {
    /// The attempt.
    pub attempt: AttemptRef,
    /// Where it runs now.
    pub node: String,
}

/// A cached result to drop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvalidateRequest {
    /// The task.
    pub task: String,
    /// The request's input.
    pub input: Value,
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

impl JobMoved {
    /// `job` is held by `holder` now.
    pub fn new(job: String, holder: crate::vocab::Holder) -> Self {
        JobMoved {
            job,
            owner: holder.node,
            epoch: holder.epoch,
        }
    }

    /// The node that holds the job now, and since which epoch.
    pub fn holder(&self) -> crate::vocab::Holder {
        crate::vocab::Holder {
            node: self.owner.clone(),
            epoch: self.epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr};

    use super::*;

    /// What the stand-in job manager does with a submission.
    #[derive(Clone)]
    enum Answer {
        Reply(Result<String, SubmitError>),
        /// Keeps the reply port and never answers.
        Silence,
        /// Drops the reply port.
        Drop,
    }

    struct StandIn;

    impl Actor for StandIn {
        type Msg = JobManagerMessage;
        type State = (Answer, Vec<RpcReplyPort<Wire<Result<String, SubmitError>>>>);
        type Arguments = Answer;

        async fn pre_start(
            &self,
            _me: ActorRef<Self::Msg>,
            answer: Answer,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok((answer, Vec::new()))
        }

        async fn handle(
            &self,
            _me: ActorRef<Self::Msg>,
            msg: Self::Msg,
            (answer, kept): &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let JobManagerMessage::Submit(_, reply) = msg {
                match answer.clone() {
                    Answer::Reply(r) => {
                        let _ = reply.send(Wire::new(r));
                    }
                    Answer::Silence => kept.push(reply),
                    Answer::Drop => drop(reply),
                }
            }
            Ok(())
        }
    }

    async fn submit_to(answer: Answer) -> Result<String, SubmitFailure> {
        let (manager, _) = Actor::spawn(None, StandIn, answer).await.expect("spawns");
        let spec = JobSpec::new("j").step(crate::job::spec::StepSpec::new("a", "troupe.echo"));
        let r = submit(
            &manager,
            SubmitRequest::new(spec),
            Duration::from_millis(50),
        )
        .await;
        manager.stop(None);
        r
    }

    /// `submit` answers the accepted job's id, the manager's refusal as it is, and tells
    /// apart no answer in time from a request the manager dropped or never got.
    #[tokio::test]
    async fn submit_tells_an_id_a_refusal_and_each_kind_of_missing_answer_apart() {
        let id = submit_to(Answer::Reply(Ok("n1-ff-1".into()))).await;
        assert_eq!(id.expect("accepted"), "n1-ff-1");
        let refused = submit_to(Answer::Reply(Err(SubmitError::Invalid("bad".into())))).await;
        assert!(matches!(
            refused,
            Err(SubmitFailure::Refused(SubmitError::Invalid(m))) if m == "bad"
        ));
        let silent = submit_to(Answer::Silence).await;
        assert!(matches!(silent, Err(SubmitFailure::Timeout(t)) if t == Duration::from_millis(50)));
        assert!(matches!(
            submit_to(Answer::Drop).await,
            Err(SubmitFailure::Dropped)
        ));

        let (stopped, handle) = Actor::spawn(None, StandIn, Answer::Silence)
            .await
            .expect("spawns");
        stopped.stop(None);
        handle.await.expect("stops");
        let spec = JobSpec::new("j").step(crate::job::spec::StepSpec::new("a", "troupe.echo"));
        let r = submit(
            &stopped,
            SubmitRequest::new(spec),
            Duration::from_millis(50),
        )
        .await;
        assert!(matches!(r, Err(SubmitFailure::Unreachable(_))), "{r:?}");
    }

    /// A job submitted for a task or handler: a refusal is permanent (the same job would be
    /// refused again), a missing answer transient; the texts are the actor host's.
    #[test]
    fn a_refused_submission_is_a_permanent_task_error_and_no_answer_a_transient_one() {
        let refused = TaskError::from(SubmitFailure::Refused(SubmitError::Invalid("x".into())));
        assert_eq!(
            refused,
            TaskError::permanent("the job was refused: Invalid(\"x\")")
        );
        for missing in [
            SubmitFailure::Timeout(Duration::from_secs(1)),
            SubmitFailure::Dropped,
            SubmitFailure::Unreachable("gone".into()),
        ] {
            assert_eq!(
                TaskError::from(missing),
                TaskError::transient("the job manager did not answer the submission")
            );
        }
    }
}
