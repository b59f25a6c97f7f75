//! `cargo bench -p troupe-integration --bench merge`
//!
//! Three release-built nodes, three clients (one through each node). 20,000 requests of
//! the pure, mergeable `troupe.fib` (n = 1, made distinct by an extra field `k`) over
//! 1,000 distinct keys, 32 in flight per client: executions should be 1,000, the rest
//! merged with a request in flight or answered from the cache. Then sequential round
//! trips of a cached key (`hit_us`) and of a fresh key (`miss_us`), p50.
//!
//! Environment: `MERGE_REQUESTS` (default 20000), `MERGE_KEYS` (default 1000).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use troupe_integration::{env_or, Cluster};
use troupe_runtime::{Client, JobSpec, JobState, StepSpec};

fn request(k: usize) -> JobSpec {
    JobSpec::new("m").step(StepSpec::new("f", "troupe.fib").input(json!({"n": 1, "k": k})))
}

async fn p50(client: &Client, keys: impl Iterator<Item = usize>) -> u64 {
    let mut us = Vec::new();
    for k in keys {
        let t = Instant::now();
        let st = client
            .submit(request(k))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert_eq!(st.state, JobState::Succeeded);
        us.push(t.elapsed().as_micros() as u64);
    }
    us.sort_unstable();
    us[us.len() / 2]
}

fn main() {
    let requests: usize = env_or("MERGE_REQUESTS", 20_000);
    let keys: usize = env_or("MERGE_KEYS", 1_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cluster = Cluster::plan(3);
        cluster.slots = 1;
        for i in 0..3 {
            cluster.start_node(i);
        }
        let mut clients = Vec::new();
        for i in 0..3 {
            clients.push(cluster.quiet_client_via(&[i]).await);
        }
        clients[0].wait_for_nodes(3, Duration::from_secs(20)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;

        let next = Arc::new(AtomicUsize::new(0));
        let executions = Arc::new(AtomicU64::new(0));
        let merged = Arc::new(AtomicU64::new(0));
        let hits = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in &clients {
            for _ in 0..32 {
                let (c, next, executions, merged, hits) =
                    (c.clone(), next.clone(), executions.clone(), merged.clone(), hits.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= requests {
                            break;
                        }
                        let st = c.submit(request(i % keys)).await.unwrap().wait().await.unwrap();
                        assert_eq!(st.state, JobState::Succeeded);
                        executions.fetch_add(st.stats.executions, Ordering::Relaxed);
                        merged.fetch_add(st.stats.merged, Ordering::Relaxed);
                        hits.fetch_add(st.stats.cache_hits, Ordering::Relaxed);
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let per_s = requests as f64 / start.elapsed().as_secs_f64();
        let (executions, merged, hits) = (executions.load(Ordering::Relaxed), merged.load(Ordering::Relaxed), hits.load(Ordering::Relaxed));
        let hit_us = p50(&clients[1], (0..500).map(|i| i % keys)).await;
        let miss_us = p50(&clients[1], (0..500).map(|i| 1_000_000 + i)).await;
        eprintln!(
            "{requests} requests over {keys} keys: {executions} executions, {merged} merged, {hits} cache hits, {per_s:.0} requests/s; cache hit p50 {hit_us} us, fresh execution p50 {miss_us} us"
        );
        println!(
            "{}",
            json!({"bench": "merge", "requests": requests, "keys": keys, "executions": executions,
                   "merged": merged, "cache_hits": hits, "per_s": per_s.round(),
                   "hit_us": hit_us, "miss_us": miss_us})
        );
    });
}
