//! The event hub: what this node's jobs and membership do, for operators.
//!
//! Job supervisors and the membership actor publish [`ClusterEvent`]s here. The hub
//! - keeps a summary of every job this node owns (live, and the newest finished ones),
//!   which answers `GET /api/jobs` and `troupe-node top`;
//! - turns events into Prometheus metrics (jobs, steps per task, job latency);
//! - hands them to this node's HTTP event stream, if it serves one;
//! - forwards them, in batches at most [`TICK`] apart, to the hubs of nodes that serve HTTP and
//!   asked for them ([`EventHubMessage::Subscribe`], renewed every second, dropped after
//!   [`SUBSCRIPTION_TTL`] without renewal), so any node's stream covers the cluster.
//!
//! Nothing on a job's path waits for the hub: supervisors only cast to it. A job that
//! leaves without an end of its own is told by the job manager: its supervisor crashed (a
//! `JobFinished` with the failed status) or another node took it over (`JobLeft`), so no
//! summary stays "running" for ever.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use troupe_runtime::job::status::{is_child_step, JobEvent, JobState};
use troupe_runtime::observe::{
    metric, newest_first, ClusterEvent, EventKind, JobList, JobQuery, JobSummary,
};
use troupe_runtime::protocol::{cluster_jobs, event_hub_group, EventHubMessage, EVENT_HUBS_GROUP};
use troupe_runtime::wire::Wire;

use crate::NodeContext;

/// How often the hub sends batched events on and renews its subscriptions.
pub(crate) const TICK: Duration = Duration::from_millis(50);
/// How often a node that serves HTTP renews its subscription at every other hub.
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A subscriber that has not renewed for this long is dropped.
pub(crate) const SUBSCRIPTION_TTL: Duration = Duration::from_secs(5);
/// How long gathering the cluster's jobs waits for each hub.
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);
/// Most events held for one subscriber between two ticks (older ones are dropped).
const MAX_BATCH: usize = 10_000;

/// The event hub.
pub(crate) struct EventHub;

/// One job's summary; `steps` and `running_steps` are filled from the sets when listed.
struct JobEntry {
    summary: JobSummary,
    running: HashSet<String>,
    /// Steps not in the job file seen so far (fan-out children `s[i]`, sub-job steps
    /// `s/x`), which add to the file's step count.
    children: HashSet<String>,
    file_steps: u32,
}

impl JobEntry {
    fn saw(&mut self, step: &str) {
        if is_child_step(step) {
            self.children.insert(step.to_string());
        }
    }

    fn summary(&self) -> JobSummary {
        JobSummary {
            steps: self.file_steps + self.children.len() as u32,
            running_steps: self.running.len() as u32,
            ..self.summary.clone()
        }
    }
}

struct Subscriber {
    hub: ActorRef<EventHubMessage>,
    renewed: Instant,
}

/// State of the event hub.
pub(crate) struct EventHubState {
    ctx: NodeContext,
    jobs: HashMap<String, JobEntry>,
    finished: VecDeque<String>,
    subscribers: HashMap<String, Subscriber>,
    outbox: Vec<ClusterEvent>,
    flush_armed: bool,
}

impl EventHubState {
    /// Folds one of this node's job events into the summaries and the metrics.
    fn record_job(&mut self, ev: &JobEvent, at_ms: u64, job_state: Option<JobState>) {
        self.fold(ev, at_ms);
        let job = troupe_runtime::client::event_job(ev);
        if let (Some(st), Some(e)) = (job_state, self.jobs.get_mut(job)) {
            e.summary.state = st;
        }
    }

    fn fold(&mut self, ev: &JobEvent, at_ms: u64) {
        match ev {
            JobEvent::Queued { job, name, steps } => {
                metrics::counter!(metric::JOBS, "state" => "accepted").increment(1);
                metrics::gauge!(metric::JOBS_ACTIVE).increment(1.0);
                self.jobs.insert(
                    job.clone(),
                    JobEntry {
                        summary: JobSummary {
                            id: job.clone(),
                            name: name.clone(),
                            state: JobState::Queued,
                            owner: self.ctx.config.name.clone(),
                            submitted_ms: at_ms,
                            elapsed_ms: None,
                            steps: *steps,
                            finished_steps: 0,
                            running_steps: 0,
                            error: None,
                        },
                        running: HashSet::new(),
                        children: HashSet::new(),
                        file_steps: *steps,
                    },
                );
            }
            JobEvent::StepStarted {
                job, step, task, ..
            } => {
                metrics::counter!(metric::STEPS_STARTED, "task" => task.clone()).increment(1);
                if let Some(e) = self.jobs.get_mut(job) {
                    e.saw(step);
                    e.running.insert(step.clone());
                }
            }
            JobEvent::StepRetrying {
                job, step, task, ..
            } => {
                metrics::counter!(metric::STEPS_RETRIED, "task" => task.clone()).increment(1);
                if let Some(e) = self.jobs.get_mut(job) {
                    e.running.remove(step);
                }
            }
            JobEvent::StepNeedsAction { job, step, .. } => {
                if let Some(e) = self.jobs.get_mut(job) {
                    e.running.remove(step);
                }
            }
            JobEvent::StepProgress { .. } | JobEvent::StepData { .. } => {}
            JobEvent::StepFinished {
                job,
                step,
                task,
                state,
                ..
            } => {
                metrics::counter!(metric::STEPS_FINISHED, "task" => task.clone(), "state" => state.as_str())
                    .increment(1);
                if let Some(e) = self.jobs.get_mut(job) {
                    e.saw(step);
                    e.running.remove(step);
                    e.summary.finished_steps += 1;
                    if e.summary.state == JobState::WaitingForUser
                        || e.summary.state == JobState::Queued
                    {
                        e.summary.state = JobState::Running;
                    }
                }
            }
            JobEvent::JobFinished { status } => {
                metrics::counter!(metric::JOBS, "state" => status.state.as_str()).increment(1);
                metrics::gauge!(metric::JOBS_ACTIVE).decrement(1.0);
                if let Some(ms) = status.elapsed_ms {
                    metrics::histogram!(metric::JOB_SECONDS).record(ms as f64 / 1000.0);
                }
                if let Some(e) = self.jobs.get_mut(&status.id) {
                    e.running.clear();
                    e.children.clear();
                    e.file_steps = status.steps.len() as u32;
                    let s = &mut e.summary;
                    s.state = status.state;
                    s.elapsed_ms = status.elapsed_ms;
                    s.error = status.error.clone();
                    s.finished_steps = status
                        .steps
                        .values()
                        .filter(|st| st.state.is_terminal())
                        .count() as u32;
                    self.finished.push_back(status.id.clone());
                }
                while self.finished.len() > self.ctx.config.retain_finished_jobs.max(1) {
                    if let Some(old) = self.finished.pop_front() {
                        self.jobs.remove(&old);
                    }
                }
            }
        }
    }

    /// Job `job` left this node unended (taken over elsewhere): its summary goes, so it
    /// is not shown running here for ever.
    fn job_left(&mut self, job: &str) {
        let finished = self.finished.iter().any(|j| j == job);
        if !finished && self.jobs.remove(job).is_some() {
            metrics::gauge!(metric::JOBS_ACTIVE).decrement(1.0);
        }
    }

    fn list(&self, q: &JobQuery) -> JobList {
        let mut matching: Vec<&JobEntry> = self
            .jobs
            .values()
            .filter(|e| q.state.is_none_or(|st| e.summary.state == st))
            .collect();
        let total = matching.len() as u64;
        matching.sort_by(|a, b| newest_first(&a.summary, &b.summary));
        let mut by_state = std::collections::BTreeMap::new();
        for e in self.jobs.values() {
            *by_state
                .entry(e.summary.state.as_str().to_string())
                .or_insert(0) += 1;
        }
        JobList {
            jobs: matching
                .into_iter()
                .take(q.limit)
                .map(JobEntry::summary)
                .collect(),
            total,
            by_state,
        }
    }

    fn publish_local(&self, ev: ClusterEvent) {
        // No receiver (no HTTP stream open) is the common case, and fine.
        let _ = self.ctx.view.events.send(Arc::new(ev));
    }

    /// Sends the waiting events to the subscribers.
    fn flush(&mut self) {
        self.flush_armed = false;
        let now = Instant::now();
        self.subscribers
            .retain(|_, s| now.duration_since(s.renewed) < SUBSCRIPTION_TTL);
        if !self.outbox.is_empty() {
            let batch = std::mem::take(&mut self.outbox);
            let mut gone = Vec::new();
            for (node, s) in &self.subscribers {
                if s.hub
                    .cast(EventHubMessage::Forward(Wire::new(batch.clone())))
                    .is_err()
                {
                    gone.push(node.clone());
                }
            }
            for g in gone {
                self.subscribers.remove(&g);
            }
        }
    }

    /// Asks every other hub for its events (again).
    fn renew(&self, myself: &ActorRef<EventHubMessage>) {
        let me = myself.get_id();
        for hub in ractor::pg::get_members(&EVENT_HUBS_GROUP.to_string()) {
            if hub.get_id() != me {
                let hub: ActorRef<EventHubMessage> = hub.into();
                let _ = hub.cast(EventHubMessage::Subscribe(self.ctx.config.name.clone()));
            }
        }
    }
}

impl Actor for EventHub {
    type Msg = EventHubMessage;
    type State = EventHubState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(event_hub_group(&ctx.config.name), vec![myself.get_cell()]);
        ractor::pg::join(EVENT_HUBS_GROUP.to_string(), vec![myself.get_cell()]);
        // Timers only where there is work: an idle node without HTTP stays idle.
        if ctx.config.http.is_some() {
            myself.send_interval(RENEW_EVERY, || EventHubMessage::Renew);
            let _ = myself.cast(EventHubMessage::Renew);
        }
        Ok(EventHubState {
            ctx,
            jobs: HashMap::new(),
            finished: VecDeque::new(),
            subscribers: HashMap::new(),
            outbox: Vec::new(),
            flush_armed: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EventHubMessage::Publish(ev) => {
                let Ok(ev) = ev.into_inner() else {
                    return Ok(());
                };
                // Membership changes stay local: every node of the mesh sees them itself.
                if let EventKind::Job(j) = &ev.kind {
                    state.record_job(j, ev.at_ms, ev.job_state);
                    if !state.subscribers.is_empty() && state.outbox.len() < MAX_BATCH {
                        state.outbox.push(ev.clone());
                        if !state.flush_armed {
                            state.flush_armed = true;
                            myself.send_after(TICK, || EventHubMessage::Tick);
                        }
                    }
                }
                state.publish_local(ev);
            }
            EventHubMessage::Subscribe(node) => {
                if node == state.ctx.config.name {
                    return Ok(());
                }
                match ractor::pg::get_members(&event_hub_group(&node))
                    .into_iter()
                    .next()
                {
                    Some(hub) => {
                        let renewed = Instant::now();
                        state
                            .subscribers
                            .entry(node)
                            .and_modify(|s| s.renewed = renewed)
                            .or_insert(Subscriber {
                                hub: hub.into(),
                                renewed,
                            });
                    }
                    None => tracing::debug!(node = %node, "subscription from a hub not reachable"),
                }
            }
            EventHubMessage::Forward(batch) => match batch.into_inner() {
                Ok(batch) => {
                    for ev in batch {
                        state.publish_local(ev);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable event batch"),
            },
            EventHubMessage::ListJobs(q, reply) => {
                let list = match q.into_inner() {
                    Ok(q) => state.list(&q),
                    Err(_) => JobList::default(),
                };
                let _ = reply.send(Wire::new(list));
            }
            EventHubMessage::ListClusterJobs(q, reply) => {
                let q = q.into_inner().unwrap_or_default();
                // Off the mailbox: the gathering asks this hub too.
                tokio::spawn(async move {
                    let page = cluster_jobs(q.state, q.offset, q.limit, GATHER_TIMEOUT).await;
                    let _ = reply.send(Wire::new(page));
                });
            }
            EventHubMessage::Tick => state.flush(),
            EventHubMessage::Renew => state.renew(&myself),
            EventHubMessage::JobLeft(job) => state.job_left(&job),
        }
        Ok(())
    }
}
