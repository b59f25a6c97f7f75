//! The nemesis: five real nodes, each in its own network namespace, under client load while
//! faults are injected, then a checker over the whole history (in the manner of Jepsen).
//!
//! `cargo bench -p troupe-integration --bench nemesis`; needs root (namespaces, a tmpfs).
//! Environment: `NEMESIS_SECS` (default 120) how long faults are injected;
//! `NEMESIS_SEED` (default: from the clock; printed) the fault schedule, replayed by
//! passing it back; `NEMESIS_REPORT_ONLY=1` exits 0 whatever the figures.
//!
//! Workloads, all at once: jobs of three chained `nemesis.effect` steps (each attempt
//! appends job/step/attempt/node to a ledger file when it starts; 3 attempts per step);
//! `add 1` to eight `troupe.counter` keys; transfers of the accounts example between eight
//! accounts; and a sample of every activation (`Client::actors`) every 2 s.
//! The nemesis (`nemesis::faults`): SIGKILL and restart, SIGSTOP past `down_after_ms`
//! then SIGCONT, a 2/3 split, an isolated node, a one-way cut, spinning tasks on every
//! slot of a node, and a full disk (n5's data folder is a 64 MiB tmpfs). Then every fault
//! is healed, the workloads get a grace period to end, each node is asked (HTTP, through
//! that node alone) for the status of every acknowledged job, and counters and accounts
//! are read.
//!
//! The last line of stdout (figures defined in `troupe_integration::nemesis::checker`):
//! `{"bench": "nemesis", "seed", "secs", "jobs_acknowledged", "jobs_lost",
//! "jobs_ended_twice", "status_disagreements", "effects_over_bound",
//! "acked_adds_missing", "money_delta", "double_owners", ...}`, plus counts for context.
//! Every figure but the counts must be 0; the bench exits 1 otherwise (unless
//! `NEMESIS_REPORT_ONLY=1`). The history, the ledger and every node's logs are kept in the
//! folder named on stderr. Progress lines go to stderr.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use troupe_example_accounts as accounts;
use troupe_integration::nemesis::checker;
use troupe_integration::nemesis::faults::{self, Fault, DISK_NODE};
use troupe_integration::nemesis::history::{self, Add, Claim, EndSeen, History, JobRec};
use troupe_integration::tinyfs::TinyFs;
use troupe_integration::{cargo_bin, core_formed, env_or, Cluster};
use troupe_runtime::{Client, JobSpec, JobStatus, RetryPolicy, StepSpec};

const NODES: usize = 5;
/// The file that fills the full-disk node's folder.
const FILLER: &str = "nemesis-filler";
const COUNTER_KEYS: u64 = 8;
const MAX_ATTEMPTS: u32 = 3;
/// `limits.max_lost_attempts`: lost attempts run again without using a retry.
const MAX_LOST_ATTEMPTS: usize = 5;
/// How long after the heal the workloads may take to end.
const GRACE: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// What the nemesis needs besides the cluster.
struct Run {
    cluster: Cluster,
    exe: PathBuf,
    out: PathBuf,
    /// Log files of earlier lives of each node (restarts truncate the log).
    lives: Vec<usize>,
    down: Vec<bool>,
    paused: Vec<bool>,
}

impl Run {
    fn name(i: usize) -> String {
        Cluster::name(i)
    }

    /// Keeps node `i`'s log of this life in the output folder.
    fn archive_log(&mut self, i: usize) {
        let to = self
            .out
            .join(format!("{}.life{}.log", Self::name(i), self.lives[i]));
        let _ = std::fs::write(to, self.cluster.log(i));
        self.lives[i] += 1;
    }

    fn restart(&mut self, i: usize) {
        self.archive_log(i);
        let spec = self.cluster.spec(i);
        let exe = self.exe.clone();
        self.cluster.start_with(i, &exe, &spec);
        self.down[i] = false;
    }

    fn apply(&mut self, f: &Fault, disk: &TinyFs) {
        let net = self.cluster.netns().expect("namespaces");
        let r = match f {
            Fault::Kill(i) => {
                self.cluster.node(*i).kill();
                self.down[*i] = true;
                Ok(())
            }
            Fault::Pause(i) => {
                self.cluster.node(*i).signal(libc::SIGSTOP);
                self.paused[*i] = true;
                Ok(())
            }
            Fault::Split(side) => net.split(side),
            Fault::Isolate(i) => net.cut(*i),
            Fault::OneWay(a, b) => net.one_way(*a, *b),
            Fault::DiskFull(_) => {
                if let Err(e) = disk.fill(FILLER) {
                    eprintln!("nemesis: cannot fill the disk: {e}");
                }
                Ok(())
            }
            Fault::Spin(_) => Ok(()), // submitted by the caller, through the node
        };
        if let Err(e) = r {
            eprintln!("nemesis: could not apply {f}: {e}");
        }
    }

    /// Heals everything: network, paused and killed nodes, the full disk.
    fn heal_all(&mut self, disk: &TinyFs) {
        if let Err(e) = self.cluster.netns().expect("namespaces").heal_all() {
            eprintln!("nemesis: heal: {e}");
        }
        for i in 0..NODES {
            if self.paused[i] {
                self.cluster.node(i).signal(libc::SIGCONT);
                self.paused[i] = false;
            }
        }
        let _ = std::fs::remove_file(disk.path().join(FILLER));
        for i in 0..NODES {
            if self.down[i] || !self.cluster.node(i).is_running() {
                if !self.down[i] {
                    eprintln!(
                        "nemesis: {} had exited by itself; starting it again",
                        Self::name(i)
                    );
                }
                self.restart(i);
            }
        }
    }
}

fn end_seen(via: &str, st: &JobStatus) -> EndSeen {
    EndSeen {
        via: via.into(),
        state: serde_json::to_value(st.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        output: st.output.clone(),
        attempts: st
            .steps
            .iter()
            .map(|(k, s)| (k.clone(), s.attempts))
            .collect(),
        seen_ms: now_ms(),
    }
}

fn end_seen_json(via: &str, v: &Value) -> EndSeen {
    EndSeen {
        via: via.into(),
        state: v["state"].as_str().unwrap_or_default().to_string(),
        output: v.get("output").filter(|o| !o.is_null()).cloned(),
        attempts: v["steps"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, s)| (k.clone(), s["attempts"].as_u64().unwrap_or(0) as u32))
                    .collect()
            })
            .unwrap_or_default(),
        seen_ms: now_ms(),
    }
}

fn effect_job(n: u64, rng: &mut faults::Rng) -> JobSpec {
    let retry = RetryPolicy {
        max_attempts: MAX_ATTEMPTS,
        backoff_ms: 100,
    };
    let mut job = JobSpec::new(format!("nemesis-{n}"));
    let mut prev: Option<&str> = None;
    for id in ["a", "b", "c"] {
        let mut s = StepSpec::new(id, "nemesis.effect")
            .input(json!({ "ms": rng.between(20, 300) }))
            .retry(retry);
        if let Some(p) = prev {
            s = s.after([p]);
        }
        job = job.step(s);
        prev = Some(id);
    }
    job
}

/// Submits effect jobs until `stop`; a task per job waits for its end until `deadline`.
async fn jobs_loop(
    client: Client,
    hist: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    deadline: Arc<Mutex<Instant>>,
    seed: u64,
    acked: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
) {
    let mut rng = faults::Rng::new(seed);
    let inflight = Arc::new(tokio::sync::Semaphore::new(24));
    let mut waiters = vec![];
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        n += 1;
        let job = effect_job(n, &mut rng);
        let sub = tokio::time::timeout(Duration::from_secs(15), client.submit(job)).await;
        let Ok(Ok(mut h)) = sub else {
            hist.lock().unwrap().jobs.push(JobRec::default());
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let id = h.id().to_string();
        acked.fetch_add(1, Ordering::Relaxed);
        let (hist, deadline, ended) = (hist.clone(), deadline.clone(), ended.clone());
        waiters.push(tokio::spawn(async move {
            let mut rec = JobRec {
                id,
                acked: true,
                seen: vec![],
            };
            loop {
                let left = deadline
                    .lock()
                    .unwrap()
                    .saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match tokio::time::timeout(left.min(Duration::from_secs(5)), h.wait()).await {
                    Ok(Ok(st)) if st.state.is_terminal() => {
                        rec.seen.push(end_seen("wait", &st));
                        ended.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(500)).await,
                    _ => {}
                }
            }
            hist.lock().unwrap().jobs.push(rec);
            drop(permit);
        }));
    }
    for w in waiters {
        let _ = w.await;
    }
}

/// Adds 1 to random counter keys until `stop`.
async fn counters_loop(
    client: Client,
    hist: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = faults::Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let key = format!("nemesis-{}", rng.below(COUNTER_KEYS));
        let r = client
            .call_actor("troupe.counter", &key, json!({"op": "add", "n": 1}))
            .await;
        let add = match r {
            Ok(v) => Add {
                key,
                acked: true,
                total: v["total"].as_i64(),
            },
            Err(_) => Add {
                key,
                acked: false,
                total: None,
            },
        };
        hist.lock().unwrap().adds.push(add);
    }
}

/// Runs batches of transfers until `stop` (the batch under way finishes).
async fn transfers_loop(
    client: Client,
    hist: Arc<Mutex<History>>,
    names: Vec<String>,
    stop: Arc<AtomicBool>,
    seed: u64,
    submitted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
) {
    let mut batch = 0;
    while !stop.load(Ordering::Relaxed) {
        batch += 1;
        let plan = accounts::plan(&names, 8, seed * 10_000 + batch);
        submitted.fetch_add(plan.len(), Ordering::Relaxed);
        let ended = ended.clone();
        let outcome = accounts::run_transfers(&client, plan, 4, move |_| {
            ended.fetch_add(1, Ordering::Relaxed);
        })
        .await;
        hist.lock().unwrap().transfers_odd.extend(outcome.other);
    }
}

/// Samples every activation every 2 s until `stop`.
async fn activations_loop(client: Client, hist: Arc<Mutex<History>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(Ok(list)) = tokio::time::timeout(Duration::from_secs(5), client.actors()).await {
            let mut h = hist.lock().unwrap();
            h.claims.extend(list.into_iter().map(|a| Claim {
                kind: "actor".into(),
                id: format!("{}/{}", a.actor_type, a.key),
                epoch: a.epoch,
                node: a.node,
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Retries `f` for up to 30 s.
async fn patiently<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                eprintln!("nemesis: {what}: {e}");
                return None;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let secs: u64 = env_or("NEMESIS_SECS", 120);
    let seed: u64 = env_or("NEMESIS_SEED", now_ms() % 1_000_000);
    let report_only = std::env::var("NEMESIS_REPORT_ONLY").is_ok_and(|v| v == "1");
    eprintln!("nemesis: seed {seed} ({secs} s; replay the faults with NEMESIS_SEED={seed})");
    let out = std::env::temp_dir().join(format!("troupe-nemesis-{seed}-{}", std::process::id()));
    let ledger = out.join("ledger");
    std::fs::create_dir_all(&ledger).expect("output folder");
    eprintln!("nemesis: history, ledger and logs in {}", out.display());

    let exe = cargo_bin("troupe-integration", "nemesis-node");
    let mut cluster = Cluster::plan_in_netns(NODES)
        .unwrap_or_else(|e| panic!("the nemesis needs network namespaces (root): {e}"));
    let net_ips: Vec<String> = {
        let net = cluster.netns().expect("namespaces");
        (0..NODES).map(|i| net.ip(i)).collect()
    };
    cluster.http_addrs = net_ips.iter().map(|ip| format!("{ip}:7200")).collect();
    cluster.serve_http = true;
    cluster.slots = 2;
    cluster.env.extend([
        ("NEMESIS_LEDGER".to_string(), ledger.display().to_string()),
        (
            "RUST_LOG".to_string(),
            "info,ractor=warn,ractor_cluster=error,troupe_actors::actor_host::activation=debug,troupe_actors::dispatcher=debug,troupe_actors::job_supervisor=debug,troupe_actors::job_manager=debug"
                .to_string(),
        ),
        (
            "TROUPE_FAILURE__TAKEOVER_AFTER_MS".to_string(),
            "4000".to_string(),
        ),
    ]);
    let disk = TinyFs::mount(
        &cluster
            .dir
            .join(format!("data-{}", Cluster::name(DISK_NODE))),
        64,
    )
    .expect("a tmpfs for the full-disk fault (needs root)");
    for i in 0..NODES {
        let spec = cluster.spec(i);
        cluster.start_with(i, &exe, &spec);
    }
    let all: Vec<usize> = (0..NODES).collect();
    let client = cluster.quiet_client_via(&all).await;
    client
        .wait_for_nodes(NODES, Duration::from_secs(30))
        .await
        .expect("every node up");
    core_formed(3).await;
    eprintln!("nemesis: {NODES} nodes up, core group formed");

    let names: Vec<String> = (0..8).map(|i| format!("nemesis-acc-{i}")).collect();
    let hist = Arc::new(Mutex::new(History {
        effect_bound: MAX_ATTEMPTS as usize + MAX_LOST_ATTEMPTS,
        ..History::default()
    }));
    patiently("open the accounts", || {
        accounts::open_all(&client, &names, 1000)
    })
    .await;
    hist.lock().unwrap().money_before =
        patiently("read the accounts", || accounts::total(&client, &names)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Arc::new(Mutex::new(
        Instant::now() + Duration::from_secs(secs) + GRACE * 2,
    ));
    let (jobs_acked, jobs_ended, tr_submitted, tr_ended) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut loops = vec![];
    for k in 0..3 {
        loops.push(tokio::spawn(jobs_loop(
            client.clone(),
            hist.clone(),
            stop.clone(),
            deadline.clone(),
            seed * 10 + k,
            jobs_acked.clone(),
            jobs_ended.clone(),
        )));
    }
    for k in 0..3 {
        loops.push(tokio::spawn(counters_loop(
            client.clone(),
            hist.clone(),
            stop.clone(),
            seed * 20 + k,
        )));
    }
    loops.push(tokio::spawn(activations_loop(
        client.clone(),
        hist.clone(),
        stop.clone(),
    )));
    let transfers = tokio::spawn(transfers_loop(
        client.clone(),
        hist.clone(),
        names.clone(),
        stop.clone(),
        seed,
        tr_submitted.clone(),
        tr_ended.clone(),
    ));

    let mut run = Run {
        cluster,
        exe,
        out: out.clone(),
        lives: vec![0; NODES],
        down: vec![false; NODES],
        paused: vec![false; NODES],
    };
    let start = Instant::now();
    let progress = |what: &str| {
        let h = hist.lock().unwrap();
        eprintln!(
            "nemesis: {:6.1}s {what} | jobs acked {} ended {}, adds {} acked {}, transfers {}/{}",
            start.elapsed().as_secs_f64(),
            jobs_acked.load(Ordering::Relaxed),
            jobs_ended.load(Ordering::Relaxed),
            h.adds.len(),
            h.adds.iter().filter(|a| a.acked).count(),
            tr_ended.load(Ordering::Relaxed),
            tr_submitted.load(Ordering::Relaxed),
        );
    };
    for p in faults::schedule(seed, secs, NODES) {
        tokio::time::sleep_until((start + Duration::from_millis(p.at_ms)).into()).await;
        run.apply(&p.fault, &disk);
        if let Fault::Spin(i) = p.fault {
            // Through node i's HTTP API, so the job is owned there and its steps start
            // there while it has free slots.
            let steps: Vec<Value> = (0..4)
                .map(|s| json!({"id": format!("spin{s}"), "task": "troupe.spin", "input": {"ms": p.hold_ms}}))
                .collect();
            let body = json!({"name": "nemesis-spin", "steps": steps}).to_string();
            let url = format!("{}/api/jobs", run.cluster.http_url(i));
            tokio::task::spawn_blocking(move || troupe_integration::http::post(&url, &body));
        }
        hist.lock()
            .unwrap()
            .faults
            .push((p.at_ms, p.fault.to_string()));
        progress(&format!("{} for {} ms", p.fault, p.hold_ms));
        tokio::time::sleep(Duration::from_millis(p.hold_ms)).await;
        run.heal_all(&disk);
        progress("healed");
    }
    tokio::time::sleep_until((start + Duration::from_secs(secs)).into()).await;

    // Heal, stop the load, let what is in flight end.
    stop.store(true, Ordering::Relaxed);
    run.heal_all(&disk);
    *deadline.lock().unwrap() = Instant::now() + GRACE;
    progress("faults over; grace period");
    if client
        .wait_for_nodes(NODES, Duration::from_secs(30))
        .await
        .is_err()
    {
        eprintln!("nemesis: not every node is up 30 s after the heal");
    }
    for l in loops {
        let _ = l.await;
    }
    if tokio::time::timeout(GRACE, transfers).await.is_err() {
        eprintln!("nemesis: transfers still running after the grace period");
    }
    progress("load ended");

    // Ask every node about every acknowledged job, through that node alone.
    let ids: Vec<String> = {
        let h = hist.lock().unwrap();
        h.jobs
            .iter()
            .filter(|j| j.acked)
            .map(|j| j.id.clone())
            .collect()
    };
    let urls: Vec<String> = (0..NODES).map(|i| run.cluster.http_url(i)).collect();
    let mut askers = vec![];
    for (i, url) in urls.into_iter().enumerate() {
        let ids = ids.clone();
        askers.push(tokio::task::spawn_blocking(move || {
            let via = format!("node {}", Cluster::name(i));
            ids.iter()
                .filter_map(|id| {
                    let a =
                        troupe_integration::http::try_get(&format!("{url}/api/jobs/{id}")).ok()?;
                    (a.status == 200)
                        .then(|| serde_json::from_str::<Value>(&a.body).ok())
                        .flatten()
                        .map(|v| (id.clone(), end_seen_json(&via, &v)))
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut answers: BTreeMap<String, Vec<EndSeen>> = BTreeMap::new();
    for a in askers {
        for (id, seen) in a.await.unwrap_or_default() {
            answers.entry(id).or_default().push(seen);
        }
    }
    // Counters and money after the heal.
    let keys: Vec<String> = (0..COUNTER_KEYS).map(|k| format!("nemesis-{k}")).collect();
    let mut finals = BTreeMap::new();
    for k in keys {
        let v = patiently("read a counter", || {
            client.call_actor("troupe.counter", &k, json!({"op": "get"}))
        })
        .await;
        finals.insert(k, v.and_then(|v| v["total"].as_i64()));
    }
    let money_after = patiently("read the accounts", || accounts::total(&client, &names)).await;

    // Logs and ledger.
    for i in 0..NODES {
        run.archive_log(i);
    }
    let mut claims = vec![];
    let mut effects = vec![];
    for entry in std::fs::read_dir(&out).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(node) = name.split('.').next().filter(|_| name.ends_with(".log")) {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            claims.extend(history::parse_log_claims(node, &text));
        }
    }
    for entry in std::fs::read_dir(&ledger).into_iter().flatten().flatten() {
        effects.extend(history::parse_ledger(
            &std::fs::read_to_string(entry.path()).unwrap_or_default(),
        ));
    }
    let h = {
        let mut h = hist.lock().unwrap();
        for j in h.jobs.iter_mut() {
            if let Some(a) = answers.remove(&j.id) {
                j.seen.extend(a);
            }
        }
        h.counter_finals = finals;
        h.money_after = money_after;
        h.transfers = tr_submitted.load(Ordering::Relaxed);
        h.transfers_unfinished = h.transfers.saturating_sub(tr_ended.load(Ordering::Relaxed));
        h.claims.extend(claims);
        h.effects = effects;
        h.clone()
    };
    let _ = std::fs::write(
        out.join("history.json"),
        serde_json::to_string_pretty(&h).unwrap_or_default(),
    );
    let f = checker::check(&h);
    drop(run);
    drop(disk);
    let mut line = json!({"bench": "nemesis", "seed": seed, "secs": secs});
    if let (Value::Object(l), Ok(Value::Object(figs))) = (&mut line, serde_json::to_value(&f)) {
        l.extend(figs);
        l.insert("faults".into(), json!(h.faults.len()));
        l.insert("effects".into(), json!(h.effects.len()));
        l.insert(
            "adds_acknowledged".into(),
            json!(h.adds.iter().filter(|a| a.acked).count()),
        );
        l.insert("transfers".into(), json!(h.transfers));
        l.insert("transfers_unfinished".into(), json!(h.transfers_unfinished));
        l.insert("transfers_odd".into(), json!(h.transfers_odd.len()));
    }
    println!("{line}");
    if f.clean() || report_only {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!(
            "nemesis: broken promises (see {}); replay with NEMESIS_SEED={seed}",
            out.display()
        );
        std::process::ExitCode::from(1)
    }
}
