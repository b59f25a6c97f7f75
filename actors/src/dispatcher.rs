//! The dispatcher: hands each ready attempt of this node's jobs to a worker pool that
//! serves its task, and tells the job supervisor which node took it.
//!
//! Placement is pull-based (see [`crate::scheduler::placement`]): an attempt goes to its home
//! (the node of the attempt that made it, for a call or sub-job; this node otherwise) if
//! that node has room, else to the node with the most room; when no node has room it waits
//! in this node's priority lanes, and [`spill`] hands it on when room appears (a result
//! comes back from a node, gossip shows a node with room) unless an idle node steals it
//! first. Only a task this node does not serve is queued on another node when all are
//! full (the least loaded). Attempts whose task has no worker anywhere wait here until one
//! appears. Attempts of tasks registered as mergeable or pure go instead to the merger that
//! owns their request key (see [`crate::merger`]), which answers from the cache, joins them
//! to an identical request in flight, or runs them.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use troupe_runtime::config::PlacementMode;
use troupe_runtime::merge::{self, request_key, CacheMode};
use troupe_runtime::protocol::{
    first_member, merger_group, task_group, AttemptMoved, MergerMessage, StepRequest,
    WorkerPoolMessage,
};
use troupe_runtime::wire::Wire;

use crate::job_supervisor::JobSupervisorMessage;
use crate::NodeContext;

/// How often attempts waiting for a worker group look again.
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// Messages of the dispatcher.
#[derive(RactorMessage)]
pub enum DispatcherMessage {
    /// Run this attempt somewhere and report the node to `supervisor`.
    Dispatch {
        /// The attempt.
        request: StepRequest,
        /// Who to tell.
        supervisor: ActorRef<JobSupervisorMessage>,
    },
    /// Look again at attempts that had no worker.
    RetryWaiting,
}

/// The dispatcher.
pub struct Dispatcher;

/// State of the dispatcher.
pub struct DispatcherState {
    ctx: NodeContext,
    next: HashMap<String, usize>,
    waiting: VecDeque<(StepRequest, ActorRef<JobSupervisorMessage>)>,
    retry_armed: bool,
}

fn order_key(c: &ActorCell) -> (u64, u64) {
    match c.get_id() {
        ActorId::Local(p) => (0, p),
        ActorId::Remote { node_id, pid } => (node_id, pid),
    }
}

/// A worker pool of `task`, round-robin over the nodes that serve it (`next` is the
/// caller's counter), with the node it is on.
pub fn pick_worker(
    view: &crate::ClusterView,
    task: &str,
    next: &mut usize,
) -> Option<(ActorRef<WorkerPoolMessage>, String)> {
    let mut members = candidates(view, task);
    if members.is_empty() {
        return None;
    }
    let (pick, node) = members.swap_remove(*next % members.len());
    *next = next.wrapping_add(1);
    Some((pick.into(), node))
}

/// The merger that owns `key` (a request of `task`): rendezvous hashing over the live
/// nodes that serve the task.
pub fn key_owner(
    view: &crate::ClusterView,
    task: &str,
    key: &str,
) -> Option<(ActorRef<MergerMessage>, String)> {
    let nodes: Vec<String> = live_members(view, task)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    let owner = merge::owner(key, nodes.iter().map(String::as_str))?.to_string();
    let m = first_member(&merger_group(&owner))?;
    Some((m.into(), owner))
}

/// The worker pools of `task` with their nodes, leaving out nodes membership saw leave
/// (their process-group entries can outlive the connection by a moment).
pub fn live_members(view: &crate::ClusterView, task: &str) -> Vec<(ActorCell, String)> {
    ractor::pg::get_members(&task_group(task))
        .into_iter()
        .map(|c| {
            let n = view.node_of(c.get_id());
            (c, n)
        })
        .filter(|(_, n)| !view.is_down(n))
        .collect()
}

/// The nodes that serve `task` now with their pools, leaving out those at their
/// concurrency limit for it (unless all are), in a stable order.
fn candidates(view: &crate::ClusterView, task: &str) -> Vec<(ActorCell, String)> {
    let mut members = live_members(view, task);
    if members.iter().any(|(_, n)| !view.is_saturated(n, task)) {
        members.retain(|(_, n)| !view.is_saturated(n, task));
    }
    members.sort_by_key(|(c, _)| order_key(c));
    members
}

/// Sends `request` where it should run (see the module docs); gives it back if no node
/// serves its task.
fn place(ctx: &NodeContext, request: StepRequest, turn: &mut usize) -> Result<String, StepRequest> {
    let view = &ctx.view;
    if ctx.config.scheduling.placement == PlacementMode::RoundRobin {
        let Some((pool, node)) = pick_worker(view, &request.task, turn) else {
            return Err(request);
        };
        return send_to(view, &pool, &node, request).map(|()| node);
    }
    let members = candidates(view, &request.task);
    if members.is_empty() {
        return Err(request);
    }
    let names: Vec<String> = members.iter().map(|(_, n)| n.clone()).collect();
    // This node's own worker pool serves the task (its external Gearman workers, if they
    // are the only local member, are reached like a peer's pool).
    let serves_here = ctx.registry.get(&request.task).is_some() && names.contains(&view.node);
    let local_room = if serves_here {
        crate::worker_pool::local_room(ctx)
    } else {
        0
    };
    let home = request.near.as_deref().unwrap_or(&view.node);
    let pick = {
        let placement = crate::locked(&view.placement);
        placement
            .choose(&names, home, &view.node, local_room, turn)
            .or(if serves_here {
                Some(view.node.as_str())
            } else {
                placement.least_loaded(&names, turn)
            })
            .map(str::to_string)
    };
    let Some(node) = pick else {
        return Err(request);
    };
    if node == view.node && serves_here {
        crate::worker_pool::queue(ctx, request);
        return Ok(node);
    }
    let Some((cell, _)) = members.into_iter().find(|(_, n)| *n == node) else {
        return Err(request);
    };
    let pool: ActorRef<WorkerPoolMessage> = cell.into();
    send_to(view, &pool, &node, request).map(|()| node)
}

/// Sends an attempt of this node's job to `node`'s pool and counts it there.
fn send_to(
    view: &crate::ClusterView,
    pool: &ActorRef<WorkerPoolMessage>,
    node: &str,
    request: StepRequest,
) -> Result<(), StepRequest> {
    if let Err(e) = pool.cast(WorkerPoolMessage::Run(Wire::new(request.clone()))) {
        tracing::debug!(error = %e, node = %node, "worker pool gone; attempt waits");
        return Err(request);
    }
    crate::locked(&view.placement).placed(&request.job, &request.step, request.attempt, node);
    Ok(())
}

/// Hands attempts of this node's jobs waiting in its lanes to `node` while it has room
/// (room appeared there: a result came back from it, or its gossip shows free slots).
/// Returns what moved, for the job supervisors.
pub fn spill(ctx: &NodeContext, node: &str) -> Vec<AttemptMoved> {
    let view = &ctx.view;
    if node == view.node
        || view.is_down(node)
        || ctx.config.scheduling.placement == PlacementMode::RoundRobin
    {
        return Vec::new();
    }
    let mut moved = Vec::new();
    let Some(pool) =
        first_member::<WorkerPoolMessage>(&troupe_runtime::protocol::worker_pool_group(node))
    else {
        return moved;
    };
    let mut serves: HashMap<String, bool> = HashMap::new();
    loop {
        if crate::locked(&view.placement).room(node) == 0 {
            break;
        }
        let next = crate::locked(&view.work.waiting).pop_where(std::time::Instant::now(), |r| {
            r.owner == view.node
                && r.merger.is_none()
                && *serves.entry(r.task.clone()).or_insert_with(|| {
                    !view.is_saturated(node, &r.task)
                        && live_members(view, &r.task).iter().any(|(_, n)| n == node)
                })
        });
        let Some(r) = next else { break };
        let attempt = crate::worker_pool::attempt_of(&r);
        if let Err(r) = send_to(view, &pool, node, r) {
            crate::worker_pool::queue(ctx, r);
            break;
        }
        moved.push(AttemptMoved {
            attempt,
            node: node.to_string(),
        });
    }
    if !moved.is_empty() {
        crate::worker_pool::pump(ctx);
        tracing::debug!(node = %node, n = moved.len(), "waiting attempts handed to a node with room");
    }
    moved
}

impl DispatcherState {
    /// The merger that owns the key of `request`, for tasks that merge or cache.
    fn merger_for(&self, request: &mut StepRequest) -> Option<(ActorRef<MergerMessage>, String)> {
        let props = self.ctx.view.props(&request.task);
        if request.merger.is_some()
            || request.cache == CacheMode::Off
            || !(props.mergeable || props.pure)
        {
            return None;
        }
        let key = request_key(&request.task, &request.input, &request.deps);
        let (m, owner) = key_owner(&self.ctx.view, &request.task, &key)?;
        request.key = Some(key);
        Some((m, owner))
    }

    /// This node's Gearman workers, if they can run `task` and have room for it (see
    /// `Board::has_room`): such work stays here rather than crossing the network to
    /// another node's workers.
    fn idle_gearman_worker(&self, task: &str) -> Option<ActorRef<WorkerPoolMessage>> {
        if self.ctx.config.gearman.is_none()
            || !crate::gearman::lock(&self.ctx.view.gearman.board).has_room(task)
        {
            return None;
        }
        crate::find_on(crate::names::GEARMAN_WORKERS, &self.ctx.view.node)
    }

    /// Sends `request` to a worker pool (or its key's merger); gives it back if there is
    /// none.
    fn try_dispatch(
        &mut self,
        mut request: StepRequest,
        supervisor: ActorRef<JobSupervisorMessage>,
    ) -> Option<(StepRequest, ActorRef<JobSupervisorMessage>)> {
        let (step, attempt) = (request.step.clone(), request.attempt);
        let node = if let Some((merger, owner)) = self.merger_for(&mut request) {
            if merger
                .cast(MergerMessage::Request(Wire::new(request.clone())))
                .is_err()
            {
                return Some((request, supervisor));
            }
            owner
        } else if let Some(local) = self.idle_gearman_worker(&request.task) {
            if local
                .cast(WorkerPoolMessage::Run(Wire::new(request.clone())))
                .is_err()
            {
                return Some((request, supervisor));
            }
            self.ctx.view.node.clone()
        } else {
            let turn = self.next.entry(request.task.clone()).or_insert(0);
            match place(&self.ctx, request, turn) {
                Ok(node) => node,
                Err(request) => return Some((request, supervisor)),
            }
        };
        let _ = supervisor.cast(JobSupervisorMessage::Assigned {
            step,
            attempt,
            node,
        });
        None
    }
}

impl Actor for Dispatcher {
    type Msg = DispatcherMessage;
    type State = DispatcherState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DispatcherState {
            ctx,
            next: HashMap::new(),
            waiting: VecDeque::new(),
            retry_armed: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DispatcherMessage::Dispatch {
                request,
                supervisor,
            } => {
                if let Some(w) = state.try_dispatch(request, supervisor) {
                    tracing::debug!(task = %w.0.task, job = %w.0.job, "no worker serves this task right now; waiting");
                    state.waiting.push_back(w);
                }
            }
            DispatcherMessage::RetryWaiting => {
                state.retry_armed = false;
                for _ in 0..state.waiting.len() {
                    if let Some((r, s)) = state.waiting.pop_front() {
                        if let Some(w) = state.try_dispatch(r, s) {
                            state.waiting.push_back(w);
                        }
                    }
                }
            }
        }
        if !state.waiting.is_empty() && !state.retry_armed {
            state.retry_armed = true;
            myself.send_after(RETRY_EVERY, || DispatcherMessage::RetryWaiting);
        }
        Ok(())
    }
}
