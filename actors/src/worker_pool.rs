//! The worker pool: runs attempts of the tasks this node serves, at most `slots` at once.
//!
//! It joins one process group per registered task (`troupe.task.NAME`), which is how
//! every node's dispatcher finds it, and `troupe.worker_pool.NODE`, where job supervisors
//! send answers to calls and cancels. Each attempt runs as its own tokio task that first
//! takes a slot (a semaphore permit), so a slow task never blocks the pool's mailbox. A
//! task waiting on its calls or sub-jobs gives its slot back until the answer comes
//! (so a recursion deeper than the slots cannot deadlock). A panic inside a task is caught
//! and fails that attempt with a permanent error; a cancel stops the task at its next
//! await point (and tells it through `ctx.cancelled()`). The result goes straight to the
//! job manager of the job's owner node.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;
use troupe_runtime::observe::metric;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use troupe_runtime::config::{LanePolicy, TaskLimit};
use troupe_runtime::job::spec::SpawnKind;
use troupe_runtime::protocol::{
    first_member, job_manager_group, merger_group, task_group, worker_pool_group, AttemptMoved,
    AttemptRef, Executed, JobManagerMessage, MergerMessage, ResultSource, SpawnRequest,
    StealRequest, StepRequest, StepResult, WorkerPoolMessage,
};
use troupe_runtime::task::{SubWork, TaskContext, TaskError};
use troupe_runtime::wire::Wire;

use crate::scheduler::lanes::{lane_of, Lanes, LANES};
use crate::NodeContext;

/// The worker pool.
pub struct WorkerPool;

/// Attempts running or waiting for a slot, and calls waiting for answers. Kept in the
/// node's [`crate::ClusterView`] so that it outlives a restart of the pool actor.
pub struct WorkState {
    /// Attempts running here: their cancel token and their job's owner node.
    pub(crate) running: Mutex<HashMap<AttemptRef, (CancellationToken, String)>>,
    calls: Mutex<HashMap<u64, oneshot::Sender<Result<Value, TaskError>>>>,
    next_call: AtomicU64,
    /// Attempts waiting for a slot, in priority lanes.
    pub(crate) waiting: Mutex<Lanes<StepRequest>>,
    /// Concurrency and rate gates of the tasks with limits.
    gates: Mutex<Gates>,
    /// When this node last asked a peer for work (one request at a time).
    last_steal: Mutex<Option<Instant>>,
}

/// How long a steal request counts as in flight (a loaded peer answers with `Run`s at
/// once; one with nothing to give does not answer).
const STEAL_EVERY: Duration = Duration::from_millis(100);

/// Asks the most loaded peer (by its gossiped queue) for waiting attempts, if this node
/// has free slots and nothing waiting. Called when the node goes idle and when gossip
/// shows a peer with waiting work: an idle node is woken by events, never polls.
pub fn maybe_steal(ctx: &NodeContext) {
    let view = &ctx.view;
    let free = view.slots.available_permits();
    if free == 0 || view.is_draining() || !locked(&view.work.waiting).is_empty() {
        return;
    }
    let Some((victim, _)) = view.busiest_peer() else {
        return;
    };
    {
        let mut last = locked(&view.work.last_steal);
        if last.is_some_and(|t| t.elapsed() < STEAL_EVERY) {
            return;
        }
        *last = Some(Instant::now());
    }
    let req = StealRequest {
        thief: view.node.clone(),
        max: free as u32,
        tasks: ctx.registry.names(),
    };
    if let Some(pool) = first_member::<WorkerPoolMessage>(&worker_pool_group(&victim)) {
        tracing::debug!(victim = %victim, free, "idle: asking a loaded peer for work");
        let _ = pool.cast(WorkerPoolMessage::Steal(Wire::new(req)));
    }
}

/// Gives an idle peer up to `max` of the attempts waiting here (those that would run
/// next), if this node is loaded (no free slot); tells each job's owner where it went.
fn give_work(ctx: &NodeContext, req: StealRequest) {
    let view = &ctx.view;
    if view.slots.available_permits() > 0 || req.thief == view.node {
        return;
    }
    let Some(thief) = first_member::<WorkerPoolMessage>(&worker_pool_group(&req.thief)) else {
        return;
    };
    let now = Instant::now();
    let mut given = Vec::new();
    {
        let mut waiting = locked(&view.work.waiting);
        // Leave this node the work its own slots will take next.
        let spare = waiting.len().saturating_sub(view.slot_count);
        for _ in 0..(req.max as usize).min(spare) {
            match waiting.pop_where(now, |r| req.tasks.contains(&r.task)) {
                Some(r) => given.push(r),
                None => break,
            }
        }
    }
    if given.is_empty() {
        return;
    }
    view.queued
        .store(locked(&view.work.waiting).len() as u32, Ordering::Relaxed);
    tracing::debug!(thief = %req.thief, n = given.len(), "gave waiting attempts to an idle peer");
    for r in given {
        let moved = AttemptMoved {
            attempt: attempt_of(&r),
            node: req.thief.clone(),
        };
        let owner = r.owner.clone();
        if thief.cast(WorkerPoolMessage::Run(Wire::new(r))).is_ok() {
            if let Some(jm) = job_manager(&owner) {
                let _ = jm.cast(JobManagerMessage::Moved(Wire::new(moved)));
            }
        }
    }
}

/// How often a gate's share of cluster-wide limits is worked out again.
const SHARE_EVERY: Duration = Duration::from_millis(200);

/// The gate of one task with limits (`task_limits` in the configuration).
#[derive(Debug)]
struct Gate {
    running: usize,
    cap: Option<usize>,
    rate: Option<f64>,
    tokens: f64,
    refilled: Instant,
    computed: Instant,
}

/// Gates by task, and whether a timer will pump when rate tokens come back.
#[derive(Debug, Default)]
struct Gates {
    by_task: HashMap<String, Gate>,
    timer_armed: bool,
    saturated: Vec<String>,
}

/// This node's share of `limit`: its concurrency cap and its rate, from the nodes that
/// serve the task now (cluster-wide figures divided among them; the remainder of the
/// concurrency goes to the first nodes by name; every node at least 1).
fn shares(ctx: &NodeContext, limit: &TaskLimit) -> (Option<usize>, Option<f64>) {
    let mut nodes: Vec<String> = crate::dispatcher::live_members(&ctx.view, &limit.task)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    nodes.sort();
    nodes.dedup();
    let n = nodes.len().max(1);
    let rank = nodes.iter().position(|x| *x == ctx.view.node).unwrap_or(0);
    let cluster = limit
        .max_in_cluster
        .map(|m| (m / n + usize::from(rank < m % n)).max(1));
    let cap = match (limit.max_per_node, cluster) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (cap, limit.rate_per_s.map(|r| r / n as f64))
}

impl Gates {
    /// The gate of `task`, its shares fresh; `None` for a task without limits.
    fn gate(&mut self, ctx: &NodeContext, task: &str, now: Instant) -> Option<&mut Gate> {
        let limit = ctx.config.task_limits.iter().find(|l| l.task == task)?;
        let g = self.by_task.entry(task.to_string()).or_insert_with(|| {
            let (cap, rate) = shares(ctx, limit);
            Gate {
                running: 0,
                cap,
                rate,
                tokens: rate.map_or(0.0, |r| r.max(1.0)),
                refilled: now,
                computed: now,
            }
        });
        if now.duration_since(g.computed) >= SHARE_EVERY {
            (g.cap, g.rate) = shares(ctx, limit);
            g.computed = now;
        }
        if let Some(r) = g.rate {
            let dt = now.duration_since(g.refilled).as_secs_f64();
            g.tokens = (g.tokens + r * dt).min(r.max(1.0));
            g.refilled = now;
        }
        Some(g)
    }

    /// Whether an attempt of `task` may start now; `Err(Some(wait))` when it waits for a
    /// rate token, `Err(None)` when the task is at its concurrency cap.
    fn check(
        &mut self,
        ctx: &NodeContext,
        task: &str,
        now: Instant,
    ) -> Result<(), Option<Duration>> {
        let Some(g) = self.gate(ctx, task, now) else {
            return Ok(());
        };
        if g.cap.is_some_and(|c| g.running >= c) {
            return Err(None);
        }
        match g.rate {
            Some(r) if g.tokens < 1.0 => Err(Some(Duration::from_secs_f64(
                ((1.0 - g.tokens) / r).clamp(0.001, 1.0),
            ))),
            _ => Ok(()),
        }
    }

    fn started(&mut self, task: &str) {
        if let Some(g) = self.by_task.get_mut(task) {
            g.running += 1;
            if g.rate.is_some() {
                g.tokens -= 1.0;
            }
        }
    }

    fn finished(&mut self, task: &str) {
        if let Some(g) = self.by_task.get_mut(task) {
            g.running = g.running.saturating_sub(1);
        }
    }

    /// Tasks at their concurrency cap now.
    fn at_cap(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .by_task
            .iter()
            .filter(|(_, g)| g.cap.is_some_and(|c| g.running >= c))
            .map(|(k, _)| k.clone())
            .collect();
        t.sort();
        t
    }
}

/// Tasks at their concurrency limit on this node now (gossiped to the other nodes,
/// whose dispatchers skip this node for them).
pub fn saturated_tasks(ctx: &NodeContext) -> Vec<String> {
    locked(&ctx.view.work.gates).saturated.clone()
}

impl Default for WorkState {
    fn default() -> Self {
        Self {
            running: Mutex::default(),
            calls: Mutex::default(),
            next_call: AtomicU64::new(0),
            waiting: Mutex::new(Lanes::new(LanePolicy::Priority, Duration::from_secs(1))),
            gates: Mutex::default(),
            last_steal: Mutex::default(),
        }
    }
}

impl WorkState {
    /// Attempts waiting for a slot, by lane.
    pub fn depths(&self) -> [usize; LANES] {
        locked(&self.waiting).depths()
    }
}

impl std::fmt::Debug for WorkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkState").finish_non_exhaustive()
    }
}

use crate::locked;

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

/// The job manager of `owner`, if reachable.
pub(crate) fn job_manager(owner: &str) -> Option<ActorRef<JobManagerMessage>> {
    first_member(&job_manager_group(owner))
}

/// Sends a step result to the job manager of its owner node.
pub fn send_result(result: StepResult, owner: &str) {
    match job_manager(owner) {
        Some(jm) => {
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

/// A running attempt's way to its job's supervisor; shares the attempt's slot so that it
/// can give it back while it waits.
struct AttemptLink {
    owner: String,
    node: String,
    work: Arc<WorkState>,
    slots: Arc<Semaphore>,
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    /// Calls of this attempt not answered yet: the slot is taken again only when the
    /// last is answered (taking it back while a sibling's sub-work still waits for a
    /// slot could hold every slot of the node on tasks that cannot go on).
    outstanding: Arc<AtomicU64>,
    ctx: NodeContext,
}

impl SubWork for AttemptLink {
    fn spawn(
        &self,
        job: &str,
        step: &str,
        attempt: u32,
        kind: SpawnKind,
    ) -> Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>> {
        let call_id = self.work.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        locked(&self.work.calls).insert(call_id, tx);
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
        let sent = job_manager(&self.owner)
            .map(|jm| jm.cast(JobManagerMessage::Spawn(Wire::new(req))).is_ok())
            .unwrap_or(false);
        let slots = self.slots.clone();
        let work = self.work.clone();
        let owner = self.owner.clone();
        let permit = self.permit.clone();
        let ctx = self.ctx.clone();
        let outstanding = self.outstanding.clone();
        outstanding.fetch_add(1, Ordering::AcqRel);
        Box::pin(async move {
            // Give the slot back while waiting (if a sibling call has not already), and
            // let a waiting attempt have it.
            let released = locked(&permit).take();
            if released.is_some() {
                drop(released);
                pump(&ctx);
            }
            let result = if !sent {
                locked(&work.calls).remove(&call_id);
                Err(TaskError::transient(format!(
                    "the job's owner node {owner} is not reachable"
                )))
            } else {
                rx.await
                    .unwrap_or_else(|_| Err(TaskError::transient("the call's answer was lost")))
            };
            // Take a slot again before the task goes on, once its last call is answered
            // (concurrent calls of one task share one slot). Waiting here goes ahead of
            // the attempts in the lanes: the semaphore hands a freed slot to its waiters
            // first, and `pump` only takes slots nobody waits for.
            let last = outstanding.fetch_sub(1, Ordering::AcqRel) == 1;
            if last && locked(&permit).is_none() {
                if let Ok(p) = slots.acquire_owned().await {
                    let surplus = {
                        let mut slot = locked(&permit);
                        match *slot {
                            None => {
                                *slot = Some(p);
                                None
                            }
                            // A sibling call got back first and holds the slot: this
                            // permit goes back, to a waiting attempt.
                            Some(_) => Some(p),
                        }
                    };
                    if surplus.is_some() {
                        drop(surplus);
                        pump(&ctx);
                    }
                }
            }
            result
        })
    }
}

/// State of the worker pool actor.
pub struct WorkerPoolState {
    ctx: NodeContext,
}

/// The attempt a request is.
pub(crate) fn attempt_of(r: &StepRequest) -> AttemptRef {
    AttemptRef {
        job: r.job.clone(),
        step: r.step.clone(),
        attempt: r.attempt,
    }
}

/// Queues an attempt in this node's lanes and starts what the free slots allow.
pub fn queue(ctx: &NodeContext, req: StepRequest) {
    let lane = lane_of(req.priority, req.stage);
    locked(&ctx.view.work.waiting).push(req, lane, Instant::now());
    pump(ctx);
}

/// Attempts this node can start now: free slots not already claimed by waiting attempts.
pub fn local_room(ctx: &NodeContext) -> u32 {
    let free = ctx.view.slots.available_permits();
    free.saturating_sub(locked(&ctx.view.work.waiting).len()) as u32
}

impl WorkerPoolState {
    /// Queues an attempt sent by a dispatcher (of any node); a leaving node hands it
    /// back at once (it was sent before its sender learned that this node is leaving).
    fn run(&self, req: StepRequest) {
        if self.ctx.view.is_draining() {
            crate::drain::hand_back(&self.ctx.view.node, &req.owner, attempt_of(&req));
            return;
        }
        queue(&self.ctx, req);
    }

    /// Drops a waiting attempt, or stops a running one; false if it is neither.
    fn cancel(&self, a: &AttemptRef) -> bool {
        let work = &self.ctx.view.work;
        let dropped = locked(&work.waiting)
            .take_where(|r| r.job == a.job && r.step == a.step && r.attempt == a.attempt);
        if !dropped.is_empty() {
            self.ctx
                .view
                .queued
                .fetch_sub(dropped.len() as u32, Ordering::Relaxed);
            return true;
        }
        match locked(&work.running).get(a) {
            Some((t, _)) => {
                t.cancel();
                true
            }
            None => false,
        }
    }
}

/// Starts waiting attempts, the next by lane order each time, while slots are free (and
/// the limits of limited tasks allow).
pub fn pump(ctx: &NodeContext) {
    let view = &ctx.view;
    let limited = !ctx.config.task_limits.is_empty();
    let mut rate_wait: Option<Duration> = None;
    loop {
        let Ok(permit) = view.slots.clone().try_acquire_owned() else {
            break;
        };
        let now = Instant::now();
        let next = if limited {
            let mut gates = locked(&view.work.gates);
            let next = locked(&view.work.waiting).pop_where(now, |r| {
                match gates.check(ctx, &r.task, now) {
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
            locked(&view.work.waiting).pop(now)
        };
        let Some(req) = next else {
            break;
        };
        launch(ctx, req, permit);
    }
    let waiting = locked(&view.work.waiting).len();
    view.queued.store(waiting as u32, Ordering::Relaxed);
    if limited {
        after_gates_changed(ctx, rate_wait);
    }
    if waiting == 0 {
        maybe_steal(ctx);
    }
}

/// Arms a timer for the next rate token, and tells the cluster when the set of tasks at
/// their concurrency limit changed.
fn after_gates_changed(ctx: &NodeContext, rate_wait: Option<Duration>) {
    let mut gates = locked(&ctx.view.work.gates);
    if let Some(wait) = rate_wait {
        if !gates.timer_armed {
            gates.timer_armed = true;
            let ctx = ctx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                locked(&ctx.view.work.gates).timer_armed = false;
                pump(&ctx);
            });
        }
    }
    let now = gates.at_cap();
    if now != gates.saturated {
        gates.saturated = now.clone();
        drop(gates);
        ctx.view
            .set_saturated(&ctx.view.node, now.into_iter().collect());
        if let Some(m) = crate::find_on::<troupe_runtime::protocol::MembershipMessage>(
            crate::names::MEMBERSHIP,
            &ctx.view.node,
        ) {
            let _ = m.cast(troupe_runtime::protocol::MembershipMessage::Announce);
        }
    }
}

/// Runs one attempt in its own task, holding `permit` (its slot).
fn launch(ctx: &NodeContext, req: StepRequest, permit: OwnedSemaphorePermit) {
    let view = ctx.view.clone();
    let node_ctx = ctx.clone();
    let task = ctx.registry.get(&req.task);
    let key = attempt_of(&req);
    let token = CancellationToken::new();
    locked(&view.work.running).insert(key.clone(), (token.clone(), req.owner.clone()));
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
        let node = view.node.clone();
        let slot = Arc::new(Mutex::new(Some(permit)));
        let link = Arc::new(AttemptLink {
            owner: req.owner.clone(),
            node: node.clone(),
            work: view.work.clone(),
            slots: view.slots.clone(),
            permit: slot.clone(),
            outstanding: Arc::default(),
            ctx: node_ctx.clone(),
        });
        let ctx = TaskContext::new(&req.job, &req.step, req.attempt, &node, req.deps).attach(
            link,
            token.clone(),
            req.resumed,
        );
        let run = async {
            match task {
                    None => Err(TaskError::permanent(format!("task {:?} is not registered on node {node}", req.task))),
                    Some(t) => AssertUnwindSafe(t.run_json(ctx, req.input)).catch_unwind().await.unwrap_or_else(|p| {
                        let msg = panic_message(p.as_ref());
                        tracing::error!(task = %req.task, job = %req.job, step = %req.step, panic = %msg, "task panicked; failing its step");
                        Err(TaskError::permanent(format!("task panicked: {msg}")))
                    }),
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
        let freed = locked(&slot).take();
        locked(&view.work.running).remove(&key);
        locked(&view.work.gates).finished(&req.task);
        drop(freed);
        pump(&node_ctx);
        let cancelled = result.is_none();
        let result = StepResult {
            job: req.job,
            step: req.step,
            attempt: req.attempt,
            node,
            result: result.unwrap_or_else(|| Err(TaskError::permanent("cancelled"))),
            source: ResultSource::Executed,
            epoch: req.epoch,
        };
        // An execution for a merger: it answers the requests that joined this one.
        if let (Some(m), Some(k)) = (&req.merger, &req.key) {
            if let Some(merger) = first_member::<MergerMessage>(&merger_group(m)) {
                let e = Executed {
                    key: k.clone(),
                    result: result.clone(),
                    cancelled,
                };
                let _ = merger.cast(MergerMessage::Executed(Wire::new(e)));
            }
        }
        if cancelled {
            tracing::debug!(job = %key.job, step = %key.step, attempt = key.attempt, "attempt cancelled");
        } else {
            send_result(result, &req.owner);
        }
    };
    tokio::spawn(fut.instrument(span));
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
        let sched = ctx.config.scheduling;
        locked(&ctx.view.work.waiting)
            .set_policy(sched.policy, Duration::from_millis(sched.aging_ms));
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
                Ok(r) => give_work(&state.ctx, r),
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable steal request"),
            },
            WorkerPoolMessage::CallReply(r) => match r.into_inner() {
                Ok(r) => match locked(&state.ctx.view.work.calls).remove(&r.call_id) {
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
                    if !state.cancel(&a) {
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
        }
        Ok(())
    }
}
