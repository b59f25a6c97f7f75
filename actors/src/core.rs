//! The node's member of the core group: a Raft node (openraft, its log in redb) that
//! decides what must be unique cluster-wide, today which node takes over a job whose
//! owner is gone, and which node holds a keyed actor's lease (see [`ownership`] for the
//! state machine).
//!
//! Every node runs one, so that any node can ask for a decision; only the core nodes vote.
//! The core is named by `core.nodes`, or else formed once by the smallest-named node when
//! it sees `core.size` nodes up and no core yet. A decision is a Raft log entry: a node
//! that is not a voter hands its question to a voter, which hands it to the leader. The
//! data path (dispatch, results) never waits on this actor.

mod network;
pub(crate) mod ownership;
pub(crate) mod store;

pub(crate) use ownership::{
    node_id, CoreCommand, CoreDecision, CoreTypes, Ownership, RaftRpc, RaftRpcReply,
};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, Raft};
use ractor::RpcReplyPort;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use troupe_runtime::protocol::{core_group, first_member, CORE_VOTERS_GROUP};
use troupe_runtime::wire::Wire;

use crate::NodeContext;

/// Why the core group gave no decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub(crate) struct CoreRefusal {
    /// What happened, for a log line.
    pub message: String,
    /// The leader to ask instead, when known.
    pub leader: Option<String>,
}

/// Messages of a node's core member (in `troupe.core.NODE`).
#[derive(RactorClusterMessage)]
pub(crate) enum CoreMessage {
    /// A Raft message from another core node; answers Raft's reply.
    #[rpc]
    Raft(Wire<RaftRpc>, RpcReplyPort<Wire<RaftRpcReply>>),
    /// Ask the core group for a decision (forwarded to its leader).
    #[rpc]
    Decide(
        Wire<CoreCommand>,
        RpcReplyPort<Wire<Result<CoreDecision, CoreRefusal>>>,
    ),
    /// Periodic upkeep: forming the group, joining the voters' group (local).
    Tick,
}

/// How long one decision may take, forwarding included.
pub(crate) const DECIDE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the core member looks after its group.
const TICK: Duration = Duration::from_millis(300);

/// The node's core member.
pub(crate) struct Core;

/// This node's Raft node and the state machine it drives, opened once per node (the
/// core member actor may restart; the store and Raft node outlive it).
#[derive(Clone)]
pub struct CoreNode {
    raft: Raft<CoreTypes>,
    sm: store::StateMachine,
}

impl CoreNode {
    /// Opens the store in the node's data folder and starts the Raft node.
    pub async fn open(config: &troupe_runtime::config::NodeConfig) -> Result<CoreNode, String> {
        let dir = config.data_dir();
        let (log, sm) = store::open(&dir).map_err(|e| {
            format!(
                "cannot open the core group's store {}: {e}. Is another node running with the same --data folder?",
                dir.join("core.redb").display()
            )
        })?;
        let me = node_id(&config.name);
        let f = config.failure;
        // Elections within about the failure detector's time; heartbeats well inside it.
        let raft_config = openraft::Config {
            cluster_name: "troupe".into(),
            heartbeat_interval: (f.suspect_after_ms / 4).max(50),
            election_timeout_min: f.suspect_after_ms,
            election_timeout_max: f.down_after_ms,
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("bad core group timing (from [failure]): {e}"))?;
        let raft = Raft::new(
            me,
            Arc::new(raft_config),
            network::CoreNetwork { me },
            log,
            sm.clone(),
        )
        .await
        .map_err(|e| format!("cannot start the core group's Raft node: {e}"))?;
        Ok(CoreNode { raft, sm })
    }
}

impl std::fmt::Debug for CoreNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreNode").finish_non_exhaustive()
    }
}

/// State of the core member.
pub(crate) struct CoreState {
    ctx: NodeContext,
    raft: Raft<CoreTypes>,
    sm: store::StateMachine,
    voter: bool,
    formed: bool,
}

impl CoreState {
    /// Whether this node votes, and whether any group exists in its log.
    fn roles(&self) -> (bool, bool) {
        let m = self.raft.metrics();
        let m = m.borrow();
        let mem = m.membership_config.membership();
        let me = node_id(&self.ctx.config.name);
        let voter = mem.voter_ids().any(|v| v == me);
        let any = mem.voter_ids().next().is_some();
        (voter, any)
    }

    /// Forms the group from the first `core.size` live nodes by name, if this node is the
    /// smallest of them and no group is visible anywhere.
    async fn form_if_first(&mut self) {
        let cfg = &self.ctx.config.core;
        if !cfg.nodes.is_empty() || self.formed {
            return;
        }
        if !ractor::pg::get_members(&CORE_VOTERS_GROUP.to_string()).is_empty() {
            self.formed = true;
            return;
        }
        let mut live = crate::live_nodes(&self.ctx.view);
        live.sort();
        if live.len() < cfg.size || live.first() != Some(&self.ctx.config.name) {
            return;
        }
        live.truncate(cfg.size);
        tracing::info!(core = ?live, "forming the core group");
        self.formed = true;
        initialize(&self.raft, &live).await;
    }
}

async fn initialize(raft: &Raft<CoreTypes>, names: &[String]) {
    let members: BTreeMap<u64, BasicNode> = names
        .iter()
        .map(|n| (node_id(n), BasicNode::new(n)))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => {}
        Err(RaftError::APIError(e)) => {
            tracing::debug!(error = %e, "core group already initialized")
        }
        Err(e) => tracing::error!(error = %e, "cannot initialize the core group"),
    }
}

/// Asks the core group for a decision, through this node's core member.
pub(crate) async fn decide(node: &str, cmd: CoreCommand) -> Result<CoreDecision, CoreRefusal> {
    let Some(core) = first_member::<CoreMessage>(&core_group(node)) else {
        return Err(refusal("this node's core member is not running", None));
    };
    ask(&core, cmd).await
}

async fn ask(core: &ActorRef<CoreMessage>, cmd: CoreCommand) -> Result<CoreDecision, CoreRefusal> {
    match core
        .call(
            |r| CoreMessage::Decide(Wire::new(cmd), r),
            Some(DECIDE_TIMEOUT),
        )
        .await
    {
        Ok(ractor::rpc::CallResult::Success(w)) => w
            .into_inner()
            .unwrap_or_else(|e| Err(refusal(&e.to_string(), None))),
        Ok(ractor::rpc::CallResult::Timeout) => Err(refusal(
            "the core group did not decide in time (no quorum reachable?)",
            None,
        )),
        _ => Err(refusal("the core member dropped the question", None)),
    }
}

fn refusal(message: &str, leader: Option<String>) -> CoreRefusal {
    CoreRefusal {
        message: message.to_string(),
        leader,
    }
}

/// Decides `cmd` here if this node leads, else hands it to the leader (or to a voter).
async fn decide_here(
    raft: Raft<CoreTypes>,
    sm: store::StateMachine,
    me: String,
    voter: bool,
    cmd: CoreCommand,
) -> Result<CoreDecision, CoreRefusal> {
    if !voter {
        let voter = ractor::pg::get_members(&CORE_VOTERS_GROUP.to_string())
            .into_iter()
            .next()
            .ok_or_else(|| {
                refusal(
                    "no core group is reachable (it forms once core.size nodes are up, or set core.nodes)",
                    None,
                )
            })?;
        return ask(&voter.into(), cmd).await;
    }
    if let CoreCommand::Owners { jobs } = &cmd {
        // A read: the leader confirms it leads (a heartbeat round), then reads its state
        // machine. No log entry, so asking about made-up jobs costs the log nothing.
        return match raft.ensure_linearizable().await {
            Ok(_) => Ok(CoreDecision::Owners(sm.read(|o| o.owners(jobs)))),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                match f.leader_node {
                    Some(leader) if leader.addr != me => {
                        let Some(core) = first_member::<CoreMessage>(&core_group(&leader.addr))
                        else {
                            return Err(refusal(
                                "the core group's leader is not connected",
                                Some(leader.addr),
                            ));
                        };
                        ask(&core, cmd).await
                    }
                    _ => Err(refusal("the core group has no leader yet", None)),
                }
            }
            Err(e) => Err(refusal(&e.to_string(), None)),
        };
    }
    match raft.client_write(cmd.clone()).await {
        Ok(r) => Ok(r.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => match f.leader_node {
            Some(leader) if leader.addr != me => {
                let Some(core) = first_member::<CoreMessage>(&core_group(&leader.addr)) else {
                    return Err(refusal(
                        "the core group's leader is not connected",
                        Some(leader.addr),
                    ));
                };
                ask(&core, cmd).await
            }
            _ => Err(refusal("the core group has no leader yet", None)),
        },
        Err(e) => Err(refusal(&e.to_string(), None)),
    }
}

async fn serve_raft(raft: Raft<CoreTypes>, rpc: RaftRpc) -> RaftRpcReply {
    match rpc {
        RaftRpc::AppendEntries(r) => RaftRpcReply::AppendEntries(raft.append_entries(r).await),
        RaftRpc::Vote(r) => RaftRpcReply::Vote(raft.vote(r).await),
        RaftRpc::InstallSnapshot(r) => {
            RaftRpcReply::InstallSnapshot(raft.install_snapshot(r).await)
        }
    }
}

impl Actor for Core {
    type Msg = CoreMessage;
    type State = CoreState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        let CoreNode { raft, sm } = ctx.core.clone();
        ractor::pg::join(core_group(&ctx.config.name), vec![myself.get_cell()]);
        let named = &ctx.config.core.nodes;
        if named.contains(&ctx.config.name) {
            initialize(&raft, named).await;
        }
        myself.send_interval(TICK, || CoreMessage::Tick);
        Ok(CoreState {
            ctx,
            raft,
            sm,
            voter: false,
            formed: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CoreMessage::Raft(rpc, reply) => match rpc.into_inner() {
                Ok(rpc) => {
                    let raft = state.raft.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(Wire::new(serve_raft(raft, rpc).await));
                    });
                }
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable Raft message"),
            },
            CoreMessage::Decide(cmd, reply) => match cmd.into_inner() {
                Ok(cmd) => {
                    let raft = state.raft.clone();
                    let sm = state.sm.clone();
                    let me = state.ctx.config.name.clone();
                    let voter = state.voter;
                    tokio::spawn(async move {
                        let _ = reply.send(Wire::new(decide_here(raft, sm, me, voter, cmd).await));
                    });
                }
                Err(e) => {
                    let _ = reply.send(Wire::new(Err(refusal(
                        &format!("unreadable question: {e}"),
                        None,
                    ))));
                }
            },
            CoreMessage::Tick => {
                let (voter, any) = state.roles();
                if voter != state.voter {
                    let group = CORE_VOTERS_GROUP.to_string();
                    if voter {
                        tracing::info!("this node votes in the core group");
                        ractor::pg::join(group, vec![myself.get_cell()]);
                    } else {
                        ractor::pg::leave(group, vec![myself.get_cell()]);
                    }
                    state.voter = voter;
                }
                if !any {
                    state.form_if_first().await;
                }
                metrics::gauge!(troupe_runtime::observe::metric::CORE_MOVED_JOBS)
                    .set(state.sm.ownership().len() as f64);
                let last = state.raft.metrics().borrow().last_log_index.unwrap_or(0);
                metrics::gauge!(troupe_runtime::observe::metric::CORE_LOG_INDEX).set(last as f64);
            }
        }
        Ok(())
    }
}
