//! Metric names (Prometheus, all prefixed `troupe_`), in one place so that code, docs and
//! tests agree. A leaf: it imports nothing, so anything that counts (the wire codec too)
//! can name its metrics here.

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
/// Gauge: this node's local health count (0 healthy, up to 8): recent signs that it is
/// the slow one, which stretch its suspect and down times (Lifeguard).
pub const LOCAL_HEALTH: &str = "troupe_membership_local_health";
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
/// tls_timeout, duplicate_name: a second process under a live node's name,
/// closed_by_peer: our connection closed right after the handshake).
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
/// Gauge: the index of the last entry in this node's core-group log (0: none yet).
pub const CORE_LOG_INDEX: &str = "troupe_core_log_index";
/// Gauge: 1 while this node leads the core group, else 0.
pub const CORE_LEADER: &str = "troupe_core_leader";
/// Counter: jobs taken over from an owner that stayed down, by `outcome` (taken,
/// denied, failed).
pub const TAKEOVERS: &str = "troupe_takeovers_total";
/// Counter: journal writes sent to or kept for replicas, by `direction` (out, kept,
/// fenced), and submissions answered without a replica's ack (`ack_timeout`).
pub const REPLICA_WRITES: &str = "troupe_replica_writes_total";
/// Histogram: seconds a journal commit (one durable redb transaction) takes.
pub const JOURNAL_COMMIT_SECONDS: &str = "troupe_journal_commit_seconds";
