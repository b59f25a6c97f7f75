//! What operators watch: the cluster's event stream, job summaries, and metric names.
//!
//! Every node's `EventHub` (troupe-actors) sees the events of the jobs its node owns and
//! the membership changes its node sees. A node that serves HTTP subscribes to every other
//! hub, so its `/api/events` stream and `/api/jobs` list cover the whole cluster. Asking
//! the hubs is the event hub's protocol
//! ([`cluster_jobs`](crate::protocol::event_hub::cluster_jobs)); this module holds only
//! what the answers are made of.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::status::{JobEvent, JobState};

pub mod metric;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A membership change, as a node saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NodeEvent {
    /// A node connected (for the first time, or again after it left).
    NodeUp {
        /// Its name.
        node: String,
        /// The address it is dialled at.
        address: String,
        /// True if it had been seen before and came back.
        rejoined: bool,
    },
    /// A connected node has not been heard from for a while (`failure.suspect_after_ms`).
    NodeSuspect {
        /// Its name.
        node: String,
        /// The address it is dialled at.
        address: String,
        /// How long it has been silent.
        silent_ms: u64,
    },
    /// A node's connection closed, or it stayed silent past `failure.down_after_ms`.
    NodeDown {
        /// Its name.
        node: String,
        /// The address it was dialled at.
        address: String,
        /// Why it is considered down.
        reason: String,
    },
}

/// What happened: to a job, or to the cluster's membership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// A job event (from the job's owner node).
    Job(JobEvent),
    /// A membership change (as the reporting node saw it).
    Node(NodeEvent),
}

/// One entry of the cluster's event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterEvent {
    /// When it happened, in Unix milliseconds on the node that reports it.
    pub at_ms: u64,
    /// The node that reports it.
    pub origin: String,
    /// What happened.
    pub kind: EventKind,
    /// For a job event: the job's state right after it.
    #[serde(default)]
    pub job_state: Option<JobState>,
}

impl ClusterEvent {
    /// An event of `origin`, stamped now.
    pub fn now(origin: &str, kind: EventKind) -> Self {
        Self {
            at_ms: now_ms(),
            origin: origin.to_string(),
            kind,
            job_state: None,
        }
    }

    /// A job event of `origin`, stamped now, with the job's state after it.
    pub fn job(origin: &str, ev: JobEvent, state: JobState) -> Self {
        Self {
            job_state: Some(state),
            ..Self::now(origin, EventKind::Job(ev))
        }
    }

    /// The JSON an event-stream client sees: the event's own fields (with its `event`
    /// tag, e.g. `step_started` or `node_down`) plus `at_ms` and `origin`.
    pub fn to_json(&self) -> Value {
        let mut v = match &self.kind {
            EventKind::Job(e) => serde_json::to_value(e),
            EventKind::Node(e) => serde_json::to_value(e),
        }
        .unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            // Every event about a job carries `job`: a job's end has it in its status.
            if let EventKind::Job(JobEvent::JobFinished { status }) = &self.kind {
                m.insert("job".into(), status.id.clone().into());
            }
            m.insert("at_ms".into(), self.at_ms.into());
            m.insert("origin".into(), self.origin.clone().into());
            if let Some(st) = self.job_state {
                m.insert(
                    "job_state".into(),
                    serde_json::to_value(st).unwrap_or(Value::Null),
                );
            }
        }
        v
    }
}

/// One line of the jobs list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job id.
    pub id: String,
    /// Its name from its file.
    pub name: String,
    /// Its state.
    pub state: JobState,
    /// The node that owns it.
    pub owner: String,
    /// When it was accepted, in Unix milliseconds.
    pub submitted_ms: u64,
    /// Milliseconds from acceptance to the end, once ended.
    pub elapsed_ms: Option<u64>,
    /// Steps known so far (fan-out children and sub-jobs add to the file's steps).
    pub steps: u32,
    /// Steps that ended.
    pub finished_steps: u32,
    /// Steps with an attempt running now.
    pub running_steps: u32,
    /// Why it failed.
    pub error: Option<String>,
}

/// Newest first; ties by id, so pages are stable.
pub fn newest_first(a: &JobSummary, b: &JobSummary) -> std::cmp::Ordering {
    b.submitted_ms
        .cmp(&a.submitted_ms)
        .then_with(|| b.id.cmp(&a.id))
}

/// A question to the jobs list: newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// At most this many (the newest).
    pub limit: usize,
}

/// An answer to a [`JobQuery`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    /// The newest matching jobs, newest first.
    pub jobs: Vec<JobSummary>,
    /// How many jobs matched in all.
    pub total: u64,
    /// Jobs of every state (whatever the query's state), by state name.
    #[serde(default)]
    pub by_state: std::collections::BTreeMap<String, u64>,
}

/// Logs a refusal at most once a second, with how many were not logged.
#[derive(Debug, Default)]
pub struct Throttle {
    last: std::sync::Mutex<Option<std::time::Instant>>,
    quiet: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// Logs `what` (with the peer) unless another refusal was logged in the last second.
    pub fn warn(&self, what: &str, peer: &str) {
        use std::sync::atomic::Ordering;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
            self.quiet.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(std::time::Instant::now());
        let quiet = self.quiet.swap(0, Ordering::Relaxed);
        tracing::warn!(peer = %peer, also_refused = quiet, "{what}");
    }
}

/// A page of the cluster's jobs list, as `GET /api/jobs` answers it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobsPage {
    /// The jobs of this page, newest first.
    pub jobs: Vec<JobSummary>,
    /// Jobs that matched on every node that answered.
    pub total: u64,
    /// Jobs skipped before this page.
    pub offset: usize,
    /// Page size asked for.
    pub limit: usize,
    /// Nodes whose hub did not answer in time (their jobs are missing from the page).
    pub unanswered: Vec<String>,
    /// Jobs of every state on the nodes that answered (whatever the `state` asked), by
    /// state name.
    #[serde(default)]
    pub by_state: std::collections::BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::status::JobStatus;

    #[test]
    fn every_job_event_carries_the_job_id() {
        let status: JobStatus = serde_json::from_value(serde_json::json!({
            "id": "n1-1-7", "name": "x", "state": "succeeded", "steps": {},
            "output": 1, "error": null, "stats": {"executions": 1, "merged": 0, "cache_hits": 0},
            "elapsed_ms": 3
        }))
        .unwrap();
        let ended = ClusterEvent::job(
            "n1",
            JobEvent::JobFinished {
                status: Box::new(status),
            },
            JobState::Succeeded,
        );
        let started = ClusterEvent::job(
            "n1",
            JobEvent::Queued {
                job: "n1-1-8".into(),
                name: "x".into(),
                steps: 1,
            },
            JobState::Queued,
        );
        assert_eq!(ended.to_json()["job"], "n1-1-7");
        assert_eq!(ended.to_json()["event"], "job_finished");
        assert_eq!(started.to_json()["job"], "n1-1-8");
    }
}
