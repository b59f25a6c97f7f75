//! `cargo bench -p troupe-integration --bench flood`
//!
//! Seed 000's stage-1 starvation, and admission by waiting time, measured. Three
//! release-built node binaries of `examples/flood` (2 slots each), three-stage jobs of
//! `FLOOD_MS` ms per stage (default 5). For each setting, on fresh nodes: the cluster's
//! capacity (jobs/s with 64 in flight, 3 s), the p99 of 30 unloaded jobs, then floods at
//! multiples of the capacity (`FLOOD_LOADS`, default `2,5`) for `FLOOD_SECS` seconds each
//! (default 5), submitted open-loop by one client spread over the three nodes, which
//! counts refusals instead of retrying them. The settings:
//! - `fifo`: arrival order, no admission by waiting time (the starvation seed 000 saw);
//! - `priority, no admission`: continuing work first, every submission accepted (the
//!   baseline for admission: the backlog, and latency, grow with the load);
//! - `priority`: as shipped (`admission.wait_target_ms` by default).
//!
//! Prints one line per setting and load:
//! `{"bench":"flood","policy":..,"admission":..,"load_x":..,"completed_per_s":..,"capacity_per_s":..,
//!   "completed_of_capacity":..,"p50_ms":..,"p99_ms":..,"unloaded_p99_ms":..,"p99_of_unloaded":..,
//!   "under_way_p99_ms":..,"half_done":..,"submitted":..,"refused":..}`
//! where `p50_ms`/`p99_ms` are accepted jobs' latency from submission to end, and
//! `under_way_p99_ms` runs from a job's first stage's start to its end.

use std::time::Duration;

use serde_json::json;
use troupe_integration::{cargo_bin, connect_retrying, env_or, Cluster};
use troupe_runtime::ClientOptions;

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn main() {
    let ms: u64 = env_or("FLOOD_MS", 5);
    let secs: f64 = env_or("FLOOD_SECS", 5.0);
    let loads: Vec<f64> = env_or("FLOOD_LOADS", "2,5".to_string())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    let exe = cargo_bin("troupe-example-flood", "flood");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let settings: [(&str, bool, &[f64]); 3] = [
        ("fifo", false, &loads[..loads.len().min(1)]),
        ("priority", false, &loads),
        ("priority", true, &loads),
    ];
    // FLOOD_SETTINGS picks some: `fifo`, `open` (priority, no admission), `priority`.
    let only: String = env_or("FLOOD_SETTINGS", "fifo,open,priority".to_string());
    for (policy, admission, loads) in settings {
        let name = if policy == "priority" && !admission {
            "open"
        } else {
            policy
        };
        if !only.split(',').any(|s| s.trim() == name) {
            continue;
        }
        let mut c = Cluster::plan(3);
        c.slots = 2;
        c.env
            .push(("TROUPE_SCHEDULING__POLICY".into(), policy.into()));
        if !admission {
            c.env
                .push(("TROUPE_ADMISSION__WAIT_TARGET_MS".into(), "0,0,0".into()));
        }
        for i in 0..3 {
            let spec = c.spec(i);
            c.start_with(i, &exe, &spec);
        }
        let figures = rt.block_on(async {
            let mut opts = ClientOptions::new(c.addrs.clone(), &c.cookie);
            opts.progress = true;
            let client = connect_retrying(opts.clone()).await;
            opts.overloaded_wait = Duration::ZERO;
            let open = connect_retrying(opts).await;
            client
                .wait_for_nodes(3, Duration::from_secs(20))
                .await
                .expect("three nodes");
            tokio::time::sleep(Duration::from_millis(700)).await;
            troupe_example_flood::measure(&client, &open, ms, secs, loads).await
        });
        for f in figures {
            eprintln!(
                "{policy} (admission {admission}) at {}x: submitted {}, refused {}",
                f.load_x, f.submitted, f.refused
            );
            println!(
                "{}",
                json!({"bench": "flood", "policy": policy, "admission": admission,
                       "load_x": f.load_x,
                       "completed_per_s": round1(f.completed_per_s),
                       "capacity_per_s": round1(f.capacity_per_s),
                       "completed_of_capacity": (f.completed_per_s / f.capacity_per_s.max(1e-9) * 100.0).round() / 100.0,
                       "p50_ms": round1(f.p50_ms),
                       "p99_ms": round1(f.p99_ms),
                       "unloaded_p99_ms": round1(f.unloaded_p99_ms),
                       "p99_of_unloaded": round1(f.p99_ms / f.unloaded_p99_ms.max(1e-9)),
                       "under_way_p99_ms": round1(f.under_way_p99_ms),
                       "half_done": f.half_done,
                       "submitted": f.submitted,
                       "refused": f.refused})
            );
        }
    }
}
