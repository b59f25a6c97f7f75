//! The HTTP API of `--http`, on real node processes: every route, the event stream and
//! the Prometheus metrics.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use troupe_integration::http::{
    follow_events, get, metric, metric_sum, parse_metrics, post, wait_nodes_up,
};
use troupe_integration::Cluster;

/// Starts `n` nodes that all serve HTTP, and waits until node 0's API sees them all up.
fn http_cluster(n: usize) -> Cluster {
    let mut c = Cluster::plan(n);
    c.serve_http = true;
    c.env.push(("TROUPE_TASK_WAIT_MS".into(), "300".into()));
    for i in 0..n {
        c.start_node(i);
    }
    for i in 0..n {
        wait_nodes_up(&c.http_url(i), n);
    }
    c
}

fn submit(url: &str, job: &Value) -> String {
    let a = post(&format!("{url}/api/jobs"), &job.to_string());
    assert_eq!(a.status, 201, "{}", a.body);
    a.json()["id"].as_str().expect("id").to_string()
}

fn wait_state(url: &str, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = get(&format!("{url}/api/jobs/{id}"));
        assert_eq!(a.status, 200, "{}", a.body);
        let v = a.json();
        if v["state"] == state {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never reached {state}: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn error_of(a: &troupe_integration::http::Answer) -> String {
    assert!(
        a.content_type.starts_with("application/json"),
        "error answers are JSON, got {:?}: {}",
        a.content_type,
        a.body
    );
    a.json()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {}", a.body))
        .to_string()
}

#[test]
fn every_route_answers_for_the_whole_cluster() {
    let c = http_cluster(3);
    let (u1, u2, u3) = (c.http_url(0), c.http_url(1), c.http_url(2));

    // Actors, from any node, in the shape of `actors --json`.
    let out = c.cli(
        &["call", "troupe.counter", "web", r#"{"op":"add","n":2}"#],
        true,
    );
    assert!(out.status.success(), "{out:?}");
    let actors = get(&format!("{u3}/api/actors")).json();
    let row = actors["actors"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["key"] == "web"))
        .cloned()
        .unwrap_or_else(|| panic!("no activation listed: {actors}"));
    assert_eq!(row["type"], "troupe.counter");
    assert!(
        row["node"].as_str().is_some_and(|n| n.starts_with('n')),
        "{row}"
    );

    // Nodes, from any node, in the shape of `nodes --json`.
    let nodes = get(&format!("{u2}/api/nodes")).json();
    let mut names: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["n1", "n2", "n3"]);
    for n in nodes["nodes"].as_array().unwrap() {
        assert_eq!(n["slots"], 2);
        assert!(n["tasks"]
            .as_array()
            .unwrap()
            .contains(&json!("troupe.echo")));
        assert!(n["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    }

    // A job posted to n1 is owned by n1 and answered by n3.
    let chain = json!({"name": "http-chain", "input": {"add": 1}, "steps": [
        {"id": "a", "task": "troupe.echo", "input": {"value": 2}},
        {"id": "b", "task": "troupe.sum", "after": ["a"]}]});
    let first = submit(&u1, &chain);
    assert!(first.starts_with("n1-"), "{first}");
    let st = wait_state(&u3, &first, "succeeded");
    assert_eq!(st["output"], json!(3));
    assert_eq!(st["steps"]["b"]["after"], json!(["a"]));

    // A second job through the CLI on n2: the list from n3 has both, newest first.
    let file = c.job_file(
        "cli.toml",
        "name = \"from-cli\"\n[[steps]]\nid = \"x\"\ntask = \"troupe.echo\"\n",
    );
    let second = c.submit_wait_via(1, &file)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let page = get(&format!("{u3}/api/jobs")).json();
    let ids: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "{page}");
    assert_eq!(page["total"], 2);
    assert_eq!(page["jobs"][0]["owner"], "n2");
    assert_eq!(page["jobs"][0]["state"], "succeeded");
    assert_eq!(page["jobs"][1]["finished_steps"], 2);
    assert_eq!(page["unanswered"], json!([]));

    // Filters and pages.
    let ok = get(&format!("{u1}/api/jobs?state=succeeded")).json();
    assert_eq!(ok["total"], 2);
    let running = get(&format!("{u1}/api/jobs?state=running")).json();
    assert_eq!(running["jobs"], json!([]));
    let p1 = get(&format!("{u1}/api/jobs?limit=1")).json();
    assert_eq!(p1["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(p1["jobs"][0]["id"], second.as_str());
    assert_eq!(p1["total"], 2);
    let p2 = get(&format!("{u1}/api/jobs?limit=1&offset=1")).json();
    assert_eq!(p2["jobs"][0]["id"], first.as_str());

    // Bad requests: 400 with a JSON error that says what is wrong.
    for (query, says) in [
        ("state=bogus", "unknown state"),
        ("limit=0", "limit must be"),
        ("limit=abc", "limit must be"),
        ("offset=-1", "offset must be"),
        ("colour=red", "unknown parameter"),
    ] {
        let a = get(&format!("{u2}/api/jobs?{query}"));
        assert_eq!(a.status, 400, "{query}: {}", a.body);
        assert!(error_of(&a).contains(says), "{query}: {}", a.body);
    }
    for (body, says) in [
        ("{not json", "not a valid JSON job"),
        ("[1, 2]", "JSON object"),
        ("{\"steps\": 7}", "not a valid JSON job"),
        (
            r#"{"steps": [{"id": "a", "task": "troupe.echo", "after": ["b"]},
                          {"id": "b", "task": "troupe.echo", "after": ["a"]}]}"#,
            "cycle",
        ),
        (
            r#"{"steps": [{"id": "a", "task": "no.such.task"}]}"#,
            "no.such.task",
        ),
    ] {
        let a = post(&format!("{u1}/api/jobs"), body);
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert!(error_of(&a).contains(says), "{body}: {}", a.body);
    }

    // Unknown jobs and routes: 404 with a JSON error.
    for id in ["n1-1-999999", "n2-abc-1", "not-a-job-id!"] {
        let a = get(&format!("{u3}/api/jobs/{id}"));
        assert_eq!(a.status, 404, "{id}: {}", a.body);
        error_of(&a);
        let a = post(&format!("{u3}/api/jobs/{id}/cancel"), "");
        assert_eq!(a.status, 404, "{id}: {}", a.body);
    }
    let a = get(&format!("{u1}/api/nope"));
    assert_eq!(a.status, 404);
    error_of(&a);
    // A route that exists, with a method it does not take: 405, with a JSON error too.
    let a = post(&format!("{u1}/api/nodes"), "");
    assert_eq!(a.status, 405, "{}", a.body);
    assert!(error_of(&a).contains("GET"), "{}", a.body);

    // Cancel, through a node that does not own the job.
    let long = json!({"name": "long", "steps": [
        {"id": "nap", "task": "troupe.sleep", "input": {"ms": 30000}}]});
    let id = submit(&u1, &long);
    wait_state(&u1, &id, "running");
    let a = post(&format!("{u2}/api/jobs/{id}/cancel"), "");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["state"], "cancelled");
    assert_eq!(
        wait_state(&u3, &id, "cancelled")["steps"]["nap"]["state"],
        "cancelled"
    );

    // Resume a step waiting for a user.
    let ask = json!({"name": "ask", "steps": [
        {"id": "ok", "task": "troupe.needs_action", "input": {"message": "approve"}}]});
    let id = submit(&u2, &ask);
    let st = wait_state(&u1, &id, "waiting_for_user");
    assert_eq!(st["steps"]["ok"]["message"], "approve");
    let a = post(&format!("{u3}/api/jobs/{id}/steps/ok/resume"), "");
    assert_eq!(a.status, 200, "{}", a.body);
    wait_state(&u1, &id, "succeeded");
    let a = post(&format!("{u3}/api/jobs/{id}/steps/ok/resume"), "");
    assert_eq!(a.status, 409, "resuming an ended job: {}", a.body);

    // The node still serves after all of that.
    assert_eq!(get(&format!("{u1}/api/nodes")).status, 200);
}

#[test]
fn event_stream_carries_a_jobs_events_in_order_and_membership_changes() {
    let mut c = http_cluster(3);
    let (u1, u2) = (c.http_url(0), c.http_url(1));
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, stop2, url) = (seen.clone(), stop.clone(), format!("{u2}/api/events"));
    let follower = std::thread::spawn(move || {
        follow_events(&url, |ev| {
            s2.lock().unwrap().push(ev);
            !stop2.load(std::sync::atomic::Ordering::Relaxed)
        })
    });
    let finished = |id: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "job_finished" && e["job"] == id && e["status"]["id"] == id)
    };

    // n2's hub subscribes to n1's within a second or so: a job of n1 shows on n2's stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let id = submit(&u1, &json!({"steps": [{"id": "w", "task": "troupe.echo"}]}));
        std::thread::sleep(Duration::from_millis(500));
        if finished(&id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n1's job events never reached n2's stream"
        );
    }

    let job = json!({"name": "ordered", "steps": [
        {"id": "a", "task": "troupe.sleep", "input": {"ms": 50}},
        {"id": "b", "task": "troupe.echo", "after": ["a"]},
        {"id": "c", "task": "troupe.flaky", "input": {"fail_times": 1}, "after": ["a"]},
        {"id": "d", "task": "troupe.sum", "after": ["b", "c"]}]});
    let id = submit(&u1, &job);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !finished(&id) {
        assert!(
            Instant::now() < deadline,
            "job {id} never finished on the stream"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let evs: Vec<Value> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["job"] == id.as_str() || e["status"]["id"] == id.as_str())
        .cloned()
        .collect();
    let kinds: Vec<String> = evs
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["event"].as_str().unwrap(),
                e["step"].as_str().unwrap_or("")
            )
        })
        .collect();
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|x| x.trim_end() == k)
            .unwrap_or_else(|| panic!("no `{k}` in {kinds:?}"))
    };
    assert_eq!(pos("queued"), 0, "{kinds:?}");
    assert_eq!(
        kinds.last().map(|s| s.trim_end()),
        Some("job_finished"),
        "{kinds:?}"
    );
    assert_eq!(evs.last().unwrap()["status"]["state"], "succeeded");
    assert_eq!(evs.last().unwrap()["job_state"], "succeeded");
    for s in ["a", "b", "c", "d"] {
        assert!(
            pos(&format!("step_started {s}")) < pos(&format!("step_finished {s}")),
            "{kinds:?}"
        );
    }
    assert!(pos("step_finished a") < pos("step_started b"), "{kinds:?}");
    assert!(pos("step_finished a") < pos("step_started c"), "{kinds:?}");
    assert!(pos("step_retrying c") > pos("step_started c"), "{kinds:?}");
    assert!(pos("step_retrying c") < pos("step_finished c"), "{kinds:?}");
    assert!(pos("step_finished b") < pos("step_started d"), "{kinds:?}");
    assert!(pos("step_finished c") < pos("step_started d"), "{kinds:?}");
    for e in &evs {
        assert_eq!(e["origin"], "n1", "{e}");
        assert_eq!(e["task"].is_string(), e["step"].is_string(), "{e}");
    }
    let times: Vec<u64> = evs.iter().map(|e| e["at_ms"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // A node killed without warning shows as node_down on the stream.
    c.node(2).kill();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let down = seen
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "node_down" && e["node"] == "n3" && e["origin"] == "n2");
        if down {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no node_down for n3 on the stream"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // One more event ends the follower (the stream also ends when the cluster drops).
    submit(&u1, &json!({"steps": [{"id": "w", "task": "troupe.echo"}]}));
    drop(c);
    let _ = follower.join();
}

#[test]
fn metrics_parse_and_move_when_jobs_run() {
    let c = http_cluster(3);
    let urls: Vec<String> = (0..3).map(|i| c.http_url(i)).collect();
    let scrape = |u: &str| {
        let a = get(&format!("{u}/metrics"));
        assert_eq!(a.status, 200);
        assert!(
            a.content_type.starts_with("text/plain"),
            "{}",
            a.content_type
        );
        parse_metrics(&a.body)
    };
    let across =
        |prefix: &str| -> f64 { urls.iter().map(|u| metric_sum(&scrape(u), prefix)).sum() };
    let before = scrape(&urls[0]);
    // Series a dashboard or an alert reads exist from the start (at 0 until they move).
    for series in [
        "troupe_cache_hits_total",
        "troupe_jobs_total{state=\"failed\"}",
        "troupe_takeovers_total{outcome=\"taken\"}",
        "troupe_actor_restarts_total",
    ] {
        assert!(
            before.iter().any(|(s, _)| s == series),
            "{series} is missing from /metrics before it first moved"
        );
    }
    let echo_runs_before = across("troupe_step_duration_seconds_count{task=\"troupe.echo\"}");

    let job = json!({"steps": [
        {"id": "a", "task": "troupe.echo"},
        {"id": "b", "task": "troupe.echo", "after": ["a"]}]});
    let ids: Vec<String> = (0..5).map(|_| submit(&urls[0], &job)).collect();
    for id in &ids {
        wait_state(&urls[0], id, "succeeded");
    }
    let fail = submit(
        &urls[0],
        &json!({"steps": [{"id": "f", "task": "troupe.fail", "input": {"message": "no"}}]}),
    );
    wait_state(&urls[0], &fail, "failed");
    let fib = submit(
        &urls[0],
        &json!({"steps": [{"id": "f", "task": "troupe.fib", "input": {"n": 12}}]}),
    );
    wait_state(&urls[0], &fib, "succeeded");
    // Scrapes come after the event hub folded the last events.
    std::thread::sleep(Duration::from_millis(300));
    let after = scrape(&urls[0]);
    let delta = |p: &str| metric_sum(&after, p) - metric_sum(&before, p);

    assert_eq!(delta("troupe_jobs_total{state=\"accepted\"}"), 7.0);
    assert_eq!(delta("troupe_jobs_total{state=\"succeeded\"}"), 6.0);
    assert_eq!(delta("troupe_jobs_total{state=\"failed\"}"), 1.0);
    assert_eq!(metric(&after, "troupe_jobs_active"), 0.0);
    assert_eq!(
        delta("troupe_steps_started_total{task=\"troupe.echo\"}"),
        10.0
    );
    assert_eq!(
        delta("troupe_steps_finished_total{task=\"troupe.echo\",state=\"succeeded\"}"),
        10.0
    );
    assert_eq!(
        delta("troupe_steps_finished_total{task=\"troupe.fail\",state=\"failed\"}"),
        1.0
    );
    assert_eq!(delta("troupe_job_duration_seconds_count"), 7.0);
    assert_eq!(metric_sum(&after, "troupe_nodes{state=\"up\"}"), 3.0);
    assert_eq!(metric(&after, "troupe_slots"), 2.0);
    assert!(metric_sum(&after, "troupe_queue_depth{lane=") >= 0.0);
    assert!(delta("troupe_wire_bytes_total{direction=\"out\"}") > 0.0);
    assert!(delta("troupe_wire_messages_total{direction=\"in\"}") > 0.0);
    assert!(metric_sum(&after, "troupe_http_requests_total{status=\"2xx\"}") > 0.0);
    // Every echo execution, wherever it ran, is in some node's latency histogram.
    assert_eq!(
        across("troupe_step_duration_seconds_count{task=\"troupe.echo\"}") - echo_runs_before,
        10.0
    );
    // fib's re-entrant calls merge or hit the cache somewhere in the cluster.
    let reused = across("troupe_requests_merged_total") + across("troupe_cache_hits_total");
    assert!(reused > 0.0, "fib(12) reused no result");
    assert!(across("troupe_membership_events_total{event=\"up\"}") >= 6.0);

    // The dashboard's history: every job and step of n1's since its HTTP server started.
    let stats = get(&format!("{}/api/stats", urls[0])).json();
    let steps: u64 = stats["steps_per_s"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap())
        .sum();
    assert!(steps >= 11, "{stats}");
    assert!(stats["jobs"].as_array().unwrap().len() >= 7, "{stats}");
}

/// `POST /api/jobs?wait=SECS`: the final status of a job that ends within SECS (200, as
/// `GET /api/jobs/ID` shows it), the id and state of one that does not (202), and a clear
/// 400 for a wait that is not a number of seconds.
#[test]
fn a_submission_waits_for_its_jobs_end_when_asked() {
    let c = http_cluster(2);
    let (u1, u2) = (c.http_url(0), c.http_url(1));
    let chain = json!({"name": "waited", "input": {"add": 1}, "steps": [
        {"id": "a", "task": "troupe.echo", "input": {"value": 2}},
        {"id": "b", "task": "troupe.sum", "after": ["a"]}]});
    let a = post(&format!("{u2}/api/jobs?wait=20"), &chain.to_string());
    assert_eq!(a.status, 200, "{}", a.body);
    let st = a.json();
    assert_eq!(st["state"], "succeeded", "{st}");
    assert_eq!(st["output"], json!(3));
    let id = st["id"].as_str().expect("an id").to_string();
    assert_eq!(
        get(&format!("{u1}/api/jobs/{id}")).json()["output"],
        json!(3)
    );

    // A failed job ends too: its failed status comes back.
    let failing = json!({"steps": [{"id": "f", "task": "troupe.fail"}]});
    let a = post(&format!("{u1}/api/jobs?wait=20"), &failing.to_string());
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["state"], "failed", "{}", a.body);

    // Longer than the wait: 202 with the id and its state; it ends later.
    let slow = json!({"steps": [{"id": "s", "task": "troupe.sleep", "input": {"ms": 1500}}]});
    let started = Instant::now();
    let a = post(&format!("{u1}/api/jobs?wait=0.3"), &slow.to_string());
    assert_eq!(a.status, 202, "{}", a.body);
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "the wait was not cut at 0.3 s: {:?}",
        started.elapsed()
    );
    let v = a.json();
    assert!(
        matches!(v["state"].as_str(), Some("queued" | "running")),
        "{v}"
    );
    let id = v["id"].as_str().expect("an id");
    wait_state(&u2, id, "succeeded");

    for bad in ["abc", "-1", "301", "NaN"] {
        let a = post(&format!("{u1}/api/jobs?wait={bad}"), &chain.to_string());
        assert_eq!(a.status, 400, "wait={bad}: {}", a.body);
        assert!(error_of(&a).contains("seconds"), "{}", a.body);
    }
    let a = post(&format!("{u1}/api/jobs?timeout=3"), &chain.to_string());
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(error_of(&a).contains("use wait"), "{}", a.body);
}

/// `POST /api/jobs/batch`: every job of the array submitted at once, one entry per job in
/// order (an id, or an error with the code `POST /api/jobs` would give, without stopping
/// the others); with `?wait=SECS` the entries are the jobs' final statuses. A body that is
/// not an array of 1 to 1,000 jobs is refused whole with a clear 400.
#[test]
fn a_batch_of_jobs_is_submitted_in_one_request() {
    let c = http_cluster(2);
    let (u1, u2) = (c.http_url(0), c.http_url(1));
    let echo = |n: u64| json!({"steps": [{"id": "a", "task": "troupe.echo", "input": {"n": n}}]});
    let mut batch: Vec<Value> = (0..50).map(echo).collect();
    batch.insert(
        7,
        json!({"steps": [{"id": "a", "task": "troupe.no-such-task"}]}),
    );
    batch.insert(
        9,
        json!({"steps": [{"id": "a", "task": "troupe.echo", "after": ["zz"]}]}),
    );
    batch.insert(11, json!({"name": 5}));
    let a = post(
        &format!("{u1}/api/jobs/batch"),
        &Value::Array(batch).to_string(),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let entries = a.json()["jobs"].as_array().expect("jobs").clone();
    assert_eq!(entries.len(), 53, "one entry per job");
    for (i, e) in entries.iter().enumerate() {
        match i {
            7 => {
                assert_eq!(e["status"], 400, "{e}");
                assert!(e["error"].as_str().unwrap().contains("no-such-task"), "{e}");
            }
            9 | 11 => assert_eq!(e["status"], 400, "{e}"),
            _ => assert!(e["id"].as_str().is_some(), "entry {i}: {e}"),
        }
    }
    // Each accepted job runs, in the order given; asked from the other node.
    let outputs: Vec<Value> = entries
        .iter()
        .filter_map(|e| e["id"].as_str())
        .map(|id| wait_state(&u2, id, "succeeded")["output"].clone())
        .collect();
    assert_eq!(
        outputs,
        (0..50).map(|n| json!({"n": n})).collect::<Vec<_>>()
    );

    // With wait: final statuses, a failing job's too; a slow one comes back as its state.
    let batch = json!([
        {"steps": [{"id": "a", "task": "troupe.echo", "input": {"n": 1}}]},
        {"steps": [{"id": "f", "task": "troupe.fail"}]},
        {"steps": [{"id": "s", "task": "troupe.sleep", "input": {"ms": 3000}}]},
    ]);
    let started = Instant::now();
    let a = post(&format!("{u2}/api/jobs/batch?wait=1"), &batch.to_string());
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        started.elapsed() < Duration::from_millis(2800),
        "{:?}",
        started.elapsed()
    );
    let entries = a.json()["jobs"].as_array().expect("jobs").clone();
    assert_eq!(entries[0]["state"], "succeeded", "{}", a.body);
    assert_eq!(entries[0]["output"], json!({"n": 1}));
    assert_eq!(entries[1]["state"], "failed", "{}", a.body);
    assert!(
        matches!(entries[2]["state"].as_str(), Some("queued" | "running")),
        "{}",
        a.body
    );
    wait_state(&u1, entries[2]["id"].as_str().expect("an id"), "succeeded");

    // Refused whole: not an array, empty, too many, a bad wait.
    for (body, says) in [
        ("{\"steps\": []}".to_string(), "JSON array"),
        ("[]".to_string(), "1 to 1000"),
        (
            Value::Array((0..1001).map(echo).collect()).to_string(),
            "1 to 1000",
        ),
    ] {
        let a = post(&format!("{u1}/api/jobs/batch"), &body);
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(error_of(&a).contains(says), "{}", a.body);
    }
    let a = post(&format!("{u1}/api/jobs/batch?wait=x"), "[]");
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(error_of(&a).contains("seconds"), "{}", a.body);
    // The node goes on answering.
    assert_eq!(get(&format!("{u1}/api/nodes")).status, 200);
}

/// `/readyz` answers 503 with its reasons until the node has joined and its core group
/// formed, then 200; `/healthz` answers 200 throughout.
#[test]
fn readyz_waits_for_the_join_and_the_core_group_and_healthz_for_the_actors() {
    let mut c = Cluster::plan(3);
    c.serve_http = true;
    c.start_node(0);
    let u1 = c.http_url(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let alone = loop {
        match troupe_integration::http::try_get(&format!("{u1}/readyz")) {
            Ok(a) => break a,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("no answer from /readyz: {e}"),
        }
    };
    assert_eq!(alone.status, 503, "{}", alone.body);
    let why = alone.json();
    assert_eq!(why["ready"], false);
    let reasons = why["reasons"].to_string();
    assert!(reasons.contains("not joined"), "{reasons}");
    assert!(reasons.contains("no core group known yet"), "{reasons}");
    let h = get(&format!("{u1}/healthz"));
    assert_eq!((h.status, h.json()["ok"].clone()), (200, json!(true)));

    c.start_node(1);
    c.start_node(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = get(&format!("{u1}/readyz"));
        if a.status == 200 {
            assert_eq!(a.json(), json!({"ready": true}));
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {}", a.body);
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 1..3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(&format!("{}/readyz", c.http_url(i))).status != 200 {
            assert!(Instant::now() < deadline, "n{} never ready", i + 1);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
