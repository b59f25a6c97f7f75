//! `cargo bench -p troupe-integration --bench flood`
//!
//! Seed 000's stage-1 starvation, measured. Three release-built node binaries of
//! `examples/flood` (2 slots each), three-stage jobs of `FLOOD_MS` ms per stage (default
//! 5). For each policy, `fifo` then `priority` (`scheduling.policy`, set through
//! `TROUPE_SCHEDULING__POLICY` on fresh nodes): the cluster's capacity (jobs/s with 64
//! in flight, 3 s), the p99 of 30 unloaded jobs, then a flood at twice the capacity for
//! `FLOOD_SECS` seconds (default 5), submitted open-loop by one client spread over the
//! three nodes. Prints one line per policy:
//! `{"bench":"flood","policy":..,"completed_per_s":..,"capacity_per_s":..,"p50_ms":..,"p99_ms":..,"unloaded_p99_ms":..,"half_done":..}`
//! where latency runs from the moment a job's first stage started to run to its end,
//! and half-done jobs are those whose first stage was done but that had not finished
//! when the period ended.

use std::time::Duration;

use serde_json::json;
use troupe_integration::{cargo_bin, connect_retrying, env_or, Cluster};
use troupe_runtime::ClientOptions;

fn main() {
    let ms: u64 = env_or("FLOOD_MS", 5);
    let secs: f64 = env_or("FLOOD_SECS", 5.0);
    let exe = cargo_bin("troupe-example-flood", "flood");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for policy in ["fifo", "priority"] {
        let mut c = Cluster::plan(3);
        c.slots = 2;
        c.env
            .push(("TROUPE_SCHEDULING__POLICY".into(), policy.into()));
        for i in 0..3 {
            let spec = c.spec(i);
            c.start_with(i, &exe, &spec);
        }
        let f = rt.block_on(async {
            let mut opts = ClientOptions::new(c.addrs.clone(), &c.cookie);
            opts.progress = true;
            let client = connect_retrying(opts).await;
            client
                .wait_for_nodes(3, Duration::from_secs(20))
                .await
                .expect("three nodes");
            tokio::time::sleep(Duration::from_millis(700)).await;
            troupe_example_flood::measure(&client, ms, secs).await
        });
        eprintln!("{policy}: submitted {} jobs during the flood", f.submitted);
        println!(
            "{}",
            json!({"bench": "flood", "policy": policy,
                   "completed_per_s": (f.completed_per_s * 10.0).round() / 10.0,
                   "capacity_per_s": (f.capacity_per_s * 10.0).round() / 10.0,
                   "p50_ms": (f.p50_ms * 10.0).round() / 10.0,
                   "p99_ms": (f.p99_ms * 10.0).round() / 10.0,
                   "unloaded_p99_ms": (f.unloaded_p99_ms * 10.0).round() / 10.0,
                   "half_done": f.half_done})
        );
    }
}
