//! The job manager: the node's front door for jobs.
//!
//! It validates a submission (the step graph, and that every task is served by some node,
//! waiting `task_wait_ms` for a worker group that is not there yet), names the job
//! (`NODE-EPOCH-SEQ`, so any node can tell the owner from the id), and starts one
//! [`JobSupervisor`] for it. It routes step results to the supervisors, answers status for
//! live and recently finished jobs, and forwards questions about other nodes' jobs to
//! their owners.
//!
//! It also keeps the copies of other nodes' journals sent to it (`journal_replicas`). When
//! a job's owner has been down for `failure.takeover_after_ms`, it asks the core group for
//! the job; if granted, it rebuilds the job from its copy and runs it at the new epoch, and
//! tells every node. Writes and results from an older epoch are fenced: refused, and their
//! sender told who owns the job now.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::core::{CoreCommand, CoreDecision};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::oneshot;
use troupe_runtime::error::ValidationError;
use troupe_runtime::job::status::JobStatus;
use troupe_runtime::job::validate::validate_with;
use troupe_runtime::protocol::{
    first_member, job_manager_group, owner_of, task_group, task_of_group, worker_pool_group,
    AttemptMoved, CallReply, JobAnswer, JobManagerMessage, JobMoved, JobQueryError, ReplicaBatch,
    ReplicaWhat, ResumeRequest, SubmitError, SubmitRequest, UniqueJob, WorkerPoolMessage,
};
use troupe_runtime::task::TaskError;
use troupe_runtime::vocab::Holder;
use troupe_runtime::wire::Wire;

use crate::job_supervisor::replay;
use crate::job_supervisor::run::JobRun;
use crate::job_supervisor::{JobSupervisor, JobSupervisorArgs, JobSupervisorMessage};
use crate::NodeContext;

/// How often the copies of other nodes' jobs are checked for an owner gone for good.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// How long a restarted node waits for the core group to say which of its journaled jobs
/// were taken over, once a core group is visible (and without one, how long it looks).
const ASK_CORE_FOR: Duration = Duration::from_secs(5);
const LOOK_FOR_CORE: Duration = Duration::from_millis(1500);

/// The journaled jobs of this node that another node took over while it was down.
async fn moved_while_away(me: &str, jobs: Vec<String>) -> Vec<JobMoved> {
    let start = Instant::now();
    loop {
        let core_visible =
            !ractor::pg::get_members(&troupe_runtime::protocol::CORE_VOTERS_GROUP.to_string())
                .is_empty();
        if core_visible {
            match crate::core::decide(me, CoreCommand::Owners { jobs: jobs.clone() }).await {
                Ok(CoreDecision::Owners(owners)) => {
                    return jobs
                        .into_iter()
                        .zip(owners)
                        .filter_map(|(job, o)| {
                            o.filter(|o| o.node != me).map(|o| JobMoved {
                                job,
                                owner: o.node,
                                epoch: o.epoch,
                            })
                        })
                        .collect();
                }
                Ok(other) => {
                    tracing::warn!(answer = ?other, "unexpected answer from the core group")
                }
                Err(r) => tracing::debug!(reason = %r, "the core group has not answered yet"),
            }
        }
        let limit = if core_visible {
            ASK_CORE_FOR
        } else {
            LOOK_FOR_CORE
        };
        if start.elapsed() >= limit {
            tracing::warn!(jobs = jobs.len(), core_visible, "resuming journaled jobs without word from the core group (none reachable): a job another node took over meanwhile runs twice until it is fenced");
            return Vec::new();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long a forwarded status question may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The job manager.
pub struct JobManager;

/// State of the job manager.
pub struct JobManagerState {
    ctx: NodeContext,
    epoch: String,
    seq: u64,
    live: HashMap<String, ActorRef<JobSupervisorMessage>>,
    by_actor: HashMap<ActorId, String>,
    finished: HashMap<String, JobStatus>,
    finished_order: VecDeque<String>,
    /// Live jobs per submitter (a client's watcher group, or "" for the HTTP API).
    per_client: HashMap<String, usize>,
    client_of: HashMap<String, String>,
    /// Jobs in flight by unique key (submissions with the same key coalesce), with the
    /// number of submissions each stands for; and the key of each such job.
    unique: HashMap<String, UniqueJob>,
    unique_of: HashMap<String, String>,
    /// The owner epoch of each live job taken over here (absent: 0).
    epochs: HashMap<String, u64>,
    /// Copies of other nodes' jobs kept here: the owner and its epoch.
    copies: HashMap<String, Holder>,
    /// Jobs known to have moved to another node (bounded like `finished`).
    moved: HashMap<String, Holder>,
    moved_order: VecDeque<String>,
    /// Jobs whose takeover is being asked for.
    taking: HashSet<String>,
    /// Since when each copy's owner has been seen gone.
    absent: HashMap<String, Instant>,
}

type SubmitReply = RpcReplyPort<Wire<Result<String, SubmitError>>>;

/// A question about one job, answered by whoever holds it.
enum Request {
    Status,
    Cancel,
    Resume(String),
}
type StatusReply = RpcReplyPort<JobAnswer>;

/// Answers a submission with its job id once the journal says the job is durable
/// (`journal_ack`), waiting at most [`crate::journal::ACK_WAIT`] for a replica: the job
/// runs meanwhile, and a replica that does not answer must not stall the client.
fn answer_when_durable(id: String, durable: Option<oneshot::Receiver<()>>, reply: SubmitReply) {
    let Some(durable) = durable else {
        let _ = reply.send(Wire::new(Ok(id)));
        return;
    };
    tokio::spawn(async move {
        match tokio::time::timeout(crate::journal::ACK_WAIT, durable).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                tracing::warn!(job = %id, "the journal could not record this job; it runs, but a crash of this node loses it")
            }
            Err(_) => {
                metrics::counter!(troupe_runtime::observe::metric::REPLICA_WRITES, "direction" => "ack_timeout")
                    .increment(1);
                tracing::warn!(job = %id, "no replica confirmed its copy of this job within {:?}; accepted with the owner's journal alone", crate::journal::ACK_WAIT)
            }
        }
        let _ = reply.send(Wire::new(Ok(id)));
    });
}

fn missing_tasks(req: &SubmitRequest) -> Vec<(String, String)> {
    req.spec
        .steps
        .iter()
        .filter(|s| ractor::pg::get_members(&task_group(s.task_name())).is_empty())
        .map(|s| (s.id.clone(), s.task_name().to_string()))
        .collect()
}

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
    async fn submit(
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
                        let _ = sup.cast(JobSupervisorMessage::AddWatcher(w));
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
            let waiting = self.ctx.view.waiting_in_cluster();
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
        let client = req
            .watch
            .as_ref()
            .map(|w| w.group.clone())
            .unwrap_or_default();
        let max = self.ctx.config.limits.max_jobs_per_client;
        let live = self.per_client.get(&client).copied().unwrap_or(0);
        if live >= max {
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
        let id = format!("{}-{}-{}", self.ctx.config.name, self.epoch, self.seq);
        let mut watchers = Vec::new();
        if let Some(mut w) = req.watch {
            w.job = id.clone();
            watchers.push(w);
        }
        let durable = self
            .ctx
            .journal
            .as_ref()
            .and_then(|j| j.accept(&id, &req.spec, &self.ctx.config.limits));
        let args = JobSupervisorArgs {
            run: JobRun::with_limits(id.clone(), req.spec, graph, self.ctx.config.limits),
            owner: self.ctx.config.name.clone(),
            watchers,
            journal: self.ctx.journal.clone(),
            resumed: None,
            epoch: 0,
        };
        match Actor::spawn_linked(None, JobSupervisor, args, myself.get_cell()).await {
            Ok((sup, _)) => {
                tracing::debug!(job = %id, "job accepted");
                self.by_actor.insert(sup.get_id(), id.clone());
                self.live.insert(id.clone(), sup);
                self.count_owned();
                *self.per_client.entry(client.clone()).or_insert(0) += 1;
                self.client_of.insert(id.clone(), client);
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
                answer_when_durable(id, durable, reply);
            }
            Err(e) => {
                let _ = reply.send(Wire::new(Err(SubmitError::Unavailable(format!(
                    "cannot start a job supervisor: {e}"
                )))));
            }
        }
    }

    fn status(&self, job: String, reply: StatusReply) {
        self.to_job(job, reply, Request::Status);
    }

    /// Hands a question about `job` to its supervisor, the finished-jobs table, or the
    /// owner node's job manager.
    fn to_job(&self, job: String, reply: StatusReply, req: Request) {
        if let Some(sup) = self.live.get(&job) {
            let msg = match req {
                Request::Status => JobSupervisorMessage::Status(reply),
                Request::Cancel => JobSupervisorMessage::Cancel(reply),
                Request::Resume(step) => JobSupervisorMessage::Resume(step, reply),
            };
            if let Err(ractor::MessagingErr::SendErr(
                JobSupervisorMessage::Status(reply)
                | JobSupervisorMessage::Cancel(reply)
                | JobSupervisorMessage::Resume(_, reply),
            )) = sup.cast(msg)
            {
                let _ = reply.send(Wire::new(Err(JobQueryError::Unavailable(format!(
                    "job {job} is ending; ask again"
                )))));
            }
            return;
        }
        if let Some(st) = self.finished.get(&job) {
            let answer = match req {
                Request::Resume(step) => Err(JobQueryError::Conflict(format!(
                    "job {job} has ended ({:?}); step {step:?} cannot be resumed",
                    st.state
                ))),
                _ => Ok(st.clone()),
            };
            let _ = reply.send(Wire::new(answer));
            return;
        }
        let owner = match self.moved.get(&job) {
            Some(m) => Some(m.node.clone()),
            None => owner_of(&job).map(str::to_string),
        };
        match owner {
            Some(owner) if owner != self.ctx.config.name => {
                let me = self.ctx.config.name.clone();
                let down = self.ctx.view.is_down(&owner);
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
                    let answer = match jm {
                        None => Err(JobQueryError::Unavailable(format!(
                            "the node {owner} that owns job {job} is not reachable"
                        ))),
                        Some(jm) => {
                            let call = jm.call(
                                |r| match req {
                                    Request::Status => JobManagerMessage::Status(job.clone(), r),
                                    Request::Cancel => JobManagerMessage::Cancel(job.clone(), r),
                                    Request::Resume(step) => JobManagerMessage::Resume(
                                        Wire::new(ResumeRequest {
                                            job: job.clone(),
                                            step,
                                        }),
                                        r,
                                    ),
                                },
                                Some(FORWARD_TIMEOUT),
                            );
                            match call.await {
                                Ok(ractor::rpc::CallResult::Success(w)) => {
                                    w.into_inner().unwrap_or_else(|e| {
                                        Err(JobQueryError::Unavailable(e.to_string()))
                                    })
                                }
                                _ => Err(JobQueryError::Unavailable(format!(
                                    "no answer from {owner} about job {job}"
                                ))),
                            }
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

    fn count_owned(&self) {
        self.ctx
            .view
            .owned_jobs
            .store(self.live.len() as u32, std::sync::atomic::Ordering::Relaxed);
    }

    /// Tells a job's supervisor where its attempt runs now.
    fn moved(&self, m: AttemptMoved) {
        if let Some(sup) = self.live.get(&m.attempt.job) {
            let _ = sup.cast(JobSupervisorMessage::Assigned {
                step: m.attempt.step,
                attempt: m.attempt.attempt,
                node: m.node,
            });
        }
    }

    /// Learns what the journal held: statuses of ended jobs and copies of other nodes'
    /// jobs now; the jobs that had not ended resume once the core group says which of
    /// them are still this node's ([`JobManagerMessage::Resume`] is for users; this comes
    /// back as `ResumeJournaled`).
    fn recover_journal(&mut self, myself: &ActorRef<JobManagerMessage>) {
        let Some(rec) = crate::locked(&self.ctx.view.recovered).take() else {
            return;
        };
        for st in rec.ended {
            self.finished_order.push_back(st.id.clone());
            self.finished.insert(st.id.clone(), st);
        }
        for c in rec.copies {
            self.copies.insert(
                c.job,
                Holder {
                    node: c.owner,
                    epoch: c.epoch,
                },
            );
        }
        if rec.jobs.is_empty() {
            return;
        }
        let ids: Vec<String> = rec.jobs.iter().map(|(r, _)| r.id.clone()).collect();
        *crate::locked(&self.ctx.view.recovered) = Some(crate::journal::Recovered {
            jobs: rec.jobs,
            ..Default::default()
        });
        let me = self.ctx.config.name.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let moved = moved_while_away(&me, ids).await;
            let _ = myself.cast(JobManagerMessage::ResumeJournaled(Wire::new(moved)));
        });
    }

    /// Starts again the jobs the journal held that had not ended, but those that another
    /// node took over meanwhile (`moved`), which are dropped.
    async fn resume_journaled(
        &mut self,
        myself: &ActorRef<JobManagerMessage>,
        moved: Vec<JobMoved>,
    ) {
        let Some(rec) = crate::locked(&self.ctx.view.recovered).take() else {
            return;
        };
        let mut n = 0;
        for (record, inputs) in rec.jobs {
            if let Some(m) = moved.iter().find(|m| m.job == record.id) {
                tracing::warn!(job = %record.id, owner = %m.owner, epoch = m.epoch, "a journaled job was taken over by another node while this one was down; not resuming it");
                if let Some(j) = &self.ctx.journal {
                    j.drop_job(&record.id);
                }
                self.note_moved(m.clone());
                continue;
            }
            let seq = inputs.len() as u64;
            let epoch = record.epoch;
            let run = match replay::replay(record, inputs, Instant::now()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "a journaled job cannot resume");
                    continue;
                }
            };
            let reason = format!(
                "node {} restarted; attempts it had in flight run again",
                self.ctx.view.node
            );
            if self
                .start_supervisor(myself, run, epoch, Some((seq, reason)))
                .await
            {
                n += 1;
            }
        }
        self.count_owned();
        if n > 0 {
            tracing::info!(jobs = n, "resumed jobs from the journal");
        }
    }

    /// Starts the supervisor of a job rebuilt from a journal (this node's or a copy).
    async fn start_supervisor(
        &mut self,
        myself: &ActorRef<JobManagerMessage>,
        run: JobRun,
        epoch: u64,
        resumed: Option<(u64, String)>,
    ) -> bool {
        let id = run.id().to_string();
        let args = JobSupervisorArgs {
            run,
            owner: self.ctx.config.name.clone(),
            watchers: Vec::new(),
            journal: self.ctx.journal.clone(),
            resumed,
            epoch,
        };
        match Actor::spawn_linked(None, JobSupervisor, args, myself.get_cell()).await {
            Ok((sup, _)) => {
                self.by_actor.insert(sup.get_id(), id.clone());
                self.live.insert(id.clone(), sup);
                if epoch > 0 {
                    self.epochs.insert(id, epoch);
                }
                true
            }
            Err(e) => {
                tracing::error!(job = %id, error = %e, "cannot start a job supervisor");
                false
            }
        }
    }

    /// Remembers that `m.job` belongs to another node now.
    fn note_moved(&mut self, m: JobMoved) {
        if self.moved.get(&m.job).is_some_and(|o| o.epoch >= m.epoch) {
            return;
        }
        if self
            .moved
            .insert(
                m.job.clone(),
                Holder {
                    node: m.owner,
                    epoch: m.epoch,
                },
            )
            .is_none()
        {
            self.moved_order.push_back(m.job);
        }
        while self.moved_order.len() > self.ctx.config.retain_finished_jobs.max(1) {
            if let Some(old) = self.moved_order.pop_front() {
                self.moved.remove(&old);
            }
        }
    }

    /// The epoch this node knows for `job`: its own run's, a copy's, or a move's.
    fn known_epoch(&self, job: &str) -> Option<Holder> {
        let mut best: Option<Holder> = None;
        let mut consider = |o: Holder| {
            if best.as_ref().is_none_or(|b| o.epoch > b.epoch) {
                best = Some(o);
            }
        };
        if self.live.contains_key(job) {
            consider(Holder {
                node: self.ctx.config.name.clone(),
                epoch: self.epochs.get(job).copied().unwrap_or(0),
            });
        }
        if let Some(o) = self.copies.get(job) {
            consider(o.clone());
        }
        if let Some(o) = self.moved.get(job) {
            consider(o.clone());
        }
        best
    }

    /// Keeps another node's journal writes, refusing those from an epoch that is over.
    fn keep(&mut self, batch: ReplicaBatch) {
        let Some(journal) = self.ctx.journal.clone() else {
            return;
        };
        let mut fenced: HashMap<String, Holder> = HashMap::new();
        let mut kept = Vec::with_capacity(batch.writes.len());
        for w in batch.writes {
            if let Some(now) = self.known_epoch(&w.job) {
                if now.epoch > w.epoch {
                    fenced.insert(w.job.clone(), now);
                    continue;
                }
            }
            match &w.what {
                ReplicaWhat::Start(_) => {
                    self.copies.insert(
                        w.job.clone(),
                        Holder {
                            node: batch.owner.clone(),
                            epoch: w.epoch,
                        },
                    );
                }
                ReplicaWhat::End => {
                    self.copies.remove(&w.job);
                }
                ReplicaWhat::Input(..) => {}
            }
            kept.push(w);
        }
        let n = kept.len() as u64;
        if n > 0 {
            journal.keep(ReplicaBatch {
                owner: batch.owner.clone(),
                writes: kept,
                ack: batch.ack,
            });
            metrics::counter!(troupe_runtime::observe::metric::REPLICA_WRITES, "direction" => "kept")
                .increment(n);
        }
        if !fenced.is_empty() {
            metrics::counter!(troupe_runtime::observe::metric::REPLICA_WRITES, "direction" => "fenced")
                .increment(fenced.len() as u64);
            if let Some(jm) = first_member::<JobManagerMessage>(&job_manager_group(&batch.owner)) {
                for (job, o) in fenced {
                    tracing::info!(job = %job, from = %batch.owner, owner = %o.node, epoch = o.epoch, "fenced journal writes from a former owner");
                    let _ = jm.cast(JobManagerMessage::JobMoved(Wire::new(JobMoved {
                        job,
                        owner: o.node,
                        epoch: o.epoch,
                    })));
                }
            }
        }
    }

    /// Another node owns `m.job` now: stop this node's run of it, if any (fenced).
    fn job_moved(&mut self, m: JobMoved) {
        if m.owner == self.ctx.config.name {
            return;
        }
        let mine = self.epochs.get(&m.job).copied().unwrap_or(0);
        if mine < m.epoch {
            if let Some(sup) = self.live.remove(&m.job) {
                tracing::warn!(job = %m.job, owner = %m.owner, epoch = m.epoch, "job taken over by another node while this one was cut off; stopping this node's run of it");
                self.by_actor.remove(&sup.get_id());
                sup.stop(None);
                self.epochs.remove(&m.job);
                if let Some(j) = &self.ctx.journal {
                    j.drop_job(&m.job);
                }
                self.forget_client(&m.job);
                crate::locked(&self.ctx.view.placement).job_ended(&m.job);
                self.count_owned();
            }
        }
        if self.copies.get(&m.job).is_some_and(|c| c.epoch < m.epoch) {
            self.copies.remove(&m.job);
            if let Some(j) = &self.ctx.journal {
                j.forget(&m.job);
            }
        }
        self.note_moved(m);
    }

    /// Asks the core group for the jobs whose owner has been gone for the grace period.
    fn sweep_copies(&mut self, myself: &ActorRef<JobManagerMessage>) {
        if self.copies.is_empty() {
            self.absent.clear();
            return;
        }
        let live: HashSet<String> = crate::live_nodes(&self.ctx.view).into_iter().collect();
        let now = Instant::now();
        let grace = Duration::from_millis(self.ctx.config.failure.takeover_after_ms);
        let me = self.ctx.config.name.clone();
        for (job, owner) in &self.copies {
            if live.contains(&owner.node) || self.live.contains_key(job) {
                self.absent.remove(job);
                continue;
            }
            let since = *self.absent.entry(job.clone()).or_insert(now);
            if now.duration_since(since) < grace || self.taking.contains(job) {
                continue;
            }
            self.taking.insert(job.clone());
            tracing::info!(job = %job, owner = %owner.node, "the job's owner stayed down; asking the core group for the job");
            let cmd = CoreCommand::Takeover {
                job: job.clone(),
                from: owner.node.clone(),
                epoch: owner.epoch,
                to: me.clone(),
            };
            let (myself, me, job) = (myself.clone(), me.clone(), job.clone());
            tokio::spawn(async move {
                let d = match crate::core::decide(&me, cmd).await {
                    Ok(CoreDecision::Granted { epoch }) => Ok(Holder { node: me, epoch }),
                    Ok(CoreDecision::Denied { owner }) => Ok(owner),
                    Ok(other) => Err(format!("unexpected answer to a takeover: {other:?}")),
                    Err(refusal) => Err(refusal.message),
                };
                let _ = myself.cast(JobManagerMessage::TakeoverDecided(job, Wire::new(d)));
            });
        }
        self.absent.retain(|j, _| self.copies.contains_key(j));
    }

    /// The core group answered a takeover.
    async fn takeover_decided(
        &mut self,
        myself: &ActorRef<JobManagerMessage>,
        job: String,
        decision: Result<Holder, String>,
    ) {
        self.taking.remove(&job);
        let me = self.ctx.config.name.clone();
        match decision {
            // Granted now, or before with the answer lost (a retry after a timeout).
            Ok(owner) if owner.node == me => {
                if !self.live.contains_key(&job) {
                    self.adopt(myself, job, owner.epoch).await;
                }
            }
            Ok(owner) => {
                metrics::counter!(troupe_runtime::observe::metric::TAKEOVERS, "outcome" => "denied").increment(1);
                tracing::info!(job = %job, owner = %owner.node, epoch = owner.epoch, "another node owns the job now");
                self.job_moved(JobMoved {
                    job,
                    owner: owner.node,
                    epoch: owner.epoch,
                });
            }
            Err(why) => {
                metrics::counter!(troupe_runtime::observe::metric::TAKEOVERS, "outcome" => "failed").increment(1);
                tracing::warn!(job = %job, reason = %why, "no takeover decision yet; asking again");
            }
        }
    }

    /// Runs `job` here from its copy, at `epoch`, and tells every node.
    async fn adopt(&mut self, myself: &ActorRef<JobManagerMessage>, job: String, epoch: u64) {
        let Some(journal) = self.ctx.journal.clone() else {
            return;
        };
        let (mut record, inputs) = match journal.copy(&job) {
            Ok(Some(c)) => c,
            Ok(None) => {
                tracing::error!(job = %job, "granted a job whose copy is gone; it cannot run here");
                return;
            }
            Err(e) => {
                tracing::error!(job = %job, error = %e, "cannot read the copy of a job granted to this node");
                return;
            }
        };
        let from = self.copies.remove(&job).map(|o| o.node).unwrap_or_default();
        record.epoch = epoch;
        journal.start(&job, epoch, &record.spec, &record.limits);
        for (i, input) in inputs.iter().enumerate() {
            journal.input(&job, i as u64 + 1, input);
        }
        journal.forget(&job);
        let seq = inputs.len() as u64;
        let run = match replay::replay(record, inputs, Instant::now()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "a job taken over cannot be rebuilt");
                return;
            }
        };
        let reason = format!(
            "job taken over by {} from {from}, which stayed down; its attempts run again",
            self.ctx.config.name
        );
        if !self
            .start_supervisor(myself, run, epoch, Some((seq, reason)))
            .await
        {
            return;
        }
        self.count_owned();
        metrics::counter!(troupe_runtime::observe::metric::TAKEOVERS, "outcome" => "taken")
            .increment(1);
        tracing::info!(job = %job, from = %from, epoch, "took the job over");
        let prefix = job_manager_group("");
        let moved = JobMoved {
            job,
            owner: self.ctx.config.name.clone(),
            epoch,
        };
        for g in ractor::pg::which_groups() {
            if g.starts_with(&prefix) && g != job_manager_group(&self.ctx.config.name) {
                if let Some(jm) = first_member::<JobManagerMessage>(&g) {
                    let _ = jm.cast(JobManagerMessage::JobMoved(Wire::new(moved.clone())));
                }
            }
        }
    }

    /// A node came (back) up: tell it of the jobs this node took over from it.
    fn node_up(&self, node: &str) {
        let Some(jm) = first_member::<JobManagerMessage>(&job_manager_group(node)) else {
            return;
        };
        for (job, epoch) in &self.epochs {
            if owner_of(job) == Some(node) {
                let _ = jm.cast(JobManagerMessage::JobMoved(Wire::new(JobMoved {
                    job: job.clone(),
                    owner: self.ctx.config.name.clone(),
                    epoch: *epoch,
                })));
            }
        }
    }

    fn forget_client(&mut self, job: &str) {
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

    fn ended(&mut self, st: JobStatus) {
        if let Some(j) = &self.ctx.journal {
            j.end(&st);
        }
        crate::locked(&self.ctx.view.placement).job_ended(&st.id);
        let gone = self.live.remove(&st.id);
        self.epochs.remove(&st.id);
        self.count_owned();
        if let Some(sup) = gone {
            self.by_actor.remove(&sup.get_id());
            sup.stop(None);
        }
        self.forget_client(&st.id);
        self.finished_order.push_back(st.id.clone());
        self.finished.insert(st.id.clone(), st);
        while self.finished_order.len() > self.ctx.config.retain_finished_jobs.max(1) {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }
}

impl Actor for JobManager {
    type Msg = JobManagerMessage;
    type State = JobManagerState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(job_manager_group(&ctx.config.name), vec![myself.get_cell()]);
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Ok(JobManagerState {
            ctx,
            epoch: format!("{epoch:x}"),
            seq: 0,
            live: HashMap::new(),
            by_actor: HashMap::new(),
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
            per_client: HashMap::new(),
            client_of: HashMap::new(),
            unique: HashMap::new(),
            unique_of: HashMap::new(),
            epochs: HashMap::new(),
            copies: HashMap::new(),
            moved: HashMap::new(),
            moved_order: VecDeque::new(),
            taking: HashSet::new(),
            absent: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.recover_journal(&myself);
        myself.send_interval(SWEEP_EVERY, || JobManagerMessage::SweepCopies);
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself.stop_children(None);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobManagerMessage::Submit(req, reply) => match req.into_inner() {
                Ok(req) => state.submit(&myself, req, reply).await,
                Err(e) => {
                    let _ = reply.send(Wire::new(Err(SubmitError::Invalid(format!(
                        "unreadable submission: {e}"
                    )))));
                }
            },
            JobManagerMessage::Status(job, reply) => state.status(job, reply),
            JobManagerMessage::Watch(req, reply) => match req.into_inner() {
                Ok(req) => match state.live.get(&req.job) {
                    Some(sup) => {
                        if let Err(ractor::MessagingErr::SendErr(JobSupervisorMessage::Watch(
                            req,
                            reply,
                        ))) = sup.cast(JobSupervisorMessage::Watch(req, reply))
                        {
                            let _ = reply.send(Wire::new(Err(JobQueryError::Unavailable(
                                format!("job {} is ending; ask again", req.job),
                            ))));
                        }
                    }
                    None => state.status(req.job, reply),
                },
                Err(e) => {
                    let _ = reply.send(Wire::new(Err(JobQueryError::Unavailable(format!(
                        "unreadable watch request: {e}"
                    )))));
                }
            },
            JobManagerMessage::StepFinished(r) => match r.into_inner() {
                Ok(r) => {
                    let from = crate::locked(&state.ctx.view.placement)
                        .finished(&r.job, &r.step, r.attempt);
                    if let Some(node) = from {
                        // Room came free there: hand it work waiting here.
                        for m in crate::dispatcher::spill(&state.ctx, &node) {
                            state.moved(m);
                        }
                    }
                    match state.live.get(&r.job) {
                        Some(sup) => {
                            let _ = sup.cast(JobSupervisorMessage::Finished(r));
                        }
                        None => {
                            tracing::debug!(job = %r.job, step = %r.step, "result for a job that is no longer running; discarded")
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable step result"),
            },
            JobManagerMessage::Spawn(r) => match r.into_inner() {
                Ok(r) => match state.live.get(&r.from.job) {
                    Some(sup) => {
                        let _ = sup.cast(JobSupervisorMessage::Spawn(r));
                    }
                    None => {
                        let answer = CallReply {
                            call_id: r.call_id,
                            result: Err(TaskError::permanent(format!(
                                "job {} is no longer running",
                                r.from.job
                            ))),
                        };
                        if let Some(pool) =
                            first_member::<WorkerPoolMessage>(&worker_pool_group(&r.reply_to))
                        {
                            let _ = pool.cast(WorkerPoolMessage::CallReply(Wire::new(answer)));
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable spawn request"),
            },
            JobManagerMessage::Cancel(job, reply) => state.to_job(job, reply, Request::Cancel),
            JobManagerMessage::Invalidate(req, reply) => {
                let Ok(req) = req.into_inner() else {
                    let _ = reply.send(false);
                    return Ok(());
                };
                let key =
                    troupe_runtime::merge::request_key(&req.task, &req.input, &Default::default());
                let owner = crate::dispatcher::key_owner(&state.ctx.view, &req.task, &key);
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
            JobManagerMessage::Progress(p) => match p.into_inner() {
                Ok(p) => {
                    if let Some(sup) = state.live.get(&p.attempt.job) {
                        let _ = sup.cast(JobSupervisorMessage::Progress(p));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dropping unreadable progress"),
            },
            JobManagerMessage::AttemptLost(l) => match l.into_inner() {
                Ok(l) => {
                    if let Some(sup) = state.live.get(&l.attempt.job) {
                        let _ = sup.cast(JobSupervisorMessage::AttemptLost(l));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable lost attempt"),
            },
            JobManagerMessage::Moved(m) => match m.into_inner() {
                Ok(m) => {
                    // Stolen by an idle node: counted there now.
                    if m.node != state.ctx.view.node && state.live.contains_key(&m.attempt.job) {
                        crate::locked(&state.ctx.view.placement).placed(
                            &m.attempt.job,
                            &m.attempt.step,
                            m.attempt.attempt,
                            &m.node,
                        );
                    }
                    state.moved(m);
                }
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable move"),
            },
            JobManagerMessage::FindUnique(prefix, reply) => {
                let found = state
                    .unique
                    .iter()
                    .find(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, j)| j.clone());
                let _ = reply.send(Wire::new(found));
            }
            JobManagerMessage::NodeDown(node) => {
                crate::locked(&state.ctx.view.placement).node_down(&node);
                tracing::debug!(node = %node, jobs = state.live.len(), "node down: telling the job supervisors");
                for sup in state.live.values() {
                    let _ = sup.cast(JobSupervisorMessage::NodeDown(node.clone()));
                }
            }
            JobManagerMessage::Resume(req, reply) => match req.into_inner() {
                Ok(r) => state.to_job(r.job, reply, Request::Resume(r.step)),
                Err(e) => {
                    let _ = reply.send(Wire::new(Err(JobQueryError::Unavailable(format!(
                        "unreadable resume request: {e}"
                    )))));
                }
            },
            JobManagerMessage::ReplicaAcked(token) => {
                if let Some(j) = &state.ctx.journal {
                    j.acked(token);
                }
            }
            JobManagerMessage::Replicate(b) => match b.into_inner() {
                Ok(b) => state.keep(b),
                Err(e) => tracing::warn!(error = %e, "dropping unreadable journal copies"),
            },
            JobManagerMessage::JobMoved(m) => match m.into_inner() {
                Ok(m) => state.job_moved(m),
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable job move"),
            },
            JobManagerMessage::NodeUp(node) => state.node_up(&node),
            JobManagerMessage::SweepCopies => state.sweep_copies(&myself),
            JobManagerMessage::TakeoverDecided(job, d) => {
                let d = d.into_inner().unwrap_or_else(|e| Err(e.to_string()));
                state.takeover_decided(&myself, job, d).await;
            }
            JobManagerMessage::ResumeJournaled(moved) => {
                let moved = moved.into_inner().unwrap_or_default();
                state.resume_journaled(&myself, moved).await;
            }
            JobManagerMessage::JobEnded(st) => match st.into_inner() {
                Ok(st) => state.ended(st),
                Err(e) => tracing::warn!(error = %e, "unreadable job status"),
            },
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A job supervisor that stops normally has already sent JobEnded. One that crashed
        // takes its job down with it: record the job as failed rather than forget it.
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            if let Some(job) = state.by_actor.remove(&cell.get_id()) {
                tracing::error!(job = %job, error = %err, "job supervisor crashed; the job fails");
                state.live.remove(&job);
                state.count_owned();
                let st = JobStatus {
                    id: job.clone(),
                    name: String::new(),
                    state: troupe_runtime::JobState::Failed,
                    steps: Default::default(),
                    output: None,
                    error: Some(format!("the job's supervisor crashed: {err}")),
                    stats: Default::default(),
                    elapsed_ms: None,
                };
                state.ended(st);
            }
        }
        Ok(())
    }
}
