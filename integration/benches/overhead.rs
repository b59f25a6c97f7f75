//! `cargo bench -p troupe-integration --bench overhead`
//!
//! Three real `troupe-node` processes (release build, one slot each) on loopback, and a
//! client in this process that submits through the first node (which owns the jobs).
//! Measures:
//! - `call_p50_us` / `call_p99_us`: the round trip of a one-step `troupe.echo` job, from
//!   submit to the job's final status at the client (client -> job manager -> worker on
//!   some node -> job supervisor -> client), sequentially;
//! - `call_cpu_us_per_job`: the three nodes' CPU time per sequential call (user and
//!   system, `/proc/PID/stat`): with nothing to batch, what each wake and message costs;
//! - `chain3_p50_us`: the same for a three-step chain a -> b -> c;
//! - `steps_per_s`: echo steps through the cluster with many small jobs in flight (64
//!   jobs of 4 independent steps);
//! - `one_step_jobs_per_s`, `one_step_cpu_us_per_job`: 64 one-step echo jobs in flight,
//!   and the three nodes' CPU time (user and system, `/proc/PID/stat`) per job;
//! - `reentrant_call_p50_us`: what a re-entrant call adds to a call: a `troupe.fib` n=2
//!   job with the cache off (its task calls fib(1) and fib(0) in parallel, round-robin over
//!   the nodes, and waits) and the one-step job, run in alternation, and the p50 of the
//!   pairwise differences (signed: drift of a noisy machine between two blocks of
//!   measurements no longer hides it, and a negative figure shows noise, not a clamp to 0);
//! - `fanout_items_per_s`: a `for_each` of 10,000 `troupe.echo` items over three nodes,
//!   from submit to the job's end;
//! - `spread_call_p50_us`, `spread_steps_per_s`: the one-step round trip and the
//!   throughput of `steps_per_s` for a second client connected to all three nodes, which
//!   spreads its submissions (and so the jobs' ownership) over them;
//! - `tcp_rtt_p50_us`: the baseline, a raw 64-byte tokio TCP round trip on loopback,
//!   measured in the same run, and the ratio of the call to it.
//!
//! Environment: `OVERHEAD_CALLS` (default 2000), `OVERHEAD_SECS` (default 5),
//! `OVERHEAD_TLS=1` (every connection mutual TLS, certificates from `troupe-node certs`).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use troupe_integration::{cpu_us, env_or, Cluster};
use troupe_runtime::{Client, JobSpec, JobState, StepSpec};

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn tcp_rtt(n: usize) -> Vec<u64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let mut buf = [7u8; 64];
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 200 {
        let t = Instant::now();
        c.write_all(&buf).await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        if i >= 200 {
            out.push(t.elapsed().as_micros() as u64);
        }
    }
    out.sort_unstable();
    out
}

async fn job_latency(client: &Client, job: &JobSpec, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = job_latency_once(client, job).await;
        if i >= n / 10 {
            out.push(t);
        }
    }
    out.sort_unstable();
    out
}

/// Runs `job` and `base` in alternation `n` times (after a tenth as warm-up); returns the
/// sorted latencies of `job` and the p50 of `job - base` taken pair by pair, in us.
async fn paired_extra(client: &Client, job: &JobSpec, base: &JobSpec, n: usize) -> (Vec<u64>, i64) {
    let mut times = Vec::with_capacity(n);
    let mut diffs = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let b = job_latency_once(client, base).await;
        let j = job_latency_once(client, job).await;
        if i >= n / 10 {
            times.push(j);
            diffs.push(j as i64 - b as i64);
        }
    }
    times.sort_unstable();
    diffs.sort_unstable();
    let p50 = diffs
        .get(diffs.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0);
    (times, p50)
}

async fn job_latency_once(client: &Client, job: &JobSpec) -> u64 {
    let t = Instant::now();
    let mut h = client.submit(job.clone()).await.expect("submit");
    let st = h.wait().await.expect("wait");
    assert_eq!(st.state, JobState::Succeeded, "{st:?}");
    t.elapsed().as_micros() as u64
}

/// Steps per second and jobs done with `in_flight` jobs of `steps_per_job` independent
/// echo steps each, for `secs`.
async fn throughput(
    client: &Client,
    secs: u64,
    in_flight: usize,
    steps_per_job: usize,
) -> (f64, u64) {
    let mut job = JobSpec::new("tp");
    for i in 0..steps_per_job {
        job = job.step(StepSpec::new(format!("s{i}"), "troupe.echo").input(json!(i)));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let client = client.clone();
        let job = job.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let mut h = client.submit(job.clone()).await.expect("submit");
                let st = h.wait().await.expect("wait");
                assert_eq!(st.state, JobState::Succeeded);
                done += 1;
            }
            done
        }));
    }
    let mut jobs = 0;
    for t in tasks {
        jobs += t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    ((jobs * steps_per_job as u64) as f64 / elapsed, jobs)
}

fn main() {
    let calls = env_or::<u64>("OVERHEAD_CALLS", 2000) as usize;
    let secs: u64 = env_or("OVERHEAD_SECS", 5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cluster = Cluster::plan(3);
        cluster.slots = 1;
        let tls = env_or::<u64>("OVERHEAD_TLS", 0) == 1;
        if tls {
            cluster.use_tls();
        }
        for i in 0..3 {
            cluster.start_node(i);
        }
        // The client submits through one node, which owns the jobs.
        let client = cluster.quiet_client_via(&[0]).await;
        client.wait_for_nodes(3, Duration::from_secs(20)).await.expect("3 nodes");
        // Let every node's worker groups reach the client's first node.
        tokio::time::sleep(Duration::from_millis(500)).await;

        let tcp = tcp_rtt(calls).await;
        let one = JobSpec::new("call").step(StepSpec::new("echo", "troupe.echo").input(json!({"x": 1})));
        let pids: Vec<u32> = (0..3).filter_map(|i| cluster.node(i).pid()).collect();
        let cpu = || pids.iter().map(|&p| cpu_us(p)).sum::<u64>();
        let cpu_before = cpu();
        let call = job_latency(&client, &one, calls).await;
        let call_cpu_us = (cpu() - cpu_before) as f64 / call.len().max(1) as f64;
        let chain = JobSpec::new("chain3")
            .step(StepSpec::new("a", "troupe.echo").input(json!(1)))
            .step(StepSpec::new("b", "troupe.echo").input(json!(2)).after(["a"]))
            .step(StepSpec::new("c", "troupe.echo").input(json!(3)).after(["b"]));
        let chain3 = job_latency(&client, &chain, calls / 2).await;
        let (steps_per_s, _) = throughput(&client, secs, 64, 4).await;
        // One-step jobs (every `call`, most Gearman and HTTP traffic): jobs per second and
        // what each costs the three nodes in CPU time.
        eprintln!("measuring one-step jobs for {secs} s");
        let cpu_before = cpu();
        let (one_step_jobs_per_s, one_step_jobs) = throughput(&client, secs, 64, 1).await;
        let one_step_cpu_us = (cpu() - cpu_before) as f64 / one_step_jobs.max(1) as f64;
        // troupe.fib is pure: with the cache on, the calls would be cache hits.
        let mut fib2 = JobSpec::new("fib2").step(StepSpec::new("fib", "troupe.fib").input(json!({"n": 2})));
        fib2.cache = troupe_runtime::merge::CacheMode::Off;
        let (reentrant, reentrant_call_p50_us) = paired_extra(&client, &fib2, &one, calls / 2).await;
        let fan = JobSpec::new("fan")
            .with_input(json!({"items": (0..10_000).collect::<Vec<u32>>()}))
            .step(StepSpec::new("each", "troupe.echo").for_each("input.items"));
        let mut fanout_runs = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let st = client.submit(fan.clone()).await.expect("submit").wait().await.expect("wait");
            assert_eq!(st.state, JobState::Succeeded);
            fanout_runs.push(10_000.0 / t.elapsed().as_secs_f64());
        }
        fanout_runs.sort_by(f64::total_cmp);
        let fanout_items_per_s = fanout_runs[1];

        // A second client connected to all three nodes spreads its submissions over them.
        let spread_client = cluster.quiet_client_via(&[0, 1, 2]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let spread = job_latency(&spread_client, &one, calls / 2).await;
        let spread_call_p50_us = pct(&spread, 0.5);
        // The same throughput with the jobs' ownership spread over the three nodes (any
        // node accepts jobs): the first node no longer does every job's bookkeeping.
        let (spread_steps_per_s, _) = throughput(&spread_client, secs, 64, 4).await;
        let (c50, c99) = (pct(&call, 0.5), pct(&call, 0.99));
        let t50 = pct(&tcp, 0.5).max(1);
        eprintln!(
            "one-step job round trip: p50 {c50} us, p99 {c99} us over {} calls ({call_cpu_us:.0} us of the nodes' CPU each); raw TCP round trip p50 {t50} us",
            call.len()
        );
        eprintln!("one-step job, client spreading submissions over 3 nodes: p50 {spread_call_p50_us} us");
        eprintln!("3-step chain: p50 {} us, p99 {} us", pct(&chain3, 0.5), pct(&chain3, 0.99));
        eprintln!("throughput: {steps_per_s:.0} steps/s (64 jobs of 4 steps in flight, {secs} s); {spread_steps_per_s:.0} steps/s with the client spreading its jobs over the 3 nodes");
        eprintln!("one-step jobs: {one_step_jobs_per_s:.0} jobs/s (64 in flight, {secs} s), {one_step_cpu_us:.0} us of the nodes' CPU per job");
        eprintln!("re-entrant call: {reentrant_call_p50_us:+} us p50 of fib(2) minus the one-step job, paired (fib(2) job p50 {} us)", pct(&reentrant, 0.5));
        eprintln!("for_each of 10,000 echo items: {fanout_items_per_s:.0} items/s (median of 3)");
        println!(
            "{}",
            json!({
                "bench": "overhead",
                "tls": tls,
                "call_p50_us": c50,
                "call_p99_us": c99,
                "call_cpu_us_per_job": call_cpu_us.round(),
                "chain3_p50_us": pct(&chain3, 0.5),
                "chain3_p99_us": pct(&chain3, 0.99),
                "steps_per_s": steps_per_s.round(),
                "spread_steps_per_s": spread_steps_per_s.round(),
                "one_step_jobs_per_s": one_step_jobs_per_s.round(),
                "one_step_cpu_us_per_job": one_step_cpu_us.round(),
                "reentrant_call_p50_us": reentrant_call_p50_us,
                "fanout_items_per_s": fanout_items_per_s.round(),
                "spread_call_p50_us": spread_call_p50_us,
                "tcp_rtt_p50_us": t50,
                "call_p50_over_tcp_rtt": (c50 as f64 / t50 as f64 * 10.0).round() / 10.0,
            })
        );
    });
}
