//! `GearmanWorkers`: the node's stand-in, in the task groups, for the external Gearman
//! workers connected to it.
//!
//! It speaks [`WorkerPoolMessage`] like a [`crate::worker_pool::WorkerPool`], so every
//! node's dispatcher hands it attempts of the functions those workers can do; it puts
//! them on the [`Board`](super::board::Board) and wakes sleeping workers with `NOOP`.
//! Cancels drop an attempt from the board. A timer gives up attempts whose worker's
//! `CAN_DO_TIMEOUT` ran out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use troupe_runtime::protocol::{
    first_member, job_manager_group, task_group, JobManagerMessage, LostAttempt, StepRequest,
    StepResult, WorkerPoolMessage,
};
use troupe_runtime::task::TaskError;
use troupe_runtime::wire::Wire;

use super::board::{attempt_of, AbilityChange};
use super::{lock, GearmanShared};
use crate::worker_pool::send_result;
use crate::{find_on, names, NodeContext};

/// How often held attempts are checked against their worker's time limit.
const EXPIRY_EVERY: Duration = Duration::from_millis(200);

/// The actor (see the module docs).
pub(crate) struct GearmanWorkers;

/// Its state.
pub(crate) struct GearmanWorkersState {
    shared: Arc<GearmanShared>,
    node: String,
    expiry: JoinHandle<()>,
    /// For its fence: attempts this node told their owner it does not hold.
    scheduler: Arc<crate::scheduler::Scheduler>,
}

/// Tells the owner of `request`'s job that the attempt ended without a result, so that
/// it runs again elsewhere. `counts`: a worker held it (it counts against the step's
/// cap on lost attempts); an attempt that only waited here does not.
pub(crate) fn report_lost(request: &StepRequest, reason: String, counts: bool) {
    let lost = LostAttempt {
        attempt: attempt_of(request),
        reason,
        counts,
    };
    match first_member::<JobManagerMessage>(&job_manager_group(&request.owner)) {
        Some(jm) => {
            let _ = jm.cast(JobManagerMessage::AttemptLost(Wire::new(lost)));
        }
        None => {
            tracing::warn!(owner = %request.owner, job = %request.job, "cannot report a lost attempt: its owner is not reachable")
        }
    }
}

/// Carries out a change of the node's Gearman abilities: join or leave task groups, and
/// send attempts that waited for a function nobody here does any more elsewhere.
pub(crate) fn apply_change(change: AbilityChange, node: &str) {
    if let Some(me) = find_on::<WorkerPoolMessage>(names::GEARMAN_WORKERS, node) {
        for f in &change.joined {
            tracing::info!(function = %f, "a Gearman worker serves this function here");
            ractor::pg::join(task_group(f), vec![me.get_cell()]);
        }
        for f in &change.left {
            tracing::info!(function = %f, "no Gearman worker serves this function here any more");
            ractor::pg::leave(task_group(f), vec![me.get_cell()]);
        }
    }
    for r in change.orphans {
        report_lost(
            &r,
            format!("no Gearman worker for {} on node {node} any more", r.task),
            false,
        );
    }
}

async fn expire(view: Arc<crate::ClusterView>, shared: Arc<GearmanShared>, node: String) {
    let mut tick = tokio::time::interval(EXPIRY_EVERY);
    loop {
        tick.tick().await;
        let (late, wake) = {
            let mut board = lock(&shared.board);
            let now = Instant::now();
            (board.expired(now), board.wakeups(now))
        };
        shared.wake(wake);
        for (req, conn) in late {
            tracing::warn!(job = %req.job, step = %req.step, conn, "a Gearman worker passed its CAN_DO_TIMEOUT; the attempt fails");
            send_result(
                &view,
                StepResult {
                    job: req.job.clone(),
                    step: req.step.clone(),
                    attempt: req.attempt,
                    node: node.clone(),
                    result: Err(TaskError::transient(format!(
                        "the Gearman worker for {} gave no result within its CAN_DO_TIMEOUT",
                        req.task
                    ))),
                    source: Default::default(),
                    epoch: req.epoch,
                    ran_us: None,
                },
                &req.owner,
            );
        }
    }
}

impl Actor for GearmanWorkers {
    type Msg = WorkerPoolMessage;
    type State = GearmanWorkersState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        let shared = ctx.view.gearman.clone();
        // After a restart: serve again what the connected workers can do.
        for f in lock(&shared.board).functions() {
            ractor::pg::join(task_group(&f), vec![myself.get_cell()]);
        }
        let node = ctx.view.node.clone();
        let expiry = tokio::spawn(expire(ctx.view.clone(), shared.clone(), node.clone()));
        Ok(GearmanWorkersState {
            shared,
            node,
            expiry,
            scheduler: ctx.scheduler.clone(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.expiry.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerPoolMessage::Run(req) => match req.into_inner() {
                Ok(req) => {
                    // Held until the attempt is on the board (see `Scheduler::unheld`).
                    let fence = state.scheduler.fence();
                    if fence.refuses(&attempt_of(&req)) {
                        drop(fence);
                        crate::scheduler::drop_fenced(req);
                        return Ok(());
                    }
                    let queued = lock(&state.shared.board).enqueue(req, Instant::now());
                    drop(fence);
                    match queued {
                        Ok(wake) => state.shared.wake(wake),
                        Err(req) => report_lost(
                            &req,
                            format!(
                                "no Gearman worker for {} on node {} any more",
                                req.task, state.node
                            ),
                            false,
                        ),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable step request"),
            },
            WorkerPoolMessage::Cancel(a) => match a.into_inner() {
                Ok(a) => {
                    lock(&state.shared.board).cancel(&a);
                }
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable cancel"),
            },
            WorkerPoolMessage::Abandon(run) => match run.into_inner() {
                Ok(run) => {
                    lock(&state.shared.board).abandon(&run);
                }
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable abandoned run"),
            },
            WorkerPoolMessage::Steal(_) => {
                tracing::debug!(
                    "a steal request for the Gearman stand-in; its work stays with its workers"
                )
            }
            WorkerPoolMessage::CallReply(_) => {
                tracing::debug!("a call answer for a Gearman worker, which makes no calls; dropped")
            }
            WorkerPoolMessage::Holds(attempts, reply) => {
                state.scheduler.answer_holds(attempts, reply)
            }
        }
        Ok(())
    }
}
