//! The worker pool: runs attempts of the tasks this node serves, at most `slots` at once.
//!
//! It joins one process group per registered task (`troupe.task.NAME`), which is how
//! every node's dispatcher finds it, and `troupe.worker_pool.NODE`, where job supervisors
//! send answers to calls and cancels. Which waiting attempt gets a slot, and when, is the
//! [`Scheduler`]'s: the pool queues the attempts it is sent there, and the scheduler
//! starts each attempt that gets a slot through the pool's `launcher`. Each attempt runs
//! as its own tokio task holding its slot (a semaphore permit), so a slow task never
//! blocks the pool's mailbox; the task's own future runs on the node's task runtime
//! ([`crate::task_runtime`]), so a task that computes without yielding never blocks the
//! node's actors either. A task waiting on its calls or sub-jobs gives its slot back
//! until the answer comes (so a recursion deeper than the slots cannot deadlock). A panic
//! inside a task is caught and fails that attempt with a permanent error; a cancel stops
//! the task at its next await point (and tells it through `ctx.cancelled()`). The result
//! goes straight to the job manager of the job's owner node.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::Instrument;
use troupe_runtime::observe::metric;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use troupe_runtime::job::spec::SpawnKind;
use troupe_runtime::protocol::{
    first_member, task_group, worker_pool_group, AttemptRef, CallReply, CallWaiting,
    JobManagerMessage, ResultSource, SpawnRequest, StepRequest, StepResult, WorkerPoolMessage,
    CALL_WAITING_EVERY,
};
use troupe_runtime::task::{SubWork, TaskContext, TaskError};
use troupe_runtime::wire::Wire;
use troupe_runtime::TaskRegistry;

use crate::scheduler::{attempt_of, Launch, Scheduler};
use crate::task_runtime::{AbortOnDrop, TaskRuntime};
use crate::{job_manager_of, locked, ClusterView, NodeContext};

/// The worker pool.
pub(crate) struct WorkerPool;

/// Calls and sub-jobs of running attempts waiting for their answers. Kept in the node's
/// [`NodeContext`] so that it outlives a restart of the pool actor.
pub struct PendingCalls {
    /// Who waits for the answer to each call.
    calls: Mutex<HashMap<u64, oneshot::Sender<Result<Value, TaskError>>>>,
    /// The next call's id. Starts at a random number: an answer meant for this node's
    /// previous process (held while the node was unreachable, see [`answer_call`]) must
    /// not find a call of this one waiting under the same id.
    next_call: AtomicU64,
}

impl Default for PendingCalls {
    fn default() -> Self {
        Self {
            calls: Mutex::default(),
            next_call: AtomicU64::new(rand::random::<u64>() >> 1),
        }
    }
}

impl std::fmt::Debug for PendingCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCalls").finish_non_exhaustive()
    }
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic payload".into()
    }
}

/// Sends a step result to the job manager of its owner node (held and offered again while
/// the owner is unreachable, see [`deliver_later`]).
pub(crate) fn send_result(view: &Arc<ClusterView>, result: StepResult, owner: &str) {
    match job_manager_of(owner) {
        Some(jm) => {
            if let Err(e) = jm.cast(JobManagerMessage::StepFinished(Wire::new(result))) {
                tracing::warn!(owner = %owner, error = %e, "cannot deliver a step result");
            }
        }
        None => {
            tracing::warn!(
                owner = %owner, job = %result.job, step = %result.step,
                "the job's owner node is not reachable; holding the result and trying again"
            );
            let attempt = AttemptRef {
                job: result.job.clone(),
                step: result.step.clone(),
                attempt: result.attempt,
            };
            locked(&view.held_results).insert(attempt.clone());
            tokio::spawn(deliver_later(
                view.clone(),
                attempt,
                result,
                owner.to_string(),
            ));
        }
    }
}

/// How long a result or a call's answer whose node is unreachable is held and offered
/// again.
const HOLD_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// How often a held result or answer is offered again.
const OFFER_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Offers `result` to its owner every [`OFFER_EVERY`] until the owner is reachable again,
/// for at most [`HOLD_FOR`]. A cut shorter than `down_after_ms` makes nobody declare
/// anybody down, so the owner would wait for this result for ever if it were dropped.
/// Meanwhile the attempt counts as held here (`ClusterView::held_results`): an owner back
/// from a pause asks which of its attempts this node holds, and must not run this one
/// again.
async fn deliver_later(
    view: Arc<ClusterView>,
    attempt: AttemptRef,
    result: StepResult,
    owner: String,
) {
    match reachable_again(|| job_manager_of(&owner)).await {
        Some(jm) => {
            tracing::info!(owner = %owner, job = %result.job, step = %result.step, "delivered a held step result");
            let _ = jm.cast(JobManagerMessage::StepFinished(Wire::new(result)));
        }
        None => tracing::warn!(
            owner = %owner, job = %result.job, step = %result.step,
            "dropping a step result: its owner stayed unreachable for 60 s (it runs the attempt again once it sees this node down)"
        ),
    }
    locked(&view.held_results).remove(&attempt);
}

/// Looks for an actor every [`OFFER_EVERY`] until `find` finds it, for at most
/// [`HOLD_FOR`].
async fn reachable_again<M: ractor::Message>(
    find: impl Fn() -> Option<ActorRef<M>>,
) -> Option<ActorRef<M>> {
    let until = std::time::Instant::now() + HOLD_FOR;
    while std::time::Instant::now() < until {
        tokio::time::sleep(OFFER_EVERY).await;
        if let Some(found) = find() {
            return Some(found);
        }
    }
    None
}

/// Answers a call or sub-job of an attempt running on `node` (its worker pool wakes the
/// task waiting for it). While no connection to `node` is open the answer is offered
/// again every [`OFFER_EVERY`] for up to [`HOLD_FOR`]: a cut shorter than
/// `down_after_ms` counts nobody down, and a dropped answer would leave the calling task
/// waiting for ever; a node counted down has lost the attempt anyway, and its job runs
/// it again.
pub(crate) fn answer_call(node: &str, reply: CallReply) {
    let pool_on = |node: &str| first_member::<WorkerPoolMessage>(&worker_pool_group(node));
    if let Some(pool) = pool_on(node) {
        let _ = pool.cast(WorkerPoolMessage::CallReply(Wire::new(reply)));
        return;
    }
    tracing::warn!(node = %node, call = reply.call_id, "the calling task's node is not reachable; holding the call's answer and trying again");
    let node = node.to_string();
    tokio::spawn(async move {
        match reachable_again(|| pool_on(&node)).await {
            Some(pool) => {
                let _ = pool.cast(WorkerPoolMessage::CallReply(Wire::new(reply)));
            }
            None => {
                tracing::warn!(node = %node, call = reply.call_id, "dropping a call's answer: the calling task's node stayed unreachable for 60 s")
            }
        }
    });
}

/// A running attempt's way to its job's supervisor; shares the attempt's slot so that it
/// can give it back while it waits.
struct AttemptLink {
    owner: String,
    node: String,
    calls: Arc<PendingCalls>,
    scheduler: Arc<Scheduler>,
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    /// Calls of this attempt not answered yet: the slot is taken again only when the
    /// last is answered (taking it back while a sibling's sub-work still waits for a
    /// slot could hold every slot of the node on tasks that cannot go on).
    outstanding: Arc<AtomicU64>,
    /// How long the attempt went without its slot, waiting for its calls.
    slotless: Arc<Mutex<Slotless>>,
}

/// The time an attempt spent without its slot: its slot time is its run time less that.
#[derive(Default)]
struct Slotless {
    /// Since when it is without (its slot is given back now).
    since: Option<std::time::Instant>,
    /// Microseconds without it before that.
    total_us: u64,
}

impl Slotless {
    fn gave_back(&mut self) {
        self.since = Some(std::time::Instant::now());
    }

    fn took_again(&mut self) {
        if let Some(since) = self.since.take() {
            self.total_us += since.elapsed().as_micros() as u64;
        }
    }

    /// Of `ran_us`, the time the attempt held its slot.
    fn held_of(&self, ran_us: u64) -> u64 {
        let now_without = self.since.map_or(0, |s| s.elapsed().as_micros() as u64);
        ran_us.saturating_sub(self.total_us + now_without)
    }
}

impl SubWork for AttemptLink {
    fn spawn(
        &self,
        job: &str,
        step: &str,
        attempt: u32,
        kind: SpawnKind,
    ) -> Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>> {
        let call_id = self.calls.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        locked(&self.calls.calls).insert(call_id, tx);
        let req = SpawnRequest {
            from: AttemptRef {
                job: job.into(),
                step: step.into(),
                attempt,
            },
            call_id,
            reply_to: self.node.clone(),
            kind,
        };
        let waiting = CallWaiting {
            from: req.from.clone(),
            call_id,
            reply_to: req.reply_to.clone(),
        };
        let outstanding = self.outstanding.clone();
        outstanding.fetch_add(1, Ordering::AcqRel);
        // Give the slot back while waiting (if a sibling call has not already), and before
        // the owner hears of the call: the call's own work may take it (work made by an
        // attempt runs on that attempt's node while the node has room), or else a waiting
        // attempt.
        let released = locked(&self.permit).take();
        if released.is_some() {
            locked(&self.slotless).gave_back();
            drop(released);
            self.scheduler.pump();
        }
        let sent = job_manager_of(&self.owner)
            .map(|jm| jm.cast(JobManagerMessage::Spawn(Wire::new(req))).is_ok())
            .unwrap_or(false);
        let calls = self.calls.clone();
        let scheduler = self.scheduler.clone();
        let owner = self.owner.clone();
        let permit = self.permit.clone();
        let slotless = self.slotless.clone();
        Box::pin(async move {
            let result = if !sent {
                locked(&calls.calls).remove(&call_id);
                Err(TaskError::transient(format!(
                    "the job's owner node {owner} is not reachable"
                )))
            } else {
                wait_for_answer(rx, &owner, waiting).await
            };
            // Take a slot again before the task goes on, once its last call is answered
            // (concurrent calls of one task share one slot). Waiting here goes ahead of
            // the attempts in the lanes: the semaphore hands a freed slot to its waiters
            // first, and `Scheduler::pump` only takes slots nobody waits for.
            let last = outstanding.fetch_sub(1, Ordering::AcqRel) == 1;
            if last && locked(&permit).is_none() {
                if let Some(p) = scheduler.acquire_slot().await {
                    let surplus = {
                        let mut slot = locked(&permit);
                        match *slot {
                            None => {
                                *slot = Some(p);
                                locked(&slotless).took_again();
                                None
                            }
                            // A sibling call got back first and holds the slot: this
                            // permit goes back, to a waiting attempt.
                            Some(_) => Some(p),
                        }
                    };
                    if surplus.is_some() {
                        drop(surplus);
                        scheduler.pump();
                    }
                }
            }
            result
        })
    }
}

/// Waits for the answer to a call, telling the job's owner every [`CALL_WAITING_EVERY`]
/// that it still waits: messages between nodes are not acknowledged, and the request or
/// its answer may be lost with a connection that closed (the owner answers again, see
/// `JobRun::call_waiting`).
async fn wait_for_answer(
    mut rx: oneshot::Receiver<Result<Value, TaskError>>,
    owner: &str,
    waiting: CallWaiting,
) -> Result<Value, TaskError> {
    loop {
        match tokio::time::timeout(CALL_WAITING_EVERY, &mut rx).await {
            Ok(answer) => {
                return answer
                    .unwrap_or_else(|_| Err(TaskError::transient("the call's answer was lost")))
            }
            Err(_) => {
                if let Some(jm) = job_manager_of(owner) {
                    let _ = jm.cast(JobManagerMessage::CallWaiting(Wire::new(waiting.clone())));
                }
            }
        }
    }
}

/// State of the worker pool actor.
pub(crate) struct WorkerPoolState {
    ctx: NodeContext,
}

impl WorkerPoolState {
    /// Queues an attempt sent by a dispatcher (of any node); a leaving node hands it
    /// back at once (it was sent before its sender learned that this node is leaving).
    fn run(&self, req: StepRequest) {
        if self.ctx.view.is_draining() {
            self.ctx.scheduler.hand_back(&req.owner, attempt_of(&req));
            return;
        }
        self.ctx.scheduler.enqueue(req);
    }
}
/// How this node's attempts run once the scheduler gives them a slot: [`launch`] with the
/// node's tasks, for the scheduler to call.
pub(crate) fn launcher(
    registry: TaskRegistry,
    node: String,
    calls: Arc<PendingCalls>,
    tasks: TaskRuntime,
) -> Box<Launch> {
    Box::new(move |scheduler, req, permit, cancel| {
        launch(
            scheduler, &registry, &node, &calls, &tasks, req, permit, cancel,
        )
    })
}

/// Runs one attempt in its own task, holding `permit` (its slot) until it ends, the
/// task's own future on `tasks`; `token` stops it.
#[allow(clippy::too_many_arguments)]
fn launch(
    scheduler: &Arc<Scheduler>,
    registry: &TaskRegistry,
    node: &str,
    calls: &Arc<PendingCalls>,
    tasks: &TaskRuntime,
    req: StepRequest,
    permit: OwnedSemaphorePermit,
    token: CancellationToken,
) {
    let scheduler = scheduler.clone();
    let calls = calls.clone();
    let user_rt = tasks.clone();
    let node = node.to_string();
    let task = registry.get(&req.task);
    let key = attempt_of(&req);
    // A root span: `launch` is often called from inside the attempt that just ended (its
    // slot went to this one), and a span made there would be that attempt's child, so a
    // busy node would build an endless chain of parents (whose close recursed until the
    // stack overflowed). The job's trace ids in the fields join the lines instead.
    let span = tracing::info_span!(
        parent: None,
        "step",
        job = %req.job,
        step = %req.step,
        attempt = req.attempt,
        task = %req.task,
        owner = %req.owner,
        trace_id = %req.trace.trace_id,
        parent_id = %req.trace.parent_id,
    );
    let fut = async move {
        let slot = Arc::new(Mutex::new(Some(permit)));
        let slotless = Arc::new(Mutex::new(Slotless::default()));
        let link = Arc::new(AttemptLink {
            owner: req.owner.clone(),
            node: node.clone(),
            calls,
            scheduler: scheduler.clone(),
            permit: slot.clone(),
            outstanding: Arc::default(),
            slotless: slotless.clone(),
        });
        let ctx = TaskContext::new(&req.job, &req.step, req.attempt, &node, req.deps).attach(
            link,
            token.clone(),
            req.resumed,
        );
        // The task's future runs on the task runtime, apart from the control plane (a
        // task that computes without yielding holds a task thread, not the node); the
        // guard aborts it when this attempt stops waiting (a cancel).
        let run = async {
            match task {
                None => Err(TaskError::permanent(format!(
                    "task {:?} is not registered on node {node}",
                    req.task
                ))),
                Some(t) => {
                    let user = t.run_json(ctx, req.input);
                    let mut user = AbortOnDrop(
                        user_rt.spawn(AssertUnwindSafe(user).catch_unwind().in_current_span()),
                    );
                    let outcome = match (&mut user.0).await {
                        Ok(caught) => caught,
                        Err(e) if e.is_panic() => Err(e.into_panic()),
                        Err(e) => Ok(Err(TaskError::transient(format!(
                            "the task's runtime stopped it: {e}"
                        )))),
                    };
                    outcome.unwrap_or_else(|p| {
                        let msg = panic_message(p.as_ref());
                        tracing::error!(task = %req.task, job = %req.job, step = %req.step, panic = %msg, "task panicked; failing its step");
                        Err(TaskError::permanent(format!("task panicked: {msg}")))
                    })
                }
            }
        };
        let began = std::time::Instant::now();
        tracing::debug!("attempt started");
        let result = tokio::select! {
            r = run => Some(r),
            _ = token.cancelled() => None,
        };
        metrics::histogram!(metric::STEP_SECONDS, "task" => req.task.clone())
            .record(began.elapsed().as_secs_f64());
        tracing::debug!(
            ok = matches!(result, Some(Ok(_))),
            elapsed_us = began.elapsed().as_micros() as u64,
            "attempt ended"
        );
        let cancelled = result.is_none();
        // Slot time: a task waiting for its calls gave its slot back meanwhile.
        let ran_us =
            (!cancelled).then(|| locked(&slotless).held_of(began.elapsed().as_micros() as u64));
        let succeeded = ran_us.filter(|_| matches!(result, Some(Ok(_))));
        let freed = locked(&slot).take();
        scheduler.attempt_ended(&key, &req.task, freed, succeeded);
        let result = StepResult {
            job: req.job,
            step: req.step,
            attempt: req.attempt,
            node,
            result: result.unwrap_or_else(|| Err(TaskError::permanent("cancelled"))),
            source: ResultSource::Executed,
            epoch: req.epoch,
            ran_us,
        };
        // An execution for a merger: it answers the requests that joined this one.
        troupe_runtime::protocol::merger_execution_ended(
            req.merger.as_deref(),
            req.key.as_deref(),
            &result,
            cancelled,
        );
        if cancelled {
            tracing::debug!(job = %key.job, step = %key.step, attempt = key.attempt, "attempt cancelled");
        } else {
            send_result(&scheduler.view, result, &req.owner);
        }
    };
    // On the node's runtime even when a slot is handed on from inside a task.
    tasks.spawn_control(fut.instrument(span));
}

impl Actor for WorkerPool {
    type Msg = WorkerPoolMessage;
    type State = WorkerPoolState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        for name in ctx.registry.names() {
            ractor::pg::join(task_group(&name), vec![myself.get_cell()]);
        }
        ractor::pg::join(worker_pool_group(&ctx.view.node), vec![myself.get_cell()]);
        Ok(WorkerPoolState { ctx })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerPoolMessage::Run(req) => match req.into_inner() {
                Ok(req) => state.run(req),
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable step request"),
            },
            WorkerPoolMessage::Steal(r) => match r.into_inner() {
                Ok(r) => state.ctx.scheduler.give_work(r),
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable steal request"),
            },
            WorkerPoolMessage::CallReply(r) => match r.into_inner() {
                Ok(r) => match locked(&state.ctx.calls.calls).remove(&r.call_id) {
                    Some(tx) => {
                        let _ = tx.send(r.result);
                    }
                    None => tracing::debug!(call = r.call_id, "answer to a call nobody waits for"),
                },
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable call answer"),
            },
            WorkerPoolMessage::Cancel(a) => match a.into_inner() {
                Ok(a) => {
                    // Not one of ours: an attempt held by an external Gearman worker of
                    // this node (cancels go to the node's worker pool).
                    if !state.ctx.scheduler.cancel(&a) {
                        if let Some(g) = crate::find_on::<WorkerPoolMessage>(
                            crate::names::GEARMAN_WORKERS,
                            &state.ctx.view.node,
                        ) {
                            let _ = g.cast(WorkerPoolMessage::Cancel(Wire::new(a)));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable cancel"),
            },
            WorkerPoolMessage::Holds(attempts, reply) => {
                state.ctx.scheduler.answer_holds(attempts, reply)
            }
            WorkerPoolMessage::Abandon(run) => match run.into_inner() {
                Ok(run) => {
                    // Attempts held for this node's external Gearman workers too.
                    if let Some(g) = crate::find_on::<WorkerPoolMessage>(
                        crate::names::GEARMAN_WORKERS,
                        &state.ctx.view.node,
                    ) {
                        let _ = g.cast(WorkerPoolMessage::Abandon(Wire::new(run.clone())));
                    }
                    state.ctx.scheduler.abandon(run);
                }
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable abandoned run"),
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Slotless;

    /// An attempt's slot time leaves out the time it waited for its calls without its
    /// slot, also while it still waits.
    #[test]
    fn slot_time_leaves_out_the_time_without_the_slot() {
        let mut s = Slotless::default();
        assert_eq!(s.held_of(500), 500);
        s.gave_back();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(s.held_of(100_000) <= 95_000, "5 ms without it so far");
        s.took_again();
        assert!(s.total_us >= 5_000);
        let total = s.total_us;
        assert_eq!(s.held_of(total + 40), 40);
        assert_eq!(s.held_of(1), 0, "never below zero");
    }
}
