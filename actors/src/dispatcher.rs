//! The dispatcher: hands each ready attempt of this node's jobs to a worker pool that
//! serves its task, and tells the job supervisor which node took it.
//!
//! Where an attempt goes is the [`Scheduler`](crate::scheduler::Scheduler)'s decision
//! (`Scheduler::place`, pull-based): its home (the node of the
//! attempt that made it, for a call or sub-job; this node otherwise) if that node has room,
//! else the node with the most room; when no node has room it waits in this node's
//! priority lanes, and goes on when room appears (a result comes back from a node, gossip
//! shows a node with room) unless an idle node steals it first. Only a task this node does
//! not serve is queued on another node when all are full (the least loaded). The
//! dispatcher keeps what comes before that: attempts whose task has no worker anywhere
//! wait here until one appears; attempts of tasks registered as mergeable or pure go
//! instead to the merger that owns their request key (see [`crate::merger`]), which
//! answers from the cache, joins them to an identical request in flight, or runs them;
//! and this node's external Gearman workers take their function's attempts first while
//! fewer of them wait here than there are workers.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef};
use ractor_cluster::RactorMessage;
use troupe_runtime::merge::{self, request_key, CacheMode};
use troupe_runtime::protocol::{
    first_member, merger_group, MergerMessage, StepRequest, WorkerPoolMessage,
};
use troupe_runtime::wire::Wire;

use crate::NodeContext;

/// How often attempts waiting for a worker group look again.
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// The dispatcher's answer to whoever dispatched an attempt: the node that took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assigned {
    /// The job (a host of many jobs' supervisions tells them apart by it).
    pub job: String,
    /// The step.
    pub step: String,
    /// The attempt.
    pub attempt: u32,
    /// Where it runs (or the node of the merger that owns its request key).
    pub node: String,
}

/// Messages of the dispatcher.
// `Dispatch` is the common message and the large one (see `WorkerPoolMessage`).
#[allow(clippy::large_enum_variant)]
#[derive(RactorMessage)]
pub(crate) enum DispatcherMessage {
    /// Run this attempt somewhere and report the node to `supervisor`.
    Dispatch {
        /// The attempt.
        request: StepRequest,
        /// Who to tell: the job's supervisor, seen only as taking [`Assigned`] (so the
        /// dispatcher does not depend on the supervisor's messages).
        supervisor: DerivedActorRef<Assigned>,
    },
    /// Look again at attempts that had no worker.
    RetryWaiting,
}

/// The dispatcher.
pub(crate) struct Dispatcher;

/// State of the dispatcher.
pub(crate) struct DispatcherState {
    ctx: NodeContext,
    next: HashMap<String, usize>,
    waiting: VecDeque<(StepRequest, DerivedActorRef<Assigned>)>,
    retry_armed: bool,
}

/// The merger that owns `key` (a request of `task`): rendezvous hashing over the live
/// nodes that serve the task.
pub(crate) fn key_owner(
    view: &crate::ClusterView,
    task: &str,
    key: &str,
) -> Option<(ActorRef<MergerMessage>, String)> {
    let nodes: Vec<String> = view.live_pools(task).into_iter().map(|(_, n)| n).collect();
    let owner = merge::owner(key, nodes.iter().map(String::as_str))?.to_string();
    let m = first_member(&merger_group(&owner))?;
    Some((m, owner))
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

    /// This node's Gearman workers, if they can run `task` and have room for it (fewer
    /// jobs wait for it here than workers can do it: `Board::has_room`): such work stays
    /// here rather than crossing the network to another node's workers.
    fn gearman_workers_with_room(&self, task: &str) -> Option<ActorRef<WorkerPoolMessage>> {
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
        supervisor: DerivedActorRef<Assigned>,
    ) -> Option<(StepRequest, DerivedActorRef<Assigned>)> {
        let (job, step, attempt) = (request.job.clone(), request.step.clone(), request.attempt);
        let node = if let Some((merger, owner)) = self.merger_for(&mut request) {
            if merger
                .cast(MergerMessage::Request(Wire::new(request.clone())))
                .is_err()
            {
                return Some((request, supervisor));
            }
            owner
        } else if let Some(local) = self.gearman_workers_with_room(&request.task) {
            if local
                .cast(WorkerPoolMessage::Run(Wire::new(request.clone())))
                .is_err()
            {
                return Some((request, supervisor));
            }
            self.ctx.view.node.clone()
        } else {
            let turn = self.next.entry(request.task.clone()).or_insert(0);
            match self.ctx.scheduler.place(request, turn) {
                Ok(node) => node,
                Err(request) => return Some((request, supervisor)),
            }
        };
        tracing::debug!(job = %job, step = %step, attempt, node = %node, "attempt placed");
        let _ = supervisor.send_message(Assigned {
            job,
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
