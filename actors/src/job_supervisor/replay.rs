//! What a job's journal holds, and how a job is rebuilt from it.
//!
//! A [`JobRun`] is a deterministic fold of its inputs: the job file, then every result,
//! timer, call, loss, cancel and resume the job's supervisor handed it, in order. The
//! supervisor journals each input ([`Input`]) after it applies it; a node that restarts
//! replays the inputs of every job that had not ended ([`replay`]) and gets the same
//! state, then runs again the attempts that were in flight ([`JobRun::recover`]): they
//! may have died with the node, and a result that still comes from one is discarded as
//! late. Nothing here touches the disk (see `troupe_actors::journal` for the store).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use troupe_runtime::job::spec::JobSpec;
use troupe_runtime::job::spec::SpawnKind;
use troupe_runtime::job::validate::{validate_with, Limits};
use troupe_runtime::protocol::ResultSource;
use troupe_runtime::task::TaskError;

use super::run::{Action, JobRun};

/// How a job started: enough to build its [`JobRun`] again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job id.
    pub id: String,
    /// The job as submitted.
    pub spec: JobSpec,
    /// The limits it ran under.
    pub limits: Limits,
    /// The owner's epoch (0: the node that accepted it; see [`crate::core`]).
    #[serde(default)]
    pub epoch: u64,
}

/// One input the supervisor applied to its job, in the order it applied them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Input {
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
    /// A node left; its attempts run again.
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
    /// The user cancelled the job.
    Cancel,
    /// The user resumed a step that waited for them.
    Resume {
        /// The step.
        step: String,
    },
}

impl Input {
    /// Applies the input to `run`, as the supervisor did; returns the actions.
    pub fn apply(self, run: &mut JobRun) -> Vec<Action> {
        match self {
            Input::Finished {
                step,
                attempt,
                node,
                result,
                source,
            } => run.finished_from(&step, attempt, &node, result, source),
            Input::TimedOut { step, attempt } => run.timed_out(&step, attempt),
            Input::RetryDue { step, attempt } => run.retry_due(&step, attempt),
            Input::AttemptLost {
                step,
                attempt,
                reason,
                counts,
            } => run.attempt_lost(&step, attempt, &reason, counts),
            Input::NodeLost { node } => run.node_lost(&node),
            Input::Spawn {
                step,
                attempt,
                call_id,
                reply_to,
                kind,
            } => run.spawn(&step, attempt, call_id, &reply_to, kind),
            Input::Cancel => run.cancel(),
            Input::Resume { step } => run.resume(&step).unwrap_or_default(),
        }
    }
}

/// Why a journaled job cannot be rebuilt.
#[derive(Debug, thiserror::Error)]
#[error("job {job}: its journaled job file no longer validates: {reason}")]
pub struct ReplayError {
    /// The job.
    pub job: String,
    /// The validation error.
    pub reason: String,
}

/// Rebuilds a job from its record and its inputs, in order. The returned run has started
/// and seen every input; call [`JobRun::recover`] before running it on.
pub fn replay(
    record: JobRecord,
    inputs: impl IntoIterator<Item = Input>,
) -> Result<JobRun, ReplayError> {
    let graph = validate_with(&record.spec, &record.limits).map_err(|e| ReplayError {
        job: record.id.clone(),
        reason: e.to_string(),
    })?;
    let mut run = JobRun::with_limits(record.id, record.spec, graph, record.limits);
    let _ = run.start();
    for input in inputs {
        let _ = input.apply(&mut run);
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job_supervisor::run::tests::dispatched;
    use serde_json::json;
    use troupe_runtime::job::spec::{RetryPolicy, StepSpec};
    use troupe_runtime::job::status::StepState;

    fn record() -> JobRecord {
        let mut spec = JobSpec::new("d")
            .step(StepSpec::new("a", "t").input(json!(1)))
            .step(StepSpec::new("b", "t"))
            .step(StepSpec::new("c", "t").after(["a", "b"]))
            .step(StepSpec::new("d", "t").after(["c"]));
        spec.retry = RetryPolicy {
            max_attempts: 3,
            backoff_ms: 100,
        };
        JobRecord {
            id: "n1-1-1".into(),
            spec,
            limits: Limits::default(),
            epoch: 0,
        }
    }

    /// Applies `inputs` to a fresh run as a supervisor would, journaling each (through
    /// its serialized form, as the store keeps it).
    fn drive(inputs: &[Input]) -> (JobRun, Vec<Input>) {
        let r = record();
        let graph = validate_with(&r.spec, &r.limits).unwrap();
        let mut run = JobRun::with_limits(r.id, r.spec, graph, r.limits);
        let _ = run.start();
        let mut journal = Vec::new();
        for i in inputs {
            let _ = i.clone().apply(&mut run);
            let bytes = serde_json::to_vec(i).unwrap();
            journal.push(serde_json::from_slice(&bytes).unwrap());
        }
        (run, journal)
    }

    fn inputs() -> Vec<Input> {
        vec![
            Input::Finished {
                step: "a".into(),
                attempt: 1,
                node: "n2".into(),
                result: Ok(json!(10)),
                source: ResultSource::Executed,
            },
            Input::Finished {
                step: "b".into(),
                attempt: 1,
                node: "n3".into(),
                result: Err(TaskError::transient("flaky")),
                source: ResultSource::Executed,
            },
            Input::RetryDue {
                step: "b".into(),
                attempt: 2,
            },
            Input::Finished {
                step: "b".into(),
                attempt: 2,
                node: "n2".into(),
                result: Ok(json!(5)),
                source: ResultSource::Executed,
            },
            Input::Spawn {
                step: "c".into(),
                attempt: 1,
                call_id: 7,
                reply_to: "n3".into(),
                kind: SpawnKind::Calls {
                    task: "t".into(),
                    inputs: vec![json!(1), json!(2)],
                },
            },
            Input::Finished {
                step: "c/call-0".into(),
                attempt: 1,
                node: "n1".into(),
                result: Ok(json!(1)),
                source: ResultSource::Executed,
            },
        ]
    }

    #[test]
    fn a_replay_rebuilds_the_same_state() {
        let (live, journal) = drive(&inputs());
        let replayed = replay(record(), journal).unwrap();
        assert_eq!(replayed.status(), live.status());
        let st = replayed.status();
        assert_eq!(st.steps["b"].attempts, 2);
        assert_eq!(st.steps["b"].state, StepState::Succeeded);
        assert_eq!(st.steps["c/call-0"].state, StepState::Succeeded);
        assert!(st.steps.contains_key("c/call-1"));
    }

    #[test]
    fn recovery_runs_attempts_in_flight_again_and_due_retries_now() {
        // c's call-1 was in flight; b waits for its retry.
        let mut ins = inputs();
        ins.truncate(2);
        let (_, journal) = drive(&ins);
        let mut run = replay(record(), journal).unwrap();
        assert_eq!(
            dispatched(&run.recover("the owner restarted")),
            vec![("b".to_string(), 2)]
        );
        // In the longer journal c was in flight, waiting on its calls: c runs again (as
        // attempt 2, which makes its calls again); the old calls go with attempt 1.
        let (_, journal) = drive(&inputs());
        let mut run = replay(record(), journal).unwrap();
        assert_eq!(
            dispatched(&run.recover("the owner restarted")),
            vec![("c".to_string(), 2)]
        );
        // A late result of the recovered attempt is discarded.
        let before = run.status().stats.late_results;
        let _ = Input::Finished {
            step: "c".into(),
            attempt: 1,
            node: "n3".into(),
            result: Ok(json!(2)),
            source: ResultSource::Executed,
        }
        .apply(&mut run);
        assert_eq!(run.status().stats.late_results, before + 1);
        assert_eq!(run.status().steps["c"].attempts, 2);
    }
}
