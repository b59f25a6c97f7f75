//! The worker pool: runs attempts of the tasks this node serves, at most `slots` at once.
//!
//! It joins one process group per registered task (`troupe.task.NAME`), which is how
//! every node's dispatcher finds it. Each attempt runs as its own tokio task, so a slow
//! task never blocks the pool's mailbox; a panic inside a task is caught and fails that
//! attempt with a permanent error, and the node carries on. The result goes straight to
//! the job manager of the job's owner node.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use troupe_runtime::protocol::{
    job_manager_group, task_group, JobManagerMessage, StepRequest, StepResult, WorkerPoolMessage,
};
use troupe_runtime::task::{TaskContext, TaskError};
use troupe_runtime::wire::Wire;

use crate::NodeContext;

/// The worker pool.
pub struct WorkerPool;

/// State of the worker pool.
pub struct WorkerPoolState {
    ctx: NodeContext,
    busy: usize,
    queue: VecDeque<StepRequest>,
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

/// Sends a step result to the job manager of its owner node.
pub fn send_result(result: StepResult, owner: &str) {
    match ractor::pg::get_members(&job_manager_group(owner))
        .into_iter()
        .next()
    {
        Some(jm) => {
            let jm: ActorRef<JobManagerMessage> = jm.into();
            if let Err(e) = jm.cast(JobManagerMessage::StepFinished(Wire::new(result))) {
                tracing::warn!(owner = %owner, error = %e, "cannot deliver a step result");
            }
        }
        None => tracing::warn!(
            owner = %owner, job = %result.job, step = %result.step,
            "the job's owner node is not reachable; dropping the result"
        ),
    }
}

impl WorkerPoolState {
    fn publish(&self) {
        self.ctx
            .view
            .busy
            .store(self.busy as u32, Ordering::Relaxed);
        self.ctx
            .view
            .queued
            .store(self.queue.len() as u32, Ordering::Relaxed);
    }

    fn start(&mut self, myself: &ActorRef<WorkerPoolMessage>, req: StepRequest) {
        self.busy += 1;
        let node = self.ctx.view.node.clone();
        let task = self.ctx.registry.get(&req.task);
        let me = myself.clone();
        tokio::spawn(async move {
            let ctx = TaskContext {
                job_id: req.job.clone(),
                step_id: req.step.clone(),
                attempt: req.attempt,
                node: node.clone(),
                deps: req.deps,
            };
            let result = match task {
                None => Err(TaskError::permanent(format!(
                    "task {:?} is not registered on node {node}",
                    req.task
                ))),
                Some(t) => AssertUnwindSafe(t.run_json(ctx, req.input))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|p| {
                        let msg = panic_message(p.as_ref());
                        tracing::error!(task = %req.task, job = %req.job, step = %req.step, panic = %msg, "task panicked; failing its step");
                        Err(TaskError::permanent(format!("task panicked: {msg}")))
                    }),
            };
            let owner = req.owner;
            send_result(
                StepResult {
                    job: req.job,
                    step: req.step,
                    attempt: req.attempt,
                    node,
                    result,
                },
                &owner,
            );
            let _ = me.cast(WorkerPoolMessage::SlotFreed);
        });
    }
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
        let s = WorkerPoolState {
            ctx,
            busy: 0,
            queue: VecDeque::new(),
        };
        s.publish();
        Ok(s)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerPoolMessage::Run(req) => match req.into_inner() {
                Ok(req) if state.busy < state.ctx.config.slots => state.start(&myself, req),
                Ok(req) => state.queue.push_back(req),
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable step request"),
            },
            WorkerPoolMessage::SlotFreed => {
                state.busy = state.busy.saturating_sub(1);
                if let Some(next) = state.queue.pop_front() {
                    state.start(&myself, next);
                }
            }
        }
        state.publish();
        Ok(())
    }
}
