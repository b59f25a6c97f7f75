//! What operators watch: the cluster's event stream, job summaries, and metric names.
//!
//! Every node's `EventHub` (troupe-actors) sees the events of the jobs its node owns and
//! the membership changes its node sees. A node that serves HTTP subscribes to every other
//! hub, so its `/api/events` stream and `/api/jobs` list cover the whole cluster.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::status::{JobEvent, JobState};

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

/// Metric names (Prometheus, all prefixed `troupe_`), in one place so that code, docs and
/// tests agree.
pub mod metric {
    /// Counter: activations of keyed actors started on this node.
    pub const ACTOR_ACTIVATIONS: &str = "troupe_actor_activations_total";
    /// Gauge: activations of keyed actors running on this node.
    pub const ACTORS_ACTIVE: &str = "troupe_actors_active";
    /// Counter: restarts of activations (handler failures and panics).
    pub const ACTOR_RESTARTS: &str = "troupe_actor_restarts_total";
    /// Counter: saves of actor state answered without the replica's copy (it did not
    /// answer within a second).
    pub const ACTOR_COPY_TIMEOUTS: &str = "troupe_actor_copy_timeouts_total";
    /// Counter: jobs accepted, and jobs ended by `state`.
    pub const JOBS: &str = "troupe_jobs_total";
    /// Gauge: jobs of this node not ended yet.
    pub const JOBS_ACTIVE: &str = "troupe_jobs_active";
    /// Histogram: job duration from acceptance to end, seconds.
    pub const JOB_SECONDS: &str = "troupe_job_duration_seconds";
    /// Counter: step attempts started, by `task`.
    pub const STEPS_STARTED: &str = "troupe_steps_started_total";
    /// Counter: steps ended, by `task` and `state`.
    pub const STEPS_FINISHED: &str = "troupe_steps_finished_total";
    /// Counter: step attempts that failed and were retried, by `task`.
    pub const STEPS_RETRIED: &str = "troupe_steps_retried_total";
    /// Histogram: execution time of one attempt on a worker, seconds, by `task`.
    pub const STEP_SECONDS: &str = "troupe_step_duration_seconds";
    /// Gauge: attempts waiting for a worker slot, by priority `lane`.
    pub const QUEUE_DEPTH: &str = "troupe_queue_depth";
    /// Gauge: worker slots of this node.
    pub const SLOTS: &str = "troupe_slots";
    /// Gauge: worker slots busy.
    pub const SLOTS_BUSY: &str = "troupe_slots_busy";
    /// Gauge: nodes this node sees, by `state`.
    pub const NODES: &str = "troupe_nodes";
    /// Counter: membership changes, by `event` (up, down).
    pub const MEMBERSHIP_EVENTS: &str = "troupe_membership_events_total";
    /// Counter: requests that joined an identical one in flight.
    pub const MERGED: &str = "troupe_requests_merged_total";
    /// Counter: requests answered from the result cache.
    pub const CACHE_HITS: &str = "troupe_cache_hits_total";
    /// Counter: requests of pure tasks the cache could not answer.
    pub const CACHE_MISSES: &str = "troupe_cache_misses_total";
    /// Counter: payload bytes encoded for or decoded from the wire, by `direction`.
    pub const WIRE_BYTES: &str = "troupe_wire_bytes_total";
    /// Counter: payloads encoded for or decoded from the wire, by `direction`.
    pub const WIRE_MESSAGES: &str = "troupe_wire_messages_total";
    /// Counter: input refused by a limit, by `reason` (too_many_connections,
    /// handshake_evicted, not_authenticated, too_many_jobs, tls_plaintext, tls_handshake,
    /// tls_timeout).
    pub const REFUSED: &str = "troupe_refused_total";
    /// Counter: HTTP requests, by `status` class.
    pub const HTTP_REQUESTS: &str = "troupe_http_requests_total";
    /// Gauge: open Gearman connections (clients and workers).
    pub const GEARMAN_CONNECTIONS: &str = "troupe_gearman_connections";
    /// Counter: jobs submitted by Gearman clients, by `mode` (foreground, background).
    pub const GEARMAN_JOBS: &str = "troupe_gearman_jobs_total";
    /// Counter: Gearman input refused, by `reason` (bad_magic, too_large, line_too_long,
    /// unknown_type, wrong_direction, arguments, argument, unsupported, unknown_handle).
    pub const GEARMAN_ERRORS: &str = "troupe_gearman_errors_total";
    /// Gauge: jobs the core group moved to a new owner, as this node has applied.
    pub const CORE_MOVED_JOBS: &str = "troupe_core_moved_jobs";
    /// Counter: jobs taken over from an owner that stayed down, by `outcome` (taken,
    /// denied, failed).
    pub const TAKEOVERS: &str = "troupe_takeovers_total";
    /// Counter: journal writes sent to or kept for replicas, by `direction` (out, kept,
    /// fenced), and submissions answered without a replica's ack (`ack_timeout`).
    pub const REPLICA_WRITES: &str = "troupe_replica_writes_total";
    /// Histogram: seconds a journal commit (one durable redb transaction) takes.
    pub const JOURNAL_COMMIT_SECONDS: &str = "troupe_journal_commit_seconds";
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

/// Asks every node's event hub for its newest jobs in `state` and merges them into one
/// page, newest first. A hub that does not answer within `timeout` is named in
/// [`JobsPage::unanswered`] rather than failing the whole list.
pub async fn cluster_jobs(
    state: Option<JobState>,
    offset: usize,
    limit: usize,
    timeout: std::time::Duration,
) -> JobsPage {
    use crate::protocol::{
        event_hub_group, first_member, node_of_event_hub_group, EventHubMessage,
    };
    use crate::wire::Wire;
    let hubs = ractor::pg::which_groups()
        .into_iter()
        .filter_map(|g| node_of_event_hub_group(&g).map(str::to_string))
        .filter_map(|node| {
            first_member::<EventHubMessage>(&event_hub_group(&node)).map(|h| (node, h))
        });
    let query = JobQuery {
        state,
        limit: offset.saturating_add(limit),
    };
    let asks = hubs.map(|(node, hub)| {
        let q = query.clone();
        async move {
            let r = hub
                .call(
                    |reply| EventHubMessage::ListJobs(Wire::new(q), reply),
                    Some(timeout),
                )
                .await;
            match r {
                Ok(ractor::rpc::CallResult::Success(w)) => w.into_inner().map_err(|_| node),
                _ => Err(node),
            }
        }
    });
    let mut page = JobsPage {
        offset,
        limit,
        ..Default::default()
    };
    let mut all = Vec::new();
    for r in futures::future::join_all(asks).await {
        match r {
            Ok(list) => {
                page.total += list.total;
                for (k, n) in list.by_state {
                    *page.by_state.entry(k).or_insert(0) += n;
                }
                all.extend(list.jobs);
            }
            Err(node) => page.unanswered.push(node),
        }
    }
    all.sort_by(newest_first);
    page.jobs = all.into_iter().skip(offset).take(limit).collect();
    page
}
