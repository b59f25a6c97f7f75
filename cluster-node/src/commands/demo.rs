//! `troupe-node demo`: three local node processes, one example job with a progress
//! display, then everything stopped again, with no setup.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use troupe_runtime::{Client, ClientOptions, JobEvent, JobSpec, JobState, StepState};

use crate::cli::DemoArgs;
use crate::commands::submit::describe;
use crate::exit;
use crate::local::{free_port, NodeProcess, NodeSpec};

/// The demo's job: three fetches in parallel, two scores that join them, a flaky step
/// that needs a retry, and a total that joins everything (7 + 5 + 30 = 42).
pub const DEMO_JOB: &str = r#"
name = "demo"
[retry]
max_attempts = 3
backoff_ms = 100

[[steps]]
id = "fetch-1"
task = "troupe.sleep"
input = { ms = 400 }

[[steps]]
id = "fetch-2"
task = "troupe.sleep"
input = { ms = 600 }

[[steps]]
id = "fetch-3"
task = "troupe.sleep"
input = { ms = 500 }

[[steps]]
id = "score-a"
task = "troupe.echo"
input = { value = 7 }
after = ["fetch-1"]

[[steps]]
id = "score-b"
task = "troupe.echo"
input = { value = 5 }
after = ["fetch-2", "fetch-3"]

[[steps]]
id = "flaky"
task = "troupe.flaky"
input = { fail_times = 1 }

[[steps]]
id = "where"
task = "troupe.node"
after = ["fetch-3"]

[[steps]]
id = "total"
task = "troupe.sum"
input = { add = 30 }
after = ["score-a", "score-b", "flaky", "where"]
"#;

/// Runs the demo; Ctrl-C stops it, and the nodes with it.
pub async fn run(a: DemoArgs) -> u8 {
    let dir = std::env::temp_dir().join(format!("troupe-demo-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("troupe-node demo: cannot create {}: {e}", dir.display());
        return exit::UNREACHABLE;
    }
    let mut nodes: Vec<NodeProcess> = Vec::new();
    let mut code = tokio::select! {
        code = demo(&dir, &mut nodes, a.keep_running) => code,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted; stopping the nodes");
            130
        }
    };
    if a.keep_running && code != 130 && !nodes.is_empty() {
        if tokio::signal::ctrl_c().await.is_err() {
            code = exit::UNREACHABLE;
        }
        eprintln!();
    }
    let n = nodes.len();
    for mut node in nodes.drain(..) {
        node.stop(Duration::from_secs(3));
    }
    if n > 0 {
        println!("stopped {n} node processes");
    }
    if a.keep_logs {
        println!("node logs are in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    code
}

async fn demo(dir: &std::path::Path, nodes: &mut Vec<NodeProcess>, keep_running: bool) -> u8 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("troupe-node demo: cannot find my own binary: {e}");
            return exit::UNREACHABLE;
        }
    };
    let ports: Vec<u16> = match (0..3).map(|_| free_port()).collect() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("troupe-node demo: no free loopback port: {e}");
            return exit::UNREACHABLE;
        }
    };
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    // n1 serves the dashboard, if the cluster stays up to be looked at.
    let http = if keep_running {
        free_port().ok().map(|p| format!("127.0.0.1:{p}"))
    } else {
        None
    };
    let cookie = format!("demo-{:016x}", rand_u64());
    println!("Starting a local cluster of three troupe-node processes:");
    for (i, addr) in addrs.iter().enumerate() {
        let name = format!("n{}", i + 1);
        let spec = NodeSpec {
            name: name.clone(),
            addr: addr.clone(),
            seeds: addrs.iter().filter(|x| *x != addr).cloned().collect(),
            cookie: cookie.clone(),
            slots: 2,
            extra: {
                // The demo's journals live and go with its folder.
                let mut e = vec![
                    "--data".to_string(),
                    dir.join(format!("data-{name}")).display().to_string(),
                ];
                if let (Some(h), 0) = (&http, i) {
                    e.extend(["--http".to_string(), h.clone()]);
                }
                e
            },
            env: vec![],
            netns: None,
        };
        match NodeProcess::spawn(&exe, &spec, dir.join(format!("{name}.log"))) {
            Ok(p) => {
                println!(
                    "  {name}  pid {:<7} listening on {addr}",
                    p.pid().unwrap_or(0)
                );
                nodes.push(p);
            }
            Err(e) => {
                eprintln!("troupe-node demo: cannot start {name}: {e}");
                return exit::UNREACHABLE;
            }
        }
    }

    let client = match connect_with_retry(&addrs, &cookie).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("troupe-node demo: {e}");
            return exit::UNREACHABLE;
        }
    };
    let started = Instant::now();
    match client.wait_for_nodes(3, Duration::from_secs(15)).await {
        Ok(list) => println!(
            "Cluster formed in {} ms: {}",
            started.elapsed().as_millis(),
            list.iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => {
            eprintln!("troupe-node demo: the three nodes did not see each other: {e}");
            return exit::UNREACHABLE;
        }
    }

    let spec = match JobSpec::parse(DEMO_JOB, "demo.toml") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("troupe-node demo: {e}");
            return exit::BAD_INPUT;
        }
    };
    let total = spec.steps.len() as u64;
    println!(
        "\nSubmitting job \"demo\": {total} steps, fetches in parallel, then scores, then a total:"
    );
    for s in &spec.steps {
        let after = if s.after.is_empty() {
            String::new()
        } else {
            format!("  after {}", s.after.join(", "))
        };
        println!("  {:<8} {:<13}{after}", s.id, s.task);
    }
    let mut handle = match client.submit(spec).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("troupe-node demo: {e}");
            return e.exit_code();
        }
    };
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let t0 = Instant::now();
    let status = loop {
        match handle.next_event().await {
            Some(JobEvent::JobFinished { status }) => break Some(*status),
            Some(ev) => {
                if matches!(ev, JobEvent::StepFinished { .. }) {
                    bar.inc(1);
                }
                bar.set_message(describe(&ev));
                let line = format!("  [{:>5} ms] {}", t0.elapsed().as_millis(), describe(&ev));
                if bar.is_hidden() {
                    println!("{line}");
                } else {
                    bar.println(line);
                }
            }
            None => break handle.status().await.ok(),
        }
    };
    bar.finish_and_clear();
    let Some(status) = status else {
        eprintln!("troupe-node demo: lost track of the job");
        return exit::UNREACHABLE;
    };

    println!(
        "\nJob {} {} in {} ms",
        status.id,
        status.state.as_str(),
        status.elapsed_ms.unwrap_or(0)
    );
    println!("Result: {}", status.output.clone().unwrap_or_default());
    if let Some(e) = &status.error {
        println!("Error: {e}");
    }
    println!(
        "\n  {:<8} {:<13} {:<6} {:<9} attempts",
        "STEP", "TASK", "NODE", "STATE"
    );
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for (id, s) in &status.steps {
        let node = s.node.clone().unwrap_or_else(|| "-".into());
        *per_node.entry(node.clone()).or_default() += 1;
        let state = match s.state {
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            _ => "other",
        };
        println!(
            "  {:<8} {:<13} {:<6} {:<9} {}",
            id, s.task, node, state, s.attempts
        );
    }
    println!(
        "\nSteps per node: {}",
        per_node
            .iter()
            .map(|(n, c)| format!("{n}: {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if keep_running {
        println!("\nThe cluster keeps running until Ctrl-C:");
        if let Some(h) = &http {
            println!("  dashboard  http://{h}/");
        }
        println!(
            "  try        troupe-node nodes --seeds {} --cookie {cookie}",
            addrs[0]
        );
        println!(
            "             troupe-node submit --seeds {} --cookie {cookie} --wait examples/jobs/diamond.toml",
            addrs[0]
        );
    } else {
        println!("\n`troupe-node demo --keep-running` keeps the cluster up, with its dashboard.");
    }
    if status.state == JobState::Succeeded {
        exit::OK
    } else {
        exit::JOB_FAILED
    }
}

async fn connect_with_retry(
    addrs: &[String],
    cookie: &str,
) -> Result<Client, troupe_runtime::ClientError> {
    let start = Instant::now();
    loop {
        let mut opts = ClientOptions::new(addrs.iter().cloned(), cookie);
        opts.connect_timeout = Duration::from_secs(2);
        match Client::connect(opts).await {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() > Duration::from_secs(15) => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
