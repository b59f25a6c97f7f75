use super::*;
use serde_json::json;
use std::collections::HashSet;
use troupe_runtime::job::spec::{RetryPolicy, StepSpec};
use troupe_runtime::job::validate::validate;

/// The time of an input; `JobRun` only compares the times it is given.
fn now() -> Instant {
    Instant::now()
}

fn assigned(step: &str, attempt: u32, node: &str) -> Input {
    Input::Assigned {
        step: step.into(),
        attempt,
        node: node.into(),
    }
}

/// An attempt's result, from its own execution.
fn finished(step: &str, attempt: u32, node: &str, result: Result<Value, TaskError>) -> Input {
    Input::Finished {
        step: step.into(),
        attempt,
        node: node.into(),
        result,
        source: ResultSource::Executed,
    }
}

fn retry_due(step: &str, attempt: u32) -> Input {
    Input::RetryDue {
        step: step.into(),
        attempt,
    }
}

fn timed_out(step: &str, attempt: u32) -> Input {
    Input::TimedOut {
        step: step.into(),
        attempt,
    }
}

fn spawn(step: &str, attempt: u32, call_id: u64, reply_to: &str, kind: SpawnKind) -> Input {
    Input::Spawn {
        step: step.into(),
        attempt,
        call_id,
        reply_to: reply_to.into(),
        kind,
    }
}

fn resume(step: &str) -> Input {
    Input::Resume { step: step.into() }
}

fn run(spec: JobSpec) -> JobRun {
    let g = validate(&spec).unwrap();
    JobRun::new("j1".into(), spec, g)
}

/// The (step, attempt) of every dispatch among `actions` (also used by the journal's tests).
pub(crate) fn dispatched(actions: &[Action]) -> Vec<(String, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dispatch(d) => Some((d.step.clone(), d.attempt)),
            _ => None,
        })
        .collect()
}

fn find_dispatch(actions: &[Action], step: &str) -> Dispatch {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Dispatch(d) if d.step == step => Some(d.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no dispatch of {step} in {actions:?}"))
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
    let first = r.step(Input::Start, now());
    assert_eq!(dispatched(&first), vec![("a".into(), 1), ("b".into(), 1)]);
    // The step without its own input gets the job's input.
    assert_eq!(find_dispatch(&first, "b").input, json!({"job": true}));
    r.step(assigned("a", 1, "n1"), now());
    assert_eq!(r.state(), JobState::Running);
    // c waits for both a and b.
    assert!(dispatched(&r.step(finished("a", 1, "n1", Ok(json!(10))), now())).is_empty());
    let after_b = r.step(finished("b", 1, "n2", Ok(json!(5))), now());
    assert_eq!(dispatched(&after_b), vec![("c".into(), 1)]);
    assert_eq!(
        find_dispatch(&after_b, "c").deps,
        BTreeMap::from([("a".into(), json!(10)), ("b".into(), json!(5))])
    );
    assert_eq!(
        dispatched(&r.step(finished("c", 1, "n3", Ok(json!(15))), now())),
        vec![("d".into(), 1)]
    );
    let end = r.step(finished("d", 1, "n1", Ok(json!("done"))), now());
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
    r.step(Input::Start, now());
    let a = r.step(
        finished("a", 1, "n1", Err(TaskError::transient("busy"))),
        now(),
    );
    assert!(matches!(
        a.last(),
        Some(Action::RetryLater { attempt: 2, .. })
    ));
    // A stale retry timer does nothing; the due one dispatches attempt 2.
    assert!(r.step(retry_due("a", 3), now()).is_empty());
    assert_eq!(
        dispatched(&r.step(retry_due("a", 2), now())),
        vec![("a".into(), 2)]
    );
    // A late result of attempt 1 is discarded.
    assert!(r
        .step(finished("a", 1, "n1", Ok(json!(1))), now())
        .is_empty());
    assert_eq!(r.late_results(), 1);
    r.step(finished("b", 1, "n2", Ok(json!(1))), now());
    let end = r.step(
        finished("a", 2, "n1", Err(TaskError::transient("still busy"))),
        now(),
    );
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
        .step(StepSpec::new("y", "t").timeout_ms(5)));
    r.step(Input::Start, now());
    r.step(
        finished("x", 1, "n1", Err(TaskError::permanent("bad"))),
        now(),
    );
    assert_eq!(r.status().steps["x"].state, StepState::Failed);
    r.step(assigned("y", 1, "n2"), now());
    let t = r.step(timed_out("y", 1), now());
    assert!(
        matches!(&t[0], Action::CancelAttempt { node: Some(n), .. } if n == "n2"),
        "the worker is told to stop"
    );
    assert!(matches!(
        t.last(),
        Some(Action::RetryLater { attempt: 2, .. })
    ));
    assert!(
        r.step(timed_out("y", 1), now()).is_empty(),
        "a fired timer of an old attempt is stale"
    );
}

#[test]
fn output_of_several_finals_is_an_object() {
    let mut r = run(JobSpec::new("f")
        .step(StepSpec::new("a", "t"))
        .step(StepSpec::new("b", "t")));
    r.step(Input::Start, now());
    r.step(finished("a", 1, "n", Ok(json!(1))), now());
    r.step(finished("b", 1, "n", Ok(json!(2))), now());
    assert_eq!(r.status().output, Some(json!({"a": 1, "b": 2})));
}

#[test]
fn conditions_skip_and_optional_dependencies_do_not_block() {
    // seed 000: no Twitter account linked, so the aggregate does not wait for it.
    let spec = JobSpec::new("social")
        .with_input(json!({"accounts": {"facebook": "fb-1"}}))
        .step(StepSpec::new("facebook", "fetch").when("has(input.accounts.facebook)"))
        .step(StepSpec::new("twitter", "fetch").when("has(input.accounts.twitter)"))
        .step(
            StepSpec::new("agg", "sum")
                .after(["facebook"])
                .optional(["twitter"]),
        )
        .step(StepSpec::new("tweets", "t").after(["twitter"]));
    let mut r = run(spec);
    let first = r.step(Input::Start, now());
    assert_eq!(dispatched(&first), vec![("facebook".into(), 1)]);
    let st = r.status();
    assert_eq!(st.steps["twitter"].state, StepState::Skipped);
    assert_eq!(
        st.steps["tweets"].state,
        StepState::Skipped,
        "a required dependency was skipped"
    );
    let next = r.step(finished("facebook", 1, "n1", Ok(json!(3))), now());
    let agg = find_dispatch(&next, "agg");
    assert_eq!(agg.deps, BTreeMap::from([("facebook".into(), json!(3))]));
    r.step(finished("agg", 1, "n1", Ok(json!(3))), now());
    let st = r.status();
    assert_eq!(st.state, JobState::Succeeded);
    assert_eq!(st.output, Some(json!({"agg": 3, "tweets": null})));
}

#[test]
fn conditions_see_dependency_outputs_and_failed_optionals_do_not_fail_the_dependent() {
    let spec = JobSpec::new("c")
        .step(StepSpec::new("a", "t"))
        .step(
            StepSpec::new("big", "t")
                .after(["a"])
                .when("steps.a.output > 10"),
        )
        .step(
            StepSpec::new("small", "t")
                .after(["a"])
                .when("steps.a.output <= 10"),
        )
        .step(StepSpec::new("flaky", "t"))
        .step(StepSpec::new("end", "t").optional(["big", "small", "flaky"]));
    let mut r = run(spec);
    r.step(Input::Start, now());
    let next = r.step(finished("a", 1, "n", Ok(json!(4))), now());
    assert_eq!(dispatched(&next), vec![("small".into(), 1)]);
    r.step(finished("small", 1, "n", Ok(json!("s"))), now());
    let next = r.step(
        finished("flaky", 1, "n", Err(TaskError::permanent("down"))),
        now(),
    );
    let end = find_dispatch(&next, "end");
    assert_eq!(end.deps, BTreeMap::from([("small".into(), json!("s"))]));
    r.step(finished("end", 1, "n", Ok(json!(1))), now());
    // A failed step fails the job, even when its dependent ran without it.
    assert_eq!(r.status().state, JobState::Failed);
}

#[test]
fn for_each_runs_items_and_joins_in_item_order() {
    let spec = JobSpec::new("f")
        .with_input(json!({"xs": [10, 20, 30]}))
        .step(StepSpec::new("each", "t").for_each("input.xs"))
        .step(StepSpec::new("join", "t").after(["each"]));
    let mut r = run(spec);
    let first = r.step(Input::Start, now());
    assert_eq!(
        dispatched(&first),
        vec![
            ("each[0]".into(), 1),
            ("each[1]".into(), 1),
            ("each[2]".into(), 1)
        ]
    );
    assert_eq!(find_dispatch(&first, "each[1]").input, json!(20));
    // Out of order completion, one retry.
    r.step(finished("each[2]", 1, "n", Ok(json!(3))), now());
    r.step(
        finished("each[0]", 1, "n", Err(TaskError::transient("x"))),
        now(),
    );
    r.step(retry_due("each[0]", 2), now());
    assert!(dispatched(&r.step(finished("each[1]", 1, "n", Ok(json!(2))), now())).is_empty());
    let next = r.step(finished("each[0]", 2, "n", Ok(json!(1))), now());
    assert_eq!(find_dispatch(&next, "join").deps["each"], json!([1, 2, 3]));
    let st = r.status();
    assert_eq!(st.steps["each"].state, StepState::Succeeded);
    assert_eq!(st.steps["each[0]"].attempts, 2);
}

#[test]
fn for_each_from_a_dependency_and_over_the_limit() {
    let spec = JobSpec::new("f").step(StepSpec::new("list", "t")).step(
        StepSpec::new("each", "t")
            .after(["list"])
            .for_each("steps.list.output"),
    );
    let g = validate(&spec).unwrap();
    let limits = Limits {
        max_for_each_items: 3,
        ..Limits::default()
    };
    let mut r = JobRun::with_limits("j".into(), spec.clone(), g.clone(), limits);
    r.step(Input::Start, now());
    r.step(finished("list", 1, "n", Ok(json!([1, 2, 3, 4]))), now());
    let st = r.status();
    assert_eq!(st.state, JobState::Failed);
    assert!(st.steps["each"]
        .error
        .as_deref()
        .unwrap()
        .contains("max_for_each_items"));

    let mut r = JobRun::new("j".into(), spec.clone(), g.clone());
    r.step(Input::Start, now());
    r.step(
        finished("list", 1, "n", Ok(json!({"not": "a list"}))),
        now(),
    );
    assert!(r.status().steps["each"]
        .error
        .as_deref()
        .unwrap()
        .contains("not a list"));

    let mut r = JobRun::new("j".into(), spec, g);
    r.step(Input::Start, now());
    r.step(finished("list", 1, "n", Ok(json!([]))), now());
    assert_eq!(
        r.status().output,
        Some(json!([])),
        "an empty list succeeds at once"
    );
}

fn reply_of(actions: &[Action]) -> Option<(u64, Result<Value, TaskError>)> {
    actions.iter().find_map(|a| match a {
        Action::Reply {
            call_id, result, ..
        } => Some((*call_id, result.clone())),
        _ => None,
    })
}

#[test]
fn calls_from_a_running_attempt_are_child_steps_that_answer_it() {
    let mut r = run(JobSpec::new("fib").step(StepSpec::new("root", "fib").input(json!(3))));
    r.step(Input::Start, now());
    r.step(assigned("root", 1, "n1"), now());
    let a = r.step(
        spawn(
            "root",
            1,
            7,
            "n1",
            SpawnKind::Calls {
                task: "fib".into(),
                inputs: vec![json!(2), json!(1)],
            },
        ),
        now(),
    );
    assert_eq!(
        dispatched(&a),
        vec![("root/call-0".into(), 1), ("root/call-1".into(), 1)]
    );
    assert_eq!(find_dispatch(&a, "root/call-0").depth, 1);
    // A nested call from a child.
    let b = r.step(
        spawn(
            "root/call-0",
            1,
            1,
            "n2",
            SpawnKind::Calls {
                task: "fib".into(),
                inputs: vec![json!(1)],
            },
        ),
        now(),
    );
    assert_eq!(dispatched(&b), vec![("root/call-0/call-2".into(), 1)]);
    let done = r.step(finished("root/call-0/call-2", 1, "n3", Ok(json!(1))), now());
    assert_eq!(reply_of(&done), Some((1, Ok(json!([1])))));
    r.step(finished("root/call-0", 1, "n2", Ok(json!(1))), now());
    let done = r.step(finished("root/call-1", 1, "n2", Ok(json!(1))), now());
    assert_eq!(reply_of(&done), Some((7, Ok(json!([1, 1])))));
    assert_eq!(r.state(), JobState::Running, "the job waits for the root");
    r.step(finished("root", 1, "n1", Ok(json!(2))), now());
    let st = r.status();
    assert_eq!(st.state, JobState::Succeeded);
    assert_eq!(st.steps.len(), 4);
    assert_eq!(st.output, Some(json!(2)));
}

/// A one-step job whose attempt 1 on n1 called `leaf` with `inputs` as call `call_id`.
fn calling(call_id: u64, inputs: Vec<Value>) -> JobRun {
    let mut r = run(JobSpec::new("c").step(StepSpec::new("p", "t")));
    r.step(Input::Start, now());
    r.step(assigned("p", 1, "n1"), now());
    let calls = SpawnKind::Calls {
        task: "leaf".into(),
        inputs,
    };
    r.step(spawn("p", 1, call_id, "n1", calls), now());
    r
}

/// An attempt still waiting for a call's answer is answered again once the call is done
/// (the first answer may have been lost with a connection), not while it runs; a stale
/// caller is told it no longer runs; a call that left no trace is reported (`None`: the
/// supervisor counts the attempt lost), and losing the attempt so uses no retry.
#[test]
fn an_attempt_still_waiting_for_a_call_is_answered_again_or_told_it_was_lost() {
    let mut r = calling(4, vec![json!(1)]);
    assert_eq!(
        r.call_waiting("p", 1, 4, "n1"),
        Some(Vec::new()),
        "still running"
    );
    let done = r.step(finished("p/call-0", 1, "n2", Ok(json!("one"))), now());
    assert_eq!(reply_of(&done), Some((4, Ok(json!(["one"])))));
    // Asked again: the same answer, and nothing else changes.
    let again = r.call_waiting("p", 1, 4, "n1").expect("known");
    assert_eq!(reply_of(&again), Some((4, Ok(json!(["one"])))));
    assert_eq!(again.len(), 1);
    // A stale attempt is told it no longer runs.
    let stale = reply_of(&r.call_waiting("p", 2, 4, "n1").expect("known")).expect("an answer");
    assert!(matches!(stale.1, Err(TaskError::Permanent(_))), "{stale:?}");
    // A call this job never got: reported, and the attempt lost runs again as attempt 2
    // without using a retry.
    assert_eq!(r.call_waiting("p", 1, 5, "n1"), None);
    let lost = r.step(
        Input::AttemptLost {
            step: "p".into(),
            attempt: 1,
            reason: "its call was lost".into(),
            counts: false,
        },
        now(),
    );
    assert_eq!(dispatched(&lost), vec![("p".into(), 2)]);
    assert_eq!(r.state(), JobState::Running);
}

/// The answer given again after a call failed fast is the one given first: the siblings
/// cancelled after it do not change it.
#[test]
fn a_failed_call_is_answered_again_with_its_first_answer() {
    let mut r = calling(9, vec![json!(1), json!(2)]);
    let failed = r.step(
        finished("p/call-1", 1, "n2", Err(TaskError::permanent("disk full"))),
        now(),
    );
    let first = reply_of(&failed).expect("answered at once");
    let msg = first.1.clone().unwrap_err().to_string();
    assert!(
        msg.contains("p/call-1") && msg.contains("disk full"),
        "{msg}"
    );
    let again = reply_of(&r.call_waiting("p", 1, 9, "n1").expect("known")).expect("again");
    assert_eq!(again, first);
}

#[test]
fn a_failing_call_carries_the_chain_and_stops_its_siblings() {
    let mut r = run(JobSpec::new("c").step(StepSpec::new("p", "t")));
    r.step(Input::Start, now());
    r.step(
        spawn(
            "p",
            1,
            1,
            "n1",
            SpawnKind::Calls {
                task: "leaf".into(),
                inputs: vec![json!(1), json!(2)],
            },
        ),
        now(),
    );
    let failed = r.step(
        finished("p/call-1", 1, "n2", Err(TaskError::permanent("disk full"))),
        now(),
    );
    let (_, res) = reply_of(&failed).unwrap();
    let msg = res.unwrap_err().to_string();
    assert!(
        msg.contains("p/call-1") && msg.contains("disk full"),
        "{msg}"
    );
    // Calls fail fast: the caller is answered at once and its other call is stopped.
    assert!(failed
        .iter()
        .any(|a| matches!(a, Action::CancelAttempt { step, .. } if step == "p/call-0")));
    r.step(
        finished("p", 1, "n1", Err(TaskError::permanent(msg))),
        now(),
    );
    let st = r.status();
    assert_eq!(st.state, JobState::Failed);
    assert_eq!(st.steps["p/call-0"].state, StepState::Cancelled);

    // An attempt that ends while its calls run (here: it times out) cancels them.
    let mut r = run(JobSpec::new("c").step(StepSpec::new("p", "t").timeout_ms(10)));
    r.step(Input::Start, now());
    r.step(assigned("p", 1, "n1"), now());
    r.step(
        spawn(
            "p",
            1,
            1,
            "n1",
            SpawnKind::Calls {
                task: "leaf".into(),
                inputs: vec![json!(1)],
            },
        ),
        now(),
    );
    r.step(assigned("p/call-0", 1, "n2"), now());
    let t = r.step(timed_out("p", 1), now());
    assert!(t.iter().any(|a| matches!(a, Action::CancelAttempt { step, node: Some(n), .. } if step == "p/call-0" && n == "n2")));
    assert!(st.error.unwrap().contains("disk full"));
    // A late result of the cancelled child changes nothing.
    assert!(r
        .step(finished("p/call-0", 1, "n2", Ok(json!(1))), now())
        .is_empty());
}

#[test]
fn sub_jobs_have_their_own_dag_and_depth_is_bounded() {
    let mut r = run(JobSpec::new("tree").step(StepSpec::new("t", "tree")));
    r.step(Input::Start, now());
    let sub = JobSpec::new("child")
        .with_input(json!({"depth": 1}))
        .step(StepSpec::new("x", "tree"))
        .step(StepSpec::new("y", "sum").after(["x"]));
    let a = r.step(spawn("t", 1, 3, "n1", SpawnKind::Job(sub.clone())), now());
    assert_eq!(dispatched(&a), vec![("t/x".into(), 1)]);
    assert_eq!(find_dispatch(&a, "t/x").input, json!({"depth": 1}));
    // A second sub-job of the same attempt with the same step ids gets its own prefix.
    let b = r.step(spawn("t", 1, 4, "n1", SpawnKind::Job(sub)), now());
    assert_eq!(dispatched(&b).len(), 1);
    assert!(dispatched(&b)[0].0.starts_with("t/job-"), "{b:?}");
    let next = r.step(finished("t/x", 1, "n2", Ok(json!(5))), now());
    assert_eq!(find_dispatch(&next, "t/y").deps["x"], json!(5));
    let done = r.step(finished("t/y", 1, "n2", Ok(json!(6))), now());
    assert_eq!(reply_of(&done), Some((3, Ok(json!(6)))));

    let mut deep = JobRun::with_limits(
        "d".into(),
        JobSpec::new("d").step(StepSpec::new("s", "t")),
        validate(&JobSpec::new("d").step(StepSpec::new("s", "t"))).unwrap(),
        Limits {
            max_depth: 1,
            ..Limits::default()
        },
    );
    deep.step(Input::Start, now());
    deep.step(
        spawn(
            "s",
            1,
            1,
            "n",
            SpawnKind::Calls {
                task: "t".into(),
                inputs: vec![json!(0)],
            },
        ),
        now(),
    );
    let refused = deep.step(
        spawn(
            "s/call-0",
            1,
            2,
            "n",
            SpawnKind::Calls {
                task: "t".into(),
                inputs: vec![json!(0)],
            },
        ),
        now(),
    );
    assert!(reply_of(&refused)
        .unwrap()
        .1
        .unwrap_err()
        .to_string()
        .contains("max_depth"));
}

#[test]
fn needs_action_waits_for_resume_and_cancel_ends_everything() {
    let mut r = run(JobSpec::new("n")
        .step(StepSpec::new("auth", "t"))
        .step(StepSpec::new("after", "t").after(["auth"])));
    r.step(Input::Start, now());
    let a = r.step(
        finished(
            "auth",
            1,
            "n1",
            Err(TaskError::needs_action("re-link your account")),
        ),
        now(),
    );
    assert!(a.iter().any(|x| matches!(x, Action::Notify(JobEvent::StepNeedsAction { message, .. }) if message == "re-link your account")));
    assert_eq!(r.state(), JobState::WaitingForUser);
    assert_eq!(
        r.status().steps["auth"].message.as_deref(),
        Some("re-link your account")
    );
    assert!(
        r.check_resume("after").is_err(),
        "only a waiting step resumes"
    );
    let again = r.step(resume("auth"), now());
    let d = find_dispatch(&again, "auth");
    assert!(d.resumed && d.attempt == 2);
    assert_eq!(r.state(), JobState::Queued.max_running());
    r.step(assigned("auth", 2, "n1"), now());
    r.step(finished("auth", 2, "n1", Ok(json!(1))), now());
    r.step(assigned("after", 1, "n3"), now());
    let c = r.step(Input::Cancel, now());
    assert!(c.iter().any(|x| matches!(x, Action::CancelAttempt { step, node: Some(n), .. } if step == "after" && n == "n3")));
    let st = r.status();
    assert_eq!(st.state, JobState::Cancelled);
    assert_eq!(st.steps["after"].state, StepState::Cancelled);
    assert!(
        r.step(Input::Cancel, now()).is_empty(),
        "cancelling twice is a no-op"
    );
}

/// The delay of the first retry of `step` in job `job` (backoff 1000 ms).
fn first_retry_delay(job: &str, step: &str) -> Duration {
    let mut spec = JobSpec::new("r").step(StepSpec::new(step, "t"));
    spec.retry = RetryPolicy {
        max_attempts: 2,
        backoff_ms: 1000,
    };
    let g = validate(&spec).unwrap();
    let mut r = JobRun::new(job.into(), spec, g);
    r.step(Input::Start, now());
    let actions = r.step(
        finished(step, 1, "n", Err(TaskError::transient("busy"))),
        now(),
    );
    actions
        .iter()
        .find_map(|a| match a {
            Action::RetryLater { delay, .. } => Some(*delay),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no retry in {actions:?}"))
}

/// A step that succeeds on a retry shows no error: the failed attempt's is in its event.
#[test]
fn a_step_that_succeeds_on_a_retry_keeps_no_error() {
    let mut spec = JobSpec::new("r").step(StepSpec::new("a", "t"));
    spec.retry = RetryPolicy {
        max_attempts: 2,
        backoff_ms: 1,
    };
    let g = validate(&spec).unwrap();
    let mut r = JobRun::new("n1-0-1".into(), spec, g);
    r.step(Input::Start, now());
    r.step(
        finished("a", 1, "n", Err(TaskError::transient("busy"))),
        now(),
    );
    assert_eq!(
        r.status().steps["a"].error.as_deref(),
        Some("transient error: busy")
    );
    r.step(retry_due("a", 2), now());
    r.step(finished("a", 2, "n", Ok(json!(7))), now());
    let st = r.status();
    assert_eq!(st.state, JobState::Succeeded);
    assert_eq!(st.steps["a"].attempts, 2);
    assert_eq!(st.steps["a"].error, None, "{:?}", st.steps["a"]);
}

/// The retry jitter comes from the job id, the step and the attempt: a replay gets the
/// same delay, other jobs and steps get others, all within +-25% of the backoff.
#[test]
fn retry_delays_are_a_function_of_the_job_the_step_and_the_attempt() {
    assert_eq!(
        first_retry_delay("n1-0-1", "a"),
        first_retry_delay("n1-0-1", "a")
    );
    let mut delays = HashSet::new();
    for k in 0..20 {
        delays.insert(first_retry_delay(&format!("n1-0-{k}"), "a"));
        delays.insert(first_retry_delay("n1-0-1", &format!("s{k}")));
    }
    assert!(delays.len() > 20, "jitter spreads retries: {delays:?}");
    for d in delays {
        assert!((750..=1250).contains(&d.as_millis()), "{d:?}");
    }
}

/// A job's elapsed time is measured between the times its inputs carried.
#[test]
fn elapsed_time_comes_from_the_inputs_not_the_clock() {
    let mut r = run(JobSpec::new("e").step(StepSpec::new("a", "t")));
    let t0 = now();
    r.step(Input::Start, t0);
    r.step(
        finished("a", 1, "n", Ok(json!(1))),
        t0 + Duration::from_secs(42),
    );
    assert_eq!(r.status().elapsed_ms, Some(42_000));
}

/// The status tells when the job was submitted and when each step's attempt started and
/// ended, in Unix milliseconds from the wall clock it was given, with each step's output;
/// a job rebuilt from its journal counts its elapsed time from its submission.
#[test]
fn status_times_and_outputs_come_from_the_wall_clock_given() {
    let spec = JobSpec::new("t")
        .step(StepSpec::new("a", "t"))
        .step(StepSpec::new("b", "t").after(["a"]));
    let mut r = run(spec.clone()).with_submit_time(1_000_000);
    let t0 = now();
    r.step(Input::Start, t0);
    r.step(assigned("a", 1, "n2"), t0 + Duration::from_millis(5));
    let st = r.status();
    assert_eq!(st.submitted_at_ms, 1_000_000);
    assert_eq!(st.steps["a"].started_at_ms, Some(1_000_005));
    assert_eq!(st.steps["a"].ended_at_ms, None);
    assert_eq!(st.steps["b"].started_at_ms, None);
    r.step(
        finished("a", 1, "n2", Ok(json!("A"))),
        t0 + Duration::from_millis(30),
    );
    r.step(assigned("b", 1, "n1"), t0 + Duration::from_millis(40));
    r.step(
        finished("b", 1, "n1", Ok(json!("B"))),
        t0 + Duration::from_millis(100),
    );
    let st = r.status();
    assert_eq!(st.steps["a"].ended_at_ms, Some(1_000_030));
    assert_eq!(st.steps["a"].output, Some(json!("A")));
    assert_eq!(st.steps["b"].started_at_ms, Some(1_000_040));
    assert_eq!(st.steps["b"].ended_at_ms, Some(1_000_100));
    assert_eq!(st.elapsed_ms, Some(100));

    // Rebuilt 5 s later from its journal: the elapsed time still counts from the submission.
    let record = crate::job_supervisor::replay::JobRecord {
        id: "j".into(),
        spec,
        limits: Default::default(),
        epoch: 0,
        submitted_at_ms: 1_000_000,
    };
    let journal = vec![finished("a", 1, "n2", Ok(json!("A")))];
    let t1 = now();
    let mut again = crate::job_supervisor::replay::replay(record, journal, t1, 1_005_000).unwrap();
    assert_eq!(again.status().steps["a"].ended_at_ms, Some(1_005_000));
    again.step(
        finished("b", 1, "n1", Ok(json!("B"))),
        t1 + Duration::from_millis(20),
    );
    let st = again.status();
    assert_eq!(st.submitted_at_ms, 1_000_000);
    assert_eq!(st.elapsed_ms, Some(5_020));
}

/// A refused resume changes nothing; results, timers, losses, sub-work, cancel and resume
/// are journaled, the rest is not.
#[test]
fn a_resume_is_checked_before_it_is_fed_and_what_is_journaled() {
    let mut r = run(JobSpec::new("n").step(StepSpec::new("a", "t")));
    r.step(Input::Start, now());
    assert!(matches!(
        r.check_resume("a"),
        Err(JobQueryError::Conflict(_))
    ));
    assert!(matches!(
        r.check_resume("zz"),
        Err(JobQueryError::NotFound(_))
    ));
    assert!(
        r.step(resume("a"), now()).is_empty(),
        "a refused resume does nothing"
    );
    assert_eq!(r.status().steps["a"].attempts, 1);
    assert!(!Input::Start.is_journaled());
    assert!(!assigned("a", 1, "n").is_journaled());
    assert!(Input::NodeLost { node: "n".into() }.is_journaled());
    assert!(finished("a", 1, "n", Ok(json!(1))).is_journaled());
    assert!(resume("a").is_journaled());
}

trait MaxRunning {
    fn max_running(self) -> JobState;
}
impl MaxRunning for JobState {
    /// After a resume, a job that had started is running again.
    fn max_running(self) -> JobState {
        JobState::Running
    }
}

/// Random dependency lists made into a DAG by construction: step `i` may depend only on
/// earlier steps (an index `d` becomes `d % i`), so the first step has none. The bool says
/// whether the dependency is required.
/// Step `s{i}` of a random plan: task `t`, its dependencies (`true`: required), an
/// optional condition and an optional fan-out over `0..k`.
fn random_step(
    i: usize,
    deps: &[(usize, bool)],
    condition: Option<bool>,
    fan: Option<usize>,
) -> StepSpec {
    let mut s = StepSpec::new(format!("s{i}"), "t");
    for &(d, required) in deps {
        if required {
            s = s.after([format!("s{d}")]);
        } else {
            s = s.optional([format!("s{d}")]);
        }
    }
    if let Some(c) = condition {
        s = s.when(c.to_string());
    }
    if let Some(k) = fan {
        s = s.for_each(format!("{:?}", (0..k).collect::<Vec<_>>()));
    }
    s
}

fn earlier_deps(raw: Vec<Vec<(usize, bool)>>) -> Vec<Vec<(usize, bool)>> {
    raw.into_iter()
        .enumerate()
        .map(|(i, ds)| {
            if i == 0 {
                vec![]
            } else {
                ds.into_iter().map(|(d, r)| (d % i, r)).collect()
            }
        })
        .collect()
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Plan {
        deps: Vec<Vec<(usize, bool)>>,
        conditions: Vec<Option<bool>>,
        fan: Vec<Option<usize>>,
        outcomes: Vec<u8>,
        max_attempts: u32,
    }

    fn plans() -> impl Strategy<Value = Plan> {
        (2usize..12, 1u32..4).prop_flat_map(|(n, max_attempts)| {
            (
                proptest::collection::vec(
                    proptest::collection::vec((0usize..64, any::<bool>()), 0..3),
                    n,
                ),
                proptest::collection::vec(proptest::option::weighted(0.3, any::<bool>()), n),
                proptest::collection::vec(proptest::option::weighted(0.2, 0usize..4), n),
                proptest::collection::vec(any::<u8>(), 64),
                Just(max_attempts),
            )
                .prop_map(move |(raw, conditions, fan, outcomes, max_attempts)| Plan {
                    // Only edges to earlier steps: a DAG by construction.
                    deps: earlier_deps(raw),
                    conditions,
                    fan,
                    outcomes,
                    max_attempts,
                })
        })
    }

    fn spec_of(p: &Plan) -> JobSpec {
        let mut j = JobSpec::new("prop");
        j.retry = RetryPolicy {
            max_attempts: p.max_attempts,
            backoff_ms: 1,
        };
        for (i, ds) in p.deps.iter().enumerate() {
            let s = random_step(i, ds, p.conditions[i], p.fan[i]);
            j = j.step(s);
        }
        j
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn every_job_ends_and_respects_its_rules(p in plans()) {
            let spec = spec_of(&p);
            let graph = validate(&spec).unwrap();
            let mut r = JobRun::new("p".into(), spec.clone(), graph);
            let mut queue: VecDeque<Action> = r.step(Input::Start, now()).into();
            // Steps can succeed without a dispatch (an empty for_each), so read the states.
            let mut succeeded: HashSet<String> = r.status().steps.iter()
                .filter(|(_, s)| s.state == StepState::Succeeded).map(|(k, _)| k.clone()).collect();
            let mut step = 0usize;
            while let Some(a) = queue.pop_front() {
                step += 1;
                prop_assert!(step < 100_000, "does not terminate");
                match a {
                    Action::Dispatch(d) => {
                        let base = d.step.split('[').next().unwrap().to_string();
                        let i: usize = base[1..].parse().unwrap();
                        // Never before its required dependencies succeeded.
                        for &(dep, required) in &p.deps[i] {
                            if required {
                                prop_assert!(succeeded.contains(&format!("s{dep}")), "{} ran before s{dep}", d.step);
                            }
                        }
                        // Skipped steps never run.
                        prop_assert!(p.conditions[i] != Some(false));
                        prop_assert!(d.attempt <= p.max_attempts, "retries exceed the policy");
                        let o = p.outcomes[(i * 7 + d.attempt as usize) % p.outcomes.len()];
                        let result = match o % 10 {
                            0 => Err(TaskError::permanent("p")),
                            1 | 2 => Err(TaskError::transient("t")),
                            _ => Ok(json!(d.input)),
                        };
                        let ok = result.is_ok();
                        queue.extend(r.step(assigned(&d.step, d.attempt, "n"), now()));
                        let next = r.step(finished(&d.step, d.attempt, "n", result), now());
                        if ok && !d.step.contains('[') {
                            succeeded.insert(d.step.clone());
                        }
                        // A fan-out parent succeeds when its items do; record it.
                        for s in r.status().steps.iter().filter(|(_, s)| s.state == StepState::Succeeded) {
                            succeeded.insert(s.0.clone());
                        }
                        queue.extend(next);
                    }
                    Action::RetryLater { step, attempt, .. } => queue.extend(r.step(retry_due(&step, attempt), now())),
                    _ => {}
                }
            }
            let st = r.status();
            prop_assert!(st.state.is_terminal(), "ended {:?}", st.state);
            for (id, s) in &st.steps {
                prop_assert!(s.state.is_terminal(), "{id} is {:?}", s.state);
                if let Some(k) = id.strip_prefix('s').filter(|k| !k.contains('[')) {
                    let i: usize = k.parse().unwrap();
                    if p.conditions[i] == Some(false) {
                        prop_assert_ne!(s.state, StepState::Succeeded);
                        prop_assert_eq!(s.attempts, 0);
                    }
                    if s.state == StepState::Succeeded {
                        if let Some(n) = p.fan[i] {
                            // Items come back in item order: each echoed its item.
                            let want: Vec<Value> = (0..n).map(|x| json!(x)).collect();
                            let got = r.status().steps.get(id).map(|_| ());
                            prop_assert!(got.is_some());
                            let out = &r_outputs(&r, id);
                            prop_assert_eq!(out, &Value::Array(want));
                        }
                    }
                }
            }
            prop_assert_eq!(st.state == JobState::Succeeded, st.steps.values().all(|s| s.state != StepState::Failed));
        }
    }

    fn r_outputs(r: &JobRun, id: &str) -> Value {
        r.steps[r.by_id[id]].output.clone().unwrap_or(Value::Null)
    }
}

mod histories;
