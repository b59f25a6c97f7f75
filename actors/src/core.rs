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
//!
//! One cluster, one core group: once formed, the group names the cluster (a log entry,
//! see [`crate::cluster_identity`]) and every node writes that id to its data folder. A
//! node that knows an id, or whose log holds a group, never forms one, nor does a node
//! while any live peer knows an id or a group (it asks each first). The leader replaces a
//! voter down for `core.replace_after_ms` by a live node that does not vote.

mod network;
pub(crate) mod ownership;
pub(crate) mod store;

pub(crate) use ownership::{
    node_id, CoreCommand, CoreDecision, CoreTypes, Ownership, RaftRpc, RaftRpcReply,
};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, Raft};
use ractor::RpcReplyPort;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use troupe_runtime::protocol::{core_group, first_member, CORE_VOTERS_GROUP};
use troupe_runtime::wire::Wire;

use crate::cluster_identity::{new_cluster_id, Identity};
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
    /// Which cluster this node belongs to, and whether its log holds a core group.
    #[rpc]
    Identity(RpcReplyPort<Wire<PeerIdentity>>),
    /// Periodic upkeep: forming the group, joining the voters' group (local).
    Tick,
    /// Membership saw this node go down (local): if it led the group, the first live
    /// voter by name calls an election as soon as the leader's lease has run out.
    PeerDown(Wire<String>),
}

/// A node's answer to [`CoreMessage::Identity`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PeerIdentity {
    /// Its cluster id, if it knows one.
    pub cluster: Option<String>,
    /// Whether its Raft log holds a core group's membership.
    pub in_group: bool,
}

/// How long the live nodes must stay the same before the smallest forms the core group.
const FORM_SETTLE: Duration = Duration::from_millis(500);

/// How long a peer may take to say which cluster it belongs to.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one decision may take, forwarding included.
pub(crate) const DECIDE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the core member looks after its group.
const TICK: Duration = Duration::from_millis(300);

/// Raft's election timeouts (min, max) for `suspect_after_ms`: 0.4 and 0.8 of it, at
/// least 300 and 600 ms (a loaded machine must not call elections for nothing). The max
/// is also the leader's lease, during which voters refuse to elect another.
fn raft_timing(suspect_after_ms: u64) -> (u64, u64) {
    // Saturating: the setting can be any u64.
    let min = (suspect_after_ms.saturating_mul(2) / 5).max(300);
    (
        min,
        (suspect_after_ms.saturating_mul(4) / 5).max(min.saturating_mul(2)),
    )
}

/// Tells this node's core member that membership saw `down` go down.
pub(crate) fn peer_down(node: &str, down: &str) {
    if let Some(core) = first_member::<CoreMessage>(&core_group(node)) {
        let _ = core.cast(CoreMessage::PeerDown(Wire::new(down.to_string())));
    }
}

/// The node's core member.
pub(crate) struct Core;

/// This node's Raft node and the state machine it drives, opened once per node (the
/// core member actor may restart; the store and Raft node outlive it).
#[derive(Clone)]
pub struct CoreNode {
    raft: Raft<CoreTypes>,
    sm: store::StateMachine,
    identity: Identity,
}

impl CoreNode {
    /// Opens the store in the node's data folder and starts the Raft node; `identity` is
    /// the folder's cluster (checked before anything else in the folder is read).
    pub async fn open(
        config: &troupe_runtime::config::NodeConfig,
        identity: Identity,
    ) -> Result<CoreNode, String> {
        let dir = config.data_dir();
        let (log, sm) = store::open(&dir).map_err(|e| {
            format!(
                "cannot open the core group's store {}: {e}. Is another node running with the same --data folder?",
                dir.join("core.redb").display()
            )
        })?;
        let me = node_id(&config.name);
        let f = config.failure;
        // Elections within the failure detector's time: openraft waits the leader's
        // lease (election_timeout_max) plus an election timeout before it calls one, so
        // those together stay near suspect_after_ms; heartbeats well inside the lease. A
        // leader killed outright is seen at once and replaced after the lease alone
        // (`CoreMessage::PeerDown`), so that a takeover waits for no election.
        let (min, max) = raft_timing(f.suspect_after_ms);
        let raft_config = openraft::Config {
            cluster_name: "troupe".into(),
            // Also openraft's time limit on one AppendEntries: a quarter of the timeout
            // (100 ms) timed out on a loaded machine (128 nodes starting on 2 cores).
            heartbeat_interval: (min / 2).max(25),
            election_timeout_min: min,
            election_timeout_max: max,
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
        Ok(CoreNode { raft, sm, identity })
    }

    /// Whether this node knows that its cluster has a core group: it knows the cluster's
    /// id (written when the group formed), or its own log holds the group.
    pub fn group_exists(&self) -> bool {
        self.identity.cluster().is_some() || self.in_group()
    }

    /// The cluster's id, once this node knows it.
    pub(crate) fn cluster_id(&self) -> Option<String> {
        self.identity.cluster()
    }

    /// Whether this node's Raft log holds a core group's membership.
    fn in_group(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .voter_ids()
            .next()
            .is_some()
    }

    fn identity_answer(&self) -> PeerIdentity {
        PeerIdentity {
            cluster: self.identity.cluster().or_else(|| self.sm.summary().0),
            in_group: self.in_group(),
        }
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
    node: CoreNode,
    raft: Raft<CoreTypes>,
    sm: store::StateMachine,
    voter: bool,
    /// A formation, a cluster naming or a voter replacement is under way (one at a time).
    busy: Arc<AtomicBool>,
    /// Voters this leader sees down, since when.
    voters_down: HashMap<String, Instant>,
    /// The cluster id this node's log named, when it differs from the folder's (logged once).
    conflict_logged: bool,
    /// The live nodes last seen by `learn_or_form`, and since when they are the same.
    live_seen: (Vec<String>, std::time::Instant),
    /// Whether this node led the group at the last tick (a change is logged).
    leading: bool,
}

impl CoreState {
    /// Whether this node votes, and whether it leads.
    fn roles(&self) -> (bool, bool) {
        let m = self.raft.metrics();
        let m = m.borrow();
        let mem = m.membership_config.membership();
        let me = node_id(&self.ctx.config.name);
        let voter = mem.voter_ids().any(|v| v == me);
        (voter, m.current_leader == Some(me))
    }

    /// `down` went down: if it led the group and this node is the first live voter by
    /// name, calls an election once the leader's lease has run out (a vote asked
    /// earlier would be refused; one voter alone calls it, so that two candidates do not
    /// split the vote). Otherwise Raft's own timers elect one a lease and an election
    /// timeout after the last heartbeat.
    fn elect_if_leader_down(&self, down: &str) {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(node_id(down)) {
            return;
        }
        let mem = m.membership_config.membership();
        let me = &self.ctx.config.name;
        let first_live = mem
            .voter_ids()
            .filter_map(|id| mem.get_node(&id).map(|n| n.addr.clone()))
            .filter(|n| n != down && (n == me || !self.ctx.view.is_down(n)))
            .min();
        if first_live.as_deref() != Some(me.as_str()) {
            return;
        }
        let lease = Duration::from_millis(raft_timing(self.ctx.config.failure.suspect_after_ms).1);
        let (raft, dead) = (self.raft.clone(), node_id(down));
        tracing::info!(leader = %down, "the core group's leader went down; calling an election when its lease ends");
        tokio::spawn(async move {
            // The lease runs from the last heartbeat, at most a heartbeat before the
            // death: a lease after the death it has surely ended.
            tokio::time::sleep(lease + Duration::from_millis(20)).await;
            let leader = raft.metrics().borrow().current_leader;
            if leader.is_none() || leader == Some(dead) {
                let _ = raft.trigger().elect().await;
            }
        });
    }

    /// Starts `job` in the background unless another one runs.
    fn spawn_exclusive(&self, job: impl std::future::Future<Output = ()> + Send + 'static) {
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let busy = self.busy.clone();
        tokio::spawn(async move {
            job.await;
            busy.store(false, Ordering::Release);
        });
    }

    /// Keeps the folder's cluster id in step with the group's: writes the id the log
    /// named, or, as the leader of a group not yet named, names it.
    fn keep_cluster_id(&mut self, leader: bool) {
        let (named, _) = self.sm.summary();
        let held = self.node.identity.cluster();
        match (named, held) {
            (Some(n), None) => match self.node.identity.adopt(&n) {
                Ok(_) => tracing::info!(cluster = %n, "this node belongs to cluster {n}"),
                Err(e) => tracing::error!(error = %e, "cannot record the cluster id"),
            },
            (Some(n), Some(h)) if n != h && !self.conflict_logged => {
                self.conflict_logged = true;
                tracing::error!(log = %n, folder = %h, "the core group's log names another cluster than the data folder");
            }
            (None, held) if leader => {
                let raft = self.raft.clone();
                let id = held.unwrap_or_else(new_cluster_id);
                self.spawn_exclusive(async move {
                    if let Err(e) = raft.client_write(CoreCommand::NameCluster { id }).await {
                        tracing::debug!(error = %e, "cannot name the cluster yet");
                    }
                });
            }
            _ => {}
        }
    }

    /// Without a cluster id or a group of its own, asks the live peers which cluster they
    /// belong to: adopts the id one of them knows, or, if none knows one nor is in a group
    /// and this node is the smallest-named of `core.size` live nodes, and has seen the same
    /// live nodes for [`FORM_SETTLE`], forms the group.
    fn learn_or_form(&mut self) {
        if self.node.group_exists() {
            return;
        }
        let cfg = &self.ctx.config.core;
        let me = self.ctx.config.name.clone();
        let live = crate::live_nodes(&self.ctx.view);
        if self.live_seen.0 != live {
            self.live_seen = (live.clone(), std::time::Instant::now());
        }
        // A view that still changes may lack a smaller node this one is still dialling
        // (many nodes started at once): forming then made two groups, two clusters.
        let settled = self.live_seen.1.elapsed() >= FORM_SETTLE;
        let may_form = cfg.nodes.is_empty()
            && settled
            && live.len() >= cfg.size
            && live.first() == Some(&me)
            && ractor::pg::get_members(&CORE_VOTERS_GROUP.to_string()).is_empty();
        let peers: Vec<String> = live.iter().filter(|n| **n != me).cloned().collect();
        if peers.is_empty() && !may_form {
            return;
        }
        let size = cfg.size;
        let node = self.node.clone();
        let view = self.ctx.view.clone();
        self.spawn_exclusive(async move {
            let answers = futures::future::join_all(peers.iter().map(|p| peer_identity(p))).await;
            let mut unsure = false;
            for (peer, a) in peers.iter().zip(answers) {
                match a {
                    Some(PeerIdentity {
                        cluster: Some(id), ..
                    }) => {
                        match node.identity.adopt(&id) {
                            Ok(_) => tracing::info!(cluster = %id, from = %peer, "this node belongs to cluster {id}"),
                            Err(e) => tracing::error!(error = %e, "cannot record the cluster id"),
                        }
                        return;
                    }
                    Some(PeerIdentity { in_group: true, .. }) | None => unsure = true,
                    Some(_) => {}
                }
            }
            if !may_form || unsure || node.group_exists() {
                return;
            }
            // Still the smallest of enough live nodes, and still no voter in sight.
            let mut live = crate::live_nodes(&view);
            if live.len() < size
                || live.first() != Some(&me)
                || !ractor::pg::get_members(&CORE_VOTERS_GROUP.to_string()).is_empty()
            {
                return;
            }
            live.truncate(size);
            tracing::info!(core = ?live, "forming the core group");
            initialize(&node.raft, &live).await;
        });
    }

    /// As the leader: replaces a voter down for `core.replace_after_ms` by the first live
    /// node by name that does not vote, while the other voters keep a majority.
    fn replace_lost_voters(&mut self, leader: bool) {
        let cfg = &self.ctx.config.core;
        if !leader || !cfg.nodes.is_empty() {
            self.voters_down.clear();
            return;
        }
        let m = self.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        if mem.get_joint_config().len() > 1 {
            return; // a change is under way
        }
        let voters: BTreeMap<u64, String> = mem
            .voter_ids()
            .filter_map(|id| mem.get_node(&id).map(|n| (id, n.addr.clone())))
            .collect();
        let live = crate::live_nodes(&self.ctx.view);
        let now = Instant::now();
        self.voters_down
            .retain(|n, _| voters.values().any(|v| v == n) && !live.contains(n));
        for name in voters.values().filter(|n| !live.contains(*n)) {
            self.voters_down.entry(name.clone()).or_insert(now);
        }
        let after = Duration::from_millis(cfg.replace_after_ms);
        let Some(lost) = self
            .voters_down
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= after)
            .map(|(n, _)| n.clone())
            .min()
        else {
            return;
        };
        let alive = voters.len() - self.voters_down.len();
        if alive <= voters.len() / 2 {
            return; // no majority to agree on a change
        }
        let Some(newcomer) = live
            .iter()
            .find(|n| !voters.values().any(|v| v == *n))
            .cloned()
        else {
            return;
        };
        let new_id = node_id(&newcomer);
        let new_voters: BTreeSet<u64> = voters
            .keys()
            .copied()
            .filter(|id| *id != node_id(&lost))
            .chain([new_id])
            .collect();
        let raft = self.raft.clone();
        self.spawn_exclusive(async move {
            tracing::info!(lost = %lost, by = %newcomer, "replacing a core voter that stayed down");
            if let Err(e) = raft
                .add_learner(new_id, BasicNode::new(&newcomer), true)
                .await
            {
                tracing::warn!(error = %e, node = %newcomer, "cannot add a core learner");
                return;
            }
            match raft.change_membership(new_voters, true).await {
                Ok(_) => tracing::info!(lost = %lost, by = %newcomer, "core voter replaced"),
                Err(e) => tracing::warn!(error = %e, "cannot change the core group's voters"),
            }
        });
    }
}

/// What peer `node`'s core member says of its cluster, `None` if it does not answer.
async fn peer_identity(node: &str) -> Option<PeerIdentity> {
    let core = first_member::<CoreMessage>(&core_group(node))?;
    match core
        .call(CoreMessage::Identity, Some(IDENTITY_TIMEOUT))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(w)) => w.into_inner().ok(),
        _ => None,
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
        let node = ctx.core.clone();
        let (raft, sm) = (node.raft.clone(), node.sm.clone());
        ractor::pg::join(core_group(&ctx.config.name), vec![myself.get_cell()]);
        let named = &ctx.config.core.nodes;
        if named.contains(&ctx.config.name) {
            initialize(&raft, named).await;
        }
        myself.send_interval(TICK, || CoreMessage::Tick);
        Ok(CoreState {
            ctx,
            node,
            raft,
            sm,
            voter: false,
            busy: Arc::new(AtomicBool::new(false)),
            voters_down: HashMap::new(),
            conflict_logged: false,
            live_seen: (Vec::new(), std::time::Instant::now()),
            leading: false,
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
            CoreMessage::Identity(reply) => {
                let _ = reply.send(Wire::new(state.node.identity_answer()));
            }
            CoreMessage::PeerDown(down) => {
                if let Ok(down) = down.into_inner() {
                    state.elect_if_leader_down(&down);
                }
            }
            CoreMessage::Tick => {
                let (voter, leader) = state.roles();
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
                if leader != state.leading {
                    state.leading = leader;
                    if leader {
                        tracing::info!("this node leads the core group");
                    } else {
                        tracing::info!("this node stopped leading the core group");
                    }
                    metrics::gauge!(troupe_runtime::observe::metric::CORE_LEADER)
                        .set(f64::from(u8::from(leader)));
                }
                state.keep_cluster_id(leader);
                state.learn_or_form();
                state.replace_lost_voters(leader);
                metrics::gauge!(troupe_runtime::observe::metric::CORE_MOVED_JOBS)
                    .set(state.sm.summary().1 as f64);
                let last = state.raft.metrics().borrow().last_log_index.unwrap_or(0);
                metrics::gauge!(troupe_runtime::observe::metric::CORE_LOG_INDEX).set(last as f64);
            }
        }
        Ok(())
    }
}
