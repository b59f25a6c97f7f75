//! `cargo bench -p troupe-integration --bench actors`
//!
//! Four real `troupe-node` processes (release build) on loopback (the core group is
//! n1-n3) and a client in this process connected to all four (so every message crosses
//! to another process: the node that hosts the actor). Measures:
//! - `msg_p50_us` / `msg_p99_us`: the round trip of one message (`add`) to a keyed actor
//!   held in memory (`troupe.memory_counter`), sent one after the other;
//! - `persistent_msg_p50_us`: the same for `troupe.counter`, whose reply waits until the
//!   new state is committed on its host's journal and on a replica;
//! - `msgs_per_s`: messages to `ACTORS_KEYS` in-memory actors with `ACTORS_INFLIGHT` in
//!   flight, for `ACTORS_SECS`; `persistent_msgs_per_s` the same for persistent counters;
//! - `reactivate_ms`: from kill -9 of the node hosting a persistent counter to the first
//!   reply of its new activation elsewhere (median of `ACTORS_KILLS` kills of n4, which is
//!   not in the core group; the node is restarted between them);
//!   `reactivate_core_host_ms` the same once for a host in the core group (it includes a
//!   Raft election when that node led the group);
//! - `rpc_p50_us`: the baseline, a bare ractor_cluster call from the client to a node's
//!   membership actor, measured in the same run, and the message's ratio to it.
//!
//! Environment: `ACTORS_CALLS` (2000), `ACTORS_SECS` (5), `ACTORS_KEYS` (100),
//! `ACTORS_INFLIGHT` (64), `ACTORS_KILLS` (3).

use std::time::{Duration, Instant};

use serde_json::json;
use troupe_integration::{core_formed, env_or, Cluster};
use troupe_runtime::Client;

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn add(client: &Client, actor_type: &str, key: &str) {
    client
        .call_actor(actor_type, key, json!({"op": "add", "n": 1}))
        .await
        .unwrap_or_else(|e| panic!("{actor_type}/{key}: {e}"));
}

/// Sequential round trips to one actor, in microseconds, sorted (a tenth more first, to
/// warm up).
async fn latency(client: &Client, actor_type: &str, key: &str, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        add(client, actor_type, key).await;
        if i >= n / 10 {
            out.push(t.elapsed().as_micros() as u64);
        }
    }
    out.sort_unstable();
    out
}

/// Messages per second to `keys` actors with `inflight` in flight for `secs`.
async fn throughput(
    client: &Client,
    actor_type: &str,
    keys: usize,
    inflight: usize,
    secs: u64,
) -> f64 {
    let names: Vec<String> = (0..keys).map(|i| format!("k{i}")).collect();
    for k in &names {
        add(client, actor_type, k).await;
    }
    let until = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let workers = (0..inflight).map(|w| {
        let names = &names;
        async move {
            let mut sent = 0u64;
            let mut i = w;
            while Instant::now() < until {
                add(client, actor_type, &names[i % names.len()]).await;
                i += inflight;
                sent += 1;
            }
            sent
        }
    });
    let sent: u64 = futures::future::join_all(workers).await.into_iter().sum();
    sent as f64 / start.elapsed().as_secs_f64()
}

/// Bare ractor_cluster calls to a node's membership actor, sorted microseconds.
async fn rpc_baseline(client: &Client, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        client.nodes().await.expect("nodes");
        if i >= n / 10 {
            out.push(t.elapsed().as_micros() as u64);
        }
    }
    out.sort_unstable();
    out
}

/// Kills `node`, the host of a persistent counter, and times the first reply of the
/// counter's new activation elsewhere; then starts the node again.
async fn reactivate(cluster: &mut Cluster, client: &Client, node: &str, tag: &str) -> f64 {
    let key = troupe_integration::key_owned_by(
        "troupe.counter",
        node,
        &["n1", "n2", "n3", "n4"],
        &format!("re-{tag}"),
    );
    for _ in 0..10 {
        add(client, "troupe.counter", &key).await;
    }
    let list = client.actors().await.expect("actors");
    let host = list
        .iter()
        .find(|a| a.actor_type == "troupe.counter" && a.key == key)
        .map(|a| a.node.clone())
        .expect("the counter is active");
    assert_eq!(host, node, "the key is active on another node");
    let i: usize = host[1..].parse::<usize>().expect("nN") - 1;
    cluster.node(i).kill();
    let killed = Instant::now();
    let v = client
        .call_actor("troupe.counter", &key, json!({"op": "get"}))
        .await
        .expect("get after the kill");
    let ms = killed.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(v["total"], 10, "an acknowledged add was lost");
    eprintln!("kill -9 of {host} -> first reply {ms:.1} ms");
    cluster.start_node(i);
    client
        .wait_for_nodes(4, Duration::from_secs(20))
        .await
        .expect("the node is back");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ms
}

fn main() {
    let calls = env_or::<u64>("ACTORS_CALLS", 2000) as usize;
    let secs: u64 = env_or("ACTORS_SECS", 5);
    let keys = env_or::<u64>("ACTORS_KEYS", 100) as usize;
    let inflight = env_or::<u64>("ACTORS_INFLIGHT", 64) as usize;
    let kills = env_or::<u64>("ACTORS_KILLS", 3) as usize;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cluster = Cluster::plan(4);
        for i in 0..4 {
            cluster.start_node(i);
        }
        let client = cluster.quiet_client_via(&[0, 1, 2, 3]).await;
        client.wait_for_nodes(4, Duration::from_secs(20)).await.expect("4 nodes");
        core_formed(3).await;
        tokio::time::sleep(Duration::from_millis(500)).await;

        let rpc = rpc_baseline(&client, calls).await;
        let msg = latency(&client, "troupe.memory_counter", "lat", calls).await;
        let pmsg = latency(&client, "troupe.counter", "lat", calls / 4).await;
        let msgs_per_s = throughput(&client, "troupe.memory_counter", keys, inflight, secs).await;
        let pmsgs_per_s = throughput(&client, "troupe.counter", keys, inflight, secs).await;
        // n4 is outside the core group (n1-n3): its death costs no Raft election.
        let mut re: Vec<f64> = Vec::new();
        for run in 0..kills {
            re.push(reactivate(&mut cluster, &client, "n4", &run.to_string()).await);
        }
        // A core node's death may cost an election first (if it led the group).
        let core_host = reactivate(&mut cluster, &client, "n2", "core").await;
        re.sort_by(f64::total_cmp);
        let reactivate_ms = re.get(re.len() / 2).copied();
        let (m50, r50) = (pct(&msg, 0.5), pct(&rpc, 0.5));
        eprintln!("baseline ractor_cluster call: p50 {r50} us");
        eprintln!(
            "message to an in-memory actor: p50 {m50} us, p99 {} us ({:.2}x the bare call)",
            pct(&msg, 0.99),
            m50 as f64 / r50.max(1) as f64
        );
        eprintln!("message to a persistent actor: p50 {} us, p99 {} us", pct(&pmsg, 0.5), pct(&pmsg, 0.99));
        eprintln!("throughput: {msgs_per_s:.0} msgs/s in memory, {pmsgs_per_s:.0} msgs/s persistent ({keys} keys, {inflight} in flight, {secs} s)");
        eprintln!("reactivation after kill -9 of a non-core host: {re:?} ms; of a core host: {core_host:.1} ms");
        println!(
            "{}",
            json!({
                "bench": "actors",
                "rpc_p50_us": r50,
                "msg_p99_us": pct(&msg, 0.99),
                "msg_to_rpc_ratio": (m50 as f64 / r50.max(1) as f64 * 100.0).round() / 100.0,
                "persistent_msg_p50_us": pct(&pmsg, 0.5),
                "persistent_msgs_per_s": pmsgs_per_s.round(),
                "msg_p50_us": m50,
                "msgs_per_s": msgs_per_s.round(),
                "reactivate_core_host_ms": (core_host * 10.0).round() / 10.0,
                "reactivate_ms": reactivate_ms.map(|v| (v * 10.0).round() / 10.0),
            })
        );
    });
}
