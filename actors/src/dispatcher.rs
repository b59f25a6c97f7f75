//! The dispatcher: hands each ready attempt to a worker pool that serves its task, on any
//! node, and tells the job supervisor which node took it.
//!
//! Today the choice is round-robin over the task's process group, and attempts whose task
//! has no worker anywhere wait here until one appears. Attempts of tasks registered as
//! mergeable or pure go instead to the merger that owns their request key (see
//! [`crate::merger`]), which answers from the cache, joins them to an identical request in
//! flight, or runs them. Priority lanes and pull-based
//! distribution will replace the round-robin inside this actor without changing its
//! callers.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use troupe_runtime::merge::{self, request_key, CacheMode};
use troupe_runtime::protocol::{
    first_member, merger_group, task_group, MergerMessage, StepRequest, WorkerPoolMessage,
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
    let mut members: Vec<(ActorCell, String)> = live_members(view, task);
    if members.is_empty() {
        return None;
    }
    // Skip nodes at their concurrency limit for the task, unless all are.
    if members.iter().any(|(_, n)| !view.is_saturated(n, task)) {
        members.retain(|(_, n)| !view.is_saturated(n, task));
    }
    members.sort_by_key(|(c, _)| order_key(c));
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
            let n = self.next.entry(request.task.clone()).or_insert(0);
            let Some((pool, node)) = pick_worker(&self.ctx.view, &request.task, n) else {
                return Some((request, supervisor));
            };
            if let Err(e) = pool.cast(WorkerPoolMessage::Run(Wire::new(request.clone()))) {
                tracing::debug!(error = %e, node = %node, "worker pool gone; attempt waits");
                return Some((request, supervisor));
            }
            node
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
