//! `cargo bench -p troupe-integration --bench gearman`
//!
//! The same Gearman load against Debian's gearmand (package `gearman-job-server`) and
//! against a three-node Troupe cluster serving `--gearman`, in one run: `GEARMAN_CLIENTS`
//! client connections (default 12), each submitting `SUBMIT_JOB bench.echo` and waiting
//! for `WORK_COMPLETE` in a closed loop, and `GEARMAN_WORKERS` external workers (default
//! 6, raw-protocol threads that sleep with `PRE_SLEEP` and answer each job with its
//! workload) for `GEARMAN_SECS` seconds (default 5) after a one-second warm-up. Against
//! Troupe, clients and workers are spread evenly over the three nodes; against gearmand
//! they all use the one server. Prints one line per server:
//! `{"bench":"gearman","server":"gearmand"|"troupe","jobs_per_s":..,"p50_us":..,"p99_us":..,"cpu_us_per_job":..}`
//! (`cpu_us_per_job`: the server processes' CPU time, user and system, over the load's
//! jobs, from `/proc/PID/stat`; `no_job_per_job`: the `NO_JOB` answers the workers' grabs
//! got per job, each of which costs the server two more packets and the worker a sleep)
//! and lines with Troupe's figures as ratios of gearmand's, for the few-clients load and for
//! a many-clients one (`GEARMAN_MANY_CLIENTS`, default 200 connections, with
//! `GEARMAN_MANY_WORKERS`, default 8, worker connections). Then a pipelined bulk on
//! each server: one connection writes `GEARMAN_BULK` (default 5,000) `SUBMIT_JOB_BG` at
//! once and reads their `JOB_CREATED`s (`{"bench":"gearman_bulk","server":..,"jobs_per_s":..}`;
//! the jobs run after, on the workers).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use troupe_integration::gearman::{Conn, Gearmand};
use troupe_integration::{cpu_us, env_or, Cluster};
use troupe_runtime::gearman::packet::PacketType;

const FUNCTION: &str = "bench.echo";

/// Workers answering every job with its workload until `stop`; each thread returns the
/// `NO_JOB` answers its grabs got.
fn start_workers(
    addrs: &[String],
    n: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<u64>> {
    (0..n)
        .map(|i| {
            let (addr, stop) = (addrs[i % addrs.len()].clone(), stop.clone());
            std::thread::spawn(move || {
                let mut w = Conn::connect(&addr).expect("worker connects");
                w.can_do(FUNCTION).expect("CAN_DO");
                while !stop.load(Ordering::Relaxed) {
                    match w.grab(Duration::from_millis(200)) {
                        Ok(Some((h, _, data))) => {
                            if w.complete(&h, &data).is_err() {
                                break;
                            }
                        }
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
                w.no_jobs
            })
        })
        .collect()
}

struct Figures {
    jobs_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    /// Jobs done, the warm-up's included.
    all_jobs: u64,
}

/// The client load against `addrs`: closed-loop submit-and-wait per connection.
fn run_load(addrs: &[String], clients: usize, secs: u64) -> Figures {
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let all_jobs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let warm_until = Instant::now() + Duration::from_secs(1);
    let end = warm_until + Duration::from_secs(secs);
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (addr, latencies) = (addrs[i % addrs.len()].clone(), latencies.clone());
            let all_jobs = all_jobs.clone();
            std::thread::spawn(move || {
                let mut c = Conn::connect(&addr).expect("client connects");
                let mut mine = Vec::new();
                let mut n = 0u64;
                loop {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    n += 1;
                    let data = format!("job-{i}-{n}");
                    let h = c
                        .submit(PacketType::SUBMIT_JOB, FUNCTION, "", data.as_bytes())
                        .expect("JOB_CREATED");
                    let p = c.wait_end(Duration::from_secs(30)).expect("job ends");
                    assert_eq!(p.kind, PacketType::WORK_COMPLETE, "{p:?}");
                    assert_eq!(p.text(0), h);
                    assert_eq!(p.args[1], data.as_bytes());
                    if t >= warm_until {
                        mine.push(t.elapsed().as_micros() as u64);
                    }
                }
                all_jobs.fetch_add(n, Ordering::Relaxed);
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let mut l = std::mem::take(&mut *latencies.lock().unwrap());
    l.sort_unstable();
    let pick = |q: f64| {
        l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Figures {
        jobs_per_s: l.len() as f64 / secs as f64,
        p50_us: pick(0.5),
        p99_us: pick(0.99),
        all_jobs: all_jobs.load(Ordering::Relaxed),
    }
}

/// The closed-loop load against `addrs`, served by the processes `pids` (whose CPU time
/// per job, warm-up included, is printed as `cpu_us_per_job`).
fn measure(
    server: &str,
    case: &str,
    addrs: &[String],
    pids: &[u32],
    clients: usize,
    workers: usize,
    secs: u64,
) -> (Figures, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let ws = start_workers(addrs, workers, &stop);
    // Workers announce themselves before the load starts.
    std::thread::sleep(Duration::from_millis(500));
    let cpu = || pids.iter().map(|&p| cpu_us(p)).sum::<u64>();
    let cpu_before = cpu();
    let f = run_load(addrs, clients, secs);
    let cpu_per_job = (cpu() - cpu_before) as f64 / f.all_jobs.max(1) as f64;
    stop.store(true, Ordering::Relaxed);
    let no_jobs: u64 = ws.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    println!(
        "{}",
        json!({"bench": "gearman", "server": server, "case": case, "clients": clients,
               "workers": workers, "jobs_per_s": f.jobs_per_s.round(),
               "p50_us": f.p50_us, "p99_us": f.p99_us,
               "cpu_us_per_job": cpu_per_job.round(),
               "no_job_per_job": (no_jobs as f64 / f.all_jobs.max(1) as f64 * 100.0).round() / 100.0})
    );
    (f, cpu_per_job)
}

/// One connection submits `n` background jobs written at once; jobs/s until the last
/// `JOB_CREATED` is read.
fn bulk(server: &str, addr: &str, n: usize) -> f64 {
    use troupe_runtime::gearman::packet::request;
    let mut c = Conn::connect(addr).expect("bulk client connects");
    let mut burst = Vec::new();
    for i in 0..n {
        let data = format!("bulk-{i}");
        burst.extend_from_slice(&request(
            PacketType::SUBMIT_JOB_BG,
            &[FUNCTION.as_bytes(), b"", data.as_bytes()],
        ));
    }
    let t = Instant::now();
    c.send_raw(&burst).expect("send the bulk");
    for _ in 0..n {
        let p = c
            .expect(
                &[PacketType::JOB_CREATED, PacketType::ERROR],
                Duration::from_secs(60),
            )
            .expect("an answer");
        assert_eq!(p.kind, PacketType::JOB_CREATED, "{p:?}");
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "gearman_bulk", "server": server, "jobs": n, "jobs_per_s": rate.round()})
    );
    rate
}

/// The bulk against `addr` with workers running (so the queue drains afterwards).
fn measure_bulk(server: &str, addrs: &[String], workers: usize, n: usize) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let ws = start_workers(addrs, workers, &stop);
    std::thread::sleep(Duration::from_millis(500));
    let rate = bulk(server, &addrs[0], n);
    stop.store(true, Ordering::Relaxed);
    for w in ws {
        let _ = w.join();
    }
    rate
}

fn main() {
    let clients: usize = env_or("GEARMAN_CLIENTS", 12);
    // The many-clients case: 200 connections, 8 worker connections (issue 27).
    let many: usize = env_or("GEARMAN_MANY_CLIENTS", 200);
    let many_workers: usize = env_or("GEARMAN_MANY_WORKERS", 8);
    let bulk_n: usize = env_or("GEARMAN_BULK", 5000);
    let workers: usize = env_or("GEARMAN_WORKERS", 6);
    let secs: u64 = env_or("GEARMAN_SECS", 5);
    eprintln!("{clients} clients, {workers} workers, {secs} s per server");

    let mut cluster = Cluster::plan(3);
    cluster.serve_gearman = true;
    cluster.slots = 1;
    let g = Gearmand::start(&cluster.dir);
    let (gm, gm_cpu) = measure(
        "gearmand",
        "few_clients",
        std::slice::from_ref(&g.addr),
        &[g.pid()],
        clients,
        workers,
        secs,
    );
    let (gm_many, gm_many_cpu) = measure(
        "gearmand",
        "many_clients",
        std::slice::from_ref(&g.addr),
        &[g.pid()],
        many,
        many_workers,
        secs,
    );
    let gm_bulk = measure_bulk("gearmand", std::slice::from_ref(&g.addr), workers, bulk_n);
    drop(g);

    for i in 0..3 {
        cluster.start_node(i);
    }
    for a in &cluster.gearman_addrs {
        let mut c = Conn::connect(a).expect("node serves Gearman");
        let p = c.call("troupe.echo", b"up").expect("echo");
        assert_eq!(p.kind, PacketType::WORK_COMPLETE);
    }
    // Let the mesh settle (every node sees every other).
    std::thread::sleep(Duration::from_millis(1000));
    let pids: Vec<u32> = (0..3).filter_map(|i| cluster.node(i).pid()).collect();
    let (tr, tr_cpu) = measure(
        "troupe",
        "few_clients",
        &cluster.gearman_addrs,
        &pids,
        clients,
        workers,
        secs,
    );
    std::thread::sleep(Duration::from_millis(1000));
    let (tr_many, tr_many_cpu) = measure(
        "troupe",
        "many_clients",
        &cluster.gearman_addrs,
        &pids,
        many,
        many_workers,
        secs,
    );
    // Let the load's jobs finish before the bulk.
    std::thread::sleep(Duration::from_millis(1000));
    let tr_bulk = measure_bulk("troupe", &cluster.gearman_addrs, workers, bulk_n);
    let ratio = |a: f64, b: f64| (a / b.max(1.0) * 100.0).round() / 100.0;
    println!(
        "{}",
        json!({"bench": "gearman", "ratio": "troupe/gearmand", "case": "many_clients",
               "clients": many,
               "jobs_per_s": ratio(tr_many.jobs_per_s, gm_many.jobs_per_s),
               "p50": ratio(tr_many.p50_us as f64, gm_many.p50_us as f64),
               "p99": ratio(tr_many.p99_us as f64, gm_many.p99_us as f64),
               "cpu_per_job": ratio(tr_many_cpu, gm_many_cpu)})
    );
    println!(
        "{}",
        json!({"bench": "gearman", "ratio": "troupe/gearmand", "case": "few_clients",
               "clients": clients,
               "jobs_per_s": (tr.jobs_per_s / gm.jobs_per_s * 100.0).round() / 100.0,
               "p50": (tr.p50_us as f64 / gm.p50_us.max(1) as f64 * 100.0).round() / 100.0,
               "p99": (tr.p99_us as f64 / gm.p99_us.max(1) as f64 * 100.0).round() / 100.0,
               "bulk_jobs_per_s": (tr_bulk / gm_bulk.max(1.0) * 100.0).round() / 100.0,
               "cpu_per_job": (tr_cpu / gm_cpu.max(1.0) * 100.0).round() / 100.0})
    );
}
