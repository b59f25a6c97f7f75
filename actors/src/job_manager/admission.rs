//! Admission: what a submission goes through before it becomes a job.
//!
//! A submission is validated (the step graph, against the node's limits), coalesced into
//! a job in flight with the same unique key, made to wait off the mailbox for a task's
//! worker group that is not there yet (`task_wait_ms`), and refused when the cluster or its
//! submitter has too much in flight (`admission.max_waiting_steps`,
//! `limits.max_jobs_per_client`) or when new work of its class already waits too long
//! for a slot (`admission.wait_target_ms`: a refusal now, "retry after", costs the client
//! less than a place at the back of a queue that only grows). An accepted job is named `NODE-BOOT-SEQ` and answered
//! once the journal says it is durable. The per-submitter counts and unique keys kept for
//! this live here too.

use std::time::{Duration, Instant};

use crate::job_supervisor::run::JobRun;
use ractor::{Actor, ActorRef, RpcReplyPort};
use tokio::sync::oneshot;
use troupe_runtime::error::ValidationError;
use troupe_runtime::job::spec::Priority;
use troupe_runtime::job::validate::validate_with;
use troupe_runtime::protocol::{
    task_group, task_of_group, JobManagerMessage, SubmitError, SubmitRequest, UniqueJob,
};
use troupe_runtime::vocab::JobId;
use troupe_runtime::wire::Wire;

use super::JobManagerState;
use crate::job_supervisor::{JobSupervisor, JobSupervisorArgs, JobSupervisorMessage};
use crate::light_jobs::{LightJobsMessage, Supervisor};
use crate::scheduler::standing::refuses;

/// Where a submission's answer goes.
pub(super) type SubmitReply = RpcReplyPort<Wire<Result<String, SubmitError>>>;

/// Answers a submission with its job id once the journal says the job is durable
/// (`journal_ack`), waiting at most [`crate::journal::ACK_WAIT`] for a replica: the job
/// runs meanwhile, and a replica that does not answer must not stall the client. A job
/// the journal could not record is refused (`Unavailable`) and cancelled: an accepted
/// job must survive a crash of its node.
fn answer_when_durable(
    myself: ActorRef<JobManagerMessage>,
    id: String,
    durable: Option<oneshot::Receiver<crate::journal::Durable>>,
    reply: SubmitReply,
) {
    let Some(durable) = durable else {
        let _ = reply.send(Wire::new(Ok(id)));
        return;
    };
    tokio::spawn(async move {
        let not_durable = match tokio::time::timeout(crate::journal::ACK_WAIT, durable).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(e.to_string()),
            Ok(Err(_)) => Some("its journal's writer has stopped; restart the node".into()),
            Err(_) => {
                metrics::counter!(troupe_runtime::observe::metric::REPLICA_WRITES, "direction" => "ack_timeout")
                    .increment(1);
                tracing::warn!(job = %id, "no replica confirmed its copy of this job within {:?}; accepted with the owner's journal alone", crate::journal::ACK_WAIT);
                None
            }
        };
        if let Some(why) = not_durable {
            let node = JobId::owner_of(&id).unwrap_or_default().to_string();
            tracing::error!(job = %id, reason = %why, "job refused: the journal could not record it");
            metrics::counter!(troupe_runtime::observe::metric::REFUSED, "reason" => "journal")
                .increment(1);
            // Started already: stop it (its status says cancelled).
            let (cancelled, _) = ractor::concurrency::oneshot();
            let _ = myself.cast(JobManagerMessage::Cancel(id, cancelled.into()));
            let _ = reply.send(Wire::new(Err(SubmitError::Unavailable(format!(
                "node {node} refused the job: {why}"
            )))));
            return;
        }
        let _ = reply.send(Wire::new(Ok(id)));
    });
}

/// The steps whose task no worker group in view serves, as (step, task).
fn missing_tasks(req: &SubmitRequest) -> Vec<(String, String)> {
    req.spec
        .steps
        .iter()
        .filter(|s| ractor::pg::get_members(&task_group(s.task_name())).is_empty())
        .map(|s| (s.id.clone(), s.task_name().to_string()))
        .collect()
}

/// The tasks some node in view serves, sorted, for an error message.
fn known_tasks() -> String {
    let mut t: Vec<String> = ractor::pg::which_groups()
        .iter()
        .filter_map(|g| task_of_group(g).map(str::to_string))
        .collect();
    t.sort();
    t.dedup();
    t.join(", ")
}

impl JobManagerState {
    /// Accepts a job: validates it, waits for missing worker groups, applies admission
    /// limits, names it and starts its supervisor; answers once the job is durable.
    pub(super) async fn submit(
        &mut self,
        myself: &ActorRef<JobManagerMessage>,
        req: SubmitRequest,
        reply: SubmitReply,
    ) {
        if self.ctx.view.is_draining() {
            let m = format!(
                "node {} is leaving (draining); submit to another node",
                self.ctx.view.node
            );
            let _ = reply.send(Wire::new(Err(SubmitError::Unavailable(m))));
            return;
        }
        let graph = match validate_with(&req.spec, &self.ctx.config.limits) {
            Ok(g) => g,
            Err(e) => {
                let _ = reply.send(Wire::new(Err(SubmitError::Invalid(e.to_string()))));
                return;
            }
        };
        if let Some(key) = &req.unique {
            if let Some(u) = self.unique.get_mut(key) {
                if let Some(sup) = self.live.get(&u.job) {
                    u.submitters = u.submitters.saturating_add(1);
                    if let Some(mut w) = req.watch {
                        w.job = u.job.clone();
                        let _ = sup.cast(&u.job, JobSupervisorMessage::AddWatcher(w));
                    }
                    tracing::debug!(job = %u.job, unique = %key, "submission coalesced into a job in flight");
                    let _ = reply.send(Wire::new(Ok(u.job.clone())));
                    return;
                }
            }
        }
        let missing = if req.wait_for_workers {
            Vec::new()
        } else {
            missing_tasks(&req)
        };
        if let Some((step, task)) = missing.first() {
            if req.waited {
                let e = ValidationError::UnknownTask {
                    step: step.clone(),
                    task: task.clone(),
                    waited_ms: self.ctx.config.task_wait_ms,
                    known: known_tasks(),
                };
                let _ = reply.send(Wire::new(Err(SubmitError::Invalid(e.to_string()))));
                return;
            }
            // A worker group may be about to appear (a node still joining): wait for it
            // off the mailbox, then submit again.
            let wait = Duration::from_millis(self.ctx.config.task_wait_ms);
            let me = myself.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let mut req = req;
                while start.elapsed() < wait && !missing_tasks(&req).is_empty() {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                req.waited = true;
                let _ = me.cast(JobManagerMessage::Submit(Wire::new(req), reply));
            });
            return;
        }
        let adm = self.ctx.config.admission;
        if adm.max_waiting_steps > 0 {
            let waiting = self.ctx.scheduler.waiting_in_cluster();
            if waiting >= adm.max_waiting_steps as u64 {
                metrics::counter!(troupe_runtime::observe::metric::REFUSED, "reason" => "overloaded")
                    .increment(1);
                let _ = reply.send(Wire::new(Err(SubmitError::Overloaded {
                    message: format!(
                        "{waiting} steps wait for worker slots in the cluster, the most \
                         admitted (admission.max_waiting_steps)"
                    ),
                    retry_after_ms: adm.retry_after_ms,
                })));
                return;
            }
        }
        if let Some((message, retry_after_ms)) = self.waits_too_long(&req) {
            metrics::counter!(troupe_runtime::observe::metric::REFUSED, "reason" => "waiting_time")
                .increment(1);
            let _ = reply.send(Wire::new(Err(SubmitError::Overloaded {
                message,
                retry_after_ms,
            })));
            return;
        }
        let client = req
            .watch
            .as_ref()
            .map(|w| w.group.clone())
            .unwrap_or_default();
        let max = self.ctx.config.limits.max_jobs_per_client;
        let live = self.per_client.get(&client).copied().unwrap_or(0);
        if req.counted_per_client && live >= max {
            metrics::counter!(troupe_runtime::observe::metric::REFUSED, "reason" => "too_many_jobs")
                .increment(1);
            let who = client
                .strip_prefix("troupe.client.")
                .map(|c| format!("client {c}"))
                .unwrap_or_else(|| "the HTTP API".into());
            let _ = reply.send(Wire::new(Err(SubmitError::Unavailable(format!(
                "{who} has {live} jobs in flight on node {}, the most allowed \
                 (limits.max_jobs_per_client); wait for some to end, then submit again",
                self.ctx.config.name
            )))));
            return;
        }
        self.seq += 1;
        let id = JobId::new(&self.ctx.config.name, &self.boot, self.seq).to_string();
        let mut watchers = Vec::new();
        if let Some(mut w) = req.watch {
            w.job = id.clone();
            watchers.push(w);
        }
        let submitted_at_ms = troupe_runtime::observe::now_ms();
        // A job its submitter asked not to journal (a Gearman foreground job) has no
        // record, no copies and no end to confirm: it lives as long as its owner.
        let journal = self.ctx.journal.clone().filter(|_| req.journaled);
        let durable = journal
            .as_ref()
            .and_then(|j| j.accept(&id, &req.spec, &self.ctx.config.limits, submitted_at_ms));
        // A few steps, no fan-out: the light path (see `light_jobs`).
        let light = req.spec.steps.len() <= crate::light_jobs::MAX_STEPS
            && req.spec.steps.iter().all(|s| s.for_each.is_none());
        let run = JobRun::with_limits(id.clone(), req.spec, graph, self.ctx.config.limits)
            .with_submit_time(submitted_at_ms);
        self.specs.insert(id.clone(), run.spec());
        let args = JobSupervisorArgs {
            run,
            owner: self.ctx.config.name.clone(),
            watchers,
            journal,
            resumed: None,
            epoch: 0,
        };
        let (journaled, counted) = (req.journaled, req.counted_per_client);
        match self.supervise(myself, args, light).await {
            Ok(sup) => {
                tracing::debug!(job = %id, "job accepted");
                if !journaled {
                    self.unjournaled.insert(id.clone());
                }
                self.live.insert(id.clone(), sup);
                self.takeovers.run_started(&id, 0);
                self.count_owned();
                if counted {
                    *self.per_client.entry(client.clone()).or_insert(0) += 1;
                    self.client_of.insert(id.clone(), client);
                }
                if let Some(key) = req.unique {
                    self.unique_of.insert(id.clone(), key.clone());
                    self.unique.insert(
                        key,
                        UniqueJob {
                            job: id.clone(),
                            submitters: 1,
                        },
                    );
                }
                answer_when_durable(myself.clone(), id, durable, reply);
            }
            Err(e) => {
                self.specs.remove(&id);
                let _ = reply.send(Wire::new(Err(SubmitError::Unavailable(format!(
                    "cannot start a job supervisor: {e}"
                )))));
            }
        }
    }

    /// Admission by waiting time: why a new job is refused, if new work of its class
    /// (or of a higher one) waits past its target (see `scheduler::standing`) in this
    /// node's lanes (read now) when this node serves its first steps, or on most of the
    /// live nodes that serve them (as last gossiped). Answers the message and the retry
    /// delay: when this node's own queue refuses, the time it should take, at the pace
    /// it is served, to drain back to the target (a client coming back sooner is refused
    /// again; later, the slots idle: with a fixed delay, 20,000 pipelined Gearman jobs
    /// ran at about x0.7 the rate); else, or if longer, at most half the class's target.
    fn waits_too_long(&self, req: &SubmitRequest) -> Option<(String, u64)> {
        let adm = &self.ctx.config.admission;
        if adm.wait_target_ms.iter().all(|&t| t == 0) {
            return None;
        }
        let class = match req.spec.priority {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        };
        let view = &self.ctx.view;
        let first = || req.spec.steps.iter().filter(|s| s.after.is_empty());
        // When this node serves the job's first steps, its own lanes (where the job
        // waits when no node has room) decide, read now: they react at once, and cost
        // no lookup on the path of every submission.
        let mut drained_in = None;
        if first().all(|s| self.ctx.registry.get(s.task_name()).is_some()) {
            let (refused, drained) = self.ctx.scheduler.refusal(class);
            if !refused {
                return None;
            }
            drained_in = drained;
        } else {
            // Else most of the live nodes that serve them, as last gossiped.
            let mut nodes: Vec<String> = first()
                .flat_map(|s| view.live_pools(s.task_name()))
                .map(|(_, n)| n)
                .collect();
            nodes.sort();
            nodes.dedup();
            let over = nodes
                .iter()
                .filter(|n| {
                    let classes = if **n == view.node {
                        self.ctx.scheduler.over_target()
                    } else {
                        view.over_target(n)
                    };
                    refuses(classes, class)
                })
                .count();
            if nodes.is_empty() || over * 2 <= nodes.len() {
                return None;
            }
        }
        let name = ["high", "normal", "low"][class];
        let target = adm.wait_target_ms[class];
        let retry = if target > 0 {
            let most = adm.retry_after_ms.min(target / 2).max(1);
            drained_in.map_or(most, |d| (d.as_millis() as u64 + 1).min(most))
        } else {
            adm.retry_after_ms
        };
        Some((
            format!(
                "new work waits for a worker slot longer than its target \
                 (admission.wait_target_ms = {:?} for high, normal, low) on the nodes that \
                 would run this {name} job; retry after {retry} ms",
                adm.wait_target_ms,
            ),
            retry,
        ))
    }

    /// Starts the supervision of a new job: on the host of light jobs if `light` (and it
    /// runs), else in an actor of its own.
    async fn supervise(
        &mut self,
        myself: &ActorRef<JobManagerMessage>,
        args: JobSupervisorArgs,
        light: bool,
    ) -> Result<Supervisor, String> {
        if light {
            if let Some(host) = &self.light {
                match host.cast(LightJobsMessage::Start(Box::new(args))) {
                    Ok(()) => return Ok(Supervisor::Light(host.clone())),
                    Err(ractor::MessagingErr::SendErr(LightJobsMessage::Start(args))) => {
                        return Box::pin(self.supervise_alone(myself, *args)).await;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        // Boxed: spawning an actor is a large future, and the light path's submissions
        // (most) would carry its size in the job manager's every message.
        Box::pin(self.supervise_alone(myself, args)).await
    }

    async fn supervise_alone(
        &mut self,
        myself: &ActorRef<JobManagerMessage>,
        args: JobSupervisorArgs,
    ) -> Result<Supervisor, String> {
        let id = args.run.id().to_string();
        let (sup, _) = Actor::spawn_linked(None, JobSupervisor, args, myself.get_cell())
            .await
            .map_err(|e| e.to_string())?;
        self.by_actor.insert(sup.get_id(), id);
        Ok(Supervisor::Own(sup))
    }

    /// Forgets a job's submitter and unique key (the job ended or moved away).
    pub(super) fn forget_client(&mut self, job: &str) {
        if let Some(key) = self.unique_of.remove(job) {
            if self.unique.get(&key).is_some_and(|u| u.job == job) {
                self.unique.remove(&key);
            }
        }
        if let Some(c) = self.client_of.remove(job) {
            if let Some(n) = self.per_client.get_mut(&c) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_client.remove(&c);
                }
            }
        }
    }
}
