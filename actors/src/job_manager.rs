//! The job manager: the node's front door for jobs.
//!
//! It validates a submission (the step graph, and that every task is served by some node,
//! waiting `task_wait_ms` for a worker group that is not there yet), names the job
//! (`NODE-BOOT-SEQ` with this node's boot stamp, so any node can tell the owner from
//! the id), and starts one
//! [`JobSupervisor`] for it. It routes step results to the supervisors, answers status for
//! live and recently finished jobs, and forwards questions about other nodes' jobs to
//! their owners.
//!
//! It also keeps the copies of other nodes' journals sent to it (`journal_replicas`). When
//! a job's owner has been down for `failure.takeover_after_ms`, it asks the core group for
//! the job; if granted, it rebuilds the job from its copy and runs it at the new epoch, and
//! tells every node. Writes and results from an older epoch are fenced: refused, and their
//! sender told who owns the job now.
//!
//! # Layout
//!
//! This file is the actor: its state, the table of live jobs and the message dispatch.
//! Each concern has its own module:
//! - `admission`: submissions, their validation and limits, the durable answer;
//! - `routing`: questions and reports about one job, to its supervisor or its owner node;
//! - `recovery`: what the journal held at start, resuming this node's jobs;
//! - `copies`: other nodes' journal copies, fencing, and carrying out takeovers;
//! - `takeover`: the takeover and fencing rules, a pure state machine.

mod admission;
mod copies;
mod recovery;
mod routing;
pub(crate) mod takeover;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::job_supervisor::run::JobRun;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use troupe_runtime::job::status::JobStatus;
use troupe_runtime::protocol::{
    job_manager_group, JobManagerMessage, JobQueryError, SubmitError, UniqueJob,
};
use troupe_runtime::wire::Wire;

use crate::job_supervisor::{record_crash, JobSupervisor, JobSupervisorArgs, JobSupervisorMessage};
use crate::light_jobs::{LightJobsArgs, LightJobsMessage, Supervisor};
use crate::NodeContext;
use routing::Request;
use takeover::Takeovers;

/// How often the copies of other nodes' jobs are checked for an owner gone for good.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// The job manager.
pub(crate) struct JobManager;

/// State of the job manager.
pub(crate) struct JobManagerState {
    ctx: NodeContext,
    /// This node's boot stamp in the ids of the jobs it accepts (hex ms since the Unix
    /// epoch at start): not a fencing epoch, which the core group hands out.
    boot: String,
    /// The number of the last job accepted in this boot.
    seq: u64,
    /// Live jobs' supervisions.
    live: HashMap<String, Supervisor>,
    /// The job of each supervisor actor.
    by_actor: HashMap<ActorId, String>,
    /// The host of light (one-step) jobs (see `light_jobs`).
    light: Option<ActorRef<LightJobsMessage>>,
    finished: HashMap<String, JobStatus>,
    finished_order: VecDeque<String>,
    /// The job files of live jobs and of those in `finished` that ended in this boot.
    specs: HashMap<String, std::sync::Arc<troupe_runtime::JobSpec>>,
    /// Final statuses of other nodes' jobs, handed here as those nodes left gracefully
    /// (the newest `retain_finished_jobs`): answered while their owner is gone.
    handed: HashMap<String, JobStatus>,
    handed_order: VecDeque<String>,
    /// Live jobs per submitter (a client's watcher group, or "" for the HTTP API).
    per_client: HashMap<String, usize>,
    client_of: HashMap<String, String>,
    /// Live jobs accepted without a journal record (`SubmitRequest::journaled`).
    unjournaled: HashSet<String>,
    /// Jobs in flight by unique key (submissions with the same key coalesce), with the
    /// number of submissions each stands for; and the key of each such job.
    unique: HashMap<String, UniqueJob>,
    unique_of: HashMap<String, String>,
    /// The takeover and fencing rules: this node's runs and their epochs, the copies kept
    /// for other nodes, the moves heard of, the takeovers asked for. Every change to
    /// `live` is told to it (`run_started`, `run_ended`).
    takeovers: Takeovers,
    /// Nodes that run attempts of this node's jobs but are not live members, since when
    /// (see `lost_nodes`).
    absent: HashMap<String, std::time::Instant>,
    /// This node leaves and dropped its copies of other nodes' jobs: it keeps no more.
    copies_dropped: bool,
    /// When the owners of long-held copies were last asked which they know nothing of
    /// (see `JobManagerState::sweep_copies`).
    owners_asked_at: std::time::Instant,
    /// Ends journaled before a restart but never confirmed (see `Journal::end_confirmed`):
    /// answered as running until the core group records them or says the job moved.
    held_ends: HashMap<String, JobStatus>,
}

impl JobManagerState {
    /// Publishes how many jobs this node owns (the drain waits for them).
    fn count_owned(&self) {
        self.ctx
            .view
            .owned_jobs
            .store(self.live.len() as u32, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts the supervisor of a job rebuilt from a journal (this node's or a copy).
    pub(super) async fn start_supervisor(
        &mut self,
        myself: &ActorRef<JobManagerMessage>,
        run: JobRun,
        epoch: u64,
        resumed: Option<(u64, String)>,
    ) -> bool {
        let id = run.id().to_string();
        self.specs.insert(id.clone(), run.spec());
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
                self.live.insert(id.clone(), Supervisor::Own(sup));
                self.takeovers.run_started(&id, epoch);
                true
            }
            Err(e) => {
                tracing::error!(job = %id, error = %e, "cannot start a job supervisor");
                false
            }
        }
    }

    /// Records the end of one of this node's jobs: its status is kept (the newest
    /// `retain_finished_jobs`), its supervisor stopped.
    /// (Its supervisor journaled the end; a crashed one's end is journaled by the caller.)
    fn ended(&mut self, myself: &ActorRef<JobManagerMessage>, st: JobStatus) {
        self.ctx.scheduler.job_ended(&st.id);
        if let Some(j) = self.journal_of(&st.id) {
            j.confirmed(&st.id);
        }
        self.unjournaled.remove(&st.id);
        let gone = self.live.remove(&st.id);
        // (With ends confirmed before they are published, a taken-over job's end was
        // recorded by the core group already.)
        let recorded = self.ctx.journal.as_ref().is_some_and(|j| j.confirms_ends());
        if let Some(epoch) = self
            .takeovers
            .run_epoch(&st.id)
            .filter(|e| *e > 0 && !recorded)
        {
            // Never handed over again; its entry is pruned later. Only jobs taken over
            // (and ends a copy did not ack, `copies::confirm_ends`) cost this write.
            if let Some(j) = &self.ctx.journal {
                copies::record_ends_later(
                    &self.ctx.config.name,
                    vec![(st.id.clone(), epoch)],
                    j.clone(),
                    myself,
                );
            }
        }
        self.takeovers.run_ended(&st.id);
        self.count_owned();
        if let Some(sup) = gone {
            if let Supervisor::Own(a) = &sup {
                self.by_actor.remove(&a.get_id());
            }
            sup.stop(&st.id);
        }
        self.forget_client(&st.id);
        self.finished_order.push_back(st.id.clone());
        self.finished.insert(st.id.clone(), st);
        while self.finished_order.len() > self.ctx.config.retain_finished_jobs.max(1) {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
                self.specs.remove(&old);
            }
        }
    }
}

/// Each handed status goes to this many nodes that stay.
const HAND_TO: usize = 2;

impl JobManagerState {
    /// Hands the final statuses kept here (confirmed ends only) to the nodes that stay,
    /// each to [`HAND_TO`] of them ranked by the job id, so that `status` still answers
    /// for them while this node is gone. Returns how many statuses were handed.
    fn hand_ends(&self) -> u64 {
        let me = &self.ctx.config.name;
        let peers: Vec<String> = crate::live_nodes(&self.ctx.view)
            .into_iter()
            .filter(|n| n != me)
            .collect();
        if peers.is_empty() {
            return 0;
        }
        let mut to: HashMap<&str, Vec<JobStatus>> = HashMap::new();
        let mut n = 0;
        for id in &self.finished_order {
            let Some(st) = self.finished.get(id) else {
                continue;
            };
            if !st.state.is_terminal()
                || self.held_ends.contains_key(id)
                || self.takeovers.newer_holder(id).is_some()
            {
                continue;
            }
            n += 1;
            let ranked = troupe_runtime::merge::ranked(id, peers.iter().map(String::as_str));
            for node in ranked.into_iter().take(HAND_TO) {
                to.entry(node).or_default().push(st.clone());
            }
        }
        for (node, ends) in to {
            if let Some(jm) = troupe_runtime::protocol::first_member::<JobManagerMessage>(
                &troupe_runtime::protocol::job_manager_group(node),
            ) {
                // In slices, so that no message nears the frame limit.
                for part in ends.chunks(500) {
                    let _ = jm.cast(JobManagerMessage::HandedEnds(Wire::new(part.to_vec())));
                }
            }
        }
        n
    }

    /// Keeps final statuses handed by a node that left (the newest
    /// `retain_finished_jobs`).
    fn keep_handed(&mut self, ends: Vec<JobStatus>) {
        for st in ends {
            if !st.state.is_terminal() {
                continue;
            }
            if self.handed.insert(st.id.clone(), st.clone()).is_none() {
                self.handed_order.push_back(st.id);
            }
        }
        while self.handed_order.len() > self.ctx.config.retain_finished_jobs.max(1) {
            if let Some(old) = self.handed_order.pop_front() {
                self.handed.remove(&old);
            }
        }
    }

    /// The journal that holds `job`, one of this node's live jobs: none for a job
    /// accepted without a record.
    fn journal_of(&self, job: &str) -> Option<&crate::journal::Journal> {
        self.ctx
            .journal
            .as_ref()
            .filter(|_| !self.unjournaled.contains(job))
    }

    /// The supervision of `job` crashed (`err`): the job fails, its end journaled.
    fn supervision_crashed(&mut self, myself: &ActorRef<JobManagerMessage>, job: &str, err: &str) {
        // Out of `live` first: `ended` stops what is there, and this is gone already.
        self.live.remove(job);
        self.count_owned();
        let epoch = self.takeovers.run_epoch(job).unwrap_or(0);
        let st = record_crash(&self.ctx.config.name, self.journal_of(job), job, epoch, err);
        self.ended(myself, st);
    }

    /// Node `node` is gone: its attempts of this node's jobs run again elsewhere.
    fn node_down(&mut self, node: &str) {
        self.ctx.scheduler.node_down(node);
        self.absent.remove(node);
        tracing::debug!(node = %node, jobs = self.live.len(), "node down: telling the job supervisors");
        for (job, sup) in &self.live {
            let _ = sup.cast(job, JobSupervisorMessage::NodeDown(node.to_string()));
        }
    }

    /// The safety net under membership's `NodeDown`: a node that runs attempts of this
    /// node's jobs but has not been a live member (up, with a job manager) for
    /// `failure.down_after_ms` is taken as down, whatever membership said or missed (a
    /// node of the same name came and went, an attempt was sent as its node left).
    fn lost_nodes(&mut self, now: std::time::Instant) {
        let nodes = self.ctx.scheduler.nodes_with_attempts();
        if nodes.is_empty() {
            self.absent.clear();
            return;
        }
        let live: std::collections::HashSet<String> =
            crate::live_nodes(&self.ctx.view).into_iter().collect();
        let after = Duration::from_millis(self.ctx.config.failure.down_after_ms);
        let lost = absent_past(&mut self.absent, &nodes, &live, now, after);
        for node in lost {
            tracing::warn!(node = %node, "a node running attempts of this node's jobs is no live member; its attempts run again");
            self.node_down(&node);
        }
    }
}

/// Starts the host of this node's light jobs under the job manager `myself`.
async fn spawn_light_jobs(
    myself: &ActorRef<JobManagerMessage>,
    ctx: &NodeContext,
) -> Option<ActorRef<LightJobsMessage>> {
    crate::light_jobs::spawn(
        myself,
        LightJobsArgs {
            owner: ctx.config.name.clone(),
        },
    )
    .await
}

/// Of `nodes` (running attempts here), those not in `live` for `after` by `now`; `absent`
/// keeps since when each was seen gone (a node seen live again starts over).
fn absent_past(
    absent: &mut HashMap<String, std::time::Instant>,
    nodes: &[String],
    live: &std::collections::HashSet<String>,
    now: std::time::Instant,
    after: Duration,
) -> Vec<String> {
    absent.retain(|n, _| nodes.contains(n) && !live.contains(n));
    let mut lost = Vec::new();
    for n in nodes.iter().filter(|n| !live.contains(*n)) {
        let since = *absent.entry(n.clone()).or_insert(now);
        if now.duration_since(since) >= after {
            lost.push(n.clone());
        }
    }
    lost.sort();
    lost
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
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let takeovers = Takeovers::new(
            ctx.config.name.clone(),
            Duration::from_millis(ctx.config.failure.takeover_after_ms),
            ctx.config.retain_finished_jobs,
        );
        Ok(JobManagerState {
            takeovers,
            ctx,
            boot: format!("{boot:x}"),
            seq: 0,
            live: HashMap::new(),
            by_actor: HashMap::new(),
            light: None,
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
            specs: HashMap::new(),
            handed: HashMap::new(),
            handed_order: VecDeque::new(),
            per_client: HashMap::new(),
            client_of: HashMap::new(),
            unjournaled: HashSet::new(),
            unique: HashMap::new(),
            unique_of: HashMap::new(),
            absent: HashMap::new(),
            copies_dropped: false,
            owners_asked_at: std::time::Instant::now(),
            held_ends: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.light = spawn_light_jobs(&myself, &state.ctx).await;
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

    // The rare branches' futures are boxed: an async fn's future is as large as its
    // largest branch, and ractor moves the future of every message it handles (a large
    // one showed as memmove in the profile of a busy node).
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
                Ok(req) => state.watch(req, reply),
                Err(e) => {
                    let _ = reply.send(Wire::new(Err(JobQueryError::Unavailable(format!(
                        "unreadable watch request: {e}"
                    )))));
                }
            },
            JobManagerMessage::StepFinished(r) => match r.into_inner() {
                Ok(r) => {
                    // Room came free where it ran: work waiting here goes there.
                    for m in state
                        .ctx
                        .scheduler
                        .result_came_back(&r.job, &r.step, r.attempt, r.ran_us)
                    {
                        state.attempt_moved(m);
                    }
                    match state.live.get(&r.job) {
                        Some(sup) => {
                            let job = r.job.clone();
                            let _ = sup.cast(&job, JobSupervisorMessage::Finished(r));
                        }
                        None => {
                            tracing::debug!(job = %r.job, step = %r.step, "result for a job that is no longer running; discarded")
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable step result"),
            },
            JobManagerMessage::Spawn(r) => match r.into_inner() {
                Ok(r) => state.spawn(r),
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable spawn request"),
            },
            JobManagerMessage::CallWaiting(r) => match r.into_inner() {
                Ok(r) => state.call_waiting(r),
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable call reminder"),
            },
            JobManagerMessage::Cancel(job, reply) => state.to_job(job, reply, Request::Cancel),
            JobManagerMessage::Invalidate(req, reply) => match req.into_inner() {
                Ok(req) => state.invalidate(req, reply),
                Err(_) => {
                    let _ = reply.send(false);
                }
            },
            JobManagerMessage::Progress(p) => match p.into_inner() {
                Ok(p) => {
                    if let Some(sup) = state.live.get(&p.attempt.job) {
                        let job = p.attempt.job.clone();
                        let _ = sup.cast(&job, JobSupervisorMessage::Progress(p));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dropping unreadable progress"),
            },
            JobManagerMessage::AttemptLost(l) => match l.into_inner() {
                Ok(l) => {
                    if let Some(sup) = state.live.get(&l.attempt.job) {
                        let job = l.attempt.job.clone();
                        let _ = sup.cast(&job, JobSupervisorMessage::AttemptLost(l));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable lost attempt"),
            },
            JobManagerMessage::Moved(m) => match m.into_inner() {
                Ok(m) => {
                    // Stolen by an idle node: counted there now.
                    if m.node != state.ctx.view.node && state.live.contains_key(&m.attempt.job) {
                        state.ctx.scheduler.attempt_moved(&m.attempt, &m.node);
                    }
                    state.attempt_moved(m);
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
            JobManagerMessage::Uniques(prefix, reply) => {
                let found = state
                    .unique
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, j)| (k.clone(), j.job.clone()))
                    .collect();
                let _ = reply.send(Wire::new(found));
            }
            JobManagerMessage::NodeDown(node) => state.node_down(&node),
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
                Ok(m) => Box::pin(state.job_moved(&myself, m)).await,
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable job move"),
            },
            JobManagerMessage::NodeUp(node) => Box::pin(state.node_up(&myself, &node)).await,
            JobManagerMessage::Unknown(jobs, reply) => {
                let unknown = state.unknown(jobs.into_inner().unwrap_or_default());
                let _ = reply.send(Wire::new(unknown));
            }
            JobManagerMessage::Forsaken(owner, jobs) => {
                let jobs = jobs.into_inner().unwrap_or_default();
                Box::pin(state.forsaken(&myself, &owner, jobs)).await;
            }
            JobManagerMessage::Ended(jobs, reply) => {
                let ended = state.ended_here(jobs.into_inner().unwrap_or_default());
                let _ = reply.send(Wire::new(ended));
            }
            JobManagerMessage::CopiesEnded(owner, jobs) => {
                let jobs = jobs.into_inner().unwrap_or_default();
                Box::pin(state.copies_ended(&myself, &owner, jobs)).await;
            }
            JobManagerMessage::SweepCopies => {
                state.lost_nodes(std::time::Instant::now());
                Box::pin(state.sweep_copies(&myself)).await
            }
            JobManagerMessage::TakeoverDecided(job, d) => {
                let d = d.into_inner().unwrap_or_else(|e| Err(e.to_string()));
                Box::pin(state.takeover_decided(&myself, job, d)).await;
            }
            JobManagerMessage::EndRecorded(job) => {
                if let Some(st) = state.held_ends.remove(&job) {
                    tracing::info!(job = %job, "the end journaled before the restart is recorded; published");
                    state.finished.insert(job.clone(), st);
                }
                if let Some(j) = &state.ctx.journal {
                    j.confirmed(&job);
                }
            }
            JobManagerMessage::DropCopies(reply) => {
                let _ = reply.send(Box::pin(state.drop_copies()).await);
            }
            JobManagerMessage::Spec(job, reply) => state.spec(job, reply),
            JobManagerMessage::HandEnds(reply) => {
                let _ = reply.send(state.hand_ends());
            }
            JobManagerMessage::HandedEnds(ends) => match ends.into_inner() {
                Ok(ends) => state.keep_handed(ends),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable statuses handed by a leaving node")
                }
            },
            JobManagerMessage::HandedEnd(job, reply) => {
                let _ = reply.send(Wire::new(state.handed.get(&job).cloned()));
            }
            JobManagerMessage::CopiesDropped(node, reply) => {
                if let Some(j) = &state.ctx.journal {
                    j.copies_dropped_by(&node);
                }
                let _ = reply.send(true);
            }
            JobManagerMessage::ResumeJournaled(moved) => {
                let moved = moved.into_inner().unwrap_or_default();
                Box::pin(state.resume_journaled(&myself, moved)).await;
            }
            JobManagerMessage::JobEnded(st) => match st.into_inner() {
                Ok(st) => state.ended(&myself, st),
                Err(e) => tracing::warn!(error = %e, "unreadable job status"),
            },
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A job supervisor that stops normally has already sent JobEnded. One that crashed
        // takes its job down with it: record the job as failed rather than forget it.
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            if let Some(job) = state.by_actor.remove(&cell.get_id()) {
                state.supervision_crashed(&myself, &job, &err.to_string());
            } else if state
                .light
                .as_ref()
                .is_some_and(|h| h.get_id() == cell.get_id())
            {
                // The host of light jobs: every job it held fails, and a new host serves
                // the next ones.
                let jobs: Vec<String> = state
                    .live
                    .iter()
                    .filter(|(_, s)| matches!(s, Supervisor::Light(_)))
                    .map(|(j, _)| j.clone())
                    .collect();
                state.light = None;
                for job in jobs {
                    state.supervision_crashed(&myself, &job, &err.to_string());
                }
                state.light = spawn_light_jobs(&myself, &state.ctx).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Instant;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|n| n.to_string()).collect()
    }

    /// A node running attempts that is not live for the down delay is lost; one seen live
    /// again starts its delay over; one without attempts is not watched.
    #[test]
    fn attempts_on_a_node_that_is_no_live_member_are_lost_after_the_delay() {
        let mut absent = HashMap::new();
        let after = Duration::from_millis(2000);
        let t0 = Instant::now();
        let live: HashSet<String> = names(&["n1", "n3"]).into_iter().collect();
        let nodes = names(&["n2", "n3"]);
        assert!(absent_past(&mut absent, &nodes, &live, t0, after).is_empty());
        let almost = t0 + after - Duration::from_millis(1);
        assert!(absent_past(&mut absent, &nodes, &live, almost, after).is_empty());
        // n2 was seen live for a moment: its delay starts again.
        let with_n2: HashSet<String> = names(&["n1", "n2", "n3"]).into_iter().collect();
        assert!(absent_past(&mut absent, &nodes, &with_n2, almost, after).is_empty());
        let t1 = t0 + after;
        assert!(absent_past(&mut absent, &nodes, &live, t1, after).is_empty());
        assert_eq!(
            absent_past(&mut absent, &nodes, &live, t1 + after, after),
            names(&["n2"])
        );
        // No attempts there any more: forgotten.
        assert!(absent_past(&mut absent, &names(&["n3"]), &live, t1 + after, after).is_empty());
        assert!(absent.is_empty());
    }
}
