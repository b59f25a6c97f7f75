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
//!
//! Before all that, an attempt waits while this node does not hold its owner's lease
//! ([`lease`]): cut off from the core group for longer than a takeover takes, its jobs
//! may have moved to another node, so it starts none of their attempts until the core
//! group has answered again and said which jobs are still its own.

mod lease;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef};
use ractor_cluster::RactorMessage;
use troupe_runtime::merge::{self, request_key, CacheMode};
use troupe_runtime::protocol::{
    first_member, merger_group, JobManagerMessage, JobMoved, MergerMessage, StepRequest,
    WorkerPoolMessage,
};
use troupe_runtime::vocab::Holder;
use troupe_runtime::wire::Wire;

use crate::core::{CoreCommand, CoreDecision};
use crate::NodeContext;
use lease::{OwnerLease, Renewal};

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
    /// The owner's lease's timer: renew it if due.
    RenewLease,
    /// The core group's answer to the lease renewal sent at `sent_at`, which asked who
    /// holds `jobs` (those of the attempts waiting for the lease then): each one's holder
    /// (None: it never moved), or why there is no answer.
    LeaseAnswer {
        /// When the renewal was sent.
        sent_at: Instant,
        /// The jobs asked about.
        jobs: Vec<String>,
        /// Their holders, in the same order.
        owners: Result<Vec<Option<Holder>>, String>,
    },
}

/// An attempt and who to tell where it went.
type Waiting = (StepRequest, DerivedActorRef<Assigned>);

/// The dispatcher.
pub(crate) struct Dispatcher;

/// State of the dispatcher.
pub(crate) struct DispatcherState {
    ctx: NodeContext,
    next: HashMap<String, usize>,
    waiting: VecDeque<Waiting>,
    retry_armed: bool,
    /// The owner's lease, when another node can take this node's jobs over (it journals
    /// them and copies the journal); None otherwise.
    lease: Option<OwnerLease>,
    /// Attempts waiting for the lease.
    held: Vec<Waiting>,
    /// When the earliest `RenewLease` timer set fires (a later one set before it may
    /// fire too: a tick that finds nothing due does nothing).
    renew_timer_at: Option<Instant>,
    /// Whether the cluster has a core group, and when that was last looked at (a
    /// cluster without one hands no job over, so the lease always holds there).
    core_seen: Option<(Instant, bool)>,
    /// For a lease's length after it held again following a lapse: the jobs the core
    /// group has said are still this node's since (any other's next attempt is asked
    /// about first).
    verifying: Option<(Instant, HashSet<String>)>,
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
    /// Whether the cluster has a core group, looked at again at most every quarter
    /// second (it forms once and stays).
    fn core_exists(&mut self, now: Instant) -> bool {
        match self.core_seen {
            Some((_, true)) => true,
            Some((at, false)) if now.saturating_duration_since(at) < Duration::from_millis(250) => {
                false
            }
            _ => {
                let exists = self.ctx.core.group_exists();
                self.core_seen = Some((now, exists));
                exists
            }
        }
    }

    /// Whether an attempt dispatched at `now` must wait for the lease; sends a renewal
    /// when one is due.
    fn must_wait_for_lease(&mut self, job: &str, now: Instant) -> bool {
        if lease_holds_now(&self.lease, now) {
            // Just after a lapse, a job not asked about since may have moved.
            return match &self.verifying {
                Some((until, _)) if now >= *until => {
                    self.verifying = None;
                    false
                }
                Some((_, asked)) => !asked.contains(job),
                None => false,
            };
        }
        if !self.core_exists(now) {
            if let Some(lease) = &mut self.lease {
                lease.assume_held(now);
            }
            return lease_holds_now(&self.lease, now);
        }
        true
    }

    /// The lease's timer: renews it while this node owns jobs (a quarter of the lease
    /// apart), or counts it held when nobody can take a job of this node over.
    fn lease_tick(&mut self, myself: &ActorRef<DispatcherMessage>, now: Instant) {
        let core = self.owns_jobs() && self.core_exists(now);
        let Some(lease) = &mut self.lease else {
            return;
        };
        if core {
            self.renew_if_wanted(myself, now);
        } else {
            lease.assume_held(now);
        }
        self.arm_renewal(myself, now);
    }

    /// Whether this node has jobs a takeover could concern: it owns some, or attempts
    /// wait for the lease.
    fn owns_jobs(&self) -> bool {
        !self.held.is_empty()
            || self
                .ctx
                .view
                .owned_jobs
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
    }

    /// Renews the lease when a renewal is due, or at once when attempts wait while it
    /// holds (just after a lapse: their jobs are to be asked about) and none is in
    /// flight.
    fn renew_if_wanted(&mut self, myself: &ActorRef<DispatcherMessage>, now: Instant) {
        let wanted = self.lease.as_ref().is_some_and(|l| {
            l.renewal_due(now) || (!self.held.is_empty() && l.holds(now) && !l.in_flight())
        });
        if wanted {
            self.renew(myself, now);
        }
    }

    /// Holds `w` until the lease holds again.
    fn hold(&mut self, myself: &ActorRef<DispatcherMessage>, w: Waiting) {
        let now = Instant::now();
        let holds = lease_holds_now(&self.lease, now);
        if self.held.is_empty() && !holds {
            tracing::warn!(
                lease_ms = self.ctx.config.failure.takeover_after_ms,
                "this node has had no answer from the core group for longer than a takeover takes: attempts of its jobs wait until it answers (another node may have taken those jobs over)"
            );
        }
        self.held.push(w);
        self.renew_if_wanted(myself, now);
        self.arm_renewal(myself, now);
    }

    /// Sets the lease's timer: when the next renewal is due, or a renewal period from
    /// now when this node owns no job.
    fn arm_renewal(&mut self, myself: &ActorRef<DispatcherMessage>, now: Instant) {
        let Some(lease) = &self.lease else {
            return;
        };
        let wait = if self.owns_jobs() {
            lease.next_due(now)
        } else {
            lease.renew_every()
        };
        let at = now + wait;
        if self.renew_timer_at.is_some_and(|t| t <= at) {
            return;
        }
        self.renew_timer_at = Some(at);
        myself.send_after(wait, || DispatcherMessage::RenewLease);
    }

    /// Asks the core group, off the mailbox, who holds the jobs of the attempts waiting
    /// for the lease (none, most often): its answer renews the lease.
    fn renew(&mut self, myself: &ActorRef<DispatcherMessage>, now: Instant) {
        let Some(lease) = &mut self.lease else {
            return;
        };
        lease.sent(now);
        let wait = lease.length() / 2;
        let jobs: Vec<String> = self
            .held
            .iter()
            .map(|(r, _)| r.job.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let me = self.ctx.config.name.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let cmd = CoreCommand::Owners { jobs: jobs.clone() };
            let owners = match tokio::time::timeout(wait, crate::core::decide(&me, cmd)).await {
                Ok(Ok(CoreDecision::Owners(o))) if o.len() == jobs.len() => Ok(o),
                Ok(Ok(other)) => Err(format!("unexpected answer to an owner query: {other:?}")),
                Ok(Err(refusal)) => Err(refusal.message),
                Err(_) => Err(format!("no answer within {} ms", wait.as_millis())),
            };
            let _ = myself.cast(DispatcherMessage::LeaseAnswer {
                sent_at: now,
                jobs,
                owners,
            });
        });
    }

    /// The core group answered a renewal (or did not). Attempts of jobs another node
    /// holds now are dropped (a move is a fact, even in an answer that does not renew
    /// the lease), and the job manager stops their runs; if the lease holds again, the
    /// other attempts asked about go on.
    fn lease_answered(
        &mut self,
        myself: &ActorRef<DispatcherMessage>,
        sent_at: Instant,
        jobs: Vec<String>,
        owners: Result<Vec<Option<Holder>>, String>,
    ) {
        let now = Instant::now();
        let Some(lease) = &mut self.lease else {
            return;
        };
        let owners = match owners {
            Ok(o) => o,
            Err(why) => {
                lease.failed(sent_at);
                tracing::debug!(reason = %why, "the owner's lease was not renewed");
                self.arm_renewal(myself, now);
                return;
            }
        };
        let renewal = lease.answered(sent_at, now);
        let length = lease.length();
        let me = self.ctx.config.name.clone();
        let moved: HashMap<String, Holder> = jobs
            .iter()
            .zip(owners)
            .filter_map(|(j, o)| o.filter(|h| h.node != me).map(|h| (j.clone(), h)))
            .collect();
        let asked: HashSet<&String> = jobs.iter().collect();
        let held = std::mem::take(&mut self.held);
        let before = held.len();
        let mut go = Vec::new();
        for (request, supervisor) in held {
            if moved.contains_key(&request.job) {
                continue;
            }
            if renewal != Renewal::Settling && asked.contains(&request.job) {
                go.push((request, supervisor));
            } else {
                self.held.push((request, supervisor));
            }
        }
        let dropped = before - go.len() - self.held.len();
        if !moved.is_empty() {
            let jm = crate::job_manager_of(&me);
            for (job, holder) in moved {
                tracing::warn!(job = %job, owner = %holder.node, epoch = holder.epoch, "the core group says another node took this job over while this node was cut off; its waiting attempts are dropped");
                if let Some(jm) = &jm {
                    let _ = jm.cast(JobManagerMessage::JobMoved(Wire::new(JobMoved::new(
                        job, holder,
                    ))));
                }
            }
        }
        match renewal {
            Renewal::HoldsAgain => {
                self.verifying = Some((now + length, jobs.into_iter().collect()));
            }
            Renewal::Holds => {
                if let Some((_, asked)) = &mut self.verifying {
                    asked.extend(jobs);
                }
            }
            Renewal::Settling => {}
        }
        if !go.is_empty() || dropped > 0 {
            tracing::info!(
                released = go.len(),
                dropped,
                "the core group answered: attempts that waited for it go on, those of jobs taken over are dropped"
            );
        }
        for (request, supervisor) in go {
            if let Some(w) = self.try_dispatch(request, supervisor) {
                self.waiting.push_back(w);
            }
        }
        // Attempts dispatched after that renewal was sent are asked about at once.
        self.renew_if_wanted(myself, now);
        self.arm_renewal(myself, now);
    }

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
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = DispatcherState {
            next: HashMap::new(),
            waiting: VecDeque::new(),
            retry_armed: false,
            lease: (ctx.journal.is_some() && ctx.config.journal_replicas > 0).then(|| {
                OwnerLease::new(
                    Duration::from_millis(ctx.config.failure.takeover_after_ms),
                    Instant::now(),
                    ctx.core.group_exists(),
                )
            }),
            held: Vec::new(),
            renew_timer_at: None,
            core_seen: None,
            verifying: None,
            ctx,
        };
        state.arm_renewal(&myself, Instant::now());
        Ok(state)
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
                if state.must_wait_for_lease(&request.job, Instant::now()) {
                    state.hold(&myself, (request, supervisor));
                } else if let Some(w) = state.try_dispatch(request, supervisor) {
                    tracing::debug!(task = %w.0.task, job = %w.0.job, "no worker serves this task right now; waiting");
                    state.waiting.push_back(w);
                }
            }
            DispatcherMessage::RenewLease => {
                let now = Instant::now();
                if state.renew_timer_at.is_some_and(|t| t <= now) {
                    state.renew_timer_at = None;
                }
                state.lease_tick(&myself, now);
            }
            DispatcherMessage::LeaseAnswer {
                sent_at,
                jobs,
                owners,
            } => state.lease_answered(&myself, sent_at, jobs, owners),
            DispatcherMessage::RetryWaiting => {
                state.retry_armed = false;
                let now = Instant::now();
                for w in std::mem::take(&mut state.waiting) {
                    if state.must_wait_for_lease(&w.0.job, now) {
                        state.hold(&myself, w);
                    } else {
                        state.waiting.push_back(w);
                    }
                }
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

/// Whether `lease` holds at `now` (no lease: always).
fn lease_holds_now(lease: &Option<OwnerLease>, now: Instant) -> bool {
    lease.as_ref().is_none_or(|l| l.holds(now))
}
