//! Stage-1 starvation, after seed 000 (sweetiQ): at peak, new jobs spawn stage-1 work so
//! fast that nodes spend all their time on it and jobs already under way starve.
//!
//! A job here is three stages, `flood.fetch` -> `flood.process` -> `flood.store`, each a
//! few milliseconds of waiting (I/O-bound work, as the seed's fetches). [`measure`] runs,
//! against a cluster, what the `flood` benchmark prints: the cluster's capacity (jobs/s
//! with enough in flight), an unloaded job's latency, and floods at multiples of the
//! capacity for a fixed period: jobs completed per second, accepted jobs' latency from
//! submission to end, latency from the moment a job's first stage started to run to
//! its end, how many jobs were left half-done (first stage done, job not finished)
//! when the period ended, and how many submissions were refused as overloaded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use troupe_runtime::{
    Client, JobEvent, JobSpec, JobState, StepSpec, Task, TaskContext, TaskError, TaskRegistry,
};

/// Input of every stage.
#[derive(Debug, Deserialize, Serialize)]
pub struct Work {
    /// How long the stage takes, in milliseconds.
    #[serde(default = "default_ms")]
    pub ms: u64,
}
fn default_ms() -> u64 {
    5
}

/// Milliseconds since the Unix epoch (the node and the client share this machine's
/// clock in the benchmark).
pub fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

/// One stage: waits `ms`; returns its name and when it started to run (the job's
/// latency is measured from its first stage's start, not from when it was queued).
pub struct Stage(&'static str);
impl Task for Stage {
    type Input = Work;
    type Output = Value;
    async fn run(&self, _ctx: TaskContext, w: Work) -> Result<Value, TaskError> {
        let started_ms = now_ms();
        tokio::time::sleep(Duration::from_millis(w.ms)).await;
        Ok(json!({ "stage": self.0, "started_ms": started_ms }))
    }
}

/// Registers `flood.fetch`, `flood.process` and `flood.store`.
pub fn register(tasks: &mut TaskRegistry) {
    tasks.register("flood.fetch", Stage("fetched"));
    tasks.register("flood.process", Stage("processed"));
    tasks.register("flood.store", Stage("stored"));
}

/// The three-stage job, each stage `ms` long; its output is the first stage's.
pub fn job(ms: u64) -> JobSpec {
    let input = json!({ "ms": ms });
    let mut j = JobSpec::new("flood");
    j.output = Some("fetch".into());
    j.step(StepSpec::new("fetch", "flood.fetch").input(input.clone()))
        .step(
            StepSpec::new("process", "flood.process")
                .input(input.clone())
                .after(["fetch"]),
        )
        .step(
            StepSpec::new("store", "flood.store")
                .input(input)
                .after(["process"]),
        )
}

/// What one flood measured.
#[derive(Debug, Clone, Serialize)]
pub struct FloodFigures {
    /// The offered load, as a multiple of the capacity.
    pub load_x: f64,
    /// Jobs completed per second during the flood.
    pub completed_per_s: f64,
    /// Jobs per second the cluster completes with enough in flight (measured first).
    pub capacity_per_s: f64,
    /// Accepted jobs' latency from submission to end during the flood, p50, ms.
    pub p50_ms: f64,
    /// The same, p99.
    pub p99_ms: f64,
    /// An unloaded job's latency (submission to end), p99, ms.
    pub unloaded_p99_ms: f64,
    /// Latency from a job's first stage's start to its end during the flood, p99, ms
    /// (how long a job under way takes: starvation shows here).
    pub under_way_p99_ms: f64,
    /// Jobs started but not finished when the flood period ended.
    pub half_done: u64,
    /// Jobs submitted during the flood.
    pub submitted: u64,
    /// Submissions refused as overloaded ("retry after"), not retried.
    pub refused: u64,
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

/// When the job's first stage started to run (from its output), in epoch ms.
fn first_start(status: &troupe_runtime::JobStatus) -> Option<f64> {
    status.output.as_ref()?.get("started_ms")?.as_f64()
}

/// Runs one job: its latency from submission to end, in ms.
async fn follow(client: &Client, ms: u64) -> Option<f64> {
    let t = Instant::now();
    let mut h = client.submit(job(ms)).await.ok()?;
    let st = h.wait().await.ok()?;
    (st.state == JobState::Succeeded).then(|| t.elapsed().as_secs_f64() * 1e3)
}

/// The cluster's capacity: jobs completed per second over `secs` with `in_flight` jobs
/// always submitted.
pub async fn capacity(client: &Client, ms: u64, in_flight: usize, secs: f64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (c, done) = (client.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                if let Ok(mut h) = c.submit(job(ms)).await {
                    if let Ok(st) = h.wait().await {
                        if st.state == JobState::Succeeded && Instant::now() <= end {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / secs
}

/// p99 latency (submission to end, ms) of `n` jobs run one at a time.
pub async fn unloaded_p99(client: &Client, ms: u64, n: usize) -> f64 {
    let mut l = Vec::new();
    for _ in 0..n {
        if let Some(latency) = follow(client, ms).await {
            l.push(latency);
        }
    }
    percentile(&mut l, 0.99)
}

/// What [`flood`] counted.
#[derive(Debug, Default)]
struct Counted {
    /// Accepted jobs' submission-to-end latencies, ms.
    latencies: Vec<f64>,
    /// First-stage-start-to-end latencies, ms.
    under_way: Vec<f64>,
    completed: u64,
    started: u64,
    refused: u64,
}

/// Submits jobs at `rate` per second for `secs` (open loop) through `client` (which
/// should not retry refusals: `ClientOptions::overloaded_wait` zero) and measures what
/// completes within the period.
pub async fn flood(client: &Client, ms: u64, rate: f64, secs: f64) -> FloodFigures {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let counted = Arc::new(Mutex::new(Counted::default()));
    let count = |c: &Mutex<Counted>, f: &mut dyn FnMut(&mut Counted)| {
        f(&mut c.lock().unwrap_or_else(|p| p.into_inner()))
    };
    let mut tasks = Vec::new();
    let mut submitted = 0u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut next = start;
    while next < end {
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        }
        next += interval;
        submitted += 1;
        let (c, counted) = (client.clone(), counted.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let mut h = match c.submit(job(ms)).await {
                Ok(h) => h,
                Err(troupe_runtime::ClientError::Overloaded { .. }) => {
                    count(&counted, &mut |c| c.refused += 1);
                    return;
                }
                Err(_) => return,
            };
            while let Some(ev) = h.next_event().await {
                match ev {
                    // Its first stage ran: the job is under way.
                    JobEvent::StepFinished { step, .. }
                        if step == "fetch" && Instant::now() <= end =>
                    {
                        count(&counted, &mut |c| c.started += 1);
                    }
                    JobEvent::JobFinished { status } => {
                        let (t, t_ms) = (Instant::now(), now_ms());
                        if status.state == JobState::Succeeded {
                            let latency = t.duration_since(t0).as_secs_f64() * 1e3;
                            count(&counted, &mut |c| {
                                c.latencies.push(latency);
                                if let Some(s) = first_start(&status) {
                                    c.under_way.push(t_ms - s);
                                }
                                if t <= end {
                                    c.completed += 1;
                                }
                            });
                        }
                        return;
                    }
                    _ => {}
                }
            }
        }));
    }
    tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
    let (done, started) = {
        let c = counted.lock().unwrap_or_else(|p| p.into_inner());
        (c.completed, c.started)
    };
    // Let the backlog drain before the next measurement.
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(120), t).await;
    }
    let mut c = std::mem::take(&mut *counted.lock().unwrap_or_else(|p| p.into_inner()));
    FloodFigures {
        load_x: 0.0,
        completed_per_s: done as f64 / secs,
        capacity_per_s: 0.0,
        p50_ms: percentile(&mut c.latencies, 0.5),
        p99_ms: percentile(&mut c.latencies, 0.99),
        unloaded_p99_ms: 0.0,
        under_way_p99_ms: percentile(&mut c.under_way, 0.99),
        half_done: started.saturating_sub(done),
        submitted,
        refused: c.refused,
    }
}

/// Capacity and unloaded latency through `client` (which waits out refusals), then a
/// flood at each of `loads` times the capacity for `secs`, through `open` (which does
/// not).
pub async fn measure(
    client: &Client,
    open: &Client,
    ms: u64,
    secs: f64,
    loads: &[f64],
) -> Vec<FloodFigures> {
    let capacity_per_s = capacity(client, ms, 64, 3.0).await;
    let unloaded_p99_ms = unloaded_p99(client, ms, 30).await;
    let mut out = Vec::new();
    for &x in loads {
        let mut f = flood(open, ms, x * capacity_per_s, secs).await;
        f.load_x = x;
        f.capacity_per_s = capacity_per_s;
        f.unloaded_p99_ms = unloaded_p99_ms;
        out.push(f);
    }
    out
}
