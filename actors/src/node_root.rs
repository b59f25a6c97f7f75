//! The root supervisor of a node: starts the system actors and restarts one that fails,
//! one-for-one, under the restart intensity of the configuration. Past the limit it stops
//! and the node process exits: a node that cannot keep its actors up should not pretend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;
use troupe_runtime::cluster::{start_server, ServerOptions};
use troupe_runtime::config::NodeConfig;
use troupe_runtime::TaskRegistry;

use crate::dispatcher::Dispatcher;
use crate::event_hub::EventHub;
use crate::gearman::admin::GearmanAdmin;
use crate::gearman::clients::GearmanClients;
use crate::gearman::listener::GearmanListener;
use crate::gearman::workers::GearmanWorkers;
use crate::job_manager::JobManager;
use crate::membership::Membership;
use crate::merger::Merger;
use crate::scheduler::Scheduler;
use crate::supervision::RestartIntensity;
use crate::tls_listener::TlsListener;
use crate::worker_pool::{PendingCalls, WorkerPool};
use crate::{locked, names, ClusterView, NodeContext};

/// The system actors the root supervises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Child {
    /// ractor_cluster's node server.
    NodeServer,
    /// [`TlsListener`], only when the node uses TLS.
    TlsListener,
    /// [`WorkerPool`].
    WorkerPool,
    /// [`Dispatcher`].
    Dispatcher,
    /// [`EventHub`].
    EventHub,
    /// [`crate::core::Core`], the node's member of the core group.
    Core,
    /// [`JobManager`].
    JobManager,
    /// [`Merger`].
    Merger,
    /// [`crate::actor_host::ActorHost`].
    ActorHost,
    /// [`Membership`].
    Membership,
    /// [`GearmanWorkers`], only with `--gearman`.
    GearmanWorkers,
    /// [`GearmanClients`], only with `--gearman`.
    GearmanClients,
    /// [`GearmanAdmin`], only with `--gearman`.
    GearmanAdmin,
    /// [`GearmanListener`], only with `--gearman`.
    GearmanListener,
}

impl Child {
    /// Start order: transport first, membership (which dials peers) last.
    /// (The TLS listener binds the node's address before the node server binds its
    /// ephemeral loopback port, so that one cannot take the other's.)
    pub(crate) const ALL: [Child; 14] = [
        Child::TlsListener,
        Child::NodeServer,
        Child::WorkerPool,
        Child::Dispatcher,
        Child::EventHub,
        Child::Core,
        Child::JobManager,
        Child::Merger,
        Child::ActorHost,
        Child::Membership,
        Child::GearmanWorkers,
        Child::GearmanClients,
        Child::GearmanAdmin,
        Child::GearmanListener,
    ];

    /// Whether the node runs this child (the TLS listener only with TLS, the Gearman
    /// front door only with `--gearman`).
    pub(crate) fn runs_on(self, ctx: &NodeContext) -> bool {
        match self {
            Child::TlsListener => ctx.tls.is_some(),
            Child::GearmanWorkers
            | Child::GearmanClients
            | Child::GearmanAdmin
            | Child::GearmanListener => ctx.config.gearman.is_some(),
            _ => true,
        }
    }

    /// The registered name of the child.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Child::NodeServer => names::NODE_SERVER,
            Child::TlsListener => names::TLS_LISTENER,
            Child::WorkerPool => names::WORKER_POOL,
            Child::Dispatcher => names::DISPATCHER,
            Child::EventHub => names::EVENT_HUB,
            Child::JobManager => names::JOB_MANAGER,
            Child::Core => names::CORE,
            Child::Merger => names::MERGER,
            Child::ActorHost => names::ACTOR_HOST,
            Child::Membership => names::MEMBERSHIP,
            Child::GearmanWorkers => names::GEARMAN_WORKERS,
            Child::GearmanClients => names::GEARMAN_CLIENTS,
            Child::GearmanAdmin => names::GEARMAN_ADMIN,
            Child::GearmanListener => names::GEARMAN_LISTENER,
        }
    }
}

/// Messages of the root supervisor.
#[derive(RactorMessage)]
pub enum NodeRootMessage {
    /// How many restarts the root has made.
    Restarts(RpcReplyPort<u64>),
}

/// The root supervisor.
pub struct NodeRoot;

/// State of the root supervisor.
pub struct NodeRootState {
    ctx: NodeContext,
    children: Vec<(Child, ActorCell)>,
    intensity: RestartIntensity,
}

/// Spawns a system actor that takes the node context, linked to the root.
async fn linked<A: Actor<Arguments = NodeContext>>(
    name: Option<String>,
    actor: A,
    ctx: &NodeContext,
    sup: ActorCell,
) -> Result<ActorCell, ActorProcessingErr> {
    Ok(Actor::spawn_linked(name, actor, ctx.clone(), sup)
        .await?
        .0
        .get_cell())
}

async fn spawn_child(
    child: Child,
    ctx: &NodeContext,
    sup: ActorCell,
) -> Result<ActorCell, ActorProcessingErr> {
    let registered = names::of(child.name(), &ctx.config.name);
    let name = Some(registered.clone());
    let cell = match child {
        Child::NodeServer => {
            let c = &ctx.config;
            let advertised = c.advertised()?;
            let listen = c.listen_addr()?;
            // With TLS, the TlsListener owns the node's address; ractor_cluster's own
            // listener (which always binds) goes to an ephemeral loopback port.
            let (bind, port) = match ctx.tls {
                Some(_) => (std::net::Ipv4Addr::LOCALHOST.into(), 0),
                None => (listen.ip(), listen.port()),
            };
            start_server(
                &ServerOptions {
                    name: troupe_runtime::cluster::member_name(&c.name, &ctx.view.incarnation),
                    // Only named in the peer name (`NAME~INC@HOST`): peers dial `advertise`.
                    host: advertised
                        .rsplit_once(':')
                        .map_or(advertised.as_str(), |(h, _)| h)
                        .trim_matches(['[', ']'])
                        .to_string(),
                    bind,
                    port,
                    cookie: c.cookie.clone(),
                    max_frame_bytes: c.max_message_bytes,
                    tls: ctx.tls.clone(),
                    session_ping_ms: c.failure.session_ping_ms,
                },
                Some(&registered),
                Some(sup),
            )
            .await?
            .get_cell()
        }
        Child::TlsListener => linked(name, TlsListener, ctx, sup).await?,
        Child::WorkerPool => linked(name, WorkerPool, ctx, sup).await?,
        Child::Dispatcher => linked(name, Dispatcher, ctx, sup).await?,
        Child::EventHub => linked(name, EventHub, ctx, sup).await?,
        Child::JobManager => linked(name, JobManager, ctx, sup).await?,
        Child::Core => linked(name, crate::core::Core, ctx, sup).await?,
        Child::Merger => linked(name, Merger, ctx, sup).await?,
        Child::ActorHost => linked(name, crate::actor_host::ActorHost, ctx, sup).await?,
        Child::Membership => linked(name, Membership, ctx, sup).await?,
        Child::GearmanWorkers => linked(name, GearmanWorkers, ctx, sup).await?,
        Child::GearmanClients => linked(name, GearmanClients, ctx, sup).await?,
        Child::GearmanAdmin => linked(name, GearmanAdmin, ctx, sup).await?,
        Child::GearmanListener => linked(name, GearmanListener, ctx, sup).await?,
    };
    Ok(cell)
}

impl Actor for NodeRoot {
    type Msg = NodeRootMessage;
    type State = NodeRootState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::new();
        for child in Child::ALL.into_iter().filter(|c| c.runs_on(&ctx)) {
            let cell = spawn_child(child, &ctx, myself.get_cell()).await?;
            children.push((child, cell));
        }
        let r = ctx.config.restart;
        Ok(NodeRootState {
            intensity: RestartIntensity::new(r.max_restarts, Duration::from_millis(r.window_ms)),
            ctx,
            children,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself
            .stop_children_and_wait(
                Some("node shutting down".into()),
                Some(Duration::from_secs(5)),
            )
            .await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeRootMessage::Restarts(reply) => {
                let _ = reply.send(state.intensity.total());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!("stopped: {}", reason.unwrap_or_else(|| "no reason".into())),
            ),
            _ => return Ok(()),
        };
        let Some(pos) = state
            .children
            .iter()
            .position(|(_, c)| c.get_id() == cell.get_id())
        else {
            return Ok(());
        };
        let child = state.children[pos].0;
        if !state.intensity.allow(Instant::now()) {
            tracing::error!(
                actor = child.name(),
                reason = %why,
                max_restarts = state.ctx.config.restart.max_restarts,
                window_ms = state.ctx.config.restart.window_ms,
                "restart intensity exceeded; stopping the node"
            );
            myself.stop(Some(format!(
                "restart intensity exceeded ({} {why})",
                child.name()
            )));
            return Ok(());
        }
        tracing::warn!(actor = child.name(), reason = %why, "system actor ended; restarting it");
        // The registry name is free once the old actor is gone; retry briefly if not yet.
        let mut last_err = None;
        for _ in 0..50 {
            match spawn_child(child, &state.ctx, myself.get_cell()).await {
                Ok(cell) => {
                    state.children[pos].1 = cell;
                    return Ok(());
                }
                Err(e) => {
                    last_err = Some(e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let e = last_err.map(|e| e.to_string()).unwrap_or_default();
        tracing::error!(actor = child.name(), error = %e, "cannot restart system actor; stopping the node");
        myself.stop(Some(format!("cannot restart {}: {e}", child.name())));
        Ok(())
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] troupe_runtime::config::ConfigError),
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {source}. Pick another --listen address")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The Gearman address is taken, not ours, or not an address.
    #[error("cannot listen for Gearman on {addr}: {reason}. Pick another --gearman address")]
    GearmanListen {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The TLS files are not usable.
    #[error(transparent)]
    Tls(#[from] troupe_runtime::tls::TlsError),
    /// An actor failed to start.
    #[error("cannot start the node's actors: {0}")]
    Spawn(String),
    /// The journal cannot be opened.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The core group's store or Raft node cannot be opened.
    #[error("{0}")]
    Core(String),
    /// The data folder belongs to another cluster, or its identity cannot be read.
    #[error(transparent)]
    Identity(#[from] crate::cluster_identity::IdentityError),
    /// The runtime that runs tasks cannot start.
    #[error(transparent)]
    TaskRuntime(#[from] crate::task_runtime::TaskRuntimeError),
}

/// Starts a node: checks the listen address, then spawns the root supervisor and its tree.
/// The returned handle finishes when the root stops.
pub async fn start_node(
    config: NodeConfig,
    registry: TaskRegistry,
) -> Result<(ActorRef<NodeRootMessage>, tokio::task::JoinHandle<()>), StartError> {
    start_node_with_context(config, registry)
        .await
        .map(|(root, done, _)| (root, done))
}

/// [`start_node`], also answering the context the node's actors share (for the HTTP
/// server, which runs beside them).
pub async fn start_node_with_context(
    config: NodeConfig,
    registry: TaskRegistry,
) -> Result<
    (
        ActorRef<NodeRootMessage>,
        tokio::task::JoinHandle<()>,
        NodeContext,
    ),
    StartError,
> {
    let listen = config.listen_addr()?;
    // Bind once up front so that a taken port is a clear error, not a restart loop.
    std::net::TcpListener::bind(listen).map_err(|e| StartError::Listen {
        addr: listen.to_string(),
        source: e,
    })?;
    // The Gearman port too: taken, it would fail deep in the actor tree's start.
    if let Some(g) = config.gearman.as_deref() {
        let taken = |reason: String| StartError::GearmanListen {
            addr: g.to_string(),
            reason,
        };
        let addr = troupe_runtime::config::resolve(g).map_err(taken)?;
        std::net::TcpListener::bind(addr).map_err(|e| taken(e.to_string()))?;
    }
    let tls = config.tls_files()?.map(|f| f.load()).transpose()?;
    // Before anything else in the data folder is read: is it this cluster's?
    let identity = crate::cluster_identity::Identity::load(&config.data_dir(), &config.cookie)?;
    let view = Arc::new(ClusterView::new(&config.name));
    view.learn_props(registry.props());
    let journal = if config.journal {
        let (j, recovered) = crate::journal::Journal::open(
            &config.data_dir(),
            config.retain_finished_jobs,
            Some(crate::journal::Replication {
                view: view.clone(),
                copies: config.journal_replicas,
            }),
            config.journal_ack,
            std::time::Duration::from_millis(config.journal_commit_window_ms.max(1)),
        )?;
        if !recovered.jobs.is_empty() {
            tracing::info!(jobs = recovered.jobs.len(), dir = %config.data_dir().display(), "the journal holds jobs that had not ended; resuming them");
        }
        *locked(&view.recovered) = Some(recovered);
        Some(j)
    } else {
        None
    };
    let core = crate::core::CoreNode::open(&config, identity)
        .await
        .map_err(StartError::Core)?;
    let config = Arc::new(config);
    // The scheduler starts attempts that get a slot the way the worker pool runs them.
    let calls = Arc::new(PendingCalls::default());
    // User code runs on its own runtime, one thread per slot, apart from the actors.
    let tasks =
        crate::task_runtime::TaskRuntime::with_nice(&config.name, config.slots, config.task_nice)?;
    let launch = crate::worker_pool::launcher(
        registry.clone(),
        config.name.clone(),
        calls.clone(),
        tasks.clone(),
    );
    let scheduler = Scheduler::new(view.clone(), config.clone(), registry.clone(), launch);
    let ctx = NodeContext {
        tls,
        view,
        scheduler,
        calls,
        tasks,
        config,
        registry,
        journal,
        core,
    };
    crate::telemetry::install();
    metrics::gauge!(troupe_runtime::observe::metric::SLOTS).set(ctx.config.slots as f64);
    let name = names::of(names::NODE_ROOT, &ctx.config.name);
    let (root, done) = Actor::spawn(Some(name), NodeRoot, ctx.clone())
        .await
        .map_err(|e| StartError::Spawn(e.to_string()))?;
    Ok((root, done, ctx))
}
