//! A cluster of real troupe-node processes forms from seed lists in any start order and
//! runs DAG jobs across its nodes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use troupe_integration::{texts, wordcount_node, Cluster};
use troupe_runtime::{JobSpec, JobState, StepSpec};

#[tokio::test]
async fn nodes_form_a_mesh_whatever_the_start_order() {
    let mut c = Cluster::plan(3);
    // n3 first, whose seeds are not up yet; then n1; n2 last.
    c.start_node(2);
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.start_node(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.start_node(1);

    // A client that knows only n1 still sees all three, each serving the built-in tasks.
    let client = c.client_via(&[0]).await;
    let nodes = client
        .wait_for_nodes(3, Duration::from_secs(15))
        .await
        .expect("3 nodes up");
    let names: BTreeSet<_> = nodes.iter().map(|n| n.name.clone()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["n1".into(), "n2".into(), "n3".into()])
    );

    let out = c.cli(&["nodes", "--json"], true);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("nodes --json is JSON");
    let list = v["nodes"].as_array().expect("nodes list");
    assert_eq!(list.len(), 3, "{v}");
    let names: Vec<&str> = list.iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["n1", "n2", "n3"], "nodes are listed by name");
    for n in list {
        assert_eq!(n["state"], "up", "{n}");
        assert!(
            n["tasks"]
                .as_array()
                .unwrap()
                .contains(&json!("troupe.echo")),
            "{n}"
        );
        assert_eq!(n["slots"], 2);
        assert!(n["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    // One log line per cluster event.
    let log = c.log(0);
    assert!(log.contains("node joined"), "{log}");
}

#[tokio::test]
async fn dag_job_through_the_handle_runs_on_several_nodes() {
    let c = Cluster::start(3);
    let client = c.client().await;
    client
        .wait_for_nodes(3, Duration::from_secs(15))
        .await
        .expect("3 nodes up");

    let mut job = JobSpec::new("fan");
    let mut fetches = Vec::new();
    for i in 0..6 {
        let id = format!("fetch-{i}");
        job = job.step(StepSpec::new(&id, "troupe.sleep").input(json!({"ms": 150})));
        fetches.push(id);
    }
    job = job
        .step(
            StepSpec::new("score", "troupe.echo")
                .input(json!({"value": 12}))
                .after(["fetch-0"]),
        )
        .step(
            StepSpec::new("total", "troupe.sum")
                .input(json!({"add": 30}))
                .after(["score"])
                .after(fetches.clone()),
        );
    let mut h = client.submit(job).await.expect("submit");
    assert!(
        h.id().starts_with("n"),
        "job ids name their owner: {}",
        h.id()
    );
    let mut saw_started = false;
    let status = loop {
        match h.next_event().await.expect("events until the end") {
            troupe_runtime::JobEvent::StepStarted { .. } => saw_started = true,
            troupe_runtime::JobEvent::JobFinished { status } => break *status,
            _ => {}
        }
    };
    assert!(saw_started, "the handle follows step events");
    assert_eq!(status.state, JobState::Succeeded, "{status:?}");
    // 12 from score; each sleep returns {"node","ms"}, which counts 0.
    assert_eq!(status.output, Some(json!(42)));
    let nodes: BTreeSet<_> = status
        .steps
        .values()
        .filter_map(|s| s.node.clone())
        .collect();
    assert!(nodes.len() >= 2, "steps ran on {nodes:?}");
    assert_eq!(status.steps.len(), 8);
    assert!(status.steps.values().all(|s| s.attempts == 1));

    // The status is there afterwards too, from any node.
    let again = c
        .client_via(&[2])
        .await
        .status(h.id())
        .await
        .expect("status from n3");
    assert_eq!(again.state, JobState::Succeeded);
    assert_eq!(again.output, Some(json!(42)));
}

#[tokio::test]
async fn a_node_started_after_submission_takes_the_work_only_it_can_do() {
    let mut c = Cluster::plan(3);
    // Long enough for the third node to come up while the submission waits.
    c.env = vec![("TROUPE_TASK_WAIT_MS".into(), "20000".into())];
    c.start_node(0);
    c.start_node(1);
    let client = c.client_via(&[0, 1]).await;
    client
        .wait_for_nodes(2, Duration::from_secs(15))
        .await
        .expect("2 nodes");

    let text = "the quick brown fox jumps over the lazy dog the end";
    let submit = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .submit(troupe_example_wordcount::job(text, 2, None))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // n3 is a user-built node binary serving the wordcount.* tasks.
    let spec = c.spec(2);
    c.start_with(2, wordcount_node(), &spec);
    let mut h = submit
        .await
        .expect("join")
        .expect("submitted once n3 served the tasks");
    let st = h.wait().await.expect("result");
    assert_eq!(st.state, JobState::Succeeded, "{st:?}");
    let out = st.output.expect("output");
    assert_eq!(out["total"], 11);
    assert_eq!(out["counts"]["the"], 3);
    for (id, s) in &st.steps {
        if s.task.starts_with("wordcount.") && s.attempts > 0 {
            assert_eq!(
                s.node.as_deref(),
                Some("n3"),
                "{id} ran on the only node serving it"
            );
        }
    }
}

#[tokio::test]
async fn sigterm_stops_a_node_cleanly() {
    let mut c = Cluster::start(1);
    let client = c.client().await;
    client
        .wait_for_nodes(1, Duration::from_secs(10))
        .await
        .expect("up");
    drop(client);
    c.node(0).signal(libc::SIGTERM);
    let st = c
        .node(0)
        .wait_exit(Duration::from_secs(8))
        .expect("exits after SIGTERM");
    assert!(st.success(), "exit status {st:?}");
    let log = c.log(0);
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );
    // The user learns how to cut the drain short.
    assert!(log.contains("send the signal again"), "{log}");
}
