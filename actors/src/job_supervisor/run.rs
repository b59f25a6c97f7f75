//! The scheduling state machine of one job: the pure core inside the job supervisor.
//!
//! One door, as raft-rs's `RawNode::step`: the supervisor hands [`JobRun::step`] each
//! [`Input`] (the job starts, an attempt is assigned or finishes, a timer fires, a running
//! task asks for sub-work, a node is lost, a user cancels or resumes) with the time it
//! happened, and carries out the [`Action`]s that come back. Nothing in here reads the
//! clock or a global random source: the time comes with the input and the retry jitter is
//! a function of the job id, the step and the attempt. So the same inputs give the same
//! actions, which is what lets [`super::replay`] rebuild a job from its journal, and the
//! rules are unit- and property-tested directly.
//!
//! Every step is a node: the job file's steps, the items of a `for_each` (`ID[i]`), and
//! the steps of sub-jobs and re-entrant calls started by a running attempt (`ID/CHILD`).
//! Sub-work is a *group* of nodes owned by the attempt that asked for it; when the group
//! ends its result is sent back to that attempt, and when the attempt ends first (failed,
//! timed out) the group is cancelled. The job itself is group 0.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use troupe_runtime::job::expr;
use troupe_runtime::job::spec::{JobSpec, Priority, RetryPolicy, SpawnKind, StepSpec};
use troupe_runtime::job::status::{JobEvent, JobState, JobStats, JobStatus, StepState, StepStatus};
use troupe_runtime::job::validate::{validate_with, Graph, Limits};
use troupe_runtime::merge::CacheMode;
use troupe_runtime::protocol::JobQueryError;
use troupe_runtime::protocol::ResultSource;
use troupe_runtime::task::TaskError;
use troupe_runtime::vocab::{Stage, StepId};

/// Everything that can happen to a job: what [`JobRun::step`] takes, one at a time.
///
/// The supervisor journals the inputs a replay needs ([`Input::is_journaled`]); the others
/// matter only while the node that saw them runs. The journal encodes inputs by variant and
/// field names (rmp-serde, named fields): a journaled variant keeps its name and its fields,
/// or the journals written before no longer decode (`replay`'s tests pin the bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// The job starts: the steps without dependencies become ready. Not journaled (a job's
    /// record means it started).
    Start,
    /// A worker on `node` took an attempt. Not journaled: where an attempt runs matters
    /// only while it runs, and a resumed job runs its attempts in flight again anyway.
    Assigned {
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
        /// Where it runs.
        node: String,
    },
    /// An attempt's result.
    Finished {
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
        /// Where it ran.
        node: String,
        /// What it gave.
        result: Result<Value, TaskError>,
        /// Executed, merged or cached.
        source: ResultSource,
    },
    /// An attempt ran past its timeout.
    TimedOut {
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
    },
    /// A retry's delay passed.
    RetryDue {
        /// The step.
        step: String,
        /// The attempt that runs now.
        attempt: u32,
    },
    /// An attempt was lost (its worker vanished, or its node was drained).
    AttemptLost {
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
        /// Why.
        reason: String,
        /// Whether it counts against `limits.max_lost_attempts`.
        counts: bool,
    },
    /// A node left; the attempts it ran run again. Journals written before kept this
    /// input; the supervisor now feeds (and journals) [`JobRun::node_lost_inputs`]
    /// instead, since where an attempt runs is not journaled and a replay of this input
    /// would find no attempt on the node.
    NodeLost {
        /// The node.
        node: String,
    },
    /// A running attempt asked for sub-work.
    Spawn {
        /// The calling step.
        step: String,
        /// Its attempt.
        attempt: u32,
        /// The call's id on the caller's node.
        call_id: u64,
        /// The caller's node.
        reply_to: String,
        /// What it asked for.
        kind: SpawnKind,
    },
    /// A running attempt reports how far it is (`numerator` of `denominator`). Not
    /// journaled.
    Progress {
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
        /// Work done.
        numerator: u64,
        /// Work in all.
        denominator: u64,
    },
    /// A running attempt sends partial data, or a warning, to the job's watchers. Not
    /// journaled (nor kept).
    Data {
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
        /// The bytes.
        data: Vec<u8>,
        /// A warning rather than data.
        warning: bool,
    },
    /// The user cancelled the job.
    Cancel,
    /// The user resumed a step that waited for them (see [`JobRun::check_resume`]); for a
    /// step that does not wait, nothing happens.
    Resume {
        /// The step.
        step: String,
    },
}

impl Input {
    /// Whether the supervisor journals this input: those a replay needs to rebuild the
    /// job's state (results, timers, losses, sub-work, cancel, resume).
    pub fn is_journaled(&self) -> bool {
        !matches!(
            self,
            Input::Start | Input::Assigned { .. } | Input::Progress { .. } | Input::Data { .. }
        )
    }
}

/// The retry jitter of one job: a draw in [0, 1) for each (step, attempt), a pure function
/// of a seed (the job id), so that a replay, a restart or a takeover computes the same
/// delays and the retries of many steps still do not move in lockstep.
///
/// Written by hand (FNV-1a, then SplitMix64's finalizer) rather than with `rand` or std's
/// hasher: neither promises the same numbers across versions, and a journal written by one
/// build is replayed by the next.
#[derive(Debug, Clone, Copy)]
struct Jitter {
    seed: u64,
}

impl Jitter {
    /// The jitter of the job `id`.
    fn for_job(id: &str) -> Self {
        Jitter {
            seed: fnv1a(id.as_bytes()),
        }
    }

    /// The draw for attempt `attempt` of `step`, in [0, 1).
    fn draw(&self, step: &str, attempt: u32) -> f64 {
        let mut z = self.seed ^ fnv1a(step.as_bytes()) ^ u64::from(attempt).rotate_left(32);
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // The top 53 bits, as an f64 in [0, 1).
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An attempt to hand to a worker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dispatch {
    /// The step's id (a path for sub-work).
    pub step: String,
    /// Its task.
    pub task: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The step's input.
    pub input: Value,
    /// Outputs of its succeeded dependencies, by step id.
    pub deps: BTreeMap<String, Value>,
    /// Limit on the attempt's run time.
    pub timeout: Option<Duration>,
    /// True for the first attempt after a user resumed the step.
    pub resumed: bool,
    /// Nesting depth: 0 for the job's own steps.
    pub depth: usize,
    /// Whether cached results and requests in flight may serve it.
    pub cache: CacheMode,
    /// Whether it continues the job or starts it (its priority lane, with the job's class).
    pub stage: Stage,
    /// For sub-work (a call, a sub-job): the node of the attempt that made it, where it
    /// runs if that node has room (see the placement of [`crate::scheduler`]).
    pub near: Option<String>,
}

/// What a job supervisor must do next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Hand this attempt to a worker.
    Dispatch(Dispatch),
    /// Feed [`Input::RetryDue`] for `step` after `delay`.
    RetryLater {
        /// The step.
        step: String,
        /// The attempt that will run.
        attempt: u32,
        /// How long to wait.
        delay: Duration,
    },
    /// Tell the job's watchers.
    Notify(JobEvent),
    /// Stop a running attempt (cancelled, or given up).
    CancelAttempt {
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
        /// Where it runs, if known.
        node: Option<String>,
    },
    /// Answer a running attempt that waits for its sub-work.
    Reply {
        /// The node the attempt runs on.
        node: String,
        /// The id the attempt gave its request.
        call_id: u64,
        /// The result.
        result: Result<Value, TaskError>,
    },
}

#[derive(Debug, Clone)]
struct Caller {
    /// The calling step (its index in `steps`).
    step: usize,
    attempt: u32,
    call_id: u64,
    reply_to: String,
}

#[derive(Debug)]
struct Group {
    caller: Option<Caller>,
    members: Vec<usize>,
    remaining: usize,
    input: Value,
    output: Option<String>,
    finals: Vec<usize>,
    calls: bool,
    done: bool,
    /// The member whose failure ended the group, as found when it was done (members
    /// cancelled after a fail-fast must not change the answer given again).
    failed: Option<usize>,
    depth: usize,
    local: HashMap<String, usize>,
}

/// One step of the run (a node of the DAG): where it sits, its attempts and its end.
#[derive(Debug)]
struct StepRecord {
    id: String,
    local: String,
    group: usize,
    task: String,
    input: Option<Value>,
    /// The actor (type, key) a step that targets an actor sends its input to.
    actor: Option<(String, String)>,
    retry: RetryPolicy,
    timeout_ms: Option<u64>,
    when: Option<String>,
    for_each: Option<String>,
    required: Vec<usize>,
    optional: Vec<usize>,
    dependents: Vec<usize>,
    waiting_on: usize,
    state: StepState,
    attempts: u32,
    live_attempt: Option<u32>,
    /// The cluster node running (or that ran) the live attempt.
    worker_node: Option<String>,
    error: Option<String>,
    failure: Option<TaskError>,
    message: Option<String>,
    output: Option<Value>,
    fan_parent: Option<usize>,
    fan_children: Vec<usize>,
    fan_remaining: usize,
    expanded: bool,
    resumed: bool,
    open_groups: Vec<usize>,
    source: ResultSource,
    progress: Option<[u64; 2]>,
    lost: u32,
    /// When the latest attempt was handed out, then taken by a worker.
    started_at: Option<Instant>,
    /// When the step ended.
    ended_at: Option<Instant>,
}

impl StepRecord {
    fn new(id: String, local: String, group: usize, task: String, retry: RetryPolicy) -> Self {
        StepRecord {
            id,
            local,
            group,
            task,
            input: None,
            actor: None,
            retry,
            timeout_ms: None,
            when: None,
            for_each: None,
            required: Vec::new(),
            optional: Vec::new(),
            dependents: Vec::new(),
            waiting_on: 0,
            state: StepState::Pending,
            attempts: 0,
            live_attempt: None,
            worker_node: None,
            error: None,
            failure: None,
            message: None,
            output: None,
            fan_parent: None,
            fan_children: Vec::new(),
            fan_remaining: 0,
            expanded: false,
            resumed: false,
            open_groups: Vec::new(),
            source: ResultSource::Executed,
            progress: None,
            lost: 0,
            started_at: None,
            ended_at: None,
        }
    }
}

/// One job's scheduling state. It changes only through [`JobRun::step`]; the other
/// methods read it.
#[derive(Debug)]
pub(crate) struct JobRun {
    id: String,
    name: String,
    priority: Priority,
    job_retry: RetryPolicy,
    cache: CacheMode,
    limits: Limits,
    steps: Vec<StepRecord>,
    by_id: HashMap<String, usize>,
    groups: Vec<Group>,
    state: JobState,
    started: bool,
    output: Option<Value>,
    error: Option<String>,
    stats: JobStats,
    /// When the job started (the time of [`Input::Start`]).
    accepted: Option<Instant>,
    /// When the job was submitted, in Unix milliseconds (0: unknown).
    submitted_at_ms: u64,
    /// The job as submitted (`troupe-node rerun` submits it again).
    spec: std::sync::Arc<JobSpec>,
    /// The wall clock: an instant and its Unix milliseconds, given from outside (see
    /// [`JobRun::set_wall_clock`]); the status's times count from it.
    wall: Option<(Instant, u64)>,
    ended: Option<Instant>,
    /// The time of the input being applied: the only clock in here.
    now: Option<Instant>,
    jitter: Jitter,
    next_call: u64,
    settle: VecDeque<usize>,
}

/// The answer to call `call_id` of an attempt running on `reply_to`.
fn answer_call(reply_to: &str, call_id: u64, result: Result<Value, TaskError>) -> Vec<Action> {
    vec![Action::Reply {
        node: reply_to.to_string(),
        call_id,
        result,
    }]
}

impl JobRun {
    /// A job accepted with id `id`; `graph` is what
    /// [`troupe_runtime::job::validate::validate`] returned. Its retry jitter is seeded by
    /// `id`. Nothing happens until it gets [`Input::Start`]. (Nodes use `with_limits`.)
    #[cfg(test)]
    pub(crate) fn new(id: String, spec: JobSpec, graph: Graph) -> Self {
        Self::with_limits(id, spec, graph, Limits::default())
    }

    /// As [`JobRun::new`], with explicit limits on growth.
    pub(crate) fn with_limits(id: String, spec: JobSpec, graph: Graph, limits: Limits) -> Self {
        let jitter = Jitter::for_job(&id);
        let mut run = JobRun {
            id,
            name: spec.name.clone(),
            priority: spec.priority,
            job_retry: spec.retry,
            cache: spec.cache,
            limits,
            steps: Vec::new(),
            by_id: HashMap::new(),
            groups: Vec::new(),
            state: JobState::Queued,
            started: false,
            output: None,
            error: None,
            stats: JobStats::default(),
            accepted: None,
            submitted_at_ms: 0,
            spec: std::sync::Arc::new(spec),
            wall: None,
            ended: None,
            now: None,
            jitter,
            next_call: 0,
            settle: VecDeque::new(),
        };
        let spec = run.spec.clone();
        run.add_group(None, &spec, graph, None, 0);
        run
    }

    /// The job was submitted at `ms` (Unix milliseconds): the status's `submitted_at_ms`,
    /// and, unless [`JobRun::set_wall_clock`] says otherwise, the wall time of
    /// [`Input::Start`].
    pub(crate) fn with_submit_time(mut self, ms: u64) -> Self {
        self.submitted_at_ms = ms;
        self
    }

    /// Says that `at` is `ms` Unix milliseconds: the status's step times are computed
    /// from it (this run reads no clock). A replay sets it to the replay's time.
    pub(crate) fn set_wall_clock(&mut self, at: Instant, ms: u64) {
        self.wall = Some((at, ms));
        if self.submitted_at_ms == 0 {
            self.submitted_at_ms = ms;
        }
    }

    /// `t` in Unix milliseconds, by the wall clock given.
    fn wall_ms(&self, t: Instant) -> u64 {
        let Some((at, ms)) = self.wall else {
            return 0;
        };
        if t >= at {
            ms.saturating_add(t.duration_since(at).as_millis() as u64)
        } else {
            ms.saturating_sub(at.duration_since(t).as_millis() as u64)
        }
    }

    /// Adds the steps of `spec` as a group; returns the group index.
    fn add_group(
        &mut self,
        caller: Option<Caller>,
        spec: &JobSpec,
        graph: Graph,
        parent: Option<&StepId>,
        depth: usize,
    ) -> usize {
        let g = self.groups.len();
        let base = self.steps.len();
        for s in &spec.steps {
            let retry = spec.retry_for(s);
            let mut n = StepRecord::new(
                parent
                    .map_or_else(|| StepId::new(s.id.clone()), |p| p.child(&s.id))
                    .to_string(),
                s.id.clone(),
                g,
                s.task_name().to_string(),
                retry,
            );
            n.input = s.input.clone();
            n.actor = s.actor.clone().zip(s.key.clone());
            n.timeout_ms = s.timeout_ms;
            n.when = s.when.clone();
            n.for_each = s.for_each.clone();
            self.by_id.insert(n.id.clone(), self.steps.len());
            self.steps.push(n);
        }
        for i in 0..spec.steps.len() {
            let n = &mut self.steps[base + i];
            n.required = graph.required[i].iter().map(|&j| base + j).collect();
            n.optional = graph.optional[i].iter().map(|&j| base + j).collect();
            n.dependents = graph.dependents[i].iter().map(|&j| base + j).collect();
            n.waiting_on = n.required.len() + n.optional.len();
        }
        let members: Vec<usize> = (base..base + spec.steps.len()).collect();
        self.groups.push(Group {
            caller,
            remaining: members.len(),
            local: graph
                .index
                .iter()
                .map(|(k, v)| (k.clone(), base + v))
                .collect(),
            members,
            input: spec.input.clone(),
            output: spec.output.clone(),
            finals: graph.finals.iter().map(|&j| base + j).collect(),
            calls: false,
            done: false,
            failed: None,
            depth,
        });
        g
    }

    /// The job as submitted.
    pub(crate) fn spec(&self) -> std::sync::Arc<JobSpec> {
        self.spec.clone()
    }

    /// The job's priority class.
    pub(crate) fn priority(&self) -> Priority {
        self.priority
    }

    /// The job's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The job's state.
    pub(crate) fn state(&self) -> JobState {
        self.state
    }

    /// Results that arrived for an attempt already given up, and were discarded.
    #[cfg(test)]
    pub(crate) fn late_results(&self) -> u64 {
        self.stats.late_results
    }

    /// Applies one input that happened at `now` and returns what the supervisor must do.
    /// The one way to change a job: the same inputs, at the same times, give the same
    /// actions. An input about an attempt that is no longer live (a late result, an old
    /// timer) changes nothing but the count of late results.
    pub(crate) fn step(&mut self, input: Input, now: Instant) -> Vec<Action> {
        self.now = Some(now);
        match input {
            Input::Start => self.start(now),
            Input::Assigned {
                step,
                attempt,
                node,
            } => self.assigned(&step, attempt, &node),
            Input::Finished {
                step,
                attempt,
                node,
                result,
                source,
            } => self.finished_from(&step, attempt, &node, result, source),
            Input::TimedOut { step, attempt } => self.timed_out(&step, attempt),
            Input::RetryDue { step, attempt } => self.retry_due(&step, attempt),
            Input::AttemptLost {
                step,
                attempt,
                reason,
                counts,
            } => self.attempt_lost(&step, attempt, &reason, counts),
            Input::NodeLost { node } => self.node_lost(&node, now),
            Input::Spawn {
                step,
                attempt,
                call_id,
                reply_to,
                kind,
            } => self.spawn(&step, attempt, call_id, &reply_to, kind),
            Input::Progress {
                step,
                attempt,
                numerator,
                denominator,
            } => self.progress(&step, attempt, numerator, denominator),
            Input::Data {
                step,
                attempt,
                data,
                warning,
            } => self.data(&step, attempt, data, warning),
            Input::Cancel => self.cancel(),
            Input::Resume { step } => match self.check_resume(&step) {
                Ok(()) => self.resume(&step),
                Err(_) => Vec::new(),
            },
        }
    }

    /// Whether [`Input::Resume`] for `step` would resume it: the step exists and waits for
    /// a user. A supervisor asks first, to answer the user; a resume it refuses is not an
    /// input.
    pub(crate) fn check_resume(&self, step: &str) -> Result<(), JobQueryError> {
        let i = *self.by_id.get(step).ok_or_else(|| {
            JobQueryError::NotFound(format!("job {} has no step {step:?}", self.id))
        })?;
        if self.steps[i].state != StepState::WaitingForUser {
            return Err(JobQueryError::Conflict(format!(
                "step {step:?} is {}, not waiting for a user",
                self.steps[i].state.as_str()
            )));
        }
        Ok(())
    }

    /// Starts the job: the steps without dependencies become ready.
    fn start(&mut self, now: Instant) -> Vec<Action> {
        self.accepted = Some(now);
        if self.wall.is_none() {
            self.wall = Some((now, self.submitted_at_ms));
        }
        let mut out = vec![Action::Notify(JobEvent::Queued {
            job: self.id.clone(),
            name: self.name.clone(),
            steps: self.steps.len() as u32,
        })];
        let roots: Vec<usize> = self.groups[0]
            .members
            .iter()
            .copied()
            .filter(|&i| self.steps[i].waiting_on == 0)
            .collect();
        for i in roots {
            self.ready(i, &mut out);
        }
        self.drain(&mut out);
        out
    }

    fn live(&self, step: &str, attempt: u32) -> Option<usize> {
        let i = *self.by_id.get(step)?;
        (self.steps[i].live_attempt == Some(attempt)).then_some(i)
    }

    /// The `steps` variable of CEL expressions in group `g`.
    fn steps_var(&self, g: usize) -> Value {
        let mut m = serde_json::Map::new();
        for (local, &i) in &self.groups[g].local {
            if let Some(o) = &self.steps[i].output {
                m.insert(local.clone(), serde_json::json!({ "output": o }));
            }
        }
        Value::Object(m)
    }

    /// All dependencies of `i` are done: skip, fail, expand or dispatch it.
    fn ready(&mut self, i: usize, out: &mut Vec<Action>) {
        if self.steps[i].state != StepState::Pending
            || self.steps[i].attempts > 0
            || self.steps[i].expanded
        {
            return;
        }
        for &d in &self.steps[i].required.clone() {
            let dep = &self.steps[d];
            match dep.state {
                StepState::Failed => {
                    let msg = format!("not run: its dependency {:?} failed", dep.local);
                    self.mark(i, StepState::Failed, Some(msg), None, out);
                    return;
                }
                StepState::Skipped | StepState::Cancelled => {
                    let msg = format!(
                        "dependency {:?} was {}",
                        dep.local,
                        if dep.state == StepState::Skipped {
                            "skipped"
                        } else {
                            "cancelled"
                        }
                    );
                    self.steps[i].message = Some(msg);
                    self.mark(i, StepState::Skipped, None, None, out);
                    return;
                }
                _ => {}
            }
        }
        let g = self.steps[i].group;
        if let Some(w) = self.steps[i].when.clone() {
            match expr::eval_bool(&w, &self.groups[g].input, &self.steps_var(g)) {
                Ok(true) => {}
                Ok(false) => {
                    self.steps[i].message = Some(format!("condition {w:?} is false"));
                    self.mark(i, StepState::Skipped, None, None, out);
                    return;
                }
                Err(e) => {
                    self.mark(
                        i,
                        StepState::Failed,
                        Some(format!("condition {w:?} cannot be evaluated: {e}")),
                        None,
                        out,
                    );
                    return;
                }
            }
        }
        if let Some(f) = self.steps[i].for_each.clone() {
            self.expand(i, &f, out);
            return;
        }
        out.push(self.dispatch(i));
    }

    fn expand(&mut self, i: usize, list: &str, out: &mut Vec<Action>) {
        let g = self.steps[i].group;
        let items = match expr::eval_list(list, &self.groups[g].input, &self.steps_var(g)) {
            Ok(items) => items,
            Err(e) => {
                self.mark(
                    i,
                    StepState::Failed,
                    Some(format!("for_each {list:?} {e}")),
                    None,
                    out,
                );
                return;
            }
        };
        if items.len() > self.limits.max_for_each_items
            || self.steps.len() + items.len() > self.limits.max_steps
        {
            let msg = format!(
                "for_each gives {} items; the limits are {} items per step (limits.max_for_each_items) and {} steps per job (limits.max_steps)",
                items.len(),
                self.limits.max_for_each_items,
                self.limits.max_steps
            );
            self.mark(i, StepState::Failed, Some(msg), None, out);
            return;
        }
        self.steps[i].expanded = true;
        if items.is_empty() {
            self.mark(
                i,
                StepState::Succeeded,
                None,
                Some(Value::Array(Vec::new())),
                out,
            );
            return;
        }
        self.steps[i].state = StepState::Running;
        self.steps[i].fan_remaining = items.len();
        for (k, item) in items.into_iter().enumerate() {
            let p = &self.steps[i];
            let mut c = StepRecord::new(
                StepId::new(p.id.clone()).item(k).to_string(),
                StepId::new(p.local.clone()).item(k).to_string(),
                g,
                p.task.clone(),
                p.retry,
            );
            c.timeout_ms = p.timeout_ms;
            c.actor = p.actor.clone();
            c.input = Some(item);
            c.fan_parent = Some(i);
            c.required = p.required.clone();
            c.optional = p.optional.clone();
            let c_idx = self.steps.len();
            self.by_id.insert(c.id.clone(), c_idx);
            self.steps.push(c);
            self.steps[i].fan_children.push(c_idx);
            out.push(self.dispatch(c_idx));
        }
    }

    fn dispatch(&mut self, i: usize) -> Action {
        let deps = self.steps[i]
            .required
            .iter()
            .chain(&self.steps[i].optional)
            .filter_map(|&d| Some((self.steps[d].local.clone(), self.steps[d].output.clone()?)))
            .collect();
        let g = self.steps[i].group;
        let input = self.steps[i]
            .input
            .clone()
            .unwrap_or_else(|| self.groups[g].input.clone());
        let input = match &self.steps[i].actor {
            Some((actor, key)) => {
                serde_json::json!({ "actor": actor, "key": key, "message": input })
            }
            None => input,
        };
        let depth = self.groups[g].depth;
        let now = self.now;
        let n = &mut self.steps[i];
        n.started_at = now;
        // Continuing work: anything but a first attempt of a step of the job's own file
        // that waits on nothing (see the scheduler's priority lanes).
        let stage = if depth > 0
            || n.attempts > 0
            || n.fan_parent.is_some()
            || !n.required.is_empty()
            || !n.optional.is_empty()
        {
            Stage::Continuing
        } else {
            Stage::New
        };
        n.attempts += 1;
        n.live_attempt = Some(n.attempts);
        n.state = StepState::Pending;
        let resumed = std::mem::take(&mut n.resumed);
        let near = self.groups[g].caller.as_ref().map(|c| c.reply_to.clone());
        Action::Dispatch(Dispatch {
            cache: self.cache,
            step: n.id.clone(),
            task: n.task.clone(),
            attempt: n.attempts,
            input,
            deps,
            timeout: n.timeout_ms.map(Duration::from_millis),
            resumed,
            depth,
            stage,
            near,
        })
    }

    /// The inputs that recover a job after a replay (see [`super::replay`]), to feed and
    /// journal in order: every attempt that was in flight is lost (it may have died with
    /// the owner node) and runs again as a new attempt, without counting against retries
    /// or lost-attempt limits, so results of the old attempts are late; a step waiting for
    /// a retry's backoff is due now (its timer died with the node). As inputs rather than
    /// one step, so that the journal holds them and a second restart replays them too.
    pub(crate) fn recovery_inputs(&self, reason: &str) -> Vec<Input> {
        if self.state.is_terminal() {
            return Vec::new();
        }
        let lost = self.steps.iter().filter_map(|n| {
            Some(Input::AttemptLost {
                step: n.id.clone(),
                attempt: n.live_attempt?,
                reason: reason.to_string(),
                counts: false,
            })
        });
        // Losing an attempt runs it again or ends its step: no step becomes due meanwhile.
        let due = self
            .steps
            .iter()
            .filter(|n| n.state == StepState::Pending && n.attempts > 0 && n.live_attempt.is_none())
            .map(|n| Input::RetryDue {
                step: n.id.clone(),
                attempt: n.attempts + 1,
            });
        lost.chain(due).collect()
    }

    /// The inputs that say the node `lost` left the cluster, to feed and journal in order:
    /// every live attempt that ran there is lost and runs again as a new attempt, without
    /// using up the step's retry budget. As [`Input::AttemptLost`]s rather than one
    /// [`Input::NodeLost`], because where attempts run is not journaled.
    pub(crate) fn node_lost_inputs(&self, lost: &str) -> Vec<Input> {
        if self.state.is_terminal() {
            return Vec::new();
        }
        self.steps
            .iter()
            .filter(|n| n.worker_node.as_deref() == Some(lost))
            .filter_map(|n| {
                Some(Input::AttemptLost {
                    step: n.id.clone(),
                    attempt: n.live_attempt?,
                    reason: format!("node {lost} left the cluster"),
                    counts: true,
                })
            })
            .collect()
    }

    /// Sets a terminal state and queues the consequences (see [`JobRun::drain`]).
    fn mark(
        &mut self,
        i: usize,
        state: StepState,
        error: Option<String>,
        output: Option<Value>,
        out: &mut Vec<Action>,
    ) {
        let n = &mut self.steps[i];
        if n.state.is_terminal() {
            return;
        }
        n.state = state;
        n.live_attempt = None;
        n.ended_at = self.now;
        if error.is_some() {
            n.error = error;
        }
        if state == StepState::Succeeded {
            // An earlier attempt's error is history (its `step_retrying` event keeps it),
            // not the step's: a succeeded step has none.
            n.error = None;
            n.failure = None;
        }
        if state == StepState::Failed && n.failure.is_none() {
            n.failure = Some(TaskError::permanent(n.error.clone().unwrap_or_default()));
        }
        n.output = output;
        out.push(self.step_event(i));
        if state == StepState::Failed
            && self.steps[i].group == 0
            && self.steps[i].fan_parent.is_none()
            && self.error.is_none()
        {
            let n = &self.steps[i];
            self.error = Some(format!(
                "step {:?} ({}) failed: {}",
                n.id,
                n.task,
                n.error.clone().unwrap_or_default()
            ));
        }
        self.settle.push_back(i);
    }

    /// Works through the consequences of steps that ended: cancel their sub-work, finish
    /// fan-outs, unlock dependents, close groups, end the job. A queue, not recursion, so a
    /// long chain of skipped steps cannot overflow the stack.
    fn drain(&mut self, out: &mut Vec<Action>) {
        while let Some(i) = self.settle.pop_front() {
            self.close_open_groups(i, out);
            if let Some(p) = self.steps[i].fan_parent {
                self.steps[p].fan_remaining -= 1;
                if self.steps[p].fan_remaining == 0 {
                    self.finish_fan(p, out);
                }
                continue;
            }
            for k in self.steps[i].dependents.clone() {
                self.steps[k].waiting_on -= 1;
                if self.steps[k].waiting_on == 0 {
                    self.ready(k, out);
                }
            }
            let g = self.steps[i].group;
            self.groups[g].remaining -= 1;
            if self.groups[g].remaining == 0 {
                self.group_done(g, out);
            } else if g != 0 && self.steps[i].state == StepState::Failed && !self.groups[g].done {
                // Sub-work fails fast: answer the caller now and stop the rest.
                self.group_done(g, out);
                self.cancel_members(g, out);
            }
        }
        self.update_state();
    }

    fn finish_fan(&mut self, p: usize, out: &mut Vec<Action>) {
        let children = self.steps[p].fan_children.clone();
        if let Some((k, &c)) = children
            .iter()
            .enumerate()
            .find(|(_, &c)| self.steps[c].state != StepState::Succeeded)
        {
            let child = &self.steps[c];
            let (state, msg) = match child.state {
                StepState::Cancelled => (StepState::Cancelled, format!("item {k} was cancelled")),
                StepState::Skipped => (StepState::Skipped, format!("item {k} was skipped")),
                _ => (
                    StepState::Failed,
                    format!(
                        "item {k} failed: {}",
                        child.error.clone().unwrap_or_default()
                    ),
                ),
            };
            self.mark(p, state, Some(msg), None, out);
        } else {
            let outputs = children
                .iter()
                .map(|&c| self.steps[c].output.clone().unwrap_or(Value::Null))
                .collect();
            self.mark(
                p,
                StepState::Succeeded,
                None,
                Some(Value::Array(outputs)),
                out,
            );
        }
    }

    /// The output of a finished group by the job file rule: `output`, else the one final
    /// step's, else an object of the final steps' outputs.
    fn group_output(&self, g: usize) -> Value {
        let grp = &self.groups[g];
        let out = |i: usize| self.steps[i].output.clone().unwrap_or(Value::Null);
        if grp.calls {
            return Value::Array(grp.members.iter().map(|&i| out(i)).collect());
        }
        if let Some(id) = &grp.output {
            return grp.local.get(id).map(|&i| out(i)).unwrap_or(Value::Null);
        }
        match grp.finals.as_slice() {
            [one] => out(*one),
            many => Value::Object(
                many.iter()
                    .map(|&i| (self.steps[i].local.clone(), out(i)))
                    .collect(),
            ),
        }
    }

    fn group_done(&mut self, g: usize, out: &mut Vec<Action>) {
        if self.groups[g].done {
            return;
        }
        self.groups[g].done = true;
        let failed = self.groups[g].members.iter().copied().find(|&i| {
            matches!(
                self.steps[i].state,
                StepState::Failed | StepState::Cancelled
            )
        });
        self.groups[g].failed = failed;
        if g == 0 {
            self.end(failed.is_none(), out);
            return;
        }
        let Some(caller) = self.groups[g].caller.clone() else {
            return;
        };
        self.steps[caller.step].open_groups.retain(|&x| x != g);
        if self.steps[caller.step].live_attempt != Some(caller.attempt) {
            return;
        }
        out.push(Action::Reply {
            node: caller.reply_to,
            call_id: caller.call_id,
            result: self.call_answer(g),
        });
    }

    /// The answer to the call or sub-job of group `g`, once it is done: its output, or
    /// the first of its steps that failed.
    fn call_answer(&self, g: usize) -> Result<Value, TaskError> {
        match self.groups[g].failed {
            None => Ok(self.group_output(g)),
            Some(i) => {
                let n = &self.steps[i];
                let why = n.error.clone().unwrap_or_else(|| "cancelled".into());
                let msg = format!(
                    "{} {:?} (task {}) failed: {why}",
                    if self.groups[g].calls {
                        "call"
                    } else {
                        "sub-job step"
                    },
                    n.id,
                    n.task
                );
                Err(match n.failure {
                    Some(TaskError::Transient(_)) => TaskError::Transient(msg),
                    _ => TaskError::Permanent(msg),
                })
            }
        }
    }

    /// Attempt `attempt` of `step`, running on `reply_to`, still waits for the answer to
    /// its call `call_id` (it tells the owner every `CALL_WAITING_EVERY`). Answers again
    /// if the call's sub-work is done (the first answer may have been lost with a closed
    /// connection); answers an error if the attempt is no longer the step's live one;
    /// else nothing, the answer comes when the sub-work ends. Changes nothing. `None`:
    /// the call left no trace here (its request was lost, or its answer, given at once,
    /// was): the supervisor counts the attempt lost, and it runs again using no retry.
    pub(crate) fn call_waiting(
        &self,
        step: &str,
        attempt: u32,
        call_id: u64,
        reply_to: &str,
    ) -> Option<Vec<Action>> {
        let reply = |result| answer_call(reply_to, call_id, result);
        let Some(i) = self.live(step, attempt) else {
            return Some(reply(Err(TaskError::permanent(
                "the calling attempt is no longer running",
            ))));
        };
        let asked = self.groups.iter().position(|grp| {
            grp.caller.as_ref().is_some_and(|c| {
                c.step == i
                    && c.attempt == attempt
                    && c.call_id == call_id
                    && c.reply_to == reply_to
            })
        });
        match asked {
            Some(g) if self.groups[g].done => Some(reply(self.call_answer(g))),
            Some(_) => Some(Vec::new()),
            None => None,
        }
    }

    /// The attempt of `i` ended: cancel the sub-work it started.
    fn close_open_groups(&mut self, i: usize, out: &mut Vec<Action>) {
        for g in std::mem::take(&mut self.steps[i].open_groups) {
            self.cancel_group(g, out);
        }
    }

    fn cancel_group(&mut self, g: usize, out: &mut Vec<Action>) {
        if self.groups[g].done {
            return;
        }
        self.cancel_members(g, out);
    }

    fn cancel_members(&mut self, g: usize, out: &mut Vec<Action>) {
        // Everything created for this group: its members, their fan-out items, and the
        // groups their attempts opened.
        let mut stack: Vec<usize> = self.groups[g].members.clone();
        while let Some(i) = stack.pop() {
            stack.extend(self.steps[i].fan_children.iter().copied());
            for sub in std::mem::take(&mut self.steps[i].open_groups) {
                self.groups[sub].done = true;
                stack.extend(self.groups[sub].members.iter().copied());
            }
            self.cancel_node(i, out);
        }
        self.groups[g].done = true;
    }

    fn cancel_node(&mut self, i: usize, out: &mut Vec<Action>) {
        let n = &mut self.steps[i];
        if n.state.is_terminal() {
            return;
        }
        if let Some(a) = n.live_attempt.take() {
            out.push(Action::CancelAttempt {
                step: n.id.clone(),
                attempt: a,
                node: n.worker_node.clone(),
            });
        }
        n.state = StepState::Cancelled;
        n.ended_at = self.now;
        n.error = Some("cancelled".into());
    }

    fn update_state(&mut self) {
        if self.state.is_terminal() {
            return;
        }
        self.state = if self
            .steps
            .iter()
            .any(|n| n.state == StepState::WaitingForUser)
        {
            JobState::WaitingForUser
        } else if self.started {
            JobState::Running
        } else {
            JobState::Queued
        };
    }

    fn end(&mut self, ok: bool, out: &mut Vec<Action>) {
        // Sub-work still open when the job's own steps are all done has no one to answer.
        for i in 0..self.steps.len() {
            self.cancel_node(i, out);
        }
        self.ended = self.now;
        if ok {
            self.state = JobState::Succeeded;
            self.output = Some(self.group_output(0));
        } else {
            self.state = JobState::Failed;
            if self.error.is_none() {
                self.error = Some("a step failed".into());
            }
        }
        out.push(Action::Notify(JobEvent::JobFinished {
            status: Box::new(self.status()),
        }));
    }

    fn step_event(&self, i: usize) -> Action {
        let n = &self.steps[i];
        Action::Notify(JobEvent::StepFinished {
            job: self.id.clone(),
            step: n.id.clone(),
            task: n.task.clone(),
            state: n.state,
            node: n.worker_node.clone(),
            error: n.error.clone(),
        })
    }

    /// A worker on `node` took attempt `attempt` of `step`.
    fn assigned(&mut self, step: &str, attempt: u32, node: &str) -> Vec<Action> {
        let Some(i) = self.live(step, attempt) else {
            return Vec::new();
        };
        let n = &mut self.steps[i];
        n.state = StepState::Running;
        n.started_at = self.now;
        n.worker_node = Some(node.to_string());
        self.started = true;
        self.update_state();
        vec![Action::Notify(JobEvent::StepStarted {
            job: self.id.clone(),
            step: step.to_string(),
            task: self.steps[i].task.clone(),
            attempt,
            node: node.to_string(),
        })]
    }

    /// Attempt `attempt` of `step` ended on `node` with `result`, which it ran itself.
    fn finished(
        &mut self,
        step: &str,
        attempt: u32,
        node: &str,
        result: Result<Value, TaskError>,
    ) -> Vec<Action> {
        self.finished_from(step, attempt, node, result, ResultSource::Executed)
    }

    /// Attempt `attempt` of `step` ended on `node` with `result`, which came from `source`
    /// (its own execution, an identical request in flight, or the cache).
    fn finished_from(
        &mut self,
        step: &str,
        attempt: u32,
        node: &str,
        result: Result<Value, TaskError>,
        source: ResultSource,
    ) -> Vec<Action> {
        let Some(i) = self.live(step, attempt) else {
            self.stats.late_results += 1;
            return Vec::new();
        };
        if self.state.is_terminal() {
            return Vec::new();
        }
        match source {
            ResultSource::Executed => self.stats.executions += 1,
            ResultSource::Merged => self.stats.merged += 1,
            ResultSource::Cached => self.stats.cache_hits += 1,
        }
        self.steps[i].source = source;
        self.steps[i].worker_node = Some(node.to_string());
        self.started = true;
        let mut out = Vec::new();
        match result {
            Ok(v) => self.mark(i, StepState::Succeeded, None, Some(v), &mut out),
            Err(TaskError::NeedsAction(msg)) => {
                self.steps[i].live_attempt = None;
                self.close_open_groups(i, &mut out);
                let n = &mut self.steps[i];
                n.state = StepState::WaitingForUser;
                n.message = Some(msg.clone());
                n.error = None;
                out.push(Action::Notify(JobEvent::StepNeedsAction {
                    job: self.id.clone(),
                    step: step.to_string(),
                    message: msg,
                }));
            }
            Err(e) => {
                let n = &mut self.steps[i];
                n.error = Some(e.to_string());
                n.failure = Some(e.clone());
                if e.is_transient() && n.attempts < n.retry.max_attempts {
                    n.live_attempt = None;
                    n.state = StepState::Pending;
                    let next = n.attempts + 1;
                    let delay = n.retry.delay_before(next, self.jitter.draw(step, next));
                    self.close_open_groups(i, &mut out);
                    out.push(Action::Notify(JobEvent::StepRetrying {
                        job: self.id.clone(),
                        step: step.to_string(),
                        task: self.steps[i].task.clone(),
                        attempt,
                        error: e.to_string(),
                        delay_ms: delay.as_millis() as u64,
                    }));
                    out.push(Action::RetryLater {
                        step: step.to_string(),
                        attempt: attempt + 1,
                        delay,
                    });
                } else {
                    let msg = if e.is_transient() {
                        format!("{e} (gave up after {} attempts)", n.attempts)
                    } else {
                        e.to_string()
                    };
                    self.mark(i, StepState::Failed, Some(msg), None, &mut out);
                }
            }
        }
        self.drain(&mut out);
        out
    }

    /// The timer of attempt `attempt` of `step` fired: if it still runs it fails (transient)
    /// and the worker is told to stop it.
    fn timed_out(&mut self, step: &str, attempt: u32) -> Vec<Action> {
        let Some(i) = self.live(step, attempt) else {
            return Vec::new();
        };
        let ms = self.steps[i].timeout_ms.unwrap_or(0);
        let node = self.steps[i].worker_node.clone();
        let mut out = vec![Action::CancelAttempt {
            step: step.to_string(),
            attempt,
            node: node.clone(),
        }];
        out.extend(self.finished(
            step,
            attempt,
            &node.unwrap_or_default(),
            Err(TaskError::transient(format!(
                "attempt timed out after {ms} ms"
            ))),
        ));
        out
    }

    /// The backoff before attempt `attempt` of `step` is over: dispatch it.
    fn retry_due(&mut self, step: &str, attempt: u32) -> Vec<Action> {
        let Some(&i) = self.by_id.get(step) else {
            return Vec::new();
        };
        let n = &self.steps[i];
        if self.state.is_terminal()
            || n.state != StepState::Pending
            || n.live_attempt.is_some()
            || n.attempts + 1 != attempt
        {
            return Vec::new();
        }
        vec![self.dispatch(i)]
    }

    /// A running attempt asks for sub-work; its result goes back to `reply_to` under
    /// `call_id`.
    fn spawn(
        &mut self,
        step: &str,
        attempt: u32,
        call_id: u64,
        reply_to: &str,
        kind: SpawnKind,
    ) -> Vec<Action> {
        let reply = |result| answer_call(reply_to, call_id, result);
        let Some(i) = self.live(step, attempt) else {
            return reply(Err(TaskError::permanent(
                "the calling attempt is no longer running",
            )));
        };
        if self.state.is_terminal() {
            return reply(Err(TaskError::permanent("the job has ended")));
        }
        let depth = self.groups[self.steps[i].group].depth + 1;
        if depth > self.limits.max_depth {
            return reply(Err(TaskError::permanent(format!(
                "sub-work nested {depth} deep; the limit is {} (limits.max_depth)",
                self.limits.max_depth
            ))));
        }
        let caller = Some(Caller {
            step: i,
            attempt,
            call_id,
            reply_to: reply_to.to_string(),
        });
        let (spec, calls) = match kind {
            SpawnKind::Calls { task, inputs } => {
                let mut spec = JobSpec::new("calls");
                spec.retry = self.job_retry;
                for input in inputs {
                    let id = StepId::call_name(self.next_call);
                    self.next_call += 1;
                    spec = spec.step(StepSpec::new(id, task.clone()).input(input));
                }
                (spec, true)
            }
            SpawnKind::Job(spec) => (spec, false),
        };
        if spec.steps.is_empty() && calls {
            return reply(Ok(Value::Array(Vec::new())));
        }
        if self.steps.len() + spec.steps.len() > self.limits.max_steps {
            return reply(Err(TaskError::permanent(format!(
                "the job would exceed {} steps (limits.max_steps)",
                self.limits.max_steps
            ))));
        }
        let graph = match validate_with(&spec, &self.limits) {
            Ok(g) => g,
            Err(e) => return reply(Err(TaskError::permanent(format!("invalid sub-job: {e}")))),
        };
        let mut parent = StepId::new(self.steps[i].id.clone());
        if spec
            .steps
            .iter()
            .any(|s| self.by_id.contains_key(parent.child(&s.id).as_str()))
        {
            parent = parent.sub_job(self.groups.len());
        }
        let g = self.add_group(caller, &spec, graph, Some(&parent), depth);
        self.groups[g].calls = calls;
        self.steps[i].open_groups.push(g);
        let mut out = Vec::new();
        let roots: Vec<usize> = self.groups[g]
            .members
            .iter()
            .copied()
            .filter(|&m| self.steps[m].waiting_on == 0)
            .collect();
        for m in roots {
            self.ready(m, &mut out);
        }
        self.drain(&mut out);
        out
    }

    /// The node `lost` left the cluster (an input of journals written before; see
    /// [`JobRun::node_lost_inputs`]).
    fn node_lost(&mut self, lost: &str, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for input in self.node_lost_inputs(lost) {
            out.extend(self.step(input, now));
        }
        out
    }

    /// Attempt `attempt` of `step` was lost without a result (the external worker that
    /// ran it disconnected): it runs again as a new attempt, without using up the step's
    /// retry budget, unless the step lost `limits.max_lost_attempts` already (work
    /// that kills every worker it lands on fails instead of running for ever).
    ///
    /// `counts` is false for an attempt no worker had started (it only waited for one
    /// that went away): it runs again without counting.
    fn attempt_lost(
        &mut self,
        step: &str,
        attempt: u32,
        reason: &str,
        counts: bool,
    ) -> Vec<Action> {
        let Some(i) = self.live(step, attempt) else {
            return Vec::new();
        };
        if self.state.is_terminal() {
            return Vec::new();
        }
        self.steps[i].lost += u32::from(counts);
        let cap = self.limits.max_lost_attempts.max(1);
        if self.steps[i].lost >= cap {
            let node = self.steps[i].worker_node.clone().unwrap_or_default();
            let e = TaskError::permanent(format!(
                "{reason}; the step lost {cap} attempts this way and is given up (limits.max_lost_attempts)"
            ));
            return self.finished(step, attempt, &node, Err(e));
        }
        self.stats.lost_attempts += 1;
        let mut out = Vec::new();
        self.run_again(i, attempt, reason.to_string(), &mut out);
        out
    }

    /// Dispatches step `i` again after its live attempt `attempt` was lost.
    fn run_again(&mut self, i: usize, attempt: u32, error: String, out: &mut Vec<Action>) {
        let n = &self.steps[i];
        out.push(Action::Notify(JobEvent::StepRetrying {
            job: self.id.clone(),
            step: n.id.clone(),
            task: n.task.clone(),
            attempt,
            error,
            delay_ms: 0,
        }));
        self.close_open_groups(i, out);
        let n = &mut self.steps[i];
        n.retry.max_attempts = n.retry.max_attempts.saturating_add(1);
        n.live_attempt = None;
        n.progress = None;
        out.push(self.dispatch(i));
    }

    /// A running attempt reports how far it is (`numerator` of `denominator`); kept in the
    /// step's status and told to watchers. Stale attempts are ignored.
    fn progress(
        &mut self,
        step: &str,
        attempt: u32,
        numerator: u64,
        denominator: u64,
    ) -> Vec<Action> {
        let Some(i) = self.live(step, attempt) else {
            return Vec::new();
        };
        self.steps[i].progress = Some([numerator, denominator]);
        vec![Action::Notify(JobEvent::StepProgress {
            job: self.id.clone(),
            step: step.to_string(),
            numerator,
            denominator,
        })]
    }

    /// A running attempt sends partial data (or a warning) to the job's watchers; not
    /// kept. Stale attempts are ignored.
    fn data(&mut self, step: &str, attempt: u32, data: Vec<u8>, warning: bool) -> Vec<Action> {
        if self.live(step, attempt).is_none() {
            return Vec::new();
        }
        vec![Action::Notify(JobEvent::StepData {
            job: self.id.clone(),
            step: step.to_string(),
            data,
            warning,
        })]
    }

    /// Cancels the job: every step not yet ended is cancelled, running attempts are told
    /// to stop.
    fn cancel(&mut self) -> Vec<Action> {
        if self.state.is_terminal() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for i in 0..self.steps.len() {
            self.cancel_node(i, &mut out);
        }
        for g in &mut self.groups {
            g.done = true;
        }
        self.state = JobState::Cancelled;
        self.ended = self.now;
        self.error = Some("cancelled by a user".into());
        out.push(Action::Notify(JobEvent::JobFinished {
            status: Box::new(self.status()),
        }));
        out
    }

    /// Resumes a step that waits for a user (checked by [`JobRun::check_resume`]): it runs
    /// again as a new attempt.
    fn resume(&mut self, step: &str) -> Vec<Action> {
        let Some(&i) = self.by_id.get(step) else {
            return Vec::new();
        };
        self.steps[i].state = StepState::Pending;
        self.steps[i].resumed = true;
        self.steps[i].message = None;
        // A resumed step gets the attempts of its policy again.
        self.steps[i].retry.max_attempts = self.steps[i]
            .retry
            .max_attempts
            .saturating_add(self.steps[i].attempts);
        let out = vec![self.dispatch(i)];
        self.update_state();
        out
    }

    /// The status JSON as of now.
    pub(crate) fn status(&self) -> JobStatus {
        JobStatus {
            id: self.id.clone(),
            name: self.name.clone(),
            state: self.state,
            steps: self
                .steps
                .iter()
                .map(|n| {
                    (
                        n.id.clone(),
                        StepStatus {
                            state: n.state,
                            attempts: n.attempts,
                            node: n.worker_node.clone(),
                            error: n.error.clone(),
                            message: n.message.clone(),
                            task: n.task.clone(),
                            after: n
                                .required
                                .iter()
                                .chain(&n.optional)
                                .map(|&d| self.steps[d].id.clone())
                                .collect(),
                            cache_hit: n.source == ResultSource::Cached
                                && n.state == StepState::Succeeded,
                            merged: n.source == ResultSource::Merged
                                && n.state == StepState::Succeeded,
                            progress: n.progress,
                            output: n.output.clone(),
                            started_at_ms: n.started_at.map(|t| self.wall_ms(t)),
                            ended_at_ms: n.ended_at.map(|t| self.wall_ms(t)),
                        },
                    )
                })
                .collect(),
            output: self.output.clone(),
            error: self.error.clone(),
            stats: self.stats.clone(),
            elapsed_ms: self.ended.map(|e| {
                if self.submitted_at_ms > 0 && self.wall.is_some() {
                    // From the submission, also across a replay or a takeover.
                    self.wall_ms(e).saturating_sub(self.submitted_at_ms)
                } else {
                    e.duration_since(self.accepted.unwrap_or(e)).as_millis() as u64
                }
            }),
            submitted_at_ms: self.submitted_at_ms,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
