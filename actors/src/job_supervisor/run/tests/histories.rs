//! Random histories: a job file drawn at random, then a random sequence of everything that
//! can happen to it (results in any order, assignments, timeouts, retries, lost attempts,
//! node loss, sub-work, progress, cancel, resume, late and duplicate results, restarts of
//! the owner), then the rest of the job run to its end. Each input goes through
//! [`JobRun::step`], as the supervisor feeds it, and the rules are checked after every
//! input and at the end; the same history fed again to a new run gives the same actions,
//! and the journal it left rebuilds the same job.

use super::*;
use crate::job_supervisor::replay::{replay, JobRecord};
use proptest::prelude::*;
use std::collections::HashSet;
use std::time::Duration;

/// The nodes attempts run on.
const NODES: [&str; 3] = ["n1", "n2", "n3"];

#[derive(Debug, Clone)]
struct Plan {
    /// Per step: its dependencies (earlier steps), each required or optional.
    deps: Vec<Vec<(usize, bool)>>,
    /// Per step: an optional `when` that is a constant.
    conditions: Vec<Option<bool>>,
    /// Per step: a `for_each` over that many items.
    fan: Vec<Option<usize>>,
    /// Per step: whether its attempts have a timeout.
    timeouts: Vec<bool>,
    max_attempts: u32,
    /// What happens, one choice per input (see [`Sim::play`]).
    script: Vec<u32>,
}

fn plans() -> impl Strategy<Value = Plan> {
    (1usize..8, 1u32..4).prop_flat_map(|(n, max_attempts)| {
        (
            proptest::collection::vec(
                proptest::collection::vec((0usize..64, any::<bool>()), 0..3),
                n,
            ),
            proptest::collection::vec(proptest::option::weighted(0.2, any::<bool>()), n),
            proptest::collection::vec(proptest::option::weighted(0.2, 0usize..3), n),
            proptest::collection::vec(proptest::bool::weighted(0.3), n),
            Just(max_attempts),
            proptest::collection::vec(any::<u32>(), 0..160),
        )
            .prop_map(
                |(raw, conditions, fan, timeouts, max_attempts, script)| Plan {
                    // Only edges to earlier steps: a DAG by construction.
                    deps: earlier_deps(raw),
                    conditions,
                    fan,
                    timeouts,
                    max_attempts,
                    script,
                },
            )
    })
}

fn retry_of(p: &Plan) -> RetryPolicy {
    RetryPolicy {
        max_attempts: p.max_attempts,
        backoff_ms: 10,
    }
}

fn spec_of(p: &Plan) -> JobSpec {
    let mut j = JobSpec::new("history");
    j.retry = retry_of(p);
    for (i, ds) in p.deps.iter().enumerate() {
        let mut s = random_step(i, ds, p.conditions[i], p.fan[i]);
        if p.timeouts[i] {
            s = s.timeout_ms(50);
        }
        j = j.step(s);
    }
    j
}

/// An attempt a worker was handed: it can report, be lost, ask for sub-work, time out.
#[derive(Debug, Clone)]
struct Flight {
    step: String,
    attempt: u32,
    node: Option<String>,
}

/// Drives one job with a script of choices and checks the rules as it goes.
struct Sim {
    run: JobRun,
    retry: RetryPolicy,
    /// The top-level steps' required dependencies and constant conditions.
    plan_deps: Vec<Vec<(usize, bool)>>,
    plan_conditions: Vec<Option<bool>>,
    now: Instant,
    /// Every input the current run was fed, with its time and the actions it gave (not
    /// kept for the inputs a restart replayed).
    history: Vec<(Input, Instant, Option<Vec<Action>>)>,
    /// The journaled inputs, through their bytes, as the journal keeps them.
    journal: Vec<Input>,
    spec: JobSpec,
    restarts: u32,
    /// Whether a [`Input::NodeLost`] was fed as such (as journals written before hold it)
    /// while the job ran; a replay cannot rebuild that exactly.
    direct_node_loss: bool,
    /// Attempts handed out whose result has not been sent.
    flights: Vec<Flight>,
    /// Attempts whose result was sent: sending it again is a late result.
    reported: Vec<Flight>,
    /// Timers armed: retries due and attempt timeouts.
    timers: Vec<Input>,
    next_call: u64,
    cancelled: bool,
    jobs_finished: usize,
    steps_finished: HashMap<String, usize>,
    replies: HashMap<u64, usize>,
    last_attempt: HashMap<String, u32>,
    retries: HashMap<String, u32>,
    resumes: HashMap<String, u32>,
}

impl Sim {
    fn new(p: &Plan) -> Self {
        let spec = spec_of(p);
        let graph = validate(&spec).unwrap();
        Sim {
            run: JobRun::new("n1-0-7".into(), spec, graph),
            retry: retry_of(p),
            plan_deps: p.deps.clone(),
            plan_conditions: p.conditions.clone(),
            now: Instant::now(),
            history: Vec::new(),
            journal: Vec::new(),
            spec: spec_of(p),
            restarts: 0,
            direct_node_loss: false,
            flights: Vec::new(),
            reported: Vec::new(),
            timers: Vec::new(),
            next_call: 0,
            cancelled: false,
            jobs_finished: 0,
            steps_finished: HashMap::new(),
            replies: HashMap::new(),
            last_attempt: HashMap::new(),
            retries: HashMap::new(),
            resumes: HashMap::new(),
        }
    }

    fn ended(&self) -> bool {
        self.run.state().is_terminal()
    }

    /// Feeds one input and checks what must hold of any input.
    fn feed(&mut self, input: Input) -> Result<(), TestCaseError> {
        self.now += Duration::from_millis(1);
        let ended_before = self.ended();
        let late_before = self.run.late_results();
        // An input about an attempt that is no longer live changes nothing.
        let stale = match &input {
            Input::Assigned { step, attempt, .. }
            | Input::Finished { step, attempt, .. }
            | Input::TimedOut { step, attempt }
            | Input::AttemptLost { step, attempt, .. }
            | Input::Progress { step, attempt, .. }
            | Input::Data { step, attempt, .. } => self.run.live(step, *attempt).is_none(),
            _ => false,
        };
        let is_result = matches!(input, Input::Finished { .. });
        if let Input::Resume { step } = &input {
            if self.run.check_resume(step).is_ok() {
                *self.resumes.entry(step.clone()).or_default() += 1;
            }
        }
        if matches!(input, Input::Cancel) && !ended_before {
            self.cancelled = true;
        }
        if input.is_journaled() {
            let bytes = troupe_runtime::wire::encode(&input).unwrap();
            self.journal
                .push(troupe_runtime::wire::decode(&bytes).unwrap());
        }
        let actions = self.run.step(input.clone(), self.now);
        if stale {
            prop_assert!(actions.is_empty(), "{input:?} is stale: {actions:?}");
            if is_result {
                prop_assert_eq!(
                    self.run.late_results(),
                    late_before + 1,
                    "late results count"
                );
            }
        }
        if ended_before {
            let only_refusals = actions
                .iter()
                .all(|a| matches!(a, Action::Reply { result: Err(_), .. }));
            prop_assert!(
                only_refusals,
                "after its end the job acted on {input:?}: {actions:?}"
            );
        }
        for a in &actions {
            self.observe(a)?;
        }
        self.history.push((input, self.now, Some(actions)));
        Ok(())
    }

    /// Checks one action and keeps what follows from it (attempts out, timers armed).
    fn observe(&mut self, a: &Action) -> Result<(), TestCaseError> {
        match a {
            Action::Dispatch(d) => {
                // Attempts of a step are numbered 1, 2, 3... and each is dispatched once.
                let last = self.last_attempt.entry(d.step.clone()).or_default();
                prop_assert_eq!(d.attempt, *last + 1, "attempt numbers of {}", d.step);
                *last = d.attempt;
                if let Some(i) = top_level(&d.step) {
                    // Skipped steps never run; required dependencies succeeded first.
                    prop_assert!(self.plan_conditions[i] != Some(false), "{} ran", d.step);
                    let st = self.run.status();
                    for &(dep, required) in &self.plan_deps[i] {
                        if required {
                            let dep_state = st.steps[&format!("s{dep}")].state;
                            prop_assert_eq!(
                                dep_state,
                                StepState::Succeeded,
                                "{} ran before s{}",
                                d.step,
                                dep
                            );
                        }
                    }
                }
                if d.timeout.is_some() {
                    self.timers.push(timed_out(&d.step, d.attempt));
                }
                self.flights.push(Flight {
                    step: d.step.clone(),
                    attempt: d.attempt,
                    node: None,
                });
            }
            Action::RetryLater { step, attempt, .. } => {
                let n = self.retries.entry(step.clone()).or_default();
                *n += 1;
                // Losses use no retries. (A resume adds the attempts made so far to the
                // budget, which grows with each resume and each loss before it: not
                // checked here.)
                if !self.resumes.contains_key(step) {
                    prop_assert!(*n < self.retry.max_attempts, "{step} retried {n} times");
                }
                self.timers.push(retry_due(step, *attempt));
            }
            Action::Notify(JobEvent::JobFinished { .. }) => self.jobs_finished += 1,
            Action::Notify(JobEvent::StepFinished { step, .. }) => {
                let n = self.steps_finished.entry(step.clone()).or_default();
                *n += 1;
                prop_assert_eq!(*n, 1, "{} ended twice", step);
            }
            Action::Reply { call_id, .. } => {
                let n = self.replies.entry(*call_id).or_default();
                *n += 1;
                prop_assert_eq!(*n, 1, "call {} answered twice", call_id);
            }
            _ => {}
        }
        Ok(())
    }

    /// Plays one choice of the script. Inputs are picked from what could happen now:
    /// they may be stale (an attempt given up, a timer of an old attempt), as in life.
    fn play(&mut self, choice: u32) -> Result<(), TestCaseError> {
        let pick = (choice >> 4) as usize;
        match choice % 16 {
            // A result (the most frequent event).
            0..=4 if !self.flights.is_empty() => {
                let f = self.flights.remove(pick % self.flights.len());
                let result = match (choice >> 8) % 16 {
                    0..=1 => Err(TaskError::transient("busy")),
                    2 => Err(TaskError::permanent("bad")),
                    3 => Err(TaskError::needs_action("sign in")),
                    _ => Ok(json!(f.step)),
                };
                let source = match (choice >> 12) % 8 {
                    0 => ResultSource::Merged,
                    1 => ResultSource::Cached,
                    _ => ResultSource::Executed,
                };
                let node = f.node.clone().unwrap_or_else(|| NODES[pick % 3].into());
                self.reported.push(f.clone());
                self.feed(Input::Finished {
                    step: f.step,
                    attempt: f.attempt,
                    node,
                    result,
                    source,
                })
            }
            5 | 6 if !self.flights.is_empty() => {
                let i = pick % self.flights.len();
                let node = NODES[(choice >> 8) as usize % 3];
                self.flights[i].node = Some(node.into());
                let f = self.flights[i].clone();
                self.feed(assigned(&f.step, f.attempt, node))
            }
            7 if !self.timers.is_empty() => {
                let t = self.timers.remove(pick % self.timers.len());
                self.feed(t)
            }
            8 if !self.flights.is_empty() => {
                let f = self.flights.remove(pick % self.flights.len());
                self.feed(Input::AttemptLost {
                    step: f.step,
                    attempt: f.attempt,
                    reason: "its worker went away".into(),
                    counts: choice & (1 << 8) != 0,
                })
            }
            // As the supervisor does: journaled as the attempts lost; sometimes as one
            // `NodeLost`, as journals written before hold it.
            9 if choice & (1 << 8) != 0 => {
                self.direct_node_loss |= !self.ended();
                self.feed(Input::NodeLost {
                    node: NODES[pick % 3].into(),
                })
            }
            9 => {
                for input in self.run.node_lost_inputs(NODES[pick % 3]) {
                    self.feed(input)?;
                }
                Ok(())
            }
            10 if !self.flights.is_empty() => {
                let f = self.flights[pick % self.flights.len()].clone();
                let call_id = self.next_call;
                self.next_call += 1;
                let kind = if choice & (1 << 8) != 0 {
                    SpawnKind::Calls {
                        task: "t".into(),
                        inputs: (0..1 + (choice >> 9) % 3).map(|k| json!(k)).collect(),
                    }
                } else {
                    let mut sub = JobSpec::new("sub")
                        .step(StepSpec::new("a", "t"))
                        .step(StepSpec::new("b", "t").after(["a"]));
                    sub.retry = self.retry;
                    SpawnKind::Job(sub)
                };
                let reply_to = f.node.unwrap_or_else(|| "n1".into());
                self.feed(spawn(&f.step, f.attempt, call_id, &reply_to, kind))
            }
            11 if !self.reported.is_empty() => {
                // The same result again, or one from an attempt given up: late.
                let f = self.reported[pick % self.reported.len()].clone();
                self.feed(finished(&f.step, f.attempt, "n2", Ok(json!("late"))))
            }
            12 if !self.flights.is_empty() => {
                let f = self.flights[pick % self.flights.len()].clone();
                self.feed(if choice & (1 << 8) != 0 {
                    Input::Progress {
                        step: f.step,
                        attempt: f.attempt,
                        numerator: 1,
                        denominator: 2,
                    }
                } else {
                    Input::Data {
                        step: f.step,
                        attempt: f.attempt,
                        data: b"partial".to_vec(),
                        warning: choice & (1 << 9) != 0,
                    }
                })
            }
            13 => match self.waiting_step() {
                Some(step) => self.feed(resume(&step)),
                None => self.feed(resume("s0")),
            },
            // Cancel is rare: one choice in 256.
            14 if (choice >> 4) & 15 == 0 => self.feed(Input::Cancel),
            // A restart replays the journal: not after a bare `NodeLost`, which a replay
            // cannot rebuild (the supervisor journals the attempts lost instead).
            15 if (choice >> 4) & 3 == 0 && !self.ended() && !self.direct_node_loss => {
                self.restart()
            }
            _ => Ok(()),
        }
    }

    /// The owner restarts: the run is rebuilt from the journal and recovered, as the job
    /// manager and the supervisor do. Timers died with the node; workers of attempts in
    /// flight may still report (late).
    fn restart(&mut self) -> Result<(), TestCaseError> {
        self.restarts += 1;
        self.timers.clear();
        self.now += Duration::from_millis(1);
        let record = JobRecord {
            id: self.run.id().to_string(),
            spec: self.spec.clone(),
            limits: Limits::default(),
            epoch: 0,
            submitted_at_ms: 0,
        };
        self.run = replay(record, self.journal.clone(), self.now, 0).unwrap();
        self.history = std::iter::once(Input::Start)
            .chain(self.journal.iter().cloned())
            .map(|input| (input, self.now, None))
            .collect();
        for input in self.run.recovery_inputs("the owner restarted") {
            self.feed(input)?;
        }
        Ok(())
    }

    fn waiting_step(&self) -> Option<String> {
        let st = self.run.status();
        st.steps
            .iter()
            .find(|(_, s)| s.state == StepState::WaitingForUser)
            .map(|(id, _)| id.clone())
    }

    /// Runs the job to its end: retries fire, live attempts succeed, waiting steps resume.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        let mut rounds = 0;
        while !self.ended() {
            rounds += 1;
            prop_assert!(rounds < 10_000, "the job does not end");
            if let Some(i) = self
                .timers
                .iter()
                .position(|t| matches!(t, Input::RetryDue { .. }))
            {
                let t = self.timers.remove(i);
                self.feed(t)?;
            } else if let Some(i) = self
                .flights
                .iter()
                .position(|f| self.run.live(&f.step, f.attempt).is_some())
            {
                let f = self.flights.remove(i);
                self.reported.push(f.clone());
                self.feed(finished(&f.step, f.attempt, "n1", Ok(json!(f.step))))?;
            } else if let Some(step) = self.waiting_step() {
                self.feed(resume(&step))?;
            } else {
                prop_assert!(false, "stuck: {:?}", self.run.status());
            }
        }
        Ok(())
    }

    /// After its end nothing moves the job: every attempt still out reports, every timer
    /// fires, a node is lost, the user cancels and resumes.
    fn after_the_end(&mut self) -> Result<(), TestCaseError> {
        for f in std::mem::take(&mut self.flights) {
            self.feed(finished(&f.step, f.attempt, "n3", Ok(json!(0))))?;
        }
        for t in std::mem::take(&mut self.timers) {
            self.feed(t)?;
        }
        self.feed(Input::NodeLost { node: "n1".into() })?;
        self.feed(Input::Cancel)?;
        self.feed(resume("s0"))
    }
}

/// The index of a step of the job file itself (not an item, not sub-work).
fn top_level(step: &str) -> Option<usize> {
    step.strip_prefix('s')?.parse().ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    /// Whatever happens, and in whatever order, across restarts of the owner: each step
    /// ends once, the job ends exactly once, stale inputs change nothing (late results are
    /// counted), calls are answered at most once, retries stay within the policy, the same
    /// history gives the same actions, and the journal rebuilds the same job.
    #[test]
    fn random_histories_keep_the_rules_and_replay_the_same(p in plans()) {
        let mut sim = Sim::new(&p);
        sim.feed(Input::Start)?;
        for &choice in &p.script {
            sim.play(choice)?;
        }
        sim.settle()?;
        sim.after_the_end()?;

        let st = sim.run.status();
        prop_assert_eq!(sim.jobs_finished, 1, "the job ends exactly once");
        for (id, s) in &st.steps {
            prop_assert!(s.state.is_terminal(), "{} is {:?}", id, s.state);
        }
        if sim.cancelled {
            prop_assert_eq!(st.state, JobState::Cancelled);
        } else {
            let failed = st.steps.iter().any(|(id, s)| {
                top_level(id).is_some() && s.state == StepState::Failed
            });
            prop_assert_eq!(st.state == JobState::Succeeded, !failed, "{:?}", st);
            prop_assert_eq!(st.state == JobState::Failed, failed);
        }

        // Determinism: the same inputs at the same times, the same actions.
        let spec = spec_of(&p);
        let mut again = JobRun::new("n1-0-7".into(), spec.clone(), validate(&spec).unwrap());
        for (input, at, actions) in &sim.history {
            let got = again.step(input.clone(), *at);
            if let Some(actions) = actions {
                prop_assert_eq!(&got, actions, "{:?}", input);
            }
        }
        prop_assert_eq!(again.status(), st.clone());

        // The journal: the journaled inputs, through their bytes, rebuild the same state,
        // but for where attempts ran (assignments are not journaled).
        if sim.direct_node_loss {
            return Ok(());
        }
        let record = JobRecord {
            id: "n1-0-7".into(),
            spec,
            limits: Limits::default(),
            epoch: 0,
            submitted_at_ms: 0,
        };
        let rebuilt = replay(record, sim.journal.clone(), sim.now, 0).unwrap();
        prop_assert_eq!(without_placement(rebuilt.status()), without_placement(st));
    }
}

/// A status without what only assignments tell: the node of each step, whether it runs
/// or waits for a worker, and times.
fn without_placement(mut st: JobStatus) -> JobStatus {
    st.elapsed_ms = None;
    if st.state == JobState::Running {
        st.state = JobState::Queued;
    }
    for s in st.steps.values_mut() {
        s.node = None;
        s.progress = None;
        s.started_at_ms = None;
        s.ended_at_ms = None;
        if s.state == StepState::Running {
            s.state = StepState::Pending;
        }
    }
    st
}

/// The history driver exercises what it claims to: over a few scripts, every kind of input
/// is fed and some of them are late.
#[test]
fn the_histories_cover_every_kind_of_input() {
    let mut kinds = HashSet::new();
    let (mut late, mut restarts) = (0, 0);
    for seed in 0..64u32 {
        let p = Plan {
            deps: vec![vec![], vec![(0, true)], vec![(0, false)]],
            conditions: vec![None, None, None],
            fan: vec![None, Some(2), None],
            timeouts: vec![true, false, true],
            max_attempts: 3,
            script: (0..120u32)
                .map(|k| (k.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) >> 3)
                .collect(),
        };
        let mut sim = Sim::new(&p);
        sim.feed(Input::Start).unwrap();
        for &c in &p.script {
            sim.play(c).unwrap();
        }
        sim.settle().unwrap();
        sim.after_the_end().unwrap();
        late += sim.run.late_results();
        restarts += sim.restarts;
        for (input, _, _) in &sim.history {
            kinds.insert(std::mem::discriminant(input));
        }
    }
    assert_eq!(kinds.len(), 12, "{kinds:?}");
    assert!(late > 0 && restarts > 0, "late {late}, restarts {restarts}");
}
