//! The worker pool's messages (one per node, in `troupe.task.TASK` for each task it serves
//! and in `troupe.worker_pool.NODE`): attempts to run, answers to their calls, cancels and
//! stealing between pools.

use std::collections::BTreeMap;

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::TaskError;
use crate::job::spec::Priority;
use crate::merge::CacheMode;
use crate::vocab::Stage;
use crate::wire::Wire;

/// Messages of a worker pool (one per node, in `troupe.task.TASK` for each task it serves
/// and in `troupe.worker_pool.NODE`).
// `Run` is the common message and the large one: boxing it would allocate once more per
// attempt to make the rare ones smaller.
#[allow(clippy::large_enum_variant)]
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
    /// Drop the attempts of a job's run that was superseded (another node took the job
    /// over at a newer epoch): waiting ones are dropped, running ones stopped, and late
    /// ones refused.
    Abandon(Wire<AbandonedRun>),
    /// Which of these attempts of the sender's jobs does this node hold (waiting or
    /// running here, or on its external Gearman workers' board)? Answers those it does
    /// not hold; from then on they are refused if they arrive. An owner asks after its
    /// connection to this node was replaced: a message sent on the closed connection may
    /// be lost while the node never counted as down (see `troupe_actors::scheduler::audit`).
    #[rpc]
    Holds(Wire<Vec<AttemptRef>>, RpcReplyPort<Wire<Vec<AttemptRef>>>),
}

/// The runs of a job that a newer one replaced (see [`WorkerPoolMessage::Abandon`]): the
/// job's attempts sent at an epoch below `below_epoch`, whoever sent them, must not start.
/// (Epochs of a job only grow: the core group grants each takeover the next one.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbandonedRun {
    /// The job.
    pub job: String,
    /// The epoch of the run that replaced them: attempts of older epochs are void.
    pub below_epoch: u64,
}

impl AbandonedRun {
    /// Whether `req` belongs to a run given up.
    pub fn voids(&self, req: &StepRequest) -> bool {
        req.job == self.job && req.epoch < self.below_epoch
    }
}

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
    /// The owner's epoch for the job (see the core group, `troupe_actors::core`).
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
    /// the queue of the node's scheduler; see `troupe_actors::scheduler::lanes`).
    #[serde(default)]
    pub stage: Stage,
    /// For sub-work: the node of the attempt that made it (it runs there if that node has
    /// room; see `troupe_actors::scheduler::placement`).
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
        crate::wire::hex(&h[..16])
    }

    /// The context of an attempt dispatched by the supervisor of `job` on node `owner`.
    pub fn for_job(job: &str, owner: &str) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(owner.as_bytes());
        h.update(b"/");
        h.update(job.as_bytes());
        Self {
            trace_id: Self::trace_id_of(job),
            parent_id: crate::wire::hex(&h.finalize()[..8]),
        }
    }
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

/// The answer to a [`SpawnRequest`](super::job_manager::SpawnRequest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallReply {
    /// The request's id.
    pub call_id: u64,
    /// Output of the sub-work, or why it failed.
    pub result: Result<Value, TaskError>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
