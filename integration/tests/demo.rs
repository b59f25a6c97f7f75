//! `troupe-node demo`: the README's first command. It runs its job and leaves no node
//! behind; with `--keep-running` the cluster and its dashboard stay up until Ctrl-C
//! (SIGINT), then every node stops.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use troupe_integration::{run_with_timeout, texts, troupe_node};

/// The demo process, killed if the test ends early.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The node PIDs the demo printed (`n1  pid 1234 ...`).
fn node_pids(out: &str) -> Vec<i32> {
    out.lines()
        .filter_map(|l| {
            l.split_once(" pid ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn the_demo_runs_its_job_and_stops_every_node() {
    let mut cmd = Command::new(troupe_node());
    cmd.arg("demo");
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("succeeded in"), "{stdout}");
    assert!(stdout.contains("stopped 3 node processes"), "{stdout}");
    assert!(
        !stdout.contains("http://"),
        "no dashboard for a run that ends: {stdout}"
    );
    let pids = node_pids(&stdout);
    assert_eq!(pids.len(), 3, "{stdout}");
    assert!(
        pids.iter().all(|&p| !alive(p)),
        "nodes left behind: {pids:?}"
    );
}

#[test]
fn keep_running_leaves_the_cluster_and_its_dashboard_up_until_ctrl_c() {
    let mut child = Command::new(troupe_node())
        .args(["demo", "--keep-running"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut demo = Demo(child);
    let mut seen = String::new();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut url = None;
    while url.is_none() && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        seen.push_str(&line);
        seen.push('\n');
        url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(str::to_string);
    }
    let url = url.unwrap_or_else(|| panic!("no dashboard URL: {seen}"));
    assert!(seen.contains("keeps running until Ctrl-C"), "{seen}");
    let pids = node_pids(&seen);
    assert_eq!(pids.len(), 3, "{seen}");
    // The cluster is still up after the job: the dashboard answers, with the three nodes.
    std::thread::sleep(Duration::from_millis(500));
    let nodes = troupe_integration::http::get(&format!("{url}api/nodes"));
    assert_eq!(nodes.status, 200, "{:?}", nodes.body);
    assert_eq!(nodes.json()["nodes"].as_array().map(Vec::len), Some(3));
    assert!(pids.iter().all(|&p| alive(p)));

    // SAFETY: SIGINT to the demo process this test started, by its PID.
    unsafe { libc::kill(demo.0.id() as i32, libc::SIGINT) };
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = demo.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < end, "the demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest: String = lines.map_while(Result::ok).collect::<Vec<_>>().join("\n");
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.contains("stopped 3 node processes"), "{rest}");
    assert!(
        pids.iter().all(|&p| !alive(p)),
        "nodes left behind: {pids:?}"
    );
}
