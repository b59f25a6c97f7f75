//! Routing: questions and reports about one job, taken to whoever holds it.
//!
//! A job's supervisor answers for a live job, the finished-jobs table for a recent one;
//! any other job belongs to another node: the node in its id, or the one a takeover moved
//! it to (a `JobMoved` heard, or, when the owner is unreachable, the core group's ownership
//! map), and the question is forwarded there off the mailbox. Reports from workers
//! (progress, spawn requests, moved attempts) go to the job's supervisor the same way.

use std::time::Duration;

use crate::core::{CoreCommand, CoreDecision};
use ractor::RpcReplyPort;
use troupe_runtime::job::spec::JobSpec;
use troupe_runtime::job::status::JobStatus;
use troupe_runtime::protocol::{
    first_member, job_manager_group, AttemptMoved, CallReply, CallWaiting, InvalidateRequest,
    JobAnswer, JobManagerMessage, JobQueryError, LostAttempt, ResumeRequest, SpawnRequest,
    WatchRequest,
};
use troupe_runtime::task::TaskError;
use troupe_runtime::vocab::JobId;
use troupe_runtime::wire::Wire;

use super::JobManagerState;
use crate::job_supervisor::JobSupervisorMessage;

/// How long a forwarded question may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// A question about one job, answered by whoever holds it.
pub(super) enum Request {
    /// Its status.
    Status,
    /// Cancel it; answers its status.
    Cancel,
    /// Resume this step, waiting for a user; answers its status.
    Resume(String),
}

/// Where the answer to a question about one job goes.
pub(super) type StatusReply = RpcReplyPort<JobAnswer>;

/// The final status of `job` handed to one of `nodes` by its owner as it left, if any
/// answers within [`FORWARD_TIMEOUT`].
async fn handed_end(nodes: &[String], job: &str) -> Option<JobStatus> {
    let asks = nodes.iter().filter_map(|n| {
        let jm = first_member::<JobManagerMessage>(&job_manager_group(n))?;
        let job = job.to_string();
        Some(async move {
            match jm
                .call(
                    |r| JobManagerMessage::HandedEnd(job, r),
                    Some(FORWARD_TIMEOUT),
                )
                .await
            {
                Ok(ractor::rpc::CallResult::Success(w)) => w.into_inner().ok().flatten(),
                _ => None,
            }
        })
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .next()
}

/// Asks `owner`'s job manager `jm` a question about `job` and returns its answer, or
/// why there is none.
async fn forward<T: Send + 'static>(
    jm: &ractor::ActorRef<JobManagerMessage>,
    owner: &str,
    job: &str,
    msg: impl FnOnce(RpcReplyPort<Wire<Result<T, JobQueryError>>>) -> JobManagerMessage,
) -> Result<T, JobQueryError>
where
    Wire<Result<T, JobQueryError>>: ractor::Message,
{
    match jm.call(msg, Some(FORWARD_TIMEOUT)).await {
        Ok(ractor::rpc::CallResult::Success(w)) => w
            .into_inner()
            .unwrap_or_else(|e| Err(JobQueryError::Unavailable(e.to_string()))),
        _ => Err(JobQueryError::Unavailable(format!(
            "no answer from {owner} about job {job}"
        ))),
    }
}

/// The answer about `job`, which ended with `st`: its status, or, to a resume, why not.
fn ended_answer(job: &str, st: JobStatus, req: Request) -> Result<JobStatus, JobQueryError> {
    match req {
        Request::Resume(step) => Err(JobQueryError::Conflict(format!(
            "job {job} has ended ({}); step {step:?} cannot be resumed",
            st.state.as_str()
        ))),
        _ => Ok(st),
    }
}

/// Where a job's file goes (`rerun`).
pub(super) type SpecReply = RpcReplyPort<Wire<Result<JobSpec, JobQueryError>>>;

impl JobManagerState {
    /// The node that holds `job`: the one a takeover moved it to, else the one in its id.
    fn holder(&self, job: &str) -> Option<String> {
        match self.takeovers.moved_to(job) {
            Some(m) => Some(m.node.clone()),
            None => JobId::owner_of(job).map(str::to_string),
        }
    }

    /// Answers the status of `job`, wherever it is.
    pub(super) fn status(&self, job: String, reply: StatusReply) {
        self.to_job(job, reply, Request::Status);
    }

    /// Hands a question about `job` to its supervisor, the finished-jobs table, or the
    /// owner node's job manager.
    pub(super) fn to_job(&self, job: String, reply: StatusReply, req: Request) {
        if let Some(sup) = self.live.get(&job) {
            let msg = match req {
                Request::Status => JobSupervisorMessage::Status(reply),
                Request::Cancel => JobSupervisorMessage::Cancel(reply),
                Request::Resume(step) => JobSupervisorMessage::Resume(step, reply),
            };
            if let Err(Some(
                JobSupervisorMessage::Status(reply)
                | JobSupervisorMessage::Cancel(reply)
                | JobSupervisorMessage::Resume(_, reply),
            )) = sup.cast(&job, msg)
            {
                let _ = reply.send(Wire::new(Err(JobQueryError::Unavailable(format!(
                    "job {job} is ending; ask again"
                )))));
            }
            return;
        }
        // A job that ended here but moved on (a successor ran it too) is answered by its
        // holder, so every node describes it alike.
        if let Some(st) = self
            .finished
            .get(&job)
            .filter(|_| self.takeovers.newer_holder(&job).is_none())
        {
            let _ = reply.send(Wire::new(ended_answer(&job, st.clone(), req)));
            return;
        }
        // A job of a node that left gracefully, whose final status was handed here.
        if let Some(st) = self.handed.get(&job) {
            let _ = reply.send(Wire::new(ended_answer(&job, st.clone(), req)));
            return;
        }
        let owner = self.holder(&job);
        match owner {
            Some(owner) if owner != self.ctx.config.name => {
                let me = self.ctx.config.name.clone();
                let down = self.ctx.view.is_down(&owner);
                let takeover_ms = self.ctx.config.failure.takeover_after_ms;
                let view = self.ctx.view.clone();
                tokio::spawn(async move {
                    let mut owner = owner;
                    let mut jm = first_member::<JobManagerMessage>(&job_manager_group(&owner))
                        .filter(|_| !down);
                    if jm.is_none() {
                        // Gone: the core group knows whether another node took the job.
                        if let Ok(CoreDecision::Owners(o)) = crate::core::decide(
                            &me,
                            CoreCommand::Owners {
                                jobs: vec![job.clone()],
                            },
                        )
                        .await
                        {
                            if let Some(Some(o)) = o.into_iter().next() {
                                owner = o.node;
                                jm = first_member(&job_manager_group(&owner));
                            }
                        }
                    }
                    if jm.is_none() {
                        // Gone for good, maybe: a node that left handed its ends on.
                        let others: Vec<String> = crate::live_nodes(&view)
                            .into_iter()
                            .filter(|n| *n != me && *n != owner)
                            .collect();
                        if let Some(st) = handed_end(&others, &job).await {
                            let _ = reply.send(Wire::new(ended_answer(&job, st, req)));
                            return;
                        }
                    }
                    let answer = match jm {
                        None if down => Err(JobQueryError::Unavailable(format!(
                            "node {owner}, which owns job {job}, is down and no node has \
                             taken the job over yet (a node holding its copy does after \
                             {takeover_ms} ms; a job that had ended left with its owner): \
                             ask again later, or start {owner} again"
                        ))),
                        None => Err(JobQueryError::Unavailable(format!(
                            "node {owner}, which owns job {job}, is not reachable from \
                             node {me} (it stopped, or left the cluster): start it again, \
                             or ask again later"
                        ))),
                        Some(jm) => {
                            forward(&jm, &owner, &job, |r| match req {
                                Request::Status => JobManagerMessage::Status(job.clone(), r),
                                Request::Cancel => JobManagerMessage::Cancel(job.clone(), r),
                                Request::Resume(step) => JobManagerMessage::Resume(
                                    Wire::new(ResumeRequest {
                                        job: job.clone(),
                                        step,
                                    }),
                                    r,
                                ),
                            })
                            .await
                        }
                    };
                    let _ = reply.send(Wire::new(answer));
                });
            }
            _ => {
                let _ = reply.send(Wire::new(Err(JobQueryError::no_such_job(&job))));
            }
        }
    }

    /// Answers the job file of `job`: kept here if this node owns it, else asked of its
    /// owner (as [`JobManagerState::to_job`] finds it).
    pub(super) fn spec(&self, job: String, reply: SpecReply) {
        let me = &self.ctx.config.name;
        if let Some(spec) = self.specs.get(&job) {
            let _ = reply.send(Wire::new(Ok(spec.as_ref().clone())));
            return;
        }
        if self.finished.contains_key(&job) {
            let _ = reply.send(Wire::new(Err(JobQueryError::Conflict(format!(
                "job {job} ended before node {me} restarted, and its job file is not kept \
                 across restarts: submit the file again"
            )))));
            return;
        }
        let owner = self.holder(&job);
        let Some(owner) = owner.filter(|o| o != me) else {
            let _ = reply.send(Wire::new(Err(JobQueryError::no_such_job(&job))));
            return;
        };
        tokio::spawn(async move {
            let answer = match first_member::<JobManagerMessage>(&job_manager_group(&owner)) {
                None => Err(JobQueryError::Unavailable(format!(
                    "node {owner}, which owns job {job}, is not reachable (it keeps the \
                     job's file): start it again, or ask again later"
                ))),
                Some(jm) => {
                    forward(&jm, &owner, &job, |r| {
                        JobManagerMessage::Spec(job.clone(), r)
                    })
                    .await
                }
            };
            let _ = reply.send(Wire::new(answer));
        });
    }

    /// Follows a live job (its supervisor answers and sends later events to the
    /// watcher), or answers the status of any other.
    pub(super) fn watch(&self, req: WatchRequest, reply: StatusReply) {
        match self.live.get(&req.job) {
            Some(sup) => {
                let job = req.job.clone();
                if let Err(Some(JobSupervisorMessage::Watch(req, reply))) =
                    sup.cast(&job, JobSupervisorMessage::Watch(req, reply))
                {
                    let _ = reply.send(Wire::new(Err(JobQueryError::Unavailable(format!(
                        "job {} is ending; ask again",
                        req.job
                    )))));
                }
            }
            None => self.status(req.job, reply),
        }
    }

    /// Hands a running attempt's request for sub-work to its job's supervisor, or tells
    /// the attempt its job is no longer running.
    pub(super) fn spawn(&self, r: SpawnRequest) {
        match self.live.get(&r.from.job) {
            Some(sup) => {
                let job = r.from.job.clone();
                let _ = sup.cast(&job, JobSupervisorMessage::Spawn(r));
            }
            None => {
                let answer = CallReply {
                    call_id: r.call_id,
                    result: Err(TaskError::permanent(format!(
                        "job {} is no longer running",
                        r.from.job
                    ))),
                };
                crate::worker_pool::answer_call(&r.reply_to, answer);
            }
        }
    }

    /// A running attempt still waits for a call's answer: its job's supervisor answers
    /// again if it can; a job no longer running here answers with an error (the attempt
    /// is stale).
    pub(super) fn call_waiting(&self, r: CallWaiting) {
        match self.live.get(&r.from.job) {
            Some(sup) => {
                let job = r.from.job.clone();
                let _ = sup.cast(&job, JobSupervisorMessage::CallWaiting(r));
            }
            None => crate::worker_pool::answer_call(
                &r.reply_to,
                CallReply {
                    call_id: r.call_id,
                    result: Err(TaskError::permanent(format!(
                        "job {} is no longer running",
                        r.from.job
                    ))),
                },
            ),
        }
    }

    /// Asks the merger that owns the request's key to drop its cached result; answers
    /// whether there was one.
    pub(super) fn invalidate(&self, req: InvalidateRequest, reply: RpcReplyPort<bool>) {
        let key = troupe_runtime::merge::request_key(&req.task, &req.input, &Default::default());
        let owner = crate::dispatcher::key_owner(&self.ctx.view, &req.task, &key);
        tokio::spawn(async move {
            let had = match owner {
                Some((m, _)) => matches!(
                    m.call(
                        |r| troupe_runtime::protocol::MergerMessage::Invalidate(key, r),
                        Some(FORWARD_TIMEOUT)
                    )
                    .await,
                    Ok(ractor::rpc::CallResult::Success(true))
                ),
                None => false,
            };
            let _ = reply.send(had);
        });
    }

    /// Tells a job's supervisor where its attempt runs now (it was spilled or stolen).
    ///
    /// A node this one holds down (a peer that sees it back already may hand it work
    /// before this node does) counts as lost at once: its result would come over the
    /// session this node closed, and be lost with it, while the node's going down was
    /// handled before the attempt was there (the nemesis found a job that never ended so,
    /// seed 939008).
    pub(super) fn attempt_moved(&self, m: AttemptMoved) {
        let Some(sup) = self.live.get(&m.attempt.job) else {
            return;
        };
        let down = self.ctx.view.is_down(&m.node);
        let lost = down.then(|| LostAttempt {
            attempt: m.attempt.clone(),
            reason: format!("moved to node {}, which this node holds down", m.node),
            counts: true,
        });
        let _ = sup.cast(
            &m.attempt.job,
            JobSupervisorMessage::Assigned {
                step: m.attempt.step,
                attempt: m.attempt.attempt,
                node: m.node,
            },
        );
        if let Some(l) = lost {
            let job = l.attempt.job.clone();
            let _ = sup.cast(&job, JobSupervisorMessage::AttemptLost(l));
        }
    }
}
