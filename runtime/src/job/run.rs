//! The scheduling state machine of one job.
//!
//! A job supervisor feeds it what happens (a step was assigned to a node, an attempt
//! finished, a timer fired) and carries out the [`Action`]s it returns. It does no I/O and
//! holds no clock but the one for `elapsed_ms`, so the order in which steps become ready is
//! tested here directly, and later a journal can replay the same inputs to rebuild it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::spec::JobSpec;
use super::status::{JobEvent, JobState, JobStats, JobStatus, StepState, StepStatus};
use super::validate::Graph;
use crate::task::TaskError;

/// An attempt to hand to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    /// The step's id.
    pub step: String,
    /// Its task.
    pub task: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The step's input.
    pub input: Value,
    /// Outputs of its dependencies, by step id.
    pub deps: BTreeMap<String, Value>,
    /// Limit on the attempt's run time.
    pub timeout: Option<Duration>,
}

/// What the job supervisor must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Hand this attempt to a worker.
    Dispatch(Dispatch),
    /// Call [`JobRun::retry_due`] for `step` after `delay`.
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
}

#[derive(Debug, Clone)]
struct StepRun {
    state: StepState,
    attempts: u32,
    live_attempt: Option<u32>,
    node: Option<String>,
    error: Option<String>,
    output: Option<Value>,
    waiting_on: usize,
}

/// One job's scheduling state.
#[derive(Debug)]
pub struct JobRun {
    id: String,
    spec: JobSpec,
    graph: Graph,
    steps: Vec<StepRun>,
    state: JobState,
    output: Option<Value>,
    error: Option<String>,
    stats: JobStats,
    accepted: Instant,
    ended: Option<Instant>,
    late_results: u64,
}

impl JobRun {
    /// A job accepted with id `id`; `graph` is what [`super::validate::validate`] returned.
    pub fn new(id: String, spec: JobSpec, graph: Graph) -> Self {
        let steps = graph
            .deps
            .iter()
            .map(|d| StepRun {
                state: StepState::Pending,
                attempts: 0,
                live_attempt: None,
                node: None,
                error: None,
                output: None,
                waiting_on: d.len(),
            })
            .collect();
        Self {
            id,
            spec,
            graph,
            steps,
            state: JobState::Queued,
            output: None,
            error: None,
            stats: JobStats::default(),
            accepted: Instant::now(),
            ended: None,
            late_results: 0,
        }
    }

    /// The job id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The job's state.
    pub fn state(&self) -> JobState {
        self.state
    }

    /// Results that arrived for an attempt already given up, and were discarded.
    pub fn late_results(&self) -> u64 {
        self.late_results
    }

    /// Starts the job: dispatches every step without dependencies.
    pub fn start(&mut self) -> Vec<Action> {
        let mut out = vec![Action::Notify(JobEvent::Queued {
            job: self.id.clone(),
        })];
        for i in 0..self.steps.len() {
            if self.steps[i].waiting_on == 0 {
                out.push(self.dispatch(i));
            }
        }
        out
    }

    fn dispatch(&mut self, i: usize) -> Action {
        let deps = self.graph.deps[i]
            .iter()
            .map(|&d| {
                (
                    self.spec.steps[d].id.clone(),
                    self.steps[d].output.clone().unwrap_or(Value::Null),
                )
            })
            .collect();
        let spec = &self.spec.steps[i];
        let s = &mut self.steps[i];
        s.attempts += 1;
        s.live_attempt = Some(s.attempts);
        s.state = StepState::Pending;
        self.stats.executions += 1;
        Action::Dispatch(Dispatch {
            step: spec.id.clone(),
            task: spec.task.clone(),
            attempt: s.attempts,
            input: spec
                .input
                .clone()
                .unwrap_or_else(|| self.spec.input.clone()),
            deps,
            timeout: spec.timeout_ms.map(Duration::from_millis),
        })
    }

    fn live(&self, step: &str, attempt: u32) -> Option<usize> {
        let i = *self.graph.index.get(step)?;
        (self.steps[i].live_attempt == Some(attempt)).then_some(i)
    }

    /// A worker on `node` took attempt `attempt` of `step`.
    pub fn assigned(&mut self, step: &str, attempt: u32, node: &str) -> Vec<Action> {
        let Some(i) = self.live(step, attempt) else {
            return Vec::new();
        };
        let s = &mut self.steps[i];
        s.state = StepState::Running;
        s.node = Some(node.to_string());
        if self.state == JobState::Queued {
            self.state = JobState::Running;
        }
        vec![Action::Notify(JobEvent::StepStarted {
            job: self.id.clone(),
            step: step.to_string(),
            attempt,
            node: node.to_string(),
        })]
    }

    /// Attempt `attempt` of `step` ended on `node` with `result`.
    pub fn finished(
        &mut self,
        step: &str,
        attempt: u32,
        node: &str,
        result: Result<Value, TaskError>,
    ) -> Vec<Action> {
        let Some(i) = self.live(step, attempt) else {
            self.late_results += 1;
            return Vec::new();
        };
        self.steps[i].node = Some(node.to_string());
        self.steps[i].live_attempt = None;
        let mut out = Vec::new();
        match result {
            Ok(v) => {
                let s = &mut self.steps[i];
                s.state = StepState::Succeeded;
                s.output = Some(v);
                s.error = None;
                out.push(self.step_event(i));
                for k in self.graph.dependents[i].clone() {
                    let d = &mut self.steps[k];
                    d.waiting_on -= 1;
                    if d.waiting_on == 0 && d.state == StepState::Pending && d.attempts == 0 {
                        out.push(self.dispatch(k));
                    }
                }
            }
            Err(e) => {
                let policy = self.spec.retry_for(&self.spec.steps[i]);
                let s = &mut self.steps[i];
                s.error = Some(e.to_string());
                if e.is_transient() && s.attempts < policy.max_attempts {
                    s.state = StepState::Pending;
                    let delay = policy.delay_before(s.attempts + 1);
                    out.push(Action::Notify(JobEvent::StepRetrying {
                        job: self.id.clone(),
                        step: step.to_string(),
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
                    if e.is_transient() {
                        s.error = Some(format!("{e} (gave up after {} attempts)", s.attempts));
                    }
                    s.state = StepState::Failed;
                    out.push(self.step_event(i));
                    if self.error.is_none() {
                        self.error = Some(format!(
                            "step {:?} ({}) failed: {}",
                            step,
                            self.spec.steps[i].task,
                            self.steps[i].error.clone().unwrap_or_default()
                        ));
                    }
                    self.fail_dependents(i, &mut out);
                }
            }
        }
        self.check_end(&mut out);
        out
    }

    /// The timer of attempt `attempt` of `step` fired: if it still runs it fails (transient).
    pub fn timed_out(&mut self, step: &str, attempt: u32) -> Vec<Action> {
        let Some(i) = self.live(step, attempt) else {
            return Vec::new();
        };
        let ms = self.spec.steps[i].timeout_ms.unwrap_or(0);
        let node = self.steps[i].node.clone().unwrap_or_default();
        self.finished(
            step,
            attempt,
            &node,
            Err(TaskError::transient(format!(
                "attempt timed out after {ms} ms"
            ))),
        )
    }

    /// The backoff before attempt `attempt` of `step` is over: dispatch it.
    pub fn retry_due(&mut self, step: &str, attempt: u32) -> Vec<Action> {
        let Some(&i) = self.graph.index.get(step) else {
            return Vec::new();
        };
        let s = &self.steps[i];
        if s.state != StepState::Pending || s.live_attempt.is_some() || s.attempts + 1 != attempt {
            return Vec::new();
        }
        vec![self.dispatch(i)]
    }

    fn fail_dependents(&mut self, root: usize, out: &mut Vec<Action>) {
        let mut stack = self.graph.dependents[root].clone();
        while let Some(k) = stack.pop() {
            if self.steps[k].state.is_terminal() {
                continue;
            }
            self.steps[k].state = StepState::Failed;
            self.steps[k].error = Some(format!(
                "not run: its dependency {:?} failed",
                self.spec.steps[root].id
            ));
            out.push(self.step_event(k));
            stack.extend(self.graph.dependents[k].iter().copied());
        }
    }

    fn step_event(&self, i: usize) -> Action {
        let s = &self.steps[i];
        Action::Notify(JobEvent::StepFinished {
            job: self.id.clone(),
            step: self.spec.steps[i].id.clone(),
            state: s.state,
            node: s.node.clone(),
            error: s.error.clone(),
        })
    }

    fn check_end(&mut self, out: &mut Vec<Action>) {
        if self.state.is_terminal() || !self.steps.iter().all(|s| s.state.is_terminal()) {
            return;
        }
        self.ended = Some(Instant::now());
        if self.steps.iter().any(|s| s.state == StepState::Failed) {
            self.state = JobState::Failed;
        } else {
            self.state = JobState::Succeeded;
            self.output = Some(self.job_output());
        }
        out.push(Action::Notify(JobEvent::JobFinished {
            status: Box::new(self.status()),
        }));
    }

    fn job_output(&self) -> Value {
        let out = |i: usize| self.steps[i].output.clone().unwrap_or(Value::Null);
        if let Some(id) = &self.spec.output {
            return self
                .graph
                .index
                .get(id)
                .map(|&i| out(i))
                .unwrap_or(Value::Null);
        }
        match self.graph.finals.as_slice() {
            [one] => out(*one),
            many => Value::Object(
                many.iter()
                    .map(|&i| (self.spec.steps[i].id.clone(), out(i)))
                    .collect(),
            ),
        }
    }

    /// The status JSON as of now.
    pub fn status(&self) -> JobStatus {
        JobStatus {
            id: self.id.clone(),
            name: self.spec.name.clone(),
            state: self.state,
            steps: self
                .spec
                .steps
                .iter()
                .zip(&self.steps)
                .map(|(spec, s)| {
                    (
                        spec.id.clone(),
                        StepStatus {
                            state: s.state,
                            attempts: s.attempts,
                            node: s.node.clone(),
                            error: s.error.clone(),
                            task: spec.task.clone(),
                        },
                    )
                })
                .collect(),
            output: self.output.clone(),
            error: self.error.clone(),
            stats: self.stats.clone(),
            elapsed_ms: self
                .ended
                .map(|e| e.duration_since(self.accepted).as_millis() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::spec::{RetryPolicy, StepSpec};
    use crate::job::validate::validate;
    use serde_json::json;

    fn run(spec: JobSpec) -> JobRun {
        let g = validate(&spec).unwrap();
        JobRun::new("j1".into(), spec, g)
    }

    fn dispatched(actions: &[Action]) -> Vec<(String, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Dispatch(d) => Some((d.step.clone(), d.attempt)),
                _ => None,
            })
            .collect()
    }

    fn diamond() -> JobSpec {
        JobSpec::new("d")
            .with_input(json!({"job": true}))
            .step(StepSpec::new("a", "t").input(json!(1)))
            .step(StepSpec::new("b", "t"))
            .step(StepSpec::new("c", "t").after(["a", "b"]))
            .step(StepSpec::new("d", "t").after(["c"]))
    }

    #[test]
    fn dispatches_in_dependency_order() {
        let mut r = run(diamond());
        let first = r.start();
        assert_eq!(dispatched(&first), vec![("a".into(), 1), ("b".into(), 1)]);
        // The step without its own input gets the job's input.
        let b = first
            .iter()
            .find_map(|a| match a {
                Action::Dispatch(d) if d.step == "b" => Some(d.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(b.input, json!({"job": true}));
        r.assigned("a", 1, "n1");
        assert_eq!(r.state(), JobState::Running);
        // c waits for both a and b.
        assert!(dispatched(&r.finished("a", 1, "n1", Ok(json!(10)))).is_empty());
        let after_b = r.finished("b", 1, "n2", Ok(json!(5)));
        assert_eq!(dispatched(&after_b), vec![("c".into(), 1)]);
        match &after_b[1] {
            Action::Dispatch(d) => {
                assert_eq!(
                    d.deps,
                    BTreeMap::from([("a".into(), json!(10)), ("b".into(), json!(5))])
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            dispatched(&r.finished("c", 1, "n3", Ok(json!(15)))),
            vec![("d".into(), 1)]
        );
        let end = r.finished("d", 1, "n1", Ok(json!("done")));
        assert!(matches!(
            end.last(),
            Some(Action::Notify(JobEvent::JobFinished { .. }))
        ));
        let st = r.status();
        assert_eq!(st.state, JobState::Succeeded);
        assert_eq!(st.output, Some(json!("done")));
        assert_eq!(st.steps["c"].node.as_deref(), Some("n3"));
        assert_eq!(st.stats.executions, 4);
    }

    #[test]
    fn transient_errors_retry_then_give_up_and_fail_dependents() {
        let mut spec = diamond();
        spec.retry = RetryPolicy {
            max_attempts: 2,
            backoff_ms: 1,
        };
        let mut r = run(spec);
        r.start();
        let a = r.finished("a", 1, "n1", Err(TaskError::transient("busy")));
        assert!(matches!(
            a.last(),
            Some(Action::RetryLater { attempt: 2, .. })
        ));
        // A stale retry timer does nothing; the due one dispatches attempt 2.
        assert!(r.retry_due("a", 3).is_empty());
        assert_eq!(dispatched(&r.retry_due("a", 2)), vec![("a".into(), 2)]);
        // A late result of attempt 1 is discarded.
        assert!(r.finished("a", 1, "n1", Ok(json!(1))).is_empty());
        assert_eq!(r.late_results(), 1);
        r.finished("b", 1, "n2", Ok(json!(1)));
        let end = r.finished("a", 2, "n1", Err(TaskError::transient("still busy")));
        assert!(matches!(
            end.last(),
            Some(Action::Notify(JobEvent::JobFinished { .. }))
        ));
        let st = r.status();
        assert_eq!(st.state, JobState::Failed);
        assert_eq!(st.steps["a"].attempts, 2);
        assert_eq!(st.steps["c"].state, StepState::Failed);
        assert_eq!(st.steps["d"].state, StepState::Failed);
        assert!(st.error.unwrap().contains("\"a\""));
    }

    #[test]
    fn permanent_error_does_not_retry_and_timeouts_are_transient() {
        let mut r = run(JobSpec::new("p")
            .step(StepSpec::new("x", "t"))
            .step(StepSpec {
                timeout_ms: Some(5),
                ..StepSpec::new("y", "t")
            }));
        r.start();
        r.finished("x", 1, "n1", Err(TaskError::permanent("bad")));
        assert_eq!(r.status().steps["x"].state, StepState::Failed);
        let t = r.timed_out("y", 1);
        assert!(matches!(
            t.last(),
            Some(Action::RetryLater { attempt: 2, .. })
        ));
        assert!(
            r.timed_out("y", 1).is_empty(),
            "a fired timer of an old attempt is stale"
        );
    }

    #[test]
    fn output_of_several_finals_is_an_object() {
        let mut r = run(JobSpec::new("f")
            .step(StepSpec::new("a", "t"))
            .step(StepSpec::new("b", "t")));
        r.start();
        r.finished("a", 1, "n", Ok(json!(1)));
        r.finished("b", 1, "n", Ok(json!(2)));
        assert_eq!(r.status().output, Some(json!({"a": 1, "b": 2})));
    }
}
