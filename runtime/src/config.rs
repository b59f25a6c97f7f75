//! Node configuration, layered by the `config` crate: defaults < config file <
//! `TROUPE_*` environment variables < command-line flags.
//!
//! Every key is documented in `config/default.toml`, which holds the defaults.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::job::validate::Limits;

/// The cookie used when none is configured. A node using it logs a warning.
pub const DEV_COOKIE: &str = "troupe-dev-cookie";
/// How much lower the task threads' CPU priority is than the node's, unless configured
/// (`task_nice`). Measured on the overhead bench (2 cores, three local nodes): 10 added
/// about 85 us to a 3-step chain's p50 (each hand-over to a task thread waits longer on a
/// busy machine), 5 about 25 us, with calls and steps/s unchanged.
pub const DEFAULT_TASK_NICE: i32 = 5;

/// The most worker slots a node takes (each slot is a thread's share of work and a
/// semaphore permit; far more would only exhaust memory at start).
pub const MAX_SLOTS: usize = 4096;

/// The longest cached result's time to live, ten years (the cache refuses more than a
/// thousand).
pub const MAX_CACHE_TTL_MS: u64 = 10 * 365 * 86_400_000;
/// The address a node listens on unless told otherwise (and where clients look first).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7340";

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// When a node answers a submission: how durable a job is once its id is returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalAck {
    /// At once: the fastest; a crash of the owner within one commit window (10 ms) of
    /// the answer can lose the job.
    None,
    /// Once the job's start is committed to the owner's journal (one `fdatasync` of its
    /// log): a restart of the owner resumes it.
    Local,
    /// Once one replica holds the job's start in memory and the owner has it queued for
    /// its next group commit (both commit it within one commit window, 10 ms): a round
    /// trip, no disk flush. The job survives the crash or permanent loss of any one node;
    /// the owner and that replica crashing within the same window can lose it. With no
    /// replica up (or none answering within a second) it is answered as `local`.
    #[default]
    Copied,
    /// Once the job's start is on the owner's disk and on one replica's (one `fdatasync`
    /// of each one's log, in parallel): survives the crash of both at once, at the cost of
    /// a round trip and the slower of the two syncs. With no replica up (or none
    /// answering within a second) it is answered as `local`.
    Synced,
}

/// Which tokio runtime a node runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeFlavor {
    /// One thread: the lowest latency per step on small machines (on the 2-core build
    /// machine the multi-thread runtime added 50-130 us per step).
    #[default]
    CurrentThread,
    /// A thread per core.
    MultiThread,
}

/// OTP-style restart intensity: more than `max_restarts` restarts of system actors within
/// `window_ms` and the node stops instead of looping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartConfig {
    /// Restarts allowed in the window.
    pub max_restarts: u32,
    /// The window, in milliseconds.
    pub window_ms: u64,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window_ms: 10_000,
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// Unique name of the node in its cluster.
    pub name: String,
    /// `HOST:PORT` to listen on for peers and clients.
    pub listen: String,
    /// `HOST:PORT` peers dial to reach this node; defaults to `listen`.
    pub advertise: Option<String>,
    /// `HOST:PORT` of nodes to join through. Start order does not matter.
    pub seeds: Vec<String>,
    /// Shared secret of the cluster.
    pub cookie: String,
    /// A file holding the cookie (its first line); overrides `cookie`.
    pub cookie_file: Option<PathBuf>,
    /// This node's certificate (PEM): with `tls_key` and `tls_ca`, turns on mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// The CA certificate (PEM) that every peer's and client's certificate must be signed by.
    pub tls_ca: Option<PathBuf>,
    /// Tasks run at once; 0 means the number of cores.
    pub slots: usize,
    /// How much lower than the node's own the CPU priority of the threads running tasks
    /// is (a nice increment, 0 to 19; 0 runs them at the node's priority). Higher keeps
    /// the node's heartbeats and API prompt beside CPU-bound tasks; each hand-over to a
    /// task thread may wait a little longer on a busy machine.
    pub task_nice: i32,
    /// Where the node keeps its journal (used by durable jobs).
    pub data: Option<PathBuf>,
    /// `HOST:PORT` of the HTTP API, metrics and dashboard; off when unset.
    pub http: Option<String>,
    /// `HOST:PORT` where the node serves the Gearman protocol (binary and admin); off
    /// when unset. Gearman's usual port is 4730.
    pub gearman: Option<String>,
    /// Networks besides loopback (`10.0.0.0/8`, or one address such as `192.168.1.5`)
    /// whose peers may send the Gearman admin commands that change state (`shutdown`,
    /// `maxqueue`, `cancel job`, `create function`, `drop function`); empty, the
    /// default, means from this machine only. The port has no authentication.
    pub gearman_admin_from: Vec<String>,
    /// Journal Gearman foreground jobs (`SUBMIT_JOB*` without `_BG`) like any other job.
    /// Off by default: such a job's result has one way back, the client's connection to
    /// the node that owns the job, and the crash that would make a copy useful closes
    /// that connection (gearmand keeps them in memory for the same reason). Background
    /// jobs and jobs with a unique id are journaled either way.
    pub gearman_journal_foreground: bool,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// `current_thread` or `multi_thread`.
    pub runtime: RuntimeFlavor,
    /// A connection that has not passed the cookie handshake after this long is closed.
    pub handshake_timeout_ms: u64,
    /// How long a submission waits for a worker group of an unknown task.
    pub task_wait_ms: u64,
    /// Period of membership work: re-dialling seeds and peers, gossip.
    pub gossip_interval_ms: u64,
    /// On SIGTERM, how long the node lets its running attempts (and the jobs it owns)
    /// finish before it hands the rest back and stops.
    pub drain_timeout_ms: u64,
    /// Journal the jobs this node owns in `data` (redb), so that they resume when the node
    /// restarts.
    pub journal: bool,
    /// Copies of each job's journal kept on other nodes (the next live nodes in the job
    /// id's rendezvous order), so that another node can take the job over when its owner
    /// is gone for good. 0: none (a job then waits for its owner to come back).
    pub journal_replicas: usize,
    /// When a submission is answered: `copied` (a replica holds it, the owner queued it),
    /// `local` (the owner's disk) or `none` (at once).
    pub journal_ack: JournalAck,
    /// How long the journal gathers writes nobody waits for before a group commit, in
    /// ms: the window a crash can lose (steps then run again; with `copied`, a job whose
    /// start the owner lost is taken over from its replica).
    pub journal_commit_window_ms: u64,
    /// Largest message accepted from a peer, in bytes.
    pub max_message_bytes: u64,
    /// Connections (peers, clients, and ones still in their handshake) open at once;
    /// more are closed as soon as they open.
    pub max_connections: usize,
    /// Connections in their handshake at once; a new one beyond this closes the oldest.
    pub max_pending_handshakes: usize,
    /// Finished jobs whose status the node keeps in memory.
    pub retain_finished_jobs: usize,
    /// Restart intensity of the node's supervisor.
    pub restart: RestartConfig,
    /// Bounds on what one job may grow to.
    pub limits: Limits,
    /// The result cache of pure tasks (held by each key's owner node).
    pub cache: CacheConfig,
    /// How a node orders the attempts that wait for its worker slots.
    pub scheduling: SchedulingConfig,
    /// Limits on the attempts of single tasks (for work that hits a fragile service).
    /// Set the same limits on every node: cluster-wide figures are divided among the
    /// nodes that serve the task.
    pub task_limits: Vec<TaskLimit>,
    /// Admission of new jobs under overload.
    pub admission: AdmissionConfig,
    /// When a peer that stopped talking counts as suspect, then down.
    pub failure: FailureConfig,
    /// The core group: the nodes that run Raft to decide who owns a job after its owner
    /// is gone.
    pub core: CoreConfig,
    /// The node's hosting of user actors.
    pub actors: ActorsConfig,
}

/// How a node hosts keyed actors (see [`crate::actor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActorsConfig {
    /// An activation that handled no message for this long is deactivated (its state is
    /// saved already; the next message activates it again).
    pub idle_ms: u64,
    /// Restarts (handler failures and panics) an activation may make within
    /// `restart_window_ms`; one more stops it for `stopped_for_ms`.
    pub max_restarts: u32,
    /// The window of `max_restarts`.
    pub restart_window_ms: u64,
    /// How long an actor stopped by too many restarts refuses messages.
    pub stopped_for_ms: u64,
}

impl Default for ActorsConfig {
    fn default() -> Self {
        Self {
            idle_ms: 300_000,
            max_restarts: 3,
            restart_window_ms: 10_000,
            stopped_for_ms: 30_000,
        }
    }
}

/// The core group (Raft, on up to five nodes). It decides what must be unique in the
/// cluster: which node takes a job over once its owner has been down for
/// `failure.takeover_after_ms`. The data path never waits on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    /// Names of the core nodes (at most 5). Empty: the first `size` nodes by name that the
    /// smallest-named node sees once `size` nodes are up (set the names on a production
    /// cluster: two nodes that start apart could each form a core of their own).
    pub nodes: Vec<String>,
    /// How many nodes an automatically formed core has (1 to 5).
    pub size: usize,
    /// A voter of an automatically formed core that stays down this long is replaced by a
    /// live node that does not vote, if the group still has its majority (sooner: a node
    /// restarting slowly loses its vote; later: a second loss meanwhile stops decisions).
    pub replace_after_ms: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            size: 3,
            replace_after_ms: 30_000,
        }
    }
}

/// The failure detector's deadlines. Every node tells every peer its state each
/// `gossip_interval_ms`; a connected peer not heard from for `suspect_after_ms` is
/// suspect, for `down_after_ms` down: its connections are closed and its work goes
/// elsewhere (ractor_cluster never times out a silent connection by itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailureConfig {
    /// Silence after which a peer is suspect (logged, shown in `nodes`).
    pub suspect_after_ms: u64,
    /// Silence after which a peer is down.
    pub down_after_ms: u64,
    /// How long a job's owner stays down before a node holding a copy of its journal
    /// takes the job over (decided by the core group).
    pub takeover_after_ms: u64,
    /// The least wait between ractor_cluster's keep-alive pings on each connection (each
    /// wait is drawn from this to twice this; 0: no pings). They detect nothing (the
    /// probes above do), and in a full mesh their cost grows with the cluster.
    pub session_ping_ms: u64,
}

impl Default for FailureConfig {
    fn default() -> Self {
        Self {
            suspect_after_ms: 1_000,
            down_after_ms: 2_000,
            takeover_after_ms: 10_000,
            session_ping_ms: crate::cluster::DEFAULT_SESSION_PING_MS,
        }
    }
}

/// When a node refuses new jobs because too much work waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Attempts waiting for a worker slot in the whole cluster (this node's and its peers'
    /// as last gossiped) at which a node refuses new jobs with "overloaded, retry after";
    /// 0: no limit. Steps of jobs already accepted are never refused.
    pub max_waiting_steps: usize,
    /// The retry delay the refusal gives.
    pub retry_after_ms: u64,
    /// Admission by waiting time, per class (high, normal, low): when even the
    /// shortest wait of a class's new work for a slot stayed above its target for
    /// `wait_interval_ms` (a standing queue, CoDel's rule), new jobs of that class and
    /// of every lower one are refused "overloaded, retry after" until the queue drains
    /// below it. Higher targets for higher classes refuse high jobs last; 0 turns the
    /// rule off for a class.
    pub wait_target_ms: [u64; 3],
    /// How long waits must stay above target before refusals start (CoDel's interval).
    pub wait_interval_ms: u64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_waiting_steps: 100_000,
            retry_after_ms: 200,
            wait_target_ms: [500, 100, 50],
            wait_interval_ms: 100,
        }
    }
}

/// Limits on one task's attempts (`[[task_limits]]` in a config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskLimit {
    /// The task.
    pub task: String,
    /// Attempts running at once on this node.
    #[serde(default)]
    pub max_per_node: Option<usize>,
    /// Attempts running at once in the whole cluster: each of the n nodes serving the
    /// task runs at most its share (max / n, the remainder to the first nodes by name,
    /// at least 1).
    #[serde(default)]
    pub max_in_cluster: Option<usize>,
    /// Attempts started per second in the whole cluster (a token bucket per node with
    /// rate / n, holding at most one second of tokens).
    #[serde(default)]
    pub rate_per_s: Option<f64>,
}

/// How a node orders the attempts waiting for its worker slots (the scheduler's lanes in
/// `troupe-actors`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LanePolicy {
    /// Lanes by stage (continuing work before new work) and job class, the classes of a
    /// stage sharing by weight.
    #[default]
    Priority,
    /// Arrival order only.
    Fifo,
}

/// How a node's dispatcher chooses the node of an attempt (the scheduler's placement in
/// `troupe-actors`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementMode {
    /// Home first, then the node with the most room; nothing pushed into full nodes.
    #[default]
    Pull,
    /// Every attempt to the next node in turn, full or not (the baseline benchmarks
    /// compare against).
    RoundRobin,
}

/// The order of waiting work and where attempts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulingConfig {
    /// `priority` (continuing work before new work; within each, the classes share the
    /// slots by `weights`) or `fifo` (arrival order).
    pub policy: LanePolicy,
    /// The shares of the slots of high, normal and low work while each has work waiting
    /// (each at least 1): 8:4:1 gives a flooded low class 1/13 of them, and a high job
    /// the next free slot whatever waits.
    pub weights: [u32; 3],
    /// No effect: accepted so that configuration files of releases that promoted waiting
    /// work by age still load (classes now share by `weights`).
    pub aging_ms: u64,
    /// Attempts a dispatcher may send to a node beyond its free slots, so that a worker
    /// has its next attempt at hand when it finishes one (a node has room while its
    /// running and queued attempts are fewer than its slots plus this).
    pub prefetch: u32,
    /// The time of work, in microseconds, a node may be sent beyond its slots: its prefetch
    /// is as many attempts as its slots run in this time at the mean slot time of its
    /// recent attempts, between `prefetch` and `prefetch_max` (0: always `prefetch`).
    pub prefetch_us: u64,
    /// The most attempts a node may be sent beyond its slots, however short they are.
    pub prefetch_max: u32,
    /// `pull` (only to nodes with room, home first) or `round_robin` (push to each node
    /// in turn).
    pub placement: PlacementMode,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        Self {
            policy: LanePolicy::Priority,
            weights: [8, 4, 1],
            aging_ms: 1_000,
            prefetch: 1,
            prefetch_us: 1_000,
            prefetch_max: 16,
            placement: PlacementMode::Pull,
        }
    }
}

/// Size and age bounds of the result cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes of cached results (their JSON size) a node keeps at most.
    pub max_bytes: u64,
    /// How long a result stays cached, in milliseconds.
    pub ttl_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            ttl_ms: 600_000,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            listen: DEFAULT_LISTEN.into(),
            advertise: None,
            seeds: Vec::new(),
            cookie: DEV_COOKIE.into(),
            cookie_file: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            slots: 0,
            task_nice: crate::config::DEFAULT_TASK_NICE,
            data: None,
            http: None,
            gearman: None,
            gearman_admin_from: Vec::new(),
            gearman_journal_foreground: false,
            log_format: LogFormat::Text,
            runtime: RuntimeFlavor::CurrentThread,
            handshake_timeout_ms: 5_000,
            task_wait_ms: 2_000,
            gossip_interval_ms: 500,
            drain_timeout_ms: 30_000,
            journal: true,
            journal_replicas: 1,
            journal_ack: JournalAck::Copied,
            journal_commit_window_ms: 10,
            max_message_bytes: 16 * 1024 * 1024,
            max_connections: 4096,
            max_pending_handshakes: 64,
            retain_finished_jobs: 10_000,
            restart: RestartConfig::default(),
            limits: Limits::default(),
            cache: CacheConfig::default(),
            scheduling: SchedulingConfig::default(),
            task_limits: Vec::new(),
            admission: AdmissionConfig::default(),
            failure: FailureConfig::default(),
            core: CoreConfig::default(),
            actors: ActorsConfig::default(),
        }
    }
}

/// A configuration that cannot be loaded or makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layered sources did not merge into a valid configuration.
    #[error("invalid configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is out of range or malformed.
    #[error("invalid configuration: {key}: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl NodeConfig {
    /// Loads the layers: defaults, then `file` (if any), then `TROUPE_*` variables, then
    /// `flags` (key, value) pairs; then fills derived defaults and checks values.
    pub fn load(
        file: Option<&std::path::Path>,
        flags: &[(&str, config::Value)],
    ) -> Result<Self, ConfigError> {
        let mut b =
            config::Config::builder().add_source(config::Config::try_from(&NodeConfig::default())?);
        if let Some(f) = file {
            check_keys(f)?;
            b = b.add_source(config::File::from(f.to_path_buf()).required(true));
        }
        b = b.add_source(
            config::Environment::with_prefix("TROUPE")
                .prefix_separator("_")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("seeds")
                .with_list_parse_key("gearman_admin_from")
                .with_list_parse_key("scheduling.weights")
                .with_list_parse_key("admission.wait_target_ms")
                .try_parsing(true),
        );
        for (k, v) in flags {
            b = b.set_override(*k, v.clone())?;
        }
        let mut c: NodeConfig = b.build()?.try_deserialize()?;
        c.finish()?;
        Ok(c)
    }

    /// Whether a Gearman admin peer at `ip` may send commands that change state: it is on
    /// this machine or in one of [`gearman_admin_from`](Self::gearman_admin_from).
    pub fn gearman_admin_allows(&self, ip: std::net::IpAddr) -> bool {
        ip.is_loopback()
            || self
                .gearman_admin_from
                .iter()
                .filter_map(|n| admin_network(n).ok())
                .any(|n| n.contains(&ip))
    }

    /// Fills derived defaults and checks values.
    pub fn finish(&mut self) -> Result<(), ConfigError> {
        let listen = self.listen_addr()?;
        if self.name.is_empty() {
            self.name = format!("node-{}", listen.port());
        }
        if !self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::Invalid {
                key: "name",
                message: format!(
                    "{:?}: use ASCII letters, digits, '-' and '_' only",
                    self.name
                ),
            });
        }
        if !(0..=19).contains(&self.task_nice) {
            return Err(ConfigError::Invalid {
                key: "task_nice",
                message: format!("{}: use 0 (off) to 19", self.task_nice),
            });
        }
        if self.slots > MAX_SLOTS {
            return Err(ConfigError::Invalid {
                key: "slots",
                message: format!("{}: use 1 to {MAX_SLOTS} (0: one per core)", self.slots),
            });
        }
        if self.cache.ttl_ms > MAX_CACHE_TTL_MS {
            return Err(ConfigError::Invalid {
                key: "cache.ttl_ms",
                message: format!(
                    "{}: use at most {MAX_CACHE_TTL_MS} (ten years)",
                    self.cache.ttl_ms
                ),
            });
        }
        if self.slots == 0 {
            self.slots = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2);
        }
        self.seeds.retain(|s| !s.trim().is_empty());
        // Seeds and the advertised address may be DNS names that do not resolve yet (a
        // peer's pod being rescheduled): only their form is checked here; membership
        // resolves them when it dials.
        for s in &mut self.seeds {
            *s = normalize_host_port(s).map_err(|m| ConfigError::Invalid {
                key: "seeds",
                message: m,
            })?;
        }
        if let Some(a) = &mut self.advertise {
            *a = normalize_host_port(a).map_err(|m| ConfigError::Invalid {
                key: "advertise",
                message: m,
            })?;
        }
        if let Some(h) = &self.http {
            resolve(h).map_err(|m| ConfigError::Invalid {
                key: "http",
                message: m,
            })?;
        }
        let f = self.failure;
        if f.suspect_after_ms <= self.gossip_interval_ms || f.down_after_ms <= f.suspect_after_ms {
            return Err(ConfigError::Invalid {
                key: "failure",
                message: format!(
                    "need gossip_interval_ms ({}) < failure.suspect_after_ms ({}) < failure.down_after_ms ({}): a peer is heard from once per gossip interval",
                    self.gossip_interval_ms, f.suspect_after_ms, f.down_after_ms
                ),
            });
        }
        if self.core.nodes.len() > 5 || !(1..=5).contains(&self.core.size) {
            return Err(ConfigError::Invalid {
                key: "core",
                message: format!(
                    "a core group has 1 to 5 nodes (core.nodes names {}, core.size is {}): more only slows its decisions",
                    self.core.nodes.len(),
                    self.core.size
                ),
            });
        }
        for l in &self.task_limits {
            let bad = l.task.is_empty()
                || l.max_per_node == Some(0)
                || l.max_in_cluster == Some(0)
                || l.rate_per_s.is_some_and(|r| !(r > 0.0 && r.is_finite()));
            if bad {
                return Err(ConfigError::Invalid {
                    key: "task_limits",
                    message: format!(
                        "{:?}: a limit names its task and its figures are above 0",
                        l.task
                    ),
                });
            }
        }
        if let Some(g) = &self.gearman {
            resolve(g).map_err(|m| ConfigError::Invalid {
                key: "gearman",
                message: m,
            })?;
        }
        if self.scheduling.weights.contains(&0) {
            return Err(ConfigError::Invalid {
                key: "scheduling.weights",
                message: format!(
                    "{:?}: the shares of high, normal and low work are each at least 1 (for example [8, 4, 1])",
                    self.scheduling.weights
                ),
            });
        }
        let adm = self.admission;
        if adm.wait_target_ms.iter().any(|&t| t > 0) && adm.wait_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "admission.wait_interval_ms",
                message: "0: waits must stay above admission.wait_target_ms for some time \
                          before new jobs are refused (for example 100), or set the targets \
                          to 0 to turn admission by waiting time off"
                    .into(),
            });
        }
        self.gearman_admin_from.retain(|s| !s.trim().is_empty());
        for n in &self.gearman_admin_from {
            admin_network(n).map_err(|m| ConfigError::Invalid {
                key: "gearman_admin_from",
                message: m,
            })?;
        }
        if let Some(f) = &self.cookie_file {
            self.cookie = read_cookie_file(f).map_err(|m| ConfigError::Invalid {
                key: "cookie_file",
                message: m,
            })?;
        }
        if self.cookie.is_empty() {
            return Err(ConfigError::Invalid {
                key: "cookie",
                message: "must not be empty".into(),
            });
        }
        self.tls_files()?;
        Ok(())
    }

    /// How long a connection may take over its handshakes (TLS, then the cookie).
    pub fn handshake_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.handshake_timeout_ms.max(1))
    }

    /// The TLS files, if TLS is on (all three of `tls_cert`, `tls_key`, `tls_ca` set).
    pub fn tls_files(&self) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
        crate::tls::TlsFiles::from_parts(
            self.tls_cert.clone(),
            self.tls_key.clone(),
            self.tls_ca.clone(),
        )
        .map_err(|e| ConfigError::Invalid {
            key: "tls",
            message: e.to_string(),
        })
    }

    /// The socket address to listen on.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        resolve(&self.listen).map_err(|m| ConfigError::Invalid {
            key: "listen",
            message: m,
        })
    }

    /// The address peers dial, as `HOST:PORT`: `advertise` (a DNS name stays a name, so
    /// that peers resolve it when they dial and follow a pod that moved), else `listen`
    /// (an unspecified listen IP becomes 127.0.0.1).
    pub fn advertised(&self) -> Result<String, ConfigError> {
        if let Some(a) = &self.advertise {
            return normalize_host_port(a).map_err(|m| ConfigError::Invalid {
                key: "advertise",
                message: m,
            });
        }
        let mut a = self.listen_addr()?;
        if a.ip().is_unspecified() {
            a.set_ip(IpAddr::from([127, 0, 0, 1]));
        }
        Ok(a.to_string())
    }

    /// Where the node's journal lives.
    pub fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(std::env::temp_dir)
                .join("troupe")
                .join(&self.name)
        })
    }
}

/// The configuration's keys, from the defaults (so a new key is never missing): each
/// top-level key with the keys of its table, if it is one (`failure` has `down_after_ms`).
fn known_keys() -> Vec<(String, Vec<String>)> {
    let Ok(serde_json::Value::Object(top)) = serde_json::to_value(NodeConfig::default()) else {
        return Vec::new();
    };
    top.into_iter()
        .map(|(k, v)| {
            let sub = match v {
                serde_json::Value::Object(m) => m.into_iter().map(|(k, _)| k).collect(),
                _ => Vec::new(),
            };
            (k, sub)
        })
        .collect()
}

/// Refuses a key the configuration does not have: serde's message would not name the
/// file, nor list the keys there are.
fn check_keys(path: &std::path::Path) -> Result<(), ConfigError> {
    let is_toml = path.extension().is_none_or(|e| e == "toml");
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(()); // the config crate reports the read error with the path
    };
    if !is_toml {
        return Ok(());
    }
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        key: "config",
        message: format!("{} is not valid TOML: {e}", path.display()),
    })?;
    let known = known_keys();
    for (k, v) in &table {
        let Some((_, sub)) = known.iter().find(|(name, _)| name == k) else {
            let names: Vec<&str> = known.iter().map(|(n, _)| n.as_str()).collect();
            return Err(ConfigError::Invalid {
                key: "config",
                message: format!(
                    "unknown key `{k}` in {}; known keys: {}",
                    path.display(),
                    names.join(", ")
                ),
            });
        };
        if sub.is_empty() {
            continue;
        }
        if let Some(bad) = v
            .as_table()
            .and_then(|t| t.keys().find(|k| !sub.contains(k)).cloned())
        {
            return Err(ConfigError::Invalid {
                key: "config",
                message: format!(
                    "unknown key `{k}.{bad}` in {}; `{k}` has: {}",
                    path.display(),
                    sub.join(", ")
                ),
            });
        }
    }
    // Values too, by serde on this file alone: its message names the choices of a key
    // with fixed values and the line, where the merged layers' would name neither.
    if let Err(e) = toml::from_str::<NodeConfig>(&text) {
        return Err(ConfigError::Invalid {
            key: "config",
            message: format!("{}: {e}", path.display()),
        });
    }
    Ok(())
}

/// A network of `gearman_admin_from`: CIDR, or one address (a /32 or /128).
fn admin_network(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            format!("{s:?} is not a network: write CIDR (10.0.0.0/8) or an address (192.168.1.5)")
        })
}

/// Variables named `TROUPE_*` that are not settings (nor the client's and tests' own
/// variables): a typo there would otherwise be ignored in silence.
pub fn unknown_env_vars(vars: impl IntoIterator<Item = String>) -> Vec<String> {
    /// Variables read elsewhere: the command line's, and the test harness's.
    const OTHERS: &[&str] = &[
        "CONFIG",
        "COOKIE_FILE",
        "TLS_CERT",
        "TLS_KEY",
        "TLS_CA",
        "NODE_BIN",
        "TEST_WIRE_VERSION",
        "TEST_RECORD_WIRE",
    ];
    let known = known_keys();
    vars.into_iter()
        .filter_map(|var| {
            let rest = var.strip_prefix("TROUPE_")?;
            if OTHERS.contains(&rest) {
                return None;
            }
            let lower = rest.to_ascii_lowercase();
            let (top, sub) = match lower.split_once("__") {
                Some((t, s)) => (t, Some(s)),
                None => (lower.as_str(), None),
            };
            let ok = known.iter().any(|(k, subs)| {
                k == top
                    && match sub {
                        None => true,
                        Some(s) => subs.iter().any(|x| x == s),
                    }
            });
            (!ok).then_some(var)
        })
        .collect()
}

/// Reads a cookie from the first line of `path` (trimmed). Says why not, without ever
/// including the file's content. Warns if others may read the file.
pub fn read_cookie_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the cookie file {}: {e}", path.display()))?;
    let cookie = text.lines().next().unwrap_or_default().trim().to_string();
    if cookie.is_empty() {
        return Err(format!("the cookie file {} is empty", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    "the cookie file can be read by other users; chmod 600 it"
                );
            }
        }
    }
    Ok(cookie)
}

/// Resolves `HOST:PORT` to one socket address.
pub fn resolve(s: &str) -> Result<SocketAddr, String> {
    // A blocking lookup: for addresses this node binds, read once at start.
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?} is not a HOST:PORT address: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// Checks that `s` is `HOST:PORT` without resolving it: an IP address comes back in its
/// canonical form (`[::1]:7340`), a DNS name lowercased. For seeds and `advertise`, which
/// may name hosts that do not exist yet.
pub fn normalize_host_port(s: &str) -> Result<String, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a.to_string());
    }
    let bad = |why: &str| format!("{s:?} is not a HOST:PORT address: {why}");
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| bad("no :PORT (a node's cluster port is 7340 by default)"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad(&format!("port {port:?} is not a number from 1 to 65535")))?;
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(bad(&format!(
            "{host:?} is neither an IP address nor a DNS name"
        )));
    }
    Ok(format!("{}:{port}", host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gearman admin commands that change state come from loopback, or from the networks
    /// configured; a value that is not a network is refused at start, naming the key.
    #[test]
    fn gearman_admin_from_takes_networks_and_addresses() {
        let mut c = NodeConfig {
            gearman_admin_from: vec!["10.1.0.0/16".into(), "192.168.1.5".into(), " ".into()],
            ..NodeConfig::default()
        };
        c.finish().expect("valid");
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        assert!(c.gearman_admin_allows(ip("127.0.0.1")) && c.gearman_admin_allows(ip("::1")));
        assert!(c.gearman_admin_allows(ip("10.1.200.3")));
        assert!(c.gearman_admin_allows(ip("192.168.1.5")));
        assert!(!c.gearman_admin_allows(ip("192.168.1.6")));
        assert!(!c.gearman_admin_allows(ip("10.2.0.1")));
        assert!(!NodeConfig::default().gearman_admin_allows(ip("10.1.0.1")));
        c.gearman_admin_from = vec!["10.0.0.0/33".into()];
        let e = c.finish().expect_err("not a network").to_string();
        assert!(
            e.contains("gearman_admin_from") && e.contains("CIDR"),
            "{e}"
        );
    }

    #[test]
    fn seeds_and_advertise_may_be_names_that_do_not_resolve_yet() {
        assert_eq!(
            normalize_host_port("troupe-2.troupe.default.svc:7340").as_deref(),
            Ok("troupe-2.troupe.default.svc:7340")
        );
        assert_eq!(normalize_host_port(" Node-B:1 ").as_deref(), Ok("node-b:1"));
        assert_eq!(
            normalize_host_port("[::1]:7340").as_deref(),
            Ok("[::1]:7340")
        );
        assert_eq!(
            normalize_host_port("127.0.0.1:9").as_deref(),
            Ok("127.0.0.1:9")
        );
        for bad in [
            "host",
            "host:",
            "host:0",
            "host:99999",
            ":7340",
            "a b:1",
            "-x:1",
            "::1:x",
        ] {
            assert!(normalize_host_port(bad).is_err(), "{bad:?} accepted");
        }
        let mut c = NodeConfig {
            seeds: vec!["no-such-host.invalid:7340".into()],
            advertise: Some("me.invalid:7340".into()),
            ..NodeConfig::default()
        };
        c.finish().expect("names are not resolved at start");
        assert_eq!(c.advertised().as_deref().ok(), Some("me.invalid:7340"));
        c.seeds = vec!["no-port".into()];
        let e = c.finish().expect_err("a seed without a port").to_string();
        assert!(e.contains("seeds") && e.contains("no :PORT"), "{e}");
    }

    #[test]
    fn layers_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("troupe-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("node.toml");
        std::fs::write(
            &f,
            "name = \"from-file\"\nslots = 3\nseeds = [\"127.0.0.1:1\"]\n[restart]\nmax_restarts = 9\n",
        )
        .unwrap();
        // The environment is process-wide; this is the only test that sets TROUPE_ vars.
        std::env::set_var("TROUPE_SLOTS", "4");
        std::env::set_var("TROUPE_SEEDS", "127.0.0.1:2,127.0.0.1:3");
        let c = NodeConfig::load(Some(&f), &[("name", "from-flag".into())]).unwrap();
        std::env::remove_var("TROUPE_SLOTS");
        std::env::remove_var("TROUPE_SEEDS");
        assert_eq!(c.name, "from-flag");
        assert_eq!(c.slots, 4);
        assert_eq!(c.seeds, vec!["127.0.0.1:2", "127.0.0.1:3"]);
        assert_eq!(c.restart.max_restarts, 9);
        assert_eq!(c.task_wait_ms, NodeConfig::default().task_wait_ms);

        let typo = dir.join("typo.toml");
        std::fs::write(&typo, "slotz = 3\n").unwrap();
        let e = NodeConfig::load(Some(&typo), &[]).unwrap_err().to_string();
        assert!(e.contains("unknown key `slotz`"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every key of the documented config file is known (the list comes from the
    /// defaults); a typo in a table names the table's keys; a bad value of a key with
    /// fixed choices names the choices and the file; an unknown `TROUPE_*` variable is
    /// found, a setting's or the client's is not.
    #[test]
    fn keys_values_and_variables_that_are_not_settings() {
        let documented = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/default.toml");
        NodeConfig::load(Some(std::path::Path::new(documented)), &[]).unwrap();

        let dir = std::env::temp_dir().join(format!("troupe-cfg-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("node.toml");
        std::fs::write(&f, "task_nice = 3\n[failure]\ndown_after = 1\n").unwrap();
        let e = NodeConfig::load(Some(&f), &[]).unwrap_err().to_string();
        assert!(e.contains("unknown key `failure.down_after`"), "{e}");
        assert!(
            e.contains("down_after_ms") && e.contains("node.toml"),
            "{e}"
        );
        std::fs::write(&f, "journal_ack = \"fast\"\n").unwrap();
        let e = NodeConfig::load(Some(&f), &[]).unwrap_err().to_string();
        assert!(e.contains("copied") && e.contains("synced"), "{e}");
        assert!(e.contains("node.toml"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);

        let vars = [
            "TROUPE_SLOTS",
            "TROUPE_SLOTZ",
            "TROUPE_FAILURE__DOWN_AFTER_MS",
            "TROUPE_FAILURE__DOWN_AFTER",
            "TROUPE_COOKIE",
            "TROUPE_TLS_CA",
            "TROUPE_TASK_NICE",
            "TROUPE_NODE_BIN",
            "PATH",
        ]
        .map(String::from);
        assert_eq!(
            unknown_env_vars(vars),
            vec!["TROUPE_SLOTZ", "TROUPE_FAILURE__DOWN_AFTER"]
        );
    }

    #[test]
    fn documented_defaults_match_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/default.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let from_file: NodeConfig = toml::from_str(&text).unwrap();
        assert_eq!(from_file, NodeConfig::default());
    }

    #[test]
    fn rejects_bad_values() {
        let mut c = NodeConfig {
            listen: "nonsense".into(),
            ..Default::default()
        };
        assert!(c.finish().unwrap_err().to_string().contains("listen"));
        let mut c = NodeConfig {
            name: "a b".into(),
            ..Default::default()
        };
        assert!(c.finish().unwrap_err().to_string().contains("name"));
        let mut c = NodeConfig {
            task_nice: 20,
            ..Default::default()
        };
        assert!(c.finish().unwrap_err().to_string().contains("task_nice"));
        // Values that would panic a library at start are refused with the key's name.
        let mut c = NodeConfig {
            slots: MAX_SLOTS + 1,
            ..Default::default()
        };
        assert!(c.finish().unwrap_err().to_string().contains("slots"));
        let mut c = NodeConfig::default();
        c.cache.ttl_ms = u64::MAX;
        assert!(c.finish().unwrap_err().to_string().contains("cache.ttl_ms"));
        let mut c = NodeConfig {
            slots: MAX_SLOTS,
            ..Default::default()
        };
        c.cache.ttl_ms = MAX_CACHE_TTL_MS;
        assert!(c.finish().is_ok());
    }
}
