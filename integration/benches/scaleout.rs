//! `cargo bench -p troupe-integration --bench scaleout`
//!
//! Seed 003: throughput grows with workers, and a new worker helps within seconds. One
//! release-built node (`SCALEOUT_SLOTS` slots, default 4) and a producer that keeps
//! `SCALEOUT_IN_FLIGHT` one-step jobs (default 256) of `troupe.sleep` (`SCALEOUT_MS` ms,
//! default 20: I/O-bound work, so that on this 2-core machine throughput can grow with
//! nodes) in flight through the first node, far more than one node runs. Every
//! `SCALEOUT_PHASE_SECS` seconds (default 3) one more node process starts, up to
//! `SCALEOUT_NODES` (default 4). Prints, per node count, the time from the new node's
//! process start to its first completed step and the throughput while that many nodes
//! ran: `{"bench":"scaleout","nodes":N,"first_step_ms":..,"steps_per_s":..,"placement":..}`.
//! It runs twice, with `scheduling.placement = "round_robin"` (push to each node in turn,
//! the baseline) and then `"pull"` (the default; see `troupe_actors::scheduler::placement`);
//! `SCALEOUT_PLACEMENTS` (comma-separated) picks others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use troupe_integration::{env_or, Cluster};
use troupe_runtime::{JobSpec, JobState, StepSpec};

fn main() {
    let placements: String = env_or("SCALEOUT_PLACEMENTS", "round_robin,pull".to_string());
    for placement in placements.split(',') {
        run(placement);
    }
}

fn run(placement: &str) {
    let nodes: usize = env_or("SCALEOUT_NODES", 4);
    let slots: usize = env_or("SCALEOUT_SLOTS", 4);
    let in_flight: usize = env_or("SCALEOUT_IN_FLIGHT", 256);
    let ms: u64 = env_or("SCALEOUT_MS", 20);
    let phase = Duration::from_secs(env_or("SCALEOUT_PHASE_SECS", 3));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut c = Cluster::plan(nodes);
    c.slots = slots;
    c.env
        .push(("TROUPE_SCHEDULING__PLACEMENT".into(), placement.into()));
    let mut starts = vec![Instant::now()];
    c.start_node(0);
    rt.block_on(async {
        let client = c.client_via(&[0]).await;
        client
            .wait_for_nodes(1, Duration::from_secs(20))
            .await
            .expect("first node");
        // (when, node) of every completed step.
        let done: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut producers = Vec::new();
        for _ in 0..in_flight {
            let (client, done, stop) = (client.clone(), done.clone(), stop.clone());
            producers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let j = JobSpec::new("scale")
                        .step(StepSpec::new("s", "troupe.sleep").input(json!({ "ms": ms })));
                    let Ok(mut h) = client.submit(j).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    if let Ok(st) = h.wait().await {
                        if st.state == JobState::Succeeded {
                            let node = st.steps["s"].node.clone().unwrap_or_default();
                            done.lock().unwrap().push((Instant::now(), node));
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(phase).await;
        for i in 1..nodes {
            starts.push(Instant::now());
            c.start_node(i);
            tokio::time::sleep(phase).await;
        }
        let end = Instant::now();
        stop.store(true, Ordering::Relaxed);
        for p in producers {
            let _ = tokio::time::timeout(Duration::from_secs(30), p).await;
        }
        let done = done.lock().unwrap().clone();
        for (i, &start) in starts.iter().enumerate() {
            let name = Cluster::name(i);
            let first = done
                .iter()
                .filter(|(t, n)| *n == name && *t >= start)
                .map(|(t, _)| *t)
                .min();
            let first_step_ms = first.map(|t| t.duration_since(start).as_millis() as u64);
            // Throughput while i + 1 nodes ran, after the new one's first second.
            let from = start + Duration::from_secs(1).min(phase / 2);
            let to = starts.get(i + 1).copied().unwrap_or(end);
            let n = done.iter().filter(|(t, _)| *t >= from && *t < to).count();
            let steps_per_s = n as f64 / to.duration_since(from).as_secs_f64();
            println!(
                "{}",
                json!({"bench": "scaleout", "nodes": i + 1,
                       "first_step_ms": first_step_ms,
                       "steps_per_s": steps_per_s.round(), "placement": placement})
            );
        }
    });
}
