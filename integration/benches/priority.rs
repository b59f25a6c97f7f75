//! `cargo bench -p troupe-integration --bench priority`
//!
//! Priority classes under a backlog, on one release-built node with 2 slots and one-step
//! jobs of `troupe.sleep` for `PRIORITY_TASK_MS` ms (default 150):
//!
//! 1. The backlog: 40 normal jobs, then 30 low, then, 0.5 s later, one high job. Its
//!    submit-to-done time is `high_behind_backlog_ms` (the classes share slots by weight,
//!    so the high job takes the next free slot: at most about two task lengths, one to
//!    free a slot and its own).
//! 2. A sustained flood of high and low work (each class kept at 40 jobs in flight) for
//!    `PRIORITY_SECS` s (default 8): `low_share` is the share of the jobs finished in
//!    that time that were low (the weights 8:4:1 give low 1/9 against high alone).
//!
//! Prints `{"bench":"priority","task_ms":..,"high_behind_backlog_ms":..,"low_share":..,
//! "fifo_high_behind_backlog_ms":..}`, the last the same backlog with
//! `scheduling.policy = "fifo"` (arrival order) on a fresh node, as the baseline.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use troupe_integration::{connect_retrying, env_or, Cluster};
use troupe_runtime::job::spec::Priority;
use troupe_runtime::{Client, ClientOptions, JobSpec, StepSpec};

fn job(p: Priority, ms: u64) -> JobSpec {
    JobSpec::new(format!("priority {p:?}"))
        .with_priority(p)
        .step(StepSpec::new("sleep", "troupe.sleep").input(json!({ "ms": ms })))
}

/// A fresh one-node cluster with 2 slots and `policy`, and a client of it.
async fn node(policy: &str) -> (Cluster, Client) {
    let mut c = Cluster::plan(1);
    c.slots = 2;
    c.env
        .push(("TROUPE_SCHEDULING__POLICY".into(), policy.into()));
    // The backlog is what is measured: admission by waiting time would refuse it.
    c.env
        .push(("TROUPE_ADMISSION__WAIT_TARGET_MS".into(), "0,0,0".into()));
    c.start_node(0);
    let client = connect_retrying(ClientOptions::new(c.addrs.clone(), &c.cookie)).await;
    client
        .wait_for_nodes(1, Duration::from_secs(20))
        .await
        .expect("the node is up");
    (c, client)
}

/// The backlog of phase 1: the high job's submit-to-done time, in ms.
async fn high_behind_backlog(client: &Client, ms: u64) -> f64 {
    let mut backlog = Vec::new();
    for (p, n) in [(Priority::Normal, 40), (Priority::Low, 30)] {
        for _ in 0..n {
            backlog.push(client.submit(job(p, ms)).await.expect("backlog job"));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let mut high = client
        .submit(job(Priority::High, ms))
        .await
        .expect("high job");
    let st = high.wait().await.expect("the high job ends");
    let took = t0.elapsed().as_secs_f64() * 1000.0;
    assert!(st.state.is_terminal(), "{st:?}");
    for mut h in backlog {
        let _ = h.wait().await;
    }
    took
}

/// Phase 2: high and low kept flooded for `secs`: the share of finished jobs that were low.
async fn low_share(client: &Client, ms: u64, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let done: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut loops = Vec::new();
    for (class, p) in [(0, Priority::High), (1, Priority::Low)] {
        for _ in 0..40 {
            let (client, stop, counting, done) =
                (client.clone(), stop.clone(), counting.clone(), done.clone());
            loops.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut h) = client.submit(job(p, ms)).await else {
                        break;
                    };
                    if h.wait().await.is_ok() && counting.load(Ordering::Relaxed) {
                        done[class].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    // Let the lanes fill before counting.
    tokio::time::sleep(Duration::from_millis(3 * ms + 500)).await;
    counting.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    counting.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let (high, low) = (
        done[0].load(Ordering::Relaxed),
        done[1].load(Ordering::Relaxed),
    );
    eprintln!("flood: {high} high and {low} low jobs finished in {secs} s");
    for l in loops {
        let _ = l.await;
    }
    low as f64 / (high + low).max(1) as f64
}

fn main() {
    let ms: u64 = env_or("PRIORITY_TASK_MS", 150);
    let secs: f64 = env_or("PRIORITY_SECS", 8.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (fifo, high, share) = rt.block_on(async {
        let fifo = {
            let (_c, client) = node("fifo").await;
            high_behind_backlog(&client, ms).await
        };
        let (_c, client) = node("priority").await;
        let high = high_behind_backlog(&client, ms).await;
        let share = low_share(&client, ms, secs).await;
        (fifo, high, share)
    });
    println!(
        "{}",
        json!({"bench": "priority", "task_ms": ms,
               "high_behind_backlog_ms": high.round(),
               "low_share": (share * 1000.0).round() / 1000.0,
               "fifo_high_behind_backlog_ms": fifo.round()})
    );
}
