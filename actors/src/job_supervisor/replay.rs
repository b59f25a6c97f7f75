//! What a job's journal holds, and how a job is rebuilt from it.
//!
//! A [`JobRun`] is a deterministic fold of its inputs ([`JobRun::step`]): the job file,
//! then every result, timer, call, loss, cancel and resume the job's supervisor handed
//! it, in order. The supervisor journals each input a replay needs
//! ([`Input::is_journaled`]) as it applies it; a node that restarts (or takes a job over
//! from its copy) replays the inputs of every job that had not ended ([`replay`]) and gets
//! the same state, then its supervisor feeds and journals the run's
//! [`JobRun::recovery_inputs`]: the attempts that were in flight run again (they may have
//! died with the node), and a result that still comes from one is discarded as late.
//! Being journaled, a recovery replays too, so a second restart rebuilds the same job.
//! For the same reason a node's loss is journaled as the attempts it lost
//! ([`JobRun::node_lost_inputs`]): where attempts run is not journaled. Nothing here
//! touches the disk (see [`crate::journal`] for the store).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use troupe_runtime::job::spec::JobSpec;
use troupe_runtime::job::validate::{validate_with, Limits};

use super::run::{Input, JobRun};

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
    /// When it was submitted, in Unix milliseconds (0 in journals written before).
    #[serde(default)]
    pub submitted_at_ms: u64,
}

/// Why a journaled job cannot be rebuilt.
#[derive(Debug, thiserror::Error)]
#[error("job {job}: its journaled job file no longer validates: {reason}")]
pub(crate) struct ReplayError {
    /// The job.
    pub job: String,
    /// The validation error.
    pub reason: String,
}

/// Rebuilds a job from its record and its inputs, in order, as if each happened at `now`
/// (the journal keeps no times: the steps that ended before show the replay's time, given
/// by `now_ms`, as their end; the job's elapsed time counts from its submission). The
/// returned run has started and seen every input; feed it its
/// [`JobRun::recovery_inputs`] before running it on. The actions of the replayed inputs
/// were carried out before; they are dropped.
pub(crate) fn replay(
    record: JobRecord,
    inputs: impl IntoIterator<Item = Input>,
    now: Instant,
    now_ms: u64,
) -> Result<JobRun, ReplayError> {
    let graph = validate_with(&record.spec, &record.limits).map_err(|e| ReplayError {
        job: record.id.clone(),
        reason: e.to_string(),
    })?;
    let mut run = JobRun::with_limits(record.id, record.spec, graph, record.limits)
        .with_submit_time(record.submitted_at_ms);
    run.set_wall_clock(now, now_ms);
    let _ = run.step(Input::Start, now);
    for input in inputs {
        let _ = run.step(input, now);
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job_supervisor::run::tests::dispatched;
    use crate::job_supervisor::run::Action;
    use serde_json::json;
    use troupe_runtime::job::spec::{RetryPolicy, SpawnKind, StepSpec};
    use troupe_runtime::job::status::StepState;
    use troupe_runtime::protocol::ResultSource;
    use troupe_runtime::task::TaskError;

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
            submitted_at_ms: 0,
        }
    }

    /// Applies `inputs` to a fresh run as a supervisor would, journaling each (through
    /// its serialized form, as the store keeps it).
    fn drive(inputs: &[Input]) -> (JobRun, Vec<Input>) {
        let r = record();
        let graph = validate_with(&r.spec, &r.limits).unwrap();
        let mut run = JobRun::with_limits(r.id, r.spec, graph, r.limits);
        let now = Instant::now();
        let _ = run.step(Input::Start, now);
        let mut journal = Vec::new();
        for i in inputs {
            let _ = run.step(i.clone(), now);
            if i.is_journaled() {
                let bytes = troupe_runtime::wire::encode(i).unwrap();
                journal.push(troupe_runtime::wire::decode(&bytes).unwrap());
            }
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

    /// Feeds `run` its recovery, as the supervisor does; returns the actions and the inputs
    /// it journaled.
    /// Feeds `run` its recovery inputs at `now` (a fixed time: the status's times must
    /// match another run's that saw the same times).
    fn recover(run: &mut JobRun, now: Instant) -> (Vec<Action>, Vec<Input>) {
        let inputs = run.recovery_inputs("the owner restarted");
        let mut actions = Vec::new();
        for input in inputs.clone() {
            actions.extend(run.step(input, now));
        }
        (actions, inputs)
    }

    /// A replay of the journaled inputs gives the state the live run had.
    #[test]
    fn a_replay_rebuilds_the_same_state() {
        let (live, journal) = drive(&inputs());
        let replayed = replay(record(), journal, Instant::now(), 0).unwrap();
        assert_eq!(replayed.status(), live.status());
        let st = replayed.status();
        assert_eq!(st.steps["b"].attempts, 2);
        assert_eq!(st.steps["b"].state, StepState::Succeeded);
        assert_eq!(st.steps["c/call-0"].state, StepState::Succeeded);
        assert!(st.steps.contains_key("c/call-1"));
    }

    /// After a replay, recovery runs the attempts in flight again and retries now.
    #[test]
    fn recovery_runs_attempts_in_flight_again_and_due_retries_now() {
        // c's call-1 was in flight; b waits for its retry.
        let mut ins = inputs();
        ins.truncate(2);
        let (_, journal) = drive(&ins);
        let mut run = replay(record(), journal, Instant::now(), 0).unwrap();
        assert_eq!(
            dispatched(&recover(&mut run, Instant::now()).0),
            vec![("b".to_string(), 2)]
        );
        // In the longer journal c was in flight, waiting on its calls: c runs again (as
        // attempt 2, which makes its calls again); the old calls go with attempt 1.
        let (_, journal) = drive(&inputs());
        let mut run = replay(record(), journal, Instant::now(), 0).unwrap();
        assert_eq!(
            dispatched(&recover(&mut run, Instant::now()).0),
            vec![("c".to_string(), 2)]
        );
        // A late result of the recovered attempt is discarded.
        let before = run.status().stats.late_results;
        let late = Input::Finished {
            step: "c".into(),
            attempt: 1,
            node: "n3".into(),
            result: Ok(json!(2)),
            source: ResultSource::Executed,
        };
        assert!(run.step(late, Instant::now()).is_empty());
        assert_eq!(run.status().stats.late_results, before + 1);
        assert_eq!(run.status().steps["c"].attempts, 2);
    }

    /// A recovery is journaled like any input: after a second restart, the attempts the
    /// first recovery started are still the live ones, and what they did counts.
    #[test]
    fn a_second_restart_replays_the_first_recovery() {
        let now = Instant::now();
        let (_, mut journal) = drive(&inputs());
        let mut run = replay(record(), journal.clone(), now, 0).unwrap();
        let (_, recovery) = recover(&mut run, now);
        journal.extend(recovery);
        // c's attempt 2 makes a call, which answers; then c ends and d runs.
        let after = [
            Input::Spawn {
                step: "c".into(),
                attempt: 2,
                call_id: 9,
                reply_to: "n3".into(),
                kind: SpawnKind::Calls {
                    task: "t".into(),
                    inputs: vec![json!(3)],
                },
            },
            Input::Finished {
                step: "c/call-2".into(),
                attempt: 1,
                node: "n2".into(),
                result: Ok(json!(3)),
                source: ResultSource::Executed,
            },
            Input::Finished {
                step: "c".into(),
                attempt: 2,
                node: "n3".into(),
                result: Ok(json!(30)),
                source: ResultSource::Executed,
            },
        ];
        for input in after {
            let actions = run.step(input.clone(), now);
            assert!(!actions.is_empty(), "{input:?} was live");
            journal.push(input);
        }
        let again = replay(record(), journal, now, 0).unwrap();
        assert_eq!(again.status(), run.status());
        let st = again.status();
        assert_eq!(st.steps["c"].state, StepState::Succeeded);
        assert_eq!(st.steps["c/call-2"].state, StepState::Succeeded);
        assert_eq!(st.steps["d"].attempts, 1);
    }

    /// A node's loss is journaled as the attempts it lost: a replay, which does not know
    /// where attempts ran, runs them again all the same, and takes the result of the new
    /// attempt, not the late one of the old.
    #[test]
    fn a_lost_node_replays_as_the_attempts_it_lost() {
        let now = Instant::now();
        let (mut live, mut journal) = drive(&[Input::Assigned {
            step: "a".into(),
            attempt: 1,
            node: "n2".into(),
        }]);
        assert!(journal.is_empty(), "assignments are not journaled");
        for input in live.node_lost_inputs("n2") {
            assert!(matches!(input, Input::AttemptLost { counts: true, .. }));
            assert_eq!(
                dispatched(&live.step(input.clone(), now)),
                vec![("a".into(), 2)]
            );
            journal.push(input);
        }
        let results = [("a", 1, json!("late")), ("a", 2, json!(10))];
        for (step, attempt, value) in results {
            let input = Input::Finished {
                step: step.into(),
                attempt,
                node: "n1".into(),
                result: Ok(value),
                source: ResultSource::Executed,
            };
            let _ = live.step(input.clone(), now);
            journal.push(input);
        }
        let replayed = replay(record(), journal, now, 0).unwrap();
        assert_eq!(replayed.status(), live.status());
        assert_eq!(replayed.status().stats.late_results, 1);
        assert_eq!(replayed.status().stats.lost_attempts, 1);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Journals written before the inputs moved beside the job supervisor (and became the
    /// input of `JobRun::step`) still decode, to the same inputs.
    #[test]
    fn journaled_inputs_of_earlier_versions_still_decode() {
        // Encoded by the code of commit 80e2e01, where `Input` was
        // `runtime::job::journal::Input` (it is `run::Input` now).
        let golden = [
            "81a846696e697368656485a473746570a161a7617474656d707401a46e6f6465a26e32a6726573756c7481a24f6b81a1789201a179a6736f75726365a66d6572676564",
            "81a846696e697368656485a473746570a162a7617474656d707402a46e6f6465a26e33a6726573756c7481a345727282a46b696e64a97472616e7369656e74a76d657373616765a5666c616b79a6736f75726365a86578656375746564",
            "81a854696d65644f757482a473746570a163a7617474656d707403",
            "81a8526574727944756582a473746570a163a7617474656d707404",
            "81ab417474656d70744c6f737484a473746570a164a7617474656d707401a6726561736f6ea4676f6e65a6636f756e7473c3",
            "81a84e6f64654c6f737481a46e6f6465a26e34",
            "81a5537061776e85a473746570a165a7617474656d707401a763616c6c5f696407a87265706c795f746fa26e31a46b696e6481a543616c6c7382a47461736ba174a6696e70757473920102",
            "81a5537061776e85a473746570a165a7617474656d707401a763616c6c5f696408a87265706c795f746fa26e31a46b696e6481a34a6f6286a46e616d65a3737562a87072696f72697479a66e6f726d616ca5696e707574c0a5726574727982ac6d61785f617474656d70747303aa6261636b6f66665f6d7364a573746570739182a26964a178a47461736ba174a56361636865a3757365",
            "a643616e63656c",
            "81a6526573756d6581a473746570a166",
        ];
        let want = vec![
            Input::Finished {
                step: "a".into(),
                attempt: 1,
                node: "n2".into(),
                result: Ok(json!({"x": [1, "y"]})),
                source: ResultSource::Merged,
            },
            Input::Finished {
                step: "b".into(),
                attempt: 2,
                node: "n3".into(),
                result: Err(TaskError::transient("flaky")),
                source: ResultSource::Executed,
            },
            Input::TimedOut {
                step: "c".into(),
                attempt: 3,
            },
            Input::RetryDue {
                step: "c".into(),
                attempt: 4,
            },
            Input::AttemptLost {
                step: "d".into(),
                attempt: 1,
                reason: "gone".into(),
                counts: true,
            },
            Input::NodeLost { node: "n4".into() },
            Input::Spawn {
                step: "e".into(),
                attempt: 1,
                call_id: 7,
                reply_to: "n1".into(),
                kind: SpawnKind::Calls {
                    task: "t".into(),
                    inputs: vec![json!(1), json!(2)],
                },
            },
            Input::Spawn {
                step: "e".into(),
                attempt: 1,
                call_id: 8,
                reply_to: "n1".into(),
                kind: SpawnKind::Job(JobSpec::new("sub").step(StepSpec::new("x", "t"))),
            },
            Input::Cancel,
            Input::Resume { step: "f".into() },
        ];
        for (bytes, want) in golden.iter().zip(want) {
            let bytes = hex(bytes);
            let got: Input = troupe_runtime::wire::decode(&bytes).unwrap();
            assert_eq!(got, want);
            assert!(got.is_journaled());
            // And the same bytes today: an older node can still read a newer journal.
            assert_eq!(troupe_runtime::wire::encode(&got).unwrap(), bytes);
        }
        let record = JobRecord {
            id: "n1-1-1".into(),
            spec: JobSpec::new("d").step(StepSpec::new("a", "t")),
            limits: Limits::default(),
            epoch: 3,
            submitted_at_ms: 0,
        };
        let old = hex("84a26964a66e312d312d31a47370656386a46e616d65a164a87072696f72697479a66e6f726d616ca5696e707574c0a5726574727982ac6d61785f617474656d70747303aa6261636b6f66665f6d7364a573746570739182a26964a161a47461736ba174a56361636865a3757365a66c696d69747385a96d61785f7374657073ce000186a0b26d61785f666f725f656163685f6974656d73cd2710a96d61785f646570746820b36d61785f6a6f62735f7065725f636c69656e74cd2710b16d61785f6c6f73745f617474656d70747305a565706f636803");
        let got: JobRecord = troupe_runtime::wire::decode(&old).unwrap();
        assert_eq!(got, record);
    }
}
