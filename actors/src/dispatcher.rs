//! The dispatcher: hands each ready attempt to a worker pool that serves its task, on any
//! node, and tells the job supervisor which node took it.
//!
//! Today the choice is round-robin over the task's process group, and attempts whose task
//! has no worker anywhere wait here until one appears. Priority lanes and pull-based
//! distribution will replace the round-robin inside this actor without changing its
//! callers.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use troupe_runtime::protocol::{task_group, StepRequest, WorkerPoolMessage};
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

impl DispatcherState {
    /// Sends `request` to a worker pool; gives it back if there is none.
    fn try_dispatch(
        &mut self,
        request: StepRequest,
        supervisor: ActorRef<JobSupervisorMessage>,
    ) -> Option<(StepRequest, ActorRef<JobSupervisorMessage>)> {
        let mut members = ractor::pg::get_members(&task_group(&request.task));
        if members.is_empty() {
            return Some((request, supervisor));
        }
        members.sort_by_key(order_key);
        let n = self.next.entry(request.task.clone()).or_insert(0);
        let pick = members.swap_remove(*n % members.len());
        *n = n.wrapping_add(1);
        let node = self.ctx.view.node_of(pick.get_id());
        let (step, attempt) = (request.step.clone(), request.attempt);
        let pool: ActorRef<WorkerPoolMessage> = pick.into();
        if let Err(e) = pool.cast(WorkerPoolMessage::Run(Wire::new(request.clone()))) {
            tracing::debug!(error = %e, node = %node, "worker pool gone; attempt waits");
            return Some((request, supervisor));
        }
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
