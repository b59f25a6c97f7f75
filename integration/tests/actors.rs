//! Keyed actors on real node processes: exactly-once counting from several clients, a
//! persistent actor's state after kill -9 of its host, restarts of a panicking handler,
//! and one activation per key while a node joins.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use troupe_integration::{
    cargo_bin, core_formed, run_with_timeout, start_with_core, texts, Cluster,
};
use troupe_runtime::actor::ActivationInfo;
use troupe_runtime::Client;

/// Runs an `actor-client` process through node `via` only, adding 1 `adds` times to each
/// of `keys`; returns its JSON summary (on a thread, so several run at once).
fn actor_client(
    c: &Cluster,
    via: usize,
    keys: &[String],
    adds: usize,
) -> std::thread::JoinHandle<Value> {
    let exe = cargo_bin("troupe-integration", "actor-client");
    let mut cmd = Command::new(exe);
    cmd.args([
        &c.addrs[via],
        &c.cookie,
        "troupe.counter",
        &keys.join(","),
        &adds.to_string(),
    ]);
    std::thread::spawn(move || {
        let out = run_with_timeout(cmd, Duration::from_secs(120));
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "actor-client failed: {stderr}");
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    })
}

async fn total(client: &Client, key: &str) -> i64 {
    let v = client
        .call_actor("troupe.counter", key, json!({"op": "get"}))
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"));
    v["total"].as_i64().expect("a total")
}

fn activations_of<'a>(list: &'a [ActivationInfo], key: &str) -> Vec<&'a ActivationInfo> {
    list.iter()
        .filter(|a| a.actor_type == "troupe.counter" && a.key == key)
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_thousand_adds_from_three_clients_on_three_nodes_count_exactly_once() {
    let (c, client) = start_with_core(3, &[]).await;
    let key = vec!["shared".to_string()];
    let runs: Vec<_> = [(0, 334), (1, 333), (2, 333)]
        .into_iter()
        .map(|(via, adds)| actor_client(&c, via, &key, adds))
        .collect();
    let mut acked = 0;
    for r in runs {
        let v = r.join().expect("client thread");
        assert_eq!(v["errors"], json!([]), "{v}");
        acked += v["acked"].as_u64().expect("acked");
    }
    assert_eq!(acked, 1000);
    assert_eq!(total(&client, "shared").await, 1000);
    let list = client.actors().await.expect("actors");
    let here = activations_of(&list, "shared");
    assert_eq!(here.len(), 1, "{list:?}");
    assert_eq!(here[0].handled, 1001, "{list:?}");
    // The CLI's view of the same.
    let out = c.cli(&["actors", "--json"], true);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let row = v["actors"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["key"] == "shared"))
        .cloned()
        .unwrap_or_else(|| panic!("no row for the key: {v}"));
    assert_eq!(row["type"], "troupe.counter");
    assert_eq!(row["node"], json!(here[0].node));
    assert!(row["epoch"].as_u64().is_some(), "{row}");
}

#[tokio::test(flavor = "current_thread")]
async fn kill_9_of_a_persistent_counters_host_loses_no_acknowledged_add() {
    // Four nodes: the core group is n1-n3, and the counter's key is one that n4 owns, so
    // the kill tests the actor's failover alone. (When the host is also the core group's
    // leader, the new activation waits for a Raft election too: the actors benchmark
    // measures that case.)
    let (mut c, client) = start_with_core(4, &[]).await;
    let key = key_owned_by("n4", "durable");
    let key = key.as_str();
    for i in 1..=50 {
        let v = client
            .call_actor("troupe.counter", key, json!({"op": "add", "n": 1}))
            .await
            .expect("add");
        assert_eq!(v["total"], i);
    }
    let list = client.actors().await.expect("actors");
    let before = activations_of(&list, key)[0].clone();
    assert_eq!(before.node, "n4", "{list:?}");
    let host = 3;
    c.node(host).kill();
    let killed = Instant::now();
    // `get` through another node, by the command line.
    let other = 1;
    let out = c.cli(
        &[
            "call",
            "--seeds",
            &c.addrs[other],
            "--cookie",
            &c.cookie,
            "troupe.counter",
            key,
            r#"{"op": "get"}"#,
        ],
        false,
    );
    let took = killed.elapsed();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).expect("reply JSON");
    assert_eq!(v, json!({"total": 50}), "an acknowledged add was lost");
    eprintln!("first reply {took:?} after the kill of {}", before.node);
    assert!(
        took < Duration::from_secs(3),
        "the reply took {took:?}: more than failure detection (2 s) + 1 s"
    );
    let list = client.actors().await.expect("actors");
    let after = activations_of(&list, key);
    assert_eq!(after.len(), 1, "{list:?}");
    assert_ne!(after[0].node, before.node);
    assert!(after[0].epoch > before.epoch, "{after:?} vs {before:?}");
}

/// A key of `troupe.counter` whose owner among n1..n4 is `node`.
fn key_owned_by(node: &str, prefix: &str) -> String {
    troupe_integration::key_owned_by("troupe.counter", node, &["n1", "n2", "n3", "n4"], prefix)
}

/// A job step's message to an actor is applied once across the step's attempts. The
/// first attempt's message waits in the counter's activation behind a slow message when
/// the job's owner (where that attempt runs) is killed; the job is taken over and the
/// step runs again, and both attempts' messages reach the counter. It counts one add
/// (every attempt of a step is a try of one call), and the job answers that add's total.
#[tokio::test(flavor = "current_thread")]
async fn an_actor_step_run_again_after_its_owner_died_is_applied_once() {
    let (mut c, client) =
        start_with_core(4, &[("TROUPE_FAILURE__TAKEOVER_AFTER_MS", "1500")]).await;
    // The counter on n1; the job on n4 (submitted through n4 alone, so n4 owns it).
    let key = key_owned_by("n1", "once");
    let v = client
        .call_actor("troupe.counter", &key, json!({"op": "add", "n": 100}))
        .await
        .expect("add 100");
    assert_eq!(v["total"], 100);
    // Holds the activation 4 s: the sleep's output is not a number, so it is refused
    // after it, and changes nothing.
    let slow = {
        let client = client.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let slow = json!({"op": "add_from", "task": "troupe.sleep", "input": {"ms": 4000}});
            client.call_actor("troupe.counter", &key, slow).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let via_n4 = c.client_via(&[3]).await;
    let job = troupe_runtime::JobSpec::new("add once").step(troupe_runtime::StepSpec::actor(
        "add",
        "troupe.counter",
        &key,
        json!({"op": "add", "n": 1}),
    ));
    let id = via_n4.submit(job).await.expect("submit").id().to_string();
    assert!(id.starts_with("n4-"), "job {id} is not n4's");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = client.status(&id).await.expect("status");
        if st.steps["add"].state == troupe_runtime::StepState::Running {
            break;
        }
        assert!(Instant::now() < deadline, "step add never ran: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its message is at the counter's activation by now, behind the slow one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.node(3).kill();
    drop(via_n4);
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        if let Ok(st) = client.status(&id).await {
            if st.state.is_terminal() {
                break st;
            }
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not end after its owner died"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        slow.await.expect("the slow call's task").is_err(),
        "the slow message was applied"
    );
    assert_eq!(
        st.state,
        troupe_runtime::JobState::Succeeded,
        "job {id}: {st:?}"
    );
    assert_eq!(
        total(&client, &key).await,
        101,
        "the step's add was applied more than once (or not at all)"
    );
    assert_eq!(st.output, Some(json!({"total": 101})), "job {id}'s answer");
}

#[tokio::test(flavor = "current_thread")]
async fn sigterm_hands_a_nodes_actors_off_and_loses_no_acknowledged_add() {
    let (mut c, client) = start_with_core(4, &[]).await;
    let key = key_owned_by("n4", "leaving");
    for i in 1..=30 {
        let v = client
            .call_actor("troupe.counter", &key, json!({"op": "add", "n": 1}))
            .await
            .expect("add");
        assert_eq!(v["total"], i);
    }
    let before = client.actors().await.expect("actors");
    assert_eq!(activations_of(&before, &key)[0].node, "n4");
    // SIGTERM: the node drains, handing its activation off before it exits.
    let st = c.node(3).stop(Duration::from_secs(15));
    assert!(
        st.is_some_and(|s| s.success()),
        "n4 did not exit cleanly: {st:?}"
    );
    assert!(c.log(3).contains("actors handed off"), "{}", c.log(3));
    let v = client
        .call_actor("troupe.counter", &key, json!({"op": "get"}))
        .await
        .expect("get after the leave");
    assert_eq!(v, json!({"total": 30}));
    let after = client.actors().await.expect("actors");
    let now = activations_of(&after, &key);
    assert_eq!(now.len(), 1, "{after:?}");
    assert_ne!(now[0].node, "n4");
    // Handed off, not taken over from a node seen down.
    for i in 0..3 {
        assert!(
            !c.log(i).contains("taking over an actor whose node is down"),
            "n{} took the actor over instead: {}",
            i + 1,
            c.log(i)
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_panicking_handler_restarts_with_its_state_until_it_restarts_too_often() {
    let (c, _client) = start_with_core(
        3,
        &[
            ("TROUPE_ACTORS__STOPPED_FOR_MS", "2000"),
            ("TROUPE_ACTORS__IDLE_MS", "1500"),
        ],
    )
    .await;
    let call = |msg: &str| {
        let out = c.cli(&["call", "troupe.counter", "p", msg], true);
        let (stdout, stderr) = texts(&out);
        (out.status.code(), stdout.trim().to_string(), stderr)
    };
    assert_eq!(call(r#"{"op":"add","n":5}"#).1, r#"{"total":5}"#);
    // Three panics within the window are restarts (actors.max_restarts = 3): each caller
    // gets an error (exit 1), and the state survives.
    for i in 0..3 {
        let (code, _, stderr) = call(r#"{"op":"panic"}"#);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("panicked") && stderr.contains("restarted"),
            "{stderr}"
        );
        assert_eq!(
            call(r#"{"op":"add","n":1}"#).1,
            format!(r#"{{"total":{}}}"#, 6 + i)
        );
    }
    // A message that does not fit is bad input, not a failure.
    let (code, _, stderr) = call(r#"{"op":"multiply"}"#);
    assert_eq!(code, Some(2), "{stderr}");
    // The fourth panic within the window stops the actor.
    let (code, _, stderr) = call(r#"{"op":"panic"}"#);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    let (code, _, stderr) = call(r#"{"op":"get"}"#);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is stopped"), "{stderr}");
    // After actors.stopped_for_ms it is activated again, from its saved state.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(call(r#"{"op":"get"}"#).1, r#"{"total":8}"#);
    // Idle for actors.idle_ms (1.5 s here), it is deactivated; the next message
    // activates it again, from its saved state.
    let listed = || {
        let out = c.cli(&["actors", "--json"], true);
        let v: Value = serde_json::from_slice(&out.stdout).expect("actors JSON");
        v["actors"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["key"] == "p").count())
            .unwrap_or_default()
    };
    assert_eq!(listed(), 1);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(listed(), 0, "the idle actor is still active");
    assert_eq!(call(r#"{"op":"get"}"#).1, r#"{"total":8}"#);
    assert_eq!(listed(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn clients_racing_to_activate_keys_while_a_node_joins_get_one_activation_each() {
    let mut c = Cluster::plan(4);
    for i in 0..3 {
        c.start_node(i);
    }
    let client = c.client_via(&[0, 1, 2]).await;
    client
        .wait_for_nodes(3, Duration::from_secs(20))
        .await
        .expect("three nodes");
    core_formed(3).await;
    let keys: Vec<String> = (0..48).map(|i| format!("race-{i}")).collect();
    // A client through n4 waits for n4 and starts the moment n4 answers, while n4 does
    // not see the others yet; one through n1 activates the same new keys meanwhile.
    let through_n4 = actor_client(&c, 3, &keys, 5);
    c.start_node(3);
    let through_n1 = actor_client(&c, 0, &keys, 5);
    for r in [through_n1, through_n4] {
        let v = r.join().expect("client thread");
        assert_eq!(v["errors"], json!([]), "{v}");
        assert_eq!(v["acked"], 5 * keys.len(), "{v}");
    }
    // Two activations of one key would each have counted from their own state: every
    // total would fall short of 10.
    for k in &keys {
        assert_eq!(total(&client, k).await, 10, "key {k}");
    }
    let list = client.actors().await.expect("actors");
    for k in &keys {
        assert!(activations_of(&list, k).len() <= 1, "{k}: {list:?}");
    }
    // Some keys moved to (or were first activated on) the node that joined.
    assert!(
        list.iter().any(|a| a.node == "n4"),
        "no key is on n4: {list:?}"
    );
    // Views that disagree, forced: every host is handed messages for the same new keys
    // at once, each told to handle them itself (as a host does once a message has used up
    // its hops). Only the core group's lease keeps them from all activating the key.
    let hosts = troupe_runtime::actor::route::hosts("troupe.counter");
    assert!(hosts.len() >= 3, "{} hosts seen", hosts.len());
    let forced: Vec<String> = (0..16).map(|i| format!("forced-{i}")).collect();
    let sends = forced.iter().flat_map(|k| {
        hosts.iter().map(move |(_, host)| async move {
            for _ in 0..3 {
                let env = troupe_runtime::protocol::ActorEnvelope {
                    actor_type: "troupe.counter".into(),
                    key: k.clone(),
                    message: json!({"op": "add", "n": 1}),
                    hops: troupe_runtime::protocol::MAX_ACTOR_HOPS,
                    wait_ms: None,
                    call_id: None,
                    sent_ms: None,
                };
                // An activation moving to n4 meanwhile answers "unavailable": try again
                // (that message was not applied).
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match troupe_runtime::actor::route::deliver(
                        host,
                        env.clone(),
                        Duration::from_secs(30),
                    )
                    .await
                    {
                        Ok(_) => break,
                        Err(e) if e.is_transient() && Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        Err(e) => panic!("{k}: {e}"),
                    }
                }
            }
        })
    });
    futures::future::join_all(sends).await;
    // At most one activation each (a key whose activation ran on a node that is not its
    // owner moves there within a second, so it may be between the two just now).
    let list = client.actors().await.expect("actors");
    for k in &forced {
        assert!(activations_of(&list, k).len() <= 1, "{k}: {list:?}");
    }
    for k in &forced {
        assert_eq!(total(&client, k).await, 3 * hosts.len() as i64, "key {k}");
    }
    // No activation ever ran beside another of its key: none was fenced by a newer one.
    for i in 0..4 {
        assert!(
            !c.log(i).contains("a newer activation exists"),
            "two activations of a key overlapped (n{} was fenced)",
            i + 1
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn job_steps_target_actors_and_bad_actor_input_gets_clear_errors() {
    let (c, _client) = start_with_core(3, &[]).await;
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/jobs/counter.toml");
    for expected in [1, 2] {
        let st = c.submit_wait_via(1, file);
        assert_eq!(st["state"], "succeeded", "{st}");
        assert_eq!(st["output"], json!({ "total": expected }), "{st}");
    }
    // A `for_each` over messages: one message per item, to the same actor.
    let each = c.job_file(
        "each.json",
        r#"{"name": "each", "input": {"items": [{"op": "add", "n": 1}, {"op": "add", "n": 2}]},
            "steps": [{"id": "each", "actor": "troupe.counter", "key": "fe", "for_each": "input.items"}]}"#,
    );
    let st = c.submit_wait_via(0, &each);
    assert_eq!(st["state"], "succeeded", "{st}");
    let totals: Vec<i64> = st["output"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v["total"].as_i64()).collect())
        .unwrap_or_default();
    assert!(totals == [1, 3] || totals == [3, 2], "{st}");
    // A step naming an actor without a key, or both a task and an actor: exit 2.
    let no_key = c.job_file(
        "no_key.toml",
        "name = \"x\"\n[[steps]]\nid = \"a\"\nactor = \"troupe.counter\"\ninput = {op = \"get\"}\n",
    );
    let both = c.job_file(
        "both.toml",
        "name = \"x\"\n[[steps]]\nid = \"a\"\ntask = \"troupe.echo\"\nactor = \"troupe.counter\"\nkey = \"k\"\n",
    );
    for (f, says) in [(no_key, "no key"), (both, "both a task and an actor")] {
        let out = c.cli(&["submit", &f, "--wait"], true);
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
    // A step whose actor refuses fails the job with the refusal.
    let refused = c.job_file(
        "refused.toml",
        "name = \"x\"\n[[steps]]\nid = \"a\"\nactor = \"troupe.counter\"\nkey = \"k\"\ninput = {op = \"nonsense\"}\n",
    );
    let out = c.cli(&["submit", &refused, "--wait"], true);
    let (stdout, _) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("does not fit actor type troupe.counter"),
        "{stdout}"
    );
    // The command line: a message that is not JSON, an unknown type.
    let out = c.cli(&["call", "troupe.counter", "k", "{not json"], true);
    assert_eq!(out.status.code(), Some(2), "{:?}", texts(&out));
    let t = Instant::now();
    let out = c.cli(&["call", "no.such.type", "k", "{}"], true);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no node serves actor type"), "{stderr}");
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "took {:?}",
        t.elapsed()
    );
    c.assert_serves().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_handler_calls_tasks_and_other_actors_through_its_context() {
    let (_c, client) = start_with_core(3, &[]).await;
    let call = |key: &'static str, msg: Value| {
        let client = client.clone();
        async move { client.call_actor("troupe.counter", key, msg).await }
    };
    // A task, run as a one-step job by the handler.
    let v = call(
        "ctx-a",
        json!({"op": "add_from", "task": "troupe.sum", "input": {"add": 5}}),
    )
    .await
    .expect("add_from");
    assert_eq!(v, json!({"total": 5}));
    // A task that fails: the handler refuses, and the state is unchanged.
    let e = call(
        "ctx-a",
        json!({"op": "add_from", "task": "troupe.fail", "input": {"message": "no"}}),
    )
    .await
    .expect_err("refused");
    assert!(e.to_string().contains("refused"), "{e}");
    // Another actor, from the handler.
    let v = call(
        "ctx-a",
        json!({"op": "forward", "key": "ctx-b", "message": {"op": "add", "n": 3}}),
    )
    .await
    .expect("forward");
    assert_eq!(v, json!({"total": 3}));
    assert_eq!(total(&client, "ctx-b").await, 3);
    assert_eq!(total(&client, "ctx-a").await, 5);
}
