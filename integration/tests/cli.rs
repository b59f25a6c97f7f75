//! The `troupe-node` client subcommands against a real cluster: submit, --wait, --input,
//! status, exit codes.

use std::time::Duration;

use serde_json::{json, Value};
use troupe_integration::{texts, Cluster};

const DIAMOND: &str = r#"
name = "diamond"
input = { value = 4 }
[retry]
max_attempts = 3
backoff_ms = 10
[[steps]]
id = "a"
task = "troupe.echo"
[[steps]]
id = "b"
task = "troupe.flaky"
input = { fail_times = 2 }
[[steps]]
id = "c"
task = "troupe.sum"
input = { add = 1 }
after = ["a", "b"]
"#;

#[tokio::test]
async fn submit_wait_prints_the_final_status_and_exit_code() {
    let c = Cluster::start(3);
    c.ready().await;
    let f = c.job_file("diamond.toml", DIAMOND);
    let out = c.cli(&["submit", &f, "--wait", "--timeout", "30"], true);
    let (stdout, stderr) = texts(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout {stdout}\nstderr {stderr}"
    );
    let st: Value = serde_json::from_str(&stdout).expect("stdout is one JSON object");
    assert_eq!(st["state"], "succeeded");
    // a echoes the job input {value: 4}; b returns {attempts: 3}: 4 + 0 + 1.
    assert_eq!(st["output"], json!(5));
    assert_eq!(st["steps"]["b"]["attempts"], 3, "flaky was retried");
    assert_eq!(st["steps"]["c"]["state"], "succeeded");
    assert!(st["steps"]["a"]["node"].as_str().unwrap().starts_with('n'));
    assert!(st["stats"]["executions"].as_u64().unwrap() >= 5);
    assert!(stderr.contains("step b"), "progress on stderr: {stderr}");

    // --input replaces the job's input.
    let out = c.cli(
        &["submit", &f, "--wait", "--input", r#"{"value": 40}"#],
        true,
    );
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let st: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(st["output"], json!(41));
}

#[tokio::test]
async fn submit_prints_the_id_and_status_reports_it() {
    let c = Cluster::start(2);
    c.ready().await;
    let f = c.job_file(
        "one.json",
        r#"{"name": "one", "steps": [{"id": "s", "task": "troupe.sleep", "input": {"ms": 300}}]}"#,
    );
    let out = c.cli(&["submit", &f], true);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let id = stdout.trim().to_string();
    assert!(
        !id.is_empty() && !id.contains('\n'),
        "id alone on one line: {stdout:?}"
    );

    let out = c.cli(&["status", &id], true);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let st: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(st["id"], json!(id));
    assert!(
        ["queued", "running", "succeeded"].contains(&st["state"].as_str().unwrap()),
        "{st}"
    );

    // Poll until the end: the same status keeps answering.
    let mut last = st;
    for _ in 0..100 {
        if last["state"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = serde_json::from_str(&texts(&c.cli(&["status", &id], true)).0).unwrap();
    }
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["output"]["ms"], 300);

    // A job file on standard input.
    let mut cmd = std::process::Command::new(troupe_integration::troupe_node());
    cmd.args([
        "submit",
        "-",
        "--wait",
        "--seeds",
        &c.seeds(),
        "--cookie",
        &c.cookie,
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"[[steps]]\nid = \"x\"\ntask = \"troupe.node\"\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(st["output"].as_str().unwrap().starts_with('n'));
}

#[tokio::test]
async fn a_failing_job_exits_1_with_the_reason() {
    let c = Cluster::start(2);
    c.ready().await;
    let f = c.job_file(
        "fail.toml",
        "[[steps]]\nid = \"ok\"\ntask = \"troupe.echo\"\n[[steps]]\nid = \"bad\"\ntask = \"troupe.fail\"\ninput = { message = \"disk on fire\" }\n[[steps]]\nid = \"after\"\ntask = \"troupe.sum\"\nafter = [\"ok\", \"bad\"]\n",
    );
    let (code, st, stderr) = c.submit_wait(&f, &[]);
    assert_eq!(code, Some(1), "{st}\n{stderr}");
    assert_eq!(st["state"], "failed");
    assert_eq!(st["steps"]["bad"]["state"], "failed");
    assert_eq!(
        st["steps"]["bad"]["attempts"], 1,
        "permanent errors are not retried"
    );
    assert!(st["steps"]["bad"]["error"]
        .as_str()
        .unwrap()
        .contains("disk on fire"));
    assert_eq!(
        st["steps"]["after"]["state"], "failed",
        "dependents of a failed step fail"
    );
    assert!(st["error"].as_str().unwrap().contains("bad"), "{st}");
}

#[tokio::test]
async fn a_step_timeout_fails_the_attempt() {
    let c = Cluster::start(1);
    c.ready().await;
    let f = c.job_file(
        "slow.toml",
        "[retry]\nmax_attempts = 2\nbackoff_ms = 10\n[[steps]]\nid = \"slow\"\ntask = \"troupe.sleep\"\ninput = { ms = 5000 }\ntimeout_ms = 200\n",
    );
    let t = std::time::Instant::now();
    let out = c.cli(&["submit", &f, "--wait"], true);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "timed out, not waited out"
    );
    let st: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(st["steps"]["slow"]["attempts"], 2);
    assert!(
        st["steps"]["slow"]["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{st}"
    );
}

/// `jobs` lists the cluster's jobs newest first (filtered by state and name), `watch`
/// follows a job submitted in the background to its end as `submit --wait` does, `rerun`
/// submits a job again from its file, and the status carries the submit time and each
/// step's times, node and output.
#[tokio::test]
async fn jobs_watch_and_rerun_and_the_status_times() {
    let c = Cluster::start(2);
    c.ready().await;
    let f = c.job_file(
        "two.json",
        r#"{"name": "two", "steps": [
            {"id": "s", "task": "troupe.sleep", "input": {"ms": 400}},
            {"id": "e", "task": "troupe.echo", "input": {"x": 7}, "after": ["s"]}]}"#,
    );
    let before = troupe_runtime::observe::now_ms();
    let out = c.cli(&["submit", &f], true);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let id = stdout.trim().to_string();

    // watch: progress on stderr, the final status alone on stdout, exit 0.
    let out = c.cli(&["watch", &id, "--timeout", "30"], true);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let st: Value = serde_json::from_str(&stdout).expect("stdout is the final status");
    assert_eq!(st["id"], json!(id));
    assert_eq!(st["state"], "succeeded");
    assert!(stderr.contains(&format!("job {id} succeeded")), "{stderr}");
    let submitted = st["submitted_at_ms"].as_u64().unwrap();
    assert!(
        (before..before + 10_000).contains(&submitted),
        "{submitted} vs {before}"
    );
    let (s, e) = (&st["steps"]["s"], &st["steps"]["e"]);
    let time = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!(time(s, "started_at_ms") >= submitted);
    assert!(
        time(s, "ended_at_ms") >= time(s, "started_at_ms") + 400,
        "{s}"
    );
    assert!(time(e, "started_at_ms") >= time(s, "ended_at_ms"), "{st}");
    assert!(time(e, "ended_at_ms") >= time(e, "started_at_ms"));
    assert_eq!(e["output"], json!({"x": 7}));
    assert!(s["node"].as_str().unwrap().starts_with('n'));

    // watch of a job that ended answers at once, the same way.
    let out = c.cli(&["watch", &id], true);
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);

    // rerun: the same file again, a new id.
    let out = c.cli(&["rerun", &id], true);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let again = stdout.trim().to_string();
    assert_ne!(again, id);
    let out = c.cli(&["watch", &again, "--timeout", "30"], true);
    let st: Value = serde_json::from_str(&texts(&out).0).unwrap();
    assert_eq!(st["state"], "succeeded");
    assert_eq!(st["steps"]["e"]["output"], json!({"x": 7}));

    // A failed job, for the filters.
    let bad = c.job_file(
        "bad.toml",
        "name = \"bad\"\n[[steps]]\nid = \"x\"\ntask = \"troupe.fail\"\n",
    );
    let out = c.cli(&["submit", &bad, "--wait"], true);
    assert_eq!(out.status.code(), Some(1), "{}", texts(&out).1);

    let out = c.cli(&["jobs", "--json"], true);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let list: Value = serde_json::from_str(&stdout).unwrap();
    let jobs = list["jobs"].as_array().unwrap();
    let ids: Vec<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{list}");
    assert_eq!(jobs[0]["name"], "bad", "newest first: {list}");
    assert!(ids.contains(&id.as_str()) && ids.contains(&again.as_str()));
    let times: Vec<u64> = jobs
        .iter()
        .map(|j| j["submitted_at_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    let out = c.cli(&["jobs", "--json", "--state", "failed"], true);
    let list: Value = serde_json::from_str(&texts(&out).0).unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["jobs"][0]["state"], "failed");
    let out = c.cli(&["jobs", "--json", "--name", "two"], true);
    let list: Value = serde_json::from_str(&texts(&out).0).unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2, "{list}");

    // The table: a header and one line per job.
    let out = c.cli(&["jobs"], true);
    let (stdout, _) = texts(&out);
    assert!(stdout.starts_with("ID"), "{stdout}");
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(
        stdout.contains("failed") && stdout.contains("succeeded"),
        "{stdout}"
    );

    // Bad input: exit 2, with what to do.
    let out = c.cli(&["jobs", "--state", "done"], true);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        texts(&out).1.contains("use queued, running"),
        "{}",
        texts(&out).1
    );
    let unknown = format!("{}-1-999", Cluster::name(0));
    let out = c.cli(&["rerun", &unknown], true);
    assert_eq!(out.status.code(), Some(2), "{}", texts(&out).1);
    let out = c.cli(&["watch", &unknown], true);
    assert_eq!(out.status.code(), Some(2), "{}", texts(&out).1);
}

/// A job whose owner is down answers "owner down" (exit 3, try later), not "no such job".
#[tokio::test]
async fn the_status_of_a_job_whose_owner_is_down_says_so() {
    let mut c = Cluster::start(2);
    c.ready().await;
    let client = c.client_via(&[0]).await;
    let f = c.job_file(
        "one.json",
        r#"{"name": "one", "steps": [{"id": "s", "task": "troupe.echo"}]}"#,
    );
    let spec = troupe_runtime::JobSpec::read(&f).unwrap();
    let id = client.submit(spec).await.unwrap().id().to_string();
    assert!(id.starts_with(&Cluster::name(0)), "{id}");
    drop(client);
    c.node(0).kill();
    let seeds = c.seeds();
    let n2 = seeds.split(',').nth(1).unwrap();
    let out = c.cli(
        &["status", &id, "--seeds", n2, "--cookie", &c.cookie],
        false,
    );
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("node {}, which owns job {id}", Cluster::name(0))),
        "{stderr}"
    );
}

/// A node that leaves gracefully hands the statuses of the jobs that ended on it to nodes
/// that stay (two of the three here): `status` of such a job still answers, from any
/// node, while it is gone; the node that holds none asks the others.
#[tokio::test]
async fn a_finished_jobs_status_outlives_its_owners_graceful_stop() {
    let mut c = Cluster::start(4);
    c.ready().await;
    let client = c.client_via(&[0]).await;
    let f = c.job_file(
        "one.json",
        r#"{"name": "kept", "steps": [{"id": "s", "task": "troupe.echo", "input": {"v": 3}}]}"#,
    );
    let spec = troupe_runtime::JobSpec::read(&f).unwrap();
    let st = client.submit(spec).await.unwrap().wait().await.unwrap();
    let id = st.id.clone();
    assert!(id.starts_with(&Cluster::name(0)), "{id}");
    drop(client);
    let stopped = c.node(0).stop(Duration::from_secs(30));
    assert!(stopped.is_some(), "n1 stopped on SIGTERM");
    assert!(
        c.log(0)
            .contains("handed the statuses of the jobs that ended here"),
        "{}",
        c.log(0)
    );
    let addrs: Vec<String> = c.seeds().split(',').map(str::to_string).collect();
    for seed in &addrs[1..] {
        let out = c.cli(
            &["status", &id, "--seeds", seed, "--cookie", &c.cookie],
            false,
        );
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(0), "via {seed}: {stdout}\n{stderr}");
        let st: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(st["state"], "succeeded");
        assert_eq!(st["output"], json!({"v": 3}));
        assert_eq!(st["name"], "kept");
    }
}
