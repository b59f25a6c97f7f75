//! Job control on real processes: conditions, optional dependencies, fan-out, re-entrant
//! calls, recursive sub-jobs, needs-action and resume, cancellation, background jobs.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use troupe_integration::{texts, Cluster};
use troupe_runtime::{JobSpec, JobState, StepSpec, StepState};

#[tokio::test]
async fn conditions_skip_steps_and_optional_dependencies_do_not_block() {
    let c = Cluster::start(3);
    c.ready().await;
    let f = c.job_file(
        "social.toml",
        r#"
name = "social"
input = { accounts = { facebook = "fb-1" } }
[[steps]]
id = "facebook"
task = "troupe.echo"
input = { value = 5 }
when = "has(input.accounts.facebook)"
[[steps]]
id = "twitter"
task = "troupe.echo"
input = { value = 100 }
when = "has(input.accounts.twitter)"
[[steps]]
id = "big"
task = "troupe.echo"
after = ["facebook"]
when = "steps.facebook.output.value > 3"
input = { value = 10 }
[[steps]]
id = "aggregate"
task = "troupe.sum"
after = ["facebook", "big"]
optional = ["twitter"]
"#,
    );
    let (code, st, stderr) = c.submit_wait(&f, &[]);
    assert_eq!(code, Some(0), "{st}\n{stderr}");
    assert_eq!(st["steps"]["twitter"]["state"], "skipped");
    assert_eq!(st["steps"]["twitter"]["attempts"], 0);
    assert_eq!(st["steps"]["big"]["state"], "succeeded");
    assert_eq!(
        st["output"],
        json!(15),
        "twitter did not count, the aggregate ran without it"
    );

    // With a twitter account, the aggregate waits for it and counts it.
    let (code, st, _) = c.submit_wait(
        &f,
        &[
            "--input",
            r#"{"accounts": {"facebook": "f", "twitter": "t"}}"#,
        ],
    );
    assert_eq!(code, Some(0));
    assert_eq!(st["output"], json!(115));
}

#[tokio::test]
async fn for_each_fans_out_across_nodes_and_joins_in_item_order() {
    let c = Cluster::start(3);
    c.ready().await;
    let client = c.client().await;
    let items: Vec<Value> = (0..30).map(|i| json!({"value": i})).collect();
    let spec = JobSpec::new("fan")
        .with_input(json!({"items": items}))
        .step(StepSpec::new("each", "troupe.echo").for_each("input.items"))
        .step(StepSpec::new("where", "troupe.node").for_each("[1, 2, 3, 4, 5, 6]"))
        .step(StepSpec::new("total", "troupe.sum").after(["each"]));
    let st = client.submit(spec).await.unwrap().wait().await.unwrap();
    assert_eq!(st.state, JobState::Succeeded, "{st:?}");
    assert_eq!(
        st.output.as_ref().unwrap()["total"],
        json!((0..30).sum::<i64>())
    );
    assert_eq!(st.steps["each[7]"].state, StepState::Succeeded);
    let nodes: std::collections::BTreeSet<_> = (0..30)
        .filter_map(|i| st.steps[&format!("each[{i}]")].node.clone())
        .collect();
    assert!(nodes.len() >= 2, "items ran on {nodes:?}");

    // The ordered distributed map of the handle: outputs in input order.
    let out = client
        .dmap("troupe.echo", (0..20).map(|i| json!(i)).collect())
        .await
        .unwrap();
    assert_eq!(
        out.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>(),
        (0..20).map(|i| json!(i)).collect::<Vec<_>>()
    );
    assert!(out.iter().all(|(_, n)| n.starts_with('n')));
}

#[tokio::test]
async fn fib_14_by_reentrant_calls_on_one_slot_nodes() {
    let mut c = Cluster::plan(3);
    c.slots = 1;
    for i in 0..3 {
        c.start_node(i);
    }
    c.ready().await;
    let client = c.client().await;
    let t = Instant::now();
    // Without memoization (cache and merging off): 1219 calls, each a child step of its caller,
    // on one slot per node: callers give their slot back while they wait.
    let mut spec =
        JobSpec::new("fib").step(StepSpec::new("fib", "troupe.fib").input(json!({"n": 14})));
    spec.cache = troupe_runtime::merge::CacheMode::Off;
    let st = client
        .submit(spec.clone())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(st.state, JobState::Succeeded, "{:?}", st.error);
    assert_eq!(st.output, Some(json!(377)));
    assert_eq!(st.steps.len(), 1219);
    assert_eq!(st.stats.executions, 1219);
    assert!(st.steps.contains_key("fib/call-0"));
    eprintln!(
        "fib(14) on 3 one-slot nodes, no memoization: {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn recursive_sub_jobs_of_depth_5_and_fanout_4_on_two_slots() {
    let mut c = Cluster::plan(1);
    c.slots = 2;
    c.start_node(0);
    c.ready().await;
    let f = c.job_file(
        "tree.toml",
        "[[steps]]\nid = \"t\"\ntask = \"troupe.tree\"\ninput = { depth = 5, fanout = 4 }\n",
    );
    let (code, st, stderr) = c.submit_wait(&f, &["--timeout", "120"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(st["output"], json!(1 + 4 + 16 + 64 + 256 + 1024));
    let steps = st["steps"].as_object().unwrap();
    assert_eq!(steps.len(), 1365, "the status shows the whole tree");
    assert!(steps.contains_key("t/tree"), "sub-job steps are STEP/CHILD");
    assert!(
        steps.keys().any(|k| k.matches('/').count() == 5),
        "five levels deep"
    );
}

#[tokio::test]
async fn a_step_that_needs_action_waits_for_resume() {
    let c = Cluster::start(2);
    c.ready().await;
    let f = c.job_file(
        "oauth.toml",
        "[[steps]]\nid = \"token\"\ntask = \"troupe.needs_action\"\ninput = { message = \"re-link your Twitter account\" }\n[[steps]]\nid = \"after\"\ntask = \"troupe.sum\"\ninput = { add = 2 }\nafter = [\"token\"]\n",
    );
    let out = c.cli(&["submit", &f], true);
    let id = texts(&out).0.trim().to_string();
    let mut st = Value::Null;
    for _ in 0..200 {
        st = serde_json::from_str(&texts(&c.cli(&["status", &id], true)).0).unwrap();
        if st["state"] == "waiting_for_user" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(st["state"], "waiting_for_user", "{st}");
    assert_eq!(st["steps"]["token"]["state"], "waiting_for_user");
    assert_eq!(
        st["steps"]["token"]["message"],
        "re-link your Twitter account"
    );
    assert_eq!(st["steps"]["after"]["state"], "pending");

    // Resuming a step that does not wait is refused.
    let out = c.cli(&["resume", &id, "after"], true);
    assert_eq!(out.status.code(), Some(2), "{}", texts(&out).1);

    let out = c.cli(&["resume", &id, "token"], true);
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    let client = c.client().await;
    let st = client.watch(&id).await.unwrap().wait().await.unwrap();
    assert_eq!(st.state, JobState::Succeeded, "{st:?}");
    assert_eq!(st.steps["token"].attempts, 2);
    assert_eq!(st.output, Some(json!(2)));
}

#[tokio::test]
async fn cancel_reaches_tasks_running_on_other_nodes() {
    let c = Cluster::start(3);
    c.ready().await;
    let client = c.client_via(&[0]).await;
    let spec = (0..6).fold(JobSpec::new("long"), |j, i| {
        j.step(StepSpec::new(format!("s{i}"), "troupe.sleep").input(json!({"ms": 60_000})))
    });
    let mut h = client.submit(spec).await.unwrap();
    // Wait until every step runs, on all three nodes.
    let start = Instant::now();
    loop {
        let st = h.status().await.unwrap();
        if st.steps.values().all(|s| s.state == StepState::Running) {
            let nodes: std::collections::BTreeSet<_> =
                st.steps.values().filter_map(|s| s.node.clone()).collect();
            assert_eq!(nodes.len(), 3, "{nodes:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy =
        |nodes: &[troupe_runtime::protocol::NodeInfo]| nodes.iter().map(|n| n.busy).sum::<u32>();
    // Node load is gossiped every 0.5 s: wait until all six busy slots show.
    let start = Instant::now();
    while busy(&client.nodes().await.unwrap()) != 6 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "six sleeping tasks hold six slots"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = c.cli(&["cancel", h.id()], true);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let st: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(st["state"], "cancelled");
    // The cancel was answered once its end was confirmed: the status says so too.
    assert_eq!(h.status().await.unwrap().state, JobState::Cancelled);
    let fin = h.wait().await.unwrap();
    assert_eq!(fin.state, JobState::Cancelled);
    assert!(fin.steps.values().all(|s| s.state == StepState::Cancelled));
    // The sleeping tasks were stopped: every slot is free again (gossip refreshes in 0.5 s).
    let start = Instant::now();
    loop {
        if busy(&client.nodes().await.unwrap()) == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "tasks still hold their slots"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn bad_conditions_and_lists_are_refused_before_the_job_runs() {
    let c = Cluster::start(1);
    c.ready().await;
    let cases = [
        ("when = \"has(input.\"", "\"a\"", "has(input."),
        ("for_each = \"{'k': 1}\"", "not a list", "for_each"),
        ("for_each = \"[1, 2\"", "does not parse", "[1, 2"),
        ("for_each = \"range(0)\"", "\"a\"", "for_each"),
    ];
    for (line, want1, want2) in cases {
        let f = c.job_file(
            "bad.toml",
            &format!("[[steps]]\nid = \"a\"\ntask = \"troupe.echo\"\n{line}\n"),
        );
        let out = c.cli(&["submit", &f, "--wait"], true);
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(2), "{line}: {stderr}");
        assert!(
            stderr.contains(want1) && stderr.contains(want2),
            "{line}: {stderr}"
        );
    }
    // 100,000 items: refused with the limit named, nothing crashes.
    let items = format!("[{}]", vec!["1"; 100_000].join(","));
    let f = c.job_file("huge.json", &format!(r#"{{"input": {items}, "steps": [{{"id": "a", "task": "troupe.echo", "for_each": "input"}}]}}"#));
    let out = c.cli(&["submit", &f, "--wait"], true);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("100000") && stderr.contains("max_for_each_items"),
        "{stderr}"
    );
    let (code, st, _) = c.submit_wait(
        &c.job_file(
            "ok.toml",
            "[[steps]]\nid = \"a\"\ntask = \"troupe.echo\"\nfor_each = \"[1]\"\n",
        ),
        &[],
    );
    assert_eq!(code, Some(0), "{st}");
}

#[tokio::test]
async fn background_jobs_many_in_flight_followed_by_another_client() {
    let c = Cluster::start(3);
    c.ready().await;
    let ids: Vec<String> = {
        let client = c.client_via(&[0]).await;
        let mut handles = Vec::new();
        for i in 0..20 {
            let spec = JobSpec::new("bg")
                .step(StepSpec::new("s", "troupe.sleep").input(json!({"ms": 100 + i})));
            handles.push(client.submit(spec).await.unwrap());
        }
        handles.iter().map(|h| h.id().to_string()).collect()
        // The submitting client disconnects here.
    };
    let other = c.client_via(&[2]).await;
    for (i, id) in ids.iter().enumerate() {
        let st = other.watch(id).await.unwrap().wait().await.unwrap();
        assert_eq!(st.state, JobState::Succeeded);
        assert_eq!(st.output.unwrap()["ms"], json!(100 + i));
    }
}

/// One-step jobs share the light path's one supervising actor (`light_jobs`); each keeps
/// its own job: outputs, retries, time limits, cancels and re-entrant calls, with many of
/// them in flight at once.
#[tokio::test]
async fn one_step_jobs_on_the_light_path_keep_each_their_own_behaviour() {
    let c = Cluster::start(2);
    c.ready().await;
    let client = c.client_via(&[0]).await;
    let echo =
        |i: u32| JobSpec::new("e").step(StepSpec::new("s", "troupe.echo").input(json!({"i": i})));
    let quick = |attempts| troupe_runtime::job::spec::RetryPolicy {
        max_attempts: attempts,
        backoff_ms: 10,
    };
    let flaky = JobSpec::new("f").step(
        StepSpec::new("s", "troupe.flaky")
            .input(json!({"fail_times": 2}))
            .retry(quick(3)),
    );
    let slow = JobSpec::new("t").step(
        StepSpec::new("s", "troupe.sleep")
            .input(json!({"ms": 60_000}))
            .timeout_ms(200)
            .retry(quick(1)),
    );
    let long =
        JobSpec::new("c").step(StepSpec::new("s", "troupe.sleep").input(json!({"ms": 60_000})));
    let fib = JobSpec::new("fib").step(StepSpec::new("s", "troupe.fib").input(json!({"n": 8})));

    let mut cancelled = client.submit(long).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..200 {
        handles.push((i, client.submit(echo(i)).await.unwrap()));
    }
    let mut flaky = client.submit(flaky).await.unwrap();
    let mut slow = client.submit(slow).await.unwrap();
    let mut fib = client.submit(fib).await.unwrap();
    for (i, h) in &mut handles {
        let st = h.wait().await.unwrap();
        assert_eq!(st.state, JobState::Succeeded, "{st:?}");
        assert_eq!(
            st.output,
            Some(json!({"i": *i})),
            "each job has its own output"
        );
        assert_eq!(st.steps["s"].attempts, 1);
    }
    let st = flaky.wait().await.unwrap();
    assert_eq!(st.state, JobState::Succeeded, "{st:?}");
    assert_eq!(st.steps["s"].attempts, 3, "retried twice: {st:?}");
    let st = slow.wait().await.unwrap();
    assert_eq!(st.state, JobState::Failed, "{st:?}");
    assert!(
        st.error.as_deref().unwrap_or_default().contains("time"),
        "failed on its time limit: {st:?}"
    );
    let st = fib.wait().await.unwrap();
    assert_eq!(st.state, JobState::Succeeded, "{st:?}");
    assert_eq!(st.output, Some(json!(21)), "fib(8) by re-entrant calls");
    // Still running after all that: cancel it.
    assert_eq!(cancelled.status().await.unwrap().state, JobState::Running);
    let out = c.cli(&["cancel", cancelled.id()], true);
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    let st = cancelled.wait().await.unwrap();
    assert_eq!(st.state, JobState::Cancelled, "{st:?}");
    // A finished light job's status is answered from any node.
    let other = c.client_via(&[1]).await;
    let id = handles[7].1.id().to_string();
    let st = other.watch(&id).await.unwrap().wait().await.unwrap();
    assert_eq!(st.output, Some(json!({"i": 7})));
}
