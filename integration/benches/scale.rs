//! `cargo bench -p troupe-integration --bench scale`
//!
//! How the cluster behaves as it grows, on release-built nodes of one slot each, started one
//! after another, each with the first three nodes (other than itself) as its seeds, and
//! default settings otherwise. For each size N of `SCALE_NODES` (comma-separated, default
//! `8,32,128`):
//! - `all_up_ms`: from the first node's process start to a client through n1 seeing all N
//!   nodes `up` (polled every 10 ms; the client connects once every process is spawned).
//! - `idle_cpu_pct_per_node`: after a wait as long as the time to all up (at least 3 s;
//!   the other nodes are still connecting to the last ones meanwhile), the CPU time
//!   (user and system, from
//!   `/proc/PID/stat`) the node processes use over `SCALE_IDLE_SECS` seconds (default 10)
//!   with no work, per node, in percent of one core. The nodes' mean and largest resident
//!   memory (`VmRSS`) are printed on stderr.
//! - `for_each_ms` and `for_each_nodes`: one job with a `for_each` step of 4*N items of
//!   `troupe.sleep` (`SCALE_SLEEP_MS` ms each, default 50), from submit to its final status
//!   through n1; and on how many distinct nodes its items ran (each item's step status
//!   `each[i]` names the node of its last attempt).
//! - `silent_to_down_ms`: the last node cut off by network namespaces (its traffic dropped,
//!   its connections left open), to n1 listing it `down` (default failure settings). Every
//!   size is planned in namespaces for this, which needs root and iproute2; without them
//!   the nodes run on loopback, the figure is `null` and stderr says why.
//!
//! Progress goes to stderr. Prints one line per size on stdout, as soon as it is measured
//! (so stdout holds only these lines):
//! `{"bench":"scale","nodes":N,"all_up_ms":..,"idle_cpu_pct_per_node":..,"silent_to_down_ms":..,
//!   "for_each_ms":..,"for_each_nodes":..}`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use troupe_integration::{cpu_us, env_or, node_state, troupe_node, Cluster};
use troupe_runtime::protocol::MEMBERSHIP_GROUP;
use troupe_runtime::{Client, JobSpec, JobState, StepSpec};

/// Seeds per node: the first nodes of the cluster, other than the node itself.
const SEEDS: usize = 3;

/// The sizes to run, from `SCALE_NODES`.
fn sizes() -> Vec<usize> {
    let text: String = env_or("SCALE_NODES", "8,32,128".to_string());
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .ok()
                .filter(|&n| n >= 2)
                .unwrap_or_else(|| panic!("SCALE_NODES: {s:?} is not a node count of 2 or more"))
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Resident memory of process `pid` in KiB, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Polls n1's view until `node` is in state `want`; how long that took.
async fn until_state(
    client: &Client,
    node: &str,
    want: &str,
    limit: Duration,
) -> Result<Duration, String> {
    let t = Instant::now();
    loop {
        let state = node_state(client, node).await;
        if state.as_deref() == Some(want) {
            return Ok(t.elapsed());
        }
        if t.elapsed() > limit {
            return Err(format!(
                "{node} not {want} after {limit:?} (last seen {state:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Polls n1's view until `n` nodes are up; panics after `limit`.
async fn until_all_up(client: &Client, n: usize, limit: Duration) {
    let t = Instant::now();
    let mut last_up = 0;
    loop {
        if let Ok(nodes) = client.nodes().await {
            last_up = nodes.iter().filter(|i| i.state.as_str() == "up").count();
            if last_up >= n {
                return;
            }
        }
        assert!(
            t.elapsed() < limit,
            "only {last_up} of {n} nodes up after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The CPU time every node process uses over `secs` seconds, per node, in percent of one
/// core (two decimals).
async fn idle_cpu_pct(pids: &[u32], secs: u64) -> f64 {
    let before: Vec<u64> = pids.iter().map(|&p| cpu_us(p)).collect();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after: Vec<u64> = pids.iter().map(|&p| cpu_us(p)).collect();
    let wall_us = t.elapsed().as_secs_f64() * 1e6;
    let used: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b))
        .sum();
    let pct = used as f64 / wall_us / pids.len() as f64 * 100.0;
    (pct * 100.0).round() / 100.0
}

/// One job of `items` sleeps of `sleep_ms` in a `for_each`: its time from submit to the
/// final status, and the distinct nodes its items ran on.
async fn fan_out(client: &Client, items: usize, sleep_ms: u64, limit: Duration) -> (f64, usize) {
    let list: Vec<Value> = (0..items).map(|_| json!({ "ms": sleep_ms })).collect();
    let job = JobSpec::new("scale-fan")
        .with_input(json!({ "items": list }))
        .step(StepSpec::new("each", "troupe.sleep").for_each("input.items"));
    let t = Instant::now();
    let mut h = client.submit(job).await.expect("submit the for_each job");
    let st = tokio::time::timeout(limit, h.wait())
        .await
        .unwrap_or_else(|_| panic!("the for_each job did not end within {limit:?}"))
        .expect("the for_each job's final status");
    let took = ms(t.elapsed());
    assert_eq!(
        st.state,
        JobState::Succeeded,
        "for_each job: {:?}",
        st.error
    );
    let nodes: BTreeSet<String> = (0..items)
        .filter_map(|i| st.steps.get(&format!("each[{i}]"))?.node.clone())
        .collect();
    let counted = (0..items)
        .filter(|i| st.steps.contains_key(&format!("each[{i}]")))
        .count();
    if counted < items {
        eprintln!("  only {counted} of {items} items have a step status");
    }
    (took, nodes.len())
}

/// Measures one cluster size; answers its JSON line.
async fn one_size(n: usize, idle_secs: u64, sleep_ms: u64) -> Value {
    let (mut c, no_netns) = match Cluster::plan_in_netns(n) {
        Ok(c) => (c, None),
        Err(e) => (Cluster::plan(n), Some(e)),
    };
    if let Some(e) = &no_netns {
        eprintln!("{n} nodes: not in network namespaces ({e}); silent_to_down_ms will be null");
    }
    c.slots = 1;
    let exe = troupe_node();

    // Everything from here on is in `c`, which ends every node when dropped (also on a
    // panic).
    let t0 = Instant::now();
    for i in 0..n {
        let mut spec = c.spec(i);
        spec.seeds = (0..n)
            .filter(|&j| j != i)
            .take(SEEDS)
            .map(|j| c.addrs[j].clone())
            .collect();
        c.start_with(i, exe, &spec);
    }
    let spawned = t0.elapsed();
    let up_limit = Duration::from_secs(30) + Duration::from_millis(500 * n as u64);
    let client = c.quiet_client_via_within(&[0], up_limit).await;
    until_all_up(&client, n, up_limit).await;
    let all_up = t0.elapsed();
    eprintln!(
        "{n} nodes: spawned in {:.0} ms, all up after {:.0} ms",
        ms(spawned),
        ms(all_up)
    );

    // n1 seeing every node up is not every node seeing every other: the others still
    // dial and sync the nodes that came last for about as long again (at 128 nodes, 1.5%
    // of a core per node over the 10 s after a 3 s wait, 0.3-0.4% once the mesh is whole).
    tokio::time::sleep(Duration::from_secs(3).max(all_up)).await;
    let pids: Vec<u32> = (0..n)
        .map(|i| c.node(i).pid().expect("a started node has a PID"))
        .collect();
    let idle = idle_cpu_pct(&pids, idle_secs).await;
    let rss: Vec<u64> = pids.iter().filter_map(|&p| rss_kib(p)).collect();
    let running = (0..n).filter(|&i| c.node(i).is_running()).count();
    assert_eq!(
        running,
        n,
        "a node exited while idle (logs in {})",
        c.dir.display()
    );
    eprintln!(
        "{n} nodes: idle CPU {idle:.2} % of a core per node over {idle_secs} s; RSS per node \
         mean {:.1} MiB, max {:.1} MiB ({} read)",
        rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64 / 1024.0,
        rss.iter().copied().max().unwrap_or(0) as f64 / 1024.0,
        rss.len()
    );

    let items = 4 * n;
    let fan_limit = Duration::from_secs(60) + Duration::from_millis(sleep_ms * items as u64);
    let (for_each_ms, for_each_nodes) = fan_out(&client, items, sleep_ms, fan_limit).await;
    eprintln!(
        "{n} nodes: for_each of {items} x {sleep_ms} ms sleeps took {for_each_ms:.1} ms on \
         {for_each_nodes} nodes"
    );

    let silent = match no_netns {
        Some(_) => None,
        None => {
            let victim = n - 1;
            let name = Cluster::name(victim);
            let cut = Instant::now();
            let took = match c.cut(victim) {
                Ok(()) => until_state(&client, &name, "down", Duration::from_secs(30)).await,
                Err(e) => Err(format!("cannot cut {name} off: {e}")),
            };
            match took {
                Ok(_) => {
                    let t = ms(cut.elapsed());
                    eprintln!("{n} nodes: {name} cut off, down after {t:.1} ms");
                    Some(t)
                }
                Err(e) => {
                    eprintln!("{n} nodes: silent_to_down_ms not measured: {e}");
                    None
                }
            }
        }
    };

    drop(client);
    // SIGTERM to every node at once, so that the drop's one-by-one stop only reaps.
    for i in 0..n {
        c.node(i).signal(libc::SIGTERM);
    }
    drop(c);
    // The next size's client must not find this cluster's membership actors.
    let t = Instant::now();
    while !ractor::pg::get_members(&MEMBERSHIP_GROUP.to_string()).is_empty()
        && t.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    json!({"bench": "scale", "nodes": n,
           "all_up_ms": ms(all_up),
           "idle_cpu_pct_per_node": idle,
           "silent_to_down_ms": silent,
           "for_each_ms": for_each_ms,
           "for_each_nodes": for_each_nodes})
}

fn main() {
    let sizes = sizes();
    let idle_secs: u64 = env_or("SCALE_IDLE_SECS", 10);
    let sleep_ms: u64 = env_or("SCALE_SLEEP_MS", 50);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        for n in sizes {
            let line = one_size(n, idle_secs, sleep_ms).await;
            println!("{line}");
        }
    });
}
