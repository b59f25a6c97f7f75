//! `troupe-node top`, and one job's logs joined across nodes by its trace id.

use std::time::{Duration, Instant};

use serde_json::Value;
use troupe_integration::{texts, Cluster};
use troupe_runtime::protocol::TraceContext;

#[tokio::test]
async fn top_once_prints_nodes_jobs_and_the_selected_jobs_steps() {
    let c = Cluster::start(3);
    c.ready().await;
    let file = c.job_file(
        "ask.toml",
        r#"name = "needs-you"
[[steps]]
id = "fan"
task = "troupe.echo"
for_each = "[1, 2]"
[[steps]]
id = "ask"
task = "troupe.needs_action"
input = { message = "approve the spend" }
after = ["fan"]
"#,
    );
    let out = c.cli(&["submit", &file], true);
    assert!(out.status.success(), "{out:?}");
    let id = texts(&out).0.trim().to_string();

    // Through one node only: the list still covers the cluster.
    let top_once = [
        "top",
        "--once",
        "--seeds",
        &c.addrs[2],
        "--cookie",
        &c.cookie,
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let frame = loop {
        let out = c.cli(&top_once, false);
        assert!(out.status.success(), "{out:?}");
        let frame = texts(&out).0;
        if frame.contains("waiting_for_user") && frame.contains("3 nodes up") {
            break frame;
        }
        assert!(
            Instant::now() < deadline,
            "top never showed the job waiting:\n{frame}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for n in ["n1", "n2", "n3"] {
        assert!(
            frame
                .lines()
                .any(|l| l.starts_with(n) && l.contains(" up ")),
            "node {n} missing:\n{frame}"
        );
    }
    let job_line = frame
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("job {id} missing:\n{frame}"));
    assert!(
        job_line.contains("needs-you") && job_line.contains("3/4"),
        "{job_line}"
    );
    let ask = frame
        .lines()
        .find(|l| l.starts_with("ask "))
        .unwrap_or_else(|| panic!("step ask missing:\n{frame}"));
    assert!(ask.contains("approve the spend"), "{ask}");
    assert!(frame
        .lines()
        .any(|l| l.starts_with("fan[1]") && l.contains("succeeded")));

    // `top --once | head`: a reader that goes early ends it quietly, with no panic.
    let mut top = std::process::Command::new(troupe_integration::troupe_node())
        .args(top_once)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start top");
    drop(top.stdout.take()); // the reader is gone before top prints
    let out = top.wait_with_output().expect("top ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "top panicked on a closed pipe: {stderr}"
    );
}

fn spans_of(line: &Value) -> Vec<Value> {
    line["spans"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn one_jobs_log_lines_carry_its_job_step_and_trace_id_on_every_node() {
    let mut c = Cluster::plan(3);
    c.extra = vec!["--log-format".into(), "json".into()];
    c.env.push((
        "RUST_LOG".into(),
        "info,troupe_actors=debug,ractor=warn,ractor_cluster=error".into(),
    ));
    for i in 0..3 {
        c.start_node(i);
    }
    c.ready().await;
    let file = c.job_file(
        "spread.toml",
        "name = \"spread\"\n[[steps]]\nid = \"each\"\ntask = \"troupe.node\"\nfor_each = \"[1, 2, 3, 4, 5, 6, 7, 8, 9]\"\n",
    );
    let status = c.submit_wait_via(0, &file);
    let id = status["id"].as_str().unwrap().to_string();
    let trace = TraceContext::trace_id_of(&id);
    let ran_on: std::collections::BTreeSet<String> = status["steps"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|s| s["node"].as_str().map(str::to_string))
        .collect();
    assert!(ran_on.len() >= 2, "steps ran on {ran_on:?} only");

    std::thread::sleep(Duration::from_millis(300));
    let mut nodes_with_trace = Vec::new();
    for i in 0..3 {
        let log = c.log(i);
        let lines: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert!(!lines.is_empty(), "n{} logged no JSON", i + 1);
        // Every worker line of an attempt names its job, step and trace.
        let attempt_lines: Vec<&Value> = lines
            .iter()
            .filter(|l| l["message"] == "attempt started" || l["message"] == "attempt ended")
            .filter(|l| spans_of(l).iter().any(|s| s["job"] == id.as_str()))
            .collect();
        for l in &attempt_lines {
            let step = spans_of(l)
                .into_iter()
                .find(|s| s["name"] == "step")
                .unwrap_or_else(|| panic!("no step span: {l}"));
            assert_eq!(step["trace_id"], trace.as_str(), "{l}");
            assert!(step["step"].as_str().unwrap().starts_with("each"), "{l}");
            assert_eq!(step["owner"], "n1", "{l}");
        }
        if !attempt_lines.is_empty() {
            nodes_with_trace.push(Cluster::name(i));
        }
    }
    assert_eq!(
        nodes_with_trace.len(),
        ran_on.len(),
        "attempt lines with trace {trace} on {nodes_with_trace:?}, steps ran on {ran_on:?}"
    );
    // The owner's supervisor lines carry the same trace id.
    let owner: Vec<Value> = c
        .log(0)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &Value| {
            spans_of(l)
                .iter()
                .any(|s| s["name"] == "job" && s["trace_id"] == trace.as_str())
        })
        .collect();
    assert!(
        owner.iter().any(|l| l["message"] == "job ended"),
        "no 'job ended' line in the job's span on n1"
    );
}
