//! Scheduling on this node, with one owner: which waiting attempt gets a worker slot here,
//! and which node takes an attempt of a job this node owns.
//!
//! The [`Scheduler`] owns
//! - the worker slots (a semaphore permit per attempt that runs here) and the attempts
//!   holding them, with their cancel tokens;
//! - the attempts waiting for a slot, in priority [`lanes`], and the gates of tasks with
//!   limits (`limits`) that may hold some of them back;
//! - [`placement`]: this node's count of its own attempts on each peer and the peers'
//!   gossiped load, from which `Scheduler::place` chooses a node (home if it has room,
//!   else the node with the most room, else the attempt waits here);
//! - spilling: attempts waiting here go to a node as room appears there
//!   (`Scheduler::result_came_back`, `Scheduler::spill`);
//! - stealing: an idle node asks the busiest peer for work (`Scheduler::steal`) and a
//!   loaded one gives some (`Scheduler::give_work`).
//!
//! Who calls it: the dispatcher places attempts; the worker pool queues the attempts other
//! nodes send, answers steal requests and cancels, and gives slots back; the job manager
//! reports results, moves and ended jobs; membership reports peers' load and departures
//! and gossips this node's (`busy`, `waiting`, `saturated_tasks`); the drain empties the
//! lanes and stops what runs; the HTTP server reads the gauges. None of them calls another
//! one's scheduling functions.
//!
//! A plain struct shared in the [`NodeContext`](crate::NodeContext), not an actor: its
//! callers sit on the path of every attempt (a dispatcher placing one, a slot coming free
//! in a finishing task), and an actor would add a mailbox hop to each and make the
//! dispatcher wait for an answer. Its state is a few maps behind mutexes held for one
//! method, never across an `.await`, and it outlives a restart of any actor that uses it.
//! How an attempt that got a slot runs is the worker pool's business: the node's wiring
//! (`node_root`) hands the scheduler the pool's `Launch` when the node starts, so this
//! module does not depend on the pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{ActorCell, ActorRef};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use troupe_runtime::config::{NodeConfig, PlacementMode};
use troupe_runtime::protocol::{
    AbandonedRun, AttemptMoved, AttemptRef, JobManagerMessage, LostAttempt, MembershipMessage,
    ResultSource, StealRequest, StepRequest, StepResult, WorkerPoolMessage,
};
use troupe_runtime::task::TaskError;
use troupe_runtime::wire::Wire;
use troupe_runtime::TaskRegistry;

use crate::{locked, ClusterView};

mod abandoned;
pub(crate) mod audit;
pub mod lanes;
mod limits;
pub mod placement;
pub mod standing;

use lanes::{lane_of, Lanes, LANES};
use placement::{Placement, Prefetch};

/// How an attempt that got a slot here starts: given the scheduler, the attempt, its slot
/// (held until it ends) and its cancel token. The worker pool's, set when the node starts.
pub(crate) type Launch =
    dyn Fn(&Arc<Scheduler>, StepRequest, OwnedSemaphorePermit, CancellationToken) + Send + Sync;

/// How long a steal request counts as in flight (a loaded peer answers with `Run`s at
/// once; one with nothing to give does not answer).
const STEAL_EVERY: Duration = Duration::from_millis(100);

/// An attempt running here.
#[derive(Debug)]
struct Running {
    /// Stops it at its next await point.
    cancel: CancellationToken,
    /// The node that owns its job.
    owner: String,
    /// The owner's epoch for the job.
    epoch: u64,
    /// Its task.
    task: String,
}

/// This node's scheduling: slots, lanes, placement, limits, stealing (see the module docs).
pub struct Scheduler {
    pub(crate) view: Arc<ClusterView>,
    config: Arc<NodeConfig>,
    registry: TaskRegistry,
    /// The worker slots: a permit per attempt that may run at once.
    slots: Arc<Semaphore>,
    slot_count: usize,
    /// Attempts waiting for a slot.
    lanes: Mutex<Lanes<StepRequest>>,
    /// How many wait, as last counted (read without the lanes' lock: gossip, admission).
    queued: AtomicU32,
    /// The classes over their wait target, as last told to the cluster
    /// ([`Scheduler::over_target`]).
    over_told: AtomicU8,
    /// When a change of them was last announced at once (at most one per
    /// `admission.wait_interval_ms`; gossip carries the rest).
    over_announced: Mutex<Option<Instant>>,
    running: Mutex<HashMap<AttemptRef, Running>>,
    placement: Mutex<Placement>,
    limits: Mutex<limits::Gates>,
    /// When this node last asked a peer for work (one request at a time).
    last_steal: Mutex<Option<Instant>>,
    /// Runs given up by their owners: their attempts do not start here.
    abandoned: Mutex<abandoned::AbandonedRuns>,
    /// Attempts this node told their owner it does not hold: they do not start here.
    /// Taken before the board, `abandoned`, the lanes and `running` (see `unheld`).
    fenced: Mutex<audit::FencedAttempts>,
    launch: Box<Launch>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("slot_count", &self.slot_count)
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

/// Drops an attempt because a newer run of its job replaced its run: logs it, and if it
/// was a merger's execution, tells the merger it was cancelled (the requests that joined
/// it get a new one).
fn drop_void(node: &str, req: StepRequest) {
    tracing::info!(job = %req.job, step = %req.step, attempt = req.attempt, owner = %req.owner, epoch = req.epoch, "dropping an attempt of a run the job's new owner replaced");
    if req.merger.is_some() {
        let result = StepResult {
            job: req.job.clone(),
            step: req.step.clone(),
            attempt: req.attempt,
            node: node.to_string(),
            result: Err(TaskError::permanent("cancelled")),
            source: ResultSource::Executed,
            epoch: req.epoch,
            ran_us: None,
        };
        troupe_runtime::protocol::merger_execution_ended(
            req.merger.as_deref(),
            req.key.as_deref(),
            &result,
            true,
        );
    }
}

/// Drops an attempt that this node told its owner it does not hold (see [`audit`]).
pub(crate) fn drop_fenced(req: StepRequest) {
    tracing::info!(job = %req.job, step = %req.step, attempt = req.attempt, owner = %req.owner, "refusing an attempt that arrived after its owner was told this node does not hold it; it runs elsewhere");
}

/// The attempt a request is.
pub(crate) fn attempt_of(r: &StepRequest) -> AttemptRef {
    AttemptRef {
        job: r.job.clone(),
        step: r.step.clone(),
        attempt: r.attempt,
    }
}

/// The nodes that serve `task` now with their pools, leaving out those at their
/// concurrency limit for it (unless all are), in a stable order.
fn candidates(view: &ClusterView, task: &str) -> Vec<(ActorCell, String)> {
    let mut members = view.live_pools(task);
    if members.iter().any(|(_, n)| !view.is_saturated(n, task)) {
        members.retain(|(_, n)| !view.is_saturated(n, task));
    }
    members.sort_by_key(|(c, _)| crate::session_order(c));
    members
}

/// A worker pool of `task`, round-robin over the nodes that serve it (`next` is the
/// caller's counter), with the node it is on.
pub(crate) fn pick_worker(
    view: &ClusterView,
    task: &str,
    next: &mut usize,
) -> Option<(ActorRef<WorkerPoolMessage>, String)> {
    let mut members = candidates(view, task);
    if members.is_empty() {
        return None;
    }
    let (pick, node) = members.swap_remove(*next % members.len());
    *next = next.wrapping_add(1);
    Some((pick.into(), node))
}

impl Scheduler {
    /// The scheduler of the node `view` describes: `config.slots` slots, lanes and placement
    /// as `config.scheduling` says; attempts that get a slot start through `launch`.
    pub(crate) fn new(
        view: Arc<ClusterView>,
        config: Arc<NodeConfig>,
        registry: TaskRegistry,
        launch: Box<Launch>,
    ) -> Arc<Self> {
        let sched = config.scheduling;
        let placement = Placement::with_prefetch(Prefetch {
            min: sched.prefetch,
            max: sched.prefetch_max,
            budget_us: sched.prefetch_us,
        });
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(config.slots)),
            slot_count: config.slots,
            lanes: Mutex::new(Lanes::new(sched.policy, sched.weights).with_wait_targets(
                config.admission.wait_target_ms,
                config.admission.wait_interval_ms,
            )),
            queued: AtomicU32::new(0),
            over_told: AtomicU8::new(0),
            over_announced: Mutex::default(),
            running: Mutex::default(),
            placement: Mutex::new(placement),
            limits: Mutex::default(),
            last_steal: Mutex::default(),
            abandoned: Mutex::default(),
            fenced: Mutex::default(),
            view,
            config,
            registry,
            launch,
        })
    }

    /// Configured number of slots.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Slots in use.
    pub fn busy(&self) -> u32 {
        self.slot_count
            .saturating_sub(self.slots.available_permits()) as u32
    }

    /// Attempts waiting for a slot here, as last counted.
    pub fn waiting(&self) -> u32 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Attempts waiting for a slot here, by lane.
    pub fn depths(&self) -> [usize; LANES] {
        locked(&self.lanes).depths()
    }

    /// The priority classes whose new work has waited here past its target for a full
    /// interval (bit `c` for class `c`: 0 high, 1 normal, 2 low; see [`standing`]).
    pub fn over_target(&self) -> u8 {
        locked(&self.lanes).over_target(Instant::now())
    }

    /// Whether new jobs of class `class` are refused here, and if so when the queue that
    /// refuses them should be back at its target (see [`Lanes::refusal`]).
    pub fn refusal(&self, class: usize) -> (bool, Option<Duration>) {
        let (over, drained_in) = locked(&self.lanes).refusal(Instant::now(), class);
        (standing::refuses(over, class), drained_in)
    }

    /// Records the classes over target now in the view; answers them and whether they
    /// changed since last recorded (membership gossips them).
    pub(crate) fn refresh_over_target(&self) -> (u8, bool) {
        self.record_over_target(self.over_target())
    }

    /// Records `now`, the classes over target, in the view; answers them and whether
    /// they changed.
    fn record_over_target(&self, now: u8) -> (u8, bool) {
        let changed = self.over_told.swap(now, Ordering::Relaxed) != now;
        if changed {
            self.view.set_over_target(&self.view.node, now);
        }
        (now, changed)
    }

    /// Tells the cluster at once when the classes over target changed (unless it was
    /// told of a change less than an interval ago: the forecast can flip with each
    /// attempt, and the next gossip round carries the latest anyway).
    fn tell_over_target(&self, over: u8) {
        if self.record_over_target(over).1 {
            let every = Duration::from_millis(self.config.admission.wait_interval_ms);
            {
                let mut last = locked(&self.over_announced);
                if last.is_some_and(|t| t.elapsed() < every) {
                    return;
                }
                *last = Some(Instant::now());
            }
            if let Some(m) =
                crate::find_on::<MembershipMessage>(crate::names::MEMBERSHIP, &self.view.node)
            {
                let _ = m.cast(MembershipMessage::Announce);
            }
        }
    }

    /// Attempts waiting for a slot in the cluster: this node's now, its live peers' as
    /// last gossiped.
    pub fn waiting_in_cluster(&self) -> u64 {
        self.view.peers_waiting() + u64::from(self.waiting())
    }

    /// Attempts running here.
    pub fn running(&self) -> usize {
        locked(&self.running).len()
    }

    /// Tasks at their concurrency limit on this node now (gossiped to the other nodes,
    /// whose dispatchers skip this node for them).
    pub fn saturated_tasks(&self) -> Vec<String> {
        locked(&self.limits).saturated.clone()
    }

    /// Attempts of `request`'s task this node takes now: free slots not already claimed
    /// by waiting attempts, and, for work made by an attempt running here (a call, a
    /// sub-job), a queue here as long as its slots run in the prefetch budget
    /// (`Placement::wait_here`): a quick call waits here for the caller's slot rather
    /// than cross the network and back, which takes longer than running it. Only while
    /// every attempt running here is of a task as quick (by its mean here): a slot busy
    /// with a long one would keep the call waiting while other nodes have room (an
    /// attempt of a quick task that runs long is not seen: the next gossip of a peer
    /// with room spills the call there). Not for tasks with limits, whose turn here may
    /// wait for a token.
    fn local_room(&self, request: &StepRequest) -> u32 {
        let free = self.slots.available_permits() as u32;
        let limited = || {
            self.config
                .task_limits
                .iter()
                .any(|l| l.task == request.task)
        };
        let wait_here = if request.near.as_deref() == Some(self.view.node.as_str()) && !limited() {
            // `running` then `placement`: nothing takes them the other way round.
            let running = locked(&self.running);
            let slots = self.slot_count as u32;
            let placement = locked(&self.placement);
            let quick = |task: &str| placement.wait_here(&self.view.node, task, slots) > 0;
            if running.values().all(|r| quick(&r.task)) {
                placement.wait_here(&self.view.node, &request.task, slots)
            } else {
                0
            }
        } else {
            0
        };
        let waiting = locked(&self.lanes).len() as u32;
        free.saturating_add(wait_here).saturating_sub(waiting)
    }

    /// Queues an attempt in this node's lanes and starts what the free slots allow.
    pub(crate) fn enqueue(self: &Arc<Self>, req: StepRequest) {
        // Held until the attempt is in the lanes, so that `unheld` finds it there if it
        // did not find it fenced here.
        let fenced = locked(&self.fenced);
        if fenced.refuses(&attempt_of(&req)) {
            drop(fenced);
            drop_fenced(req);
            return;
        }
        if locked(&self.abandoned).voids(&req) {
            drop(fenced);
            drop_void(&self.view.node, req);
            return;
        }
        let lane = lane_of(req.priority, req.stage);
        locked(&self.lanes).push(req, lane, Instant::now());
        drop(fenced);
        self.pump();
    }

    /// Of `attempts`, those neither waiting nor running here nor on this node's Gearman
    /// board; they are fenced: if one arrives later it does not start (see [`audit`]).
    pub(crate) fn unheld(&self, attempts: Vec<AttemptRef>) -> Vec<AttemptRef> {
        let mut fenced = locked(&self.fenced);
        // On the Gearman board, or finished with a result held for the owner.
        let on_board: Vec<bool> = {
            let board = crate::gearman::lock(&self.view.gearman.board);
            let held = locked(&self.view.held_results);
            attempts
                .iter()
                .map(|a| board.holds(a) || held.contains(a))
                .collect()
        };
        // As `pump` takes them: an attempt between the lanes and `running` is in neither.
        let _abandoned = locked(&self.abandoned);
        let waiting: std::collections::HashSet<AttemptRef> =
            locked(&self.lanes).iter().map(attempt_of).collect();
        let running = locked(&self.running);
        let mut out = Vec::new();
        for (a, board) in attempts.into_iter().zip(on_board) {
            if !board && !waiting.contains(&a) && !running.contains_key(&a) {
                fenced.record(a.clone());
                out.push(a);
            }
        }
        out
    }

    /// Answers an owner's [`WorkerPoolMessage::Holds`]: the attempts of `asked` not held
    /// here, fenced from now on ([`Scheduler::unheld`]).
    pub(crate) fn answer_holds(
        &self,
        asked: Wire<Vec<AttemptRef>>,
        reply: ractor::RpcReplyPort<Wire<Vec<AttemptRef>>>,
    ) {
        let unheld = self.unheld(asked.into_inner().unwrap_or_default());
        if !unheld.is_empty() {
            tracing::info!(
                attempts = unheld.len(),
                "an owner asked for attempts this node does not hold; they will not start here"
            );
        }
        let _ = reply.send(Wire::new(unheld));
    }

    /// Takes the fence's lock for a caller that queues attempts elsewhere (the Gearman
    /// board): it checks [`audit::FencedAttempts::refuses`] and queues while holding it.
    pub(crate) fn fence(&self) -> std::sync::MutexGuard<'_, audit::FencedAttempts> {
        locked(&self.fenced)
    }

    /// This node's attempts on `node` sent there at or before `by`.
    pub(crate) fn placed_on_by(&self, node: &str, by: Instant) -> Vec<AttemptRef> {
        locked(&self.placement).placed_on_by(node, by)
    }

    /// Of `unheld` (attempts `node` says it does not hold), those still counted there:
    /// forgotten there, and answered to be run again.
    pub(crate) fn lost_on(&self, node: &str, unheld: Vec<AttemptRef>) -> Vec<AttemptRef> {
        let mut placement = locked(&self.placement);
        unheld
            .into_iter()
            .filter(|a| placement.lost_on(a, node))
            .collect()
    }

    /// Starts waiting attempts, the next by lane order each time, while slots are free (and
    /// the limits of limited tasks allow); asks a peer for work when nothing waits.
    pub(crate) fn pump(self: &Arc<Self>) {
        let limits = &self.config.task_limits;
        let limited = !limits.is_empty();
        let mut rate_wait: Option<Duration> = None;
        loop {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            let now = Instant::now();
            // Held from the pop until it counts as running, so that `abandon` finds it
            // running if it did not find it void here.
            let abandoned = locked(&self.abandoned);
            let next = if limited {
                let mut gates = locked(&self.limits);
                let next = locked(&self.lanes).pop_where(now, |r| {
                    match gates.check(&self.view, limits, &r.task, now) {
                        Ok(()) => true,
                        Err(wait) => {
                            if let Some(w) = wait {
                                rate_wait = Some(rate_wait.map_or(w, |x| x.min(w)));
                            }
                            false
                        }
                    }
                });
                if let Some(r) = &next {
                    gates.started(&r.task);
                }
                next
            } else {
                locked(&self.lanes).pop(now)
            };
            let Some(req) = next else {
                break;
            };
            // Runs replaced by a newer one leave the lanes here, when their turn comes,
            // not at `abandon` (a scan of every lane per moved job).
            if abandoned.voids(&req) {
                if limited {
                    locked(&self.limits).finished(&req.task);
                }
                drop(abandoned);
                drop_void(&self.view.node, req);
                continue;
            }
            let cancel = CancellationToken::new();
            locked(&self.running).insert(
                attempt_of(&req),
                Running {
                    cancel: cancel.clone(),
                    owner: req.owner.clone(),
                    epoch: req.epoch,
                    task: req.task.clone(),
                },
            );
            drop(abandoned);
            (self.launch)(self, req, permit, cancel);
        }
        // One lock for both counts: this runs for every attempt.
        let (waiting, over) = {
            let mut lanes = locked(&self.lanes);
            (lanes.len(), lanes.over_target(Instant::now()))
        };
        self.queued.store(waiting as u32, Ordering::Relaxed);
        self.tell_over_target(over);
        if limited {
            self.after_limits_changed(rate_wait);
        }
        if waiting == 0 {
            self.steal();
        }
    }

    /// Arms a timer for the next rate token, and tells the cluster when the set of tasks at
    /// their concurrency limit changed.
    fn after_limits_changed(self: &Arc<Self>, rate_wait: Option<Duration>) {
        let mut gates = locked(&self.limits);
        if let Some(wait) = rate_wait {
            if !gates.timer_armed {
                gates.timer_armed = true;
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    locked(&me.limits).timer_armed = false;
                    me.pump();
                });
            }
        }
        let now = gates.at_cap();
        if now != gates.saturated {
            gates.saturated = now.clone();
            drop(gates);
            self.view
                .set_saturated(&self.view.node, now.into_iter().collect());
            if let Some(m) =
                crate::find_on::<MembershipMessage>(crate::names::MEMBERSHIP, &self.view.node)
            {
                let _ = m.cast(MembershipMessage::Announce);
            }
        }
    }

    /// A slot taken again by a running attempt whose calls were answered; waits for one.
    pub(crate) async fn acquire_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// An attempt that ran here ended, having held its slot `ran_us` if it succeeded (the
    /// mean `Placement::wait_here` reads): it no longer runs, its slot (if it still held
    /// one) goes to the next waiting attempt.
    pub(crate) fn attempt_ended(
        self: &Arc<Self>,
        attempt: &AttemptRef,
        task: &str,
        slot: Option<OwnedSemaphorePermit>,
        ran_us: Option<u64>,
    ) {
        if let Some(us) = ran_us {
            locked(&self.placement).ran(&self.view.node, task, us);
        }
        locked(&self.running).remove(attempt);
        locked(&self.limits).finished(task);
        drop(slot);
        self.pump();
    }

    /// Drops a waiting attempt, or stops a running one; false if it is neither.
    pub(crate) fn cancel(&self, a: &AttemptRef) -> bool {
        let dropped = locked(&self.lanes)
            .take_where(|r| r.job == a.job && r.step == a.step && r.attempt == a.attempt);
        if !dropped.is_empty() {
            self.queued
                .fetch_sub(dropped.len() as u32, Ordering::Relaxed);
            return true;
        }
        match locked(&self.running).get(a) {
            Some(r) => {
                r.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Gives up the attempts of `run` here: the running ones are stopped, and neither the
    /// waiting ones nor later ones will start (`pump`, `enqueue`, `spill`, `give_work`
    /// drop them).
    pub(crate) fn abandon(&self, run: AbandonedRun) {
        // Taken first, as `pump` does.
        let mut abandoned = locked(&self.abandoned);
        let mut stopped = 0;
        for (a, r) in locked(&self.running).iter() {
            if a.job == run.job && r.epoch < run.below_epoch {
                r.cancel.cancel();
                stopped += 1;
            }
        }
        if stopped > 0 {
            tracing::info!(job = %run.job, below_epoch = run.below_epoch, stopped, "stopped the running attempts of a run the job's new owner replaced");
        }
        abandoned.record(run);
    }

    /// This node gives up `run`, of one of its jobs that another node took over: its
    /// attempts here are given up ([`Scheduler::abandon`]) and it forgets where the others
    /// went. Answers the peers where some may still wait or run.
    pub(crate) fn abandon_own_run(&self, run: AbandonedRun) -> Vec<String> {
        let job = run.job.clone();
        self.abandon(run);
        let mut peers = locked(&self.placement).job_ended(&job);
        peers.retain(|n| *n != self.view.node);
        peers
    }

    /// Takes every attempt waiting here out of the lanes (a leaving node hands them back).
    pub(crate) fn take_waiting(&self) -> Vec<StepRequest> {
        let waiting = locked(&self.lanes).take_where(|_| true);
        self.queued.store(0, Ordering::Relaxed);
        waiting
    }

    /// Stops every attempt running here (at its next await point); answers each with the
    /// node that owns its job.
    pub(crate) fn stop_running(&self) -> Vec<(AttemptRef, String)> {
        locked(&self.running)
            .iter()
            .map(|(a, r)| {
                r.cancel.cancel();
                (a.clone(), r.owner.clone())
            })
            .collect()
    }

    /// Tells `owner` that attempt `a` will not run here (this node is leaving); the owner
    /// runs it elsewhere as a new attempt, without using a retry.
    pub(crate) fn hand_back(&self, owner: &str, a: AttemptRef) {
        let lost = LostAttempt {
            attempt: a,
            reason: format!("node {} left (drained)", self.view.node),
            counts: false,
        };
        match crate::job_manager_of(owner) {
            Some(jm) => {
                let _ = jm.cast(JobManagerMessage::AttemptLost(Wire::new(lost)));
            }
            None => {
                tracing::warn!(owner, job = %lost.attempt.job, "cannot hand an attempt back: its owner is unreachable")
            }
        }
    }

    /// Sends `request`, an attempt of this node's job, where it should run: home if it has
    /// room, else the node with the most room (ties in `turn`); when none has room it
    /// waits in this node's lanes if this node serves its task, else it queues on the least
    /// loaded node. With `round_robin` placement, to the next node serving it. Answers the
    /// node; gives the request back if no node serves its task.
    // The `Err` hands the request back as it came; boxing it would allocate per attempt.
    #[allow(clippy::result_large_err)]
    pub(crate) fn place(
        self: &Arc<Self>,
        request: StepRequest,
        turn: &mut usize,
    ) -> Result<String, StepRequest> {
        let view = &self.view;
        if self.config.scheduling.placement == PlacementMode::RoundRobin {
            let Some((pool, node)) = pick_worker(view, &request.task, turn) else {
                return Err(request);
            };
            return self.send_to(&pool, &node, request).map(|()| node);
        }
        let members = candidates(view, &request.task);
        if members.is_empty() {
            return Err(request);
        }
        let names: Vec<String> = members.iter().map(|(_, n)| n.clone()).collect();
        // This node's own worker pool serves the task (its external Gearman workers, if they
        // are the only local member, are reached like a peer's pool).
        let serves_here = self.registry.get(&request.task).is_some() && names.contains(&view.node);
        let local_room = if serves_here {
            self.local_room(&request)
        } else {
            0
        };
        let home = request.near.as_deref().unwrap_or(&view.node);
        // External Gearman workers here do the task: when no node has room, the attempt
        // waits on this node's board, as in gearmand's queue, rather than crossing to
        // another node that is as busy (measured with 200 Gearman clients on three nodes:
        // crossing cost a tenth more CPU a job and a p99 1.5-2x longer, and halved the rate
        // of a bulk of background jobs).
        let gearman_here = !serves_here
            && names.contains(&view.node)
            && self.config.gearman.is_some()
            && crate::gearman::lock(&view.gearman.board).serves(&request.task);
        let pick = {
            let placement = locked(&self.placement);
            placement
                .choose(&request.task, &names, home, &view.node, local_room, turn)
                .or(if serves_here || gearman_here {
                    Some(view.node.as_str())
                } else {
                    placement.least_loaded(&names, turn)
                })
                .map(str::to_string)
        };
        let Some(node) = pick else {
            return Err(request);
        };
        if node == view.node && serves_here {
            self.enqueue(request);
            return Ok(node);
        }
        // The newest: a connection that closed may still list its pool for a moment
        // (sorted by session, the newest last), and what is sent to it is lost.
        let Some((cell, _)) = members.into_iter().rfind(|(_, n)| *n == node) else {
            return Err(request);
        };
        let pool: ActorRef<WorkerPoolMessage> = cell.into();
        self.send_to(&pool, &node, request).map(|()| node)
    }

    /// Sends an attempt of this node's job to `node`'s pool and counts it there.
    // The `Err` hands the request back as it came (see `place`).
    #[allow(clippy::result_large_err)]
    fn send_to(
        &self,
        pool: &ActorRef<WorkerPoolMessage>,
        node: &str,
        request: StepRequest,
    ) -> Result<(), StepRequest> {
        if let Err(e) = pool.cast(WorkerPoolMessage::Run(Wire::new(request.clone()))) {
            tracing::debug!(error = %e, node = %node, "worker pool gone; attempt waits");
            return Err(request);
        }
        locked(&self.placement).placed(
            &request.job,
            &request.step,
            request.attempt,
            node,
            Some(&request.task),
        );
        Ok(())
    }

    /// Hands attempts of this node's jobs waiting in its lanes to `node` while it has room
    /// (room appeared there: a result came back from it, or its gossip shows free slots).
    /// Returns what moved, for the job supervisors.
    pub(crate) fn spill(self: &Arc<Self>, node: &str) -> Vec<AttemptMoved> {
        let view = &self.view;
        if node == view.node
            || view.is_down(node)
            || self.config.scheduling.placement == PlacementMode::RoundRobin
        {
            return Vec::new();
        }
        let mut moved = Vec::new();
        let Some(pool) = self.view.pool_of(node) else {
            return moved;
        };
        let mut serves: HashMap<String, bool> = HashMap::new();
        // The node's room by task, taken once: nothing else places attempts meanwhile.
        let mut rooms = locked(&self.placement).rooms(node);
        loop {
            if !rooms.any() {
                break;
            }
            let abandoned = locked(&self.abandoned);
            let next = locked(&self.lanes).pop_where(Instant::now(), |r| {
                r.owner == view.node
                    && r.merger.is_none()
                    && !abandoned.voids(r)
                    && rooms.for_task(&r.task) > 0
                    && *serves.entry(r.task.clone()).or_insert_with(|| {
                        !view.is_saturated(node, &r.task)
                            && view.live_pools(&r.task).iter().any(|(_, n)| n == node)
                    })
            });
            drop(abandoned);
            let Some(r) = next else { break };
            let attempt = attempt_of(&r);
            if let Err(r) = self.send_to(&pool, node, r) {
                self.enqueue(r);
                break;
            }
            rooms.took_one();
            moved.push(AttemptMoved {
                attempt,
                node: node.to_string(),
            });
        }
        if !moved.is_empty() {
            self.pump();
            tracing::debug!(node = %node, n = moved.len(), "waiting attempts handed to a node with room");
        }
        moved
    }

    /// The result of attempt `(job, step, attempt)` of this node's job came back: if it ran
    /// on a peer, its room there is free again and work waiting here goes there
    /// (`Scheduler::spill`). Returns what moved, for the job supervisors.
    pub(crate) fn result_came_back(
        self: &Arc<Self>,
        job: &str,
        step: &str,
        attempt: u32,
        ran_us: Option<u64>,
    ) -> Vec<AttemptMoved> {
        let from = locked(&self.placement).finished(job, step, attempt, ran_us);
        match from {
            Some(node) => self.spill(&node),
            None => Vec::new(),
        }
    }

    /// Attempt `a` of this node's job now runs on `node` (an idle node stole it).
    pub(crate) fn attempt_moved(&self, a: &AttemptRef, node: &str) {
        locked(&self.placement).placed(&a.job, &a.step, a.attempt, node, None);
    }

    /// Forgets every attempt of an ended job of this node (cancelled attempts send no
    /// result).
    pub(crate) fn job_ended(&self, job: &str) {
        locked(&self.placement).job_ended(job);
    }

    /// The peers that run attempts of this node's jobs now.
    pub(crate) fn nodes_with_attempts(&self) -> Vec<String> {
        locked(&self.placement).nodes_with_attempts()
    }

    /// Forgets a node that left: this node's attempts there and its load.
    pub(crate) fn node_down(&self, node: &str) {
        locked(&self.placement).node_down(node);
    }

    /// Records a peer's gossiped load: `slots`, and `busy + queued` attempts of every owner.
    pub(crate) fn peer_load(&self, node: &str, slots: u32, busy: u32, queued: u32) {
        locked(&self.placement).gossip(node, slots, busy, queued);
    }

    /// Asks the most loaded peer (by its gossiped queue) for waiting attempts, if this node
    /// has free slots and nothing waiting. Called when the node goes idle and when gossip
    /// shows a peer with waiting work: an idle node is woken by events, never polls.
    pub(crate) fn steal(&self) {
        let view = &self.view;
        let free = self.slots.available_permits();
        if free == 0 || view.is_draining() || !locked(&self.lanes).is_empty() {
            return;
        }
        let Some((victim, _)) = view.busiest_peer() else {
            return;
        };
        {
            let mut last = locked(&self.last_steal);
            if last.is_some_and(|t| t.elapsed() < STEAL_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let req = StealRequest {
            thief: view.node.clone(),
            max: free as u32,
            tasks: self.registry.names(),
        };
        if let Some(pool) = self.view.pool_of(&victim) {
            tracing::debug!(victim = %victim, free, "idle: asking a loaded peer for work");
            let _ = pool.cast(WorkerPoolMessage::Steal(Wire::new(req)));
        }
    }

    /// Gives an idle peer up to `max` of the attempts waiting here (those that would run
    /// next), if this node is loaded (no free slot); tells each job's owner where it went.
    pub(crate) fn give_work(&self, req: StealRequest) {
        let view = &self.view;
        if self.slots.available_permits() > 0 || req.thief == view.node {
            return;
        }
        let Some(thief) = view.pool_of(&req.thief) else {
            return;
        };
        let now = Instant::now();
        let mut given = Vec::new();
        {
            let abandoned = locked(&self.abandoned);
            let mut waiting = locked(&self.lanes);
            // Leave this node the work its own slots will take next.
            let spare = waiting.len().saturating_sub(self.slot_count);
            for _ in 0..(req.max as usize).min(spare) {
                match waiting.pop_where(now, |r| req.tasks.contains(&r.task) && !abandoned.voids(r))
                {
                    Some(r) => given.push(r),
                    None => break,
                }
            }
        }
        if given.is_empty() {
            return;
        }
        self.queued
            .store(locked(&self.lanes).len() as u32, Ordering::Relaxed);
        tracing::debug!(thief = %req.thief, n = given.len(), "gave waiting attempts to an idle peer");
        for r in given {
            let moved = AttemptMoved {
                attempt: attempt_of(&r),
                node: req.thief.clone(),
            };
            let owner = r.owner.clone();
            if thief.cast(WorkerPoolMessage::Run(Wire::new(r))).is_ok() {
                if let Some(jm) = crate::job_manager_of(&owner) {
                    let _ = jm.cast(JobManagerMessage::Moved(Wire::new(moved)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
