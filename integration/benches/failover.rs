//! `cargo bench -p troupe-integration --bench failover`
//!
//! How fast the cluster recovers, on release-built nodes (two slots each), as medians of
//! `FAILOVER_RUNS` runs (default 5):
//! - `kill_to_redispatch_ms`: SIGKILL of a node running an attempt, to that step's new
//!   attempt running on another node (the job's owner sees the connection close).
//! - `silent_to_down_ms`: a node cut off by network namespaces (its traffic dropped, its
//!   connections left open), to its peers listing it `down` (default failure settings).
//!   Needs root; without it the figure is `null` and stderr says why.
//! - `restart_to_work_ms`: a killed node started again under its name, from its process
//!   start to its first completed step, with work waiting in the cluster.
//! - `takeover_ms`: SIGKILL of the node that owns a job (it stays down), to the job's
//!   next step running under its new owner, on four nodes with
//!   `failure.takeover_after_ms` = `FAILOVER_TAKEOVER_AFTER_MS` (default 1000, printed as
//!   `takeover_after_ms`): the grace period is part of the figure; what the cluster adds
//!   is the difference. Runs alternate between an owner that leads the core group
//!   (`takeover_leader_ms`, median, and `takeover_leader_max_ms`: the group elects a new
//!   leader before it can decide) and one that does not (`takeover_follower_ms`);
//!   `takeover_ms` is the median of all.
//!
//! Prints, last,
//! `{"bench":"failover","kill_to_redispatch_ms":..,"silent_to_down_ms":..,"restart_to_work_ms":..,"takeover_ms":..,
//!   "takeover_leader_ms":..,"takeover_leader_max_ms":..,"takeover_follower_ms":..,"takeover_after_ms":..}`.

use std::time::{Duration, Instant};

use serde_json::json;
use troupe_integration::{
    core_formed, env_or, node_state, start_for_takeover, submit_owned_by, Cluster,
};
use troupe_runtime::{Client, JobSpec, StepSpec, StepState};

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some((v[v.len() / 2] * 10.0).round() / 10.0)
}

async fn until_state(client: &Client, node: &str, want: &str, limit: Duration) -> Duration {
    let t = Instant::now();
    while node_state(client, node).await.as_deref() != Some(want) {
        assert!(t.elapsed() < limit, "{node} not {want} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    t.elapsed()
}

/// Six 5 s steps through n1, so that n3 runs some; returns the job and a step on n3.
async fn long_job_with_a_step_on(client: &Client, node: &str) -> (String, String) {
    let mut job = JobSpec::new("long");
    for i in 0..6 {
        job = job.step(StepSpec::new(format!("s{i}"), "troupe.sleep").input(json!({"ms": 5000})));
    }
    let h = client.submit(job).await.expect("submit");
    let t = Instant::now();
    loop {
        let st = client.status(h.id()).await.expect("status");
        if let Some((id, _)) = st
            .steps
            .iter()
            .find(|(_, s)| s.node.as_deref() == Some(node) && s.state == StepState::Running)
        {
            return (h.id().to_string(), id.clone());
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "nothing ran on {node}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Kill n3 mid-attempt, time the re-dispatch; start n3 again, time its first step.
async fn kill_and_restart(c: &mut Cluster, client: &Client) -> (f64, f64) {
    let (job, step) = long_job_with_a_step_on(client, "n3").await;
    let killed = Instant::now();
    c.node(2).kill();
    let redispatch = loop {
        let st = client.status(&job).await.expect("status");
        let s = &st.steps[&step];
        if s.attempts >= 2 && s.state == StepState::Running {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "{step} not re-dispatched"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    until_state(client, "n3", "down", Duration::from_secs(10)).await;
    let _ = client.cancel(&job).await;
    // Work waiting in the cluster: 20 ms steps, more than n1 and n2 run at once.
    let started = Instant::now();
    c.start_node(2);
    let first = loop {
        let mut handles = Vec::new();
        for i in 0..12 {
            let j = JobSpec::new(format!("w{i}"))
                .step(StepSpec::new("s", "troupe.sleep").input(json!({"ms": 20})));
            handles.push(client.submit(j).await.expect("submit"));
        }
        let mut seen = None;
        for mut h in handles {
            let st = h.wait().await.expect("wait");
            if st.steps["s"].node.as_deref() == Some("n3") && seen.is_none() {
                seen = Some(started.elapsed());
            }
        }
        if let Some(t) = seen {
            break t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "n3 took no work"
        );
    };
    (
        redispatch.as_secs_f64() * 1000.0,
        first.as_secs_f64() * 1000.0,
    )
}

/// Cut n3 off, time until n1 lists it down; heal and wait for it to rejoin.
async fn silent_rounds(runs: usize) -> Result<Vec<f64>, String> {
    let mut c = Cluster::plan_in_netns(3)?;
    c.slots = 2;
    let client = c.start_all_settled().await;
    let mut out = Vec::new();
    for _ in 0..runs {
        let cut = Instant::now();
        c.cut(2)?;
        until_state(&client, "n3", "down", Duration::from_secs(15)).await;
        out.push(cut.elapsed().as_secs_f64() * 1000.0);
        c.heal(2)?;
        until_state(&client, "n3", "up", Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    Ok(out)
}

/// The node that leads the core group now, by the last leadership line in each log.
fn core_leader(c: &Cluster, n: usize) -> Option<usize> {
    (0..n).find(|&i| {
        c.log(i)
            .lines()
            .rfind(|l| {
                l.contains("leads the core group") || l.contains("stopped leading the core group")
            })
            .is_some_and(|l| !l.contains("stopped"))
    })
}

/// Kill the owner of a job (every other run the core group's leader), time until its
/// next step runs under the node that took it over; start the old owner again for the
/// next round. Answers (leader runs, follower runs), in ms.
async fn takeover_rounds(runs: usize, grace_ms: u64) -> (Vec<f64>, Vec<f64>) {
    let (mut c, client) = start_for_takeover(4, grace_ms).await;
    let (mut leader_runs, mut follower_runs) = (Vec::new(), Vec::new());
    for r in 0..2 * runs {
        let t = Instant::now();
        let leader = loop {
            if let Some(l) = core_leader(&c, 4) {
                break l;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no core group leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let leads = r % 2 == 0;
        let victim = if leads {
            leader
        } else {
            (leader + 1 + r / 2 % 3) % 4
        };
        let name = Cluster::name(victim);
        // s0 ends quickly; s1 (a minute) is what the new owner runs.
        let job = JobSpec::new("takeover")
            .step(StepSpec::new("s0", "troupe.sleep").input(json!({"ms": 20})))
            .step(
                StepSpec::new("s1", "troupe.sleep")
                    .input(json!({"ms": 60_000}))
                    .after(["s0"]),
            );
        let id = submit_owned_by(&client, &job, &name).await.id().to_string();
        // Answered means copied (journal_ack = "copied"); wait for s0's result to be.
        loop {
            let st = client.status(&id).await.expect("status");
            if st.steps["s1"].state == StepState::Running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let killed = Instant::now();
        c.node(victim).kill();
        let took = loop {
            // Nobody answers for the job while its owner is down and it has not moved.
            if let Ok(st) = client.status(&id).await {
                if st.steps["s1"].state == StepState::Running {
                    break killed.elapsed();
                }
            }
            assert!(
                killed.elapsed() < Duration::from_millis(grace_ms) + Duration::from_secs(20),
                "{id} was not taken over"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let took_by: Vec<String> = (0..4)
            .filter(|&i| i != victim)
            .filter(|&i| {
                c.log(i)
                    .lines()
                    .any(|l| l.contains("took the job over") && l.contains(&id))
            })
            .map(Cluster::name)
            .collect();
        assert_eq!(took_by.len(), 1, "{id}: taken over by {took_by:?}");
        let ms = took.as_secs_f64() * 1000.0;
        let role = if leads { "leader" } else { "follower" };
        eprintln!("run {r}: {name} ({role}) killed, {id} running again after {ms:.1} ms");
        if leads {
            leader_runs.push(ms);
        } else {
            follower_runs.push(ms);
        }
        let _ = client.cancel(&id).await;
        c.start_node(victim);
        until_state(&client, &name, "up", Duration::from_secs(10)).await;
        core_formed(3).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    (leader_runs, follower_runs)
}

fn main() {
    let runs: usize = env_or("FAILOVER_RUNS", 5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = Cluster::plan(3);
        c.slots = 2;
        let client = c.start_all_settled().await;
        let (mut kill, mut restart) = (Vec::new(), Vec::new());
        for r in 0..runs {
            let (k, s) = kill_and_restart(&mut c, &client).await;
            eprintln!("run {r}: kill to re-dispatch {k:.1} ms, restart to first step {s:.1} ms");
            kill.push(k);
            restart.push(s);
            until_state(&client, "n3", "up", Duration::from_secs(10)).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop(client);
        drop(c);
        let grace: u64 = env_or("FAILOVER_TAKEOVER_AFTER_MS", 1000);
        let (leader, follower) = takeover_rounds(runs, grace).await;
        eprintln!(
            "takeover (grace {grace} ms included): owner led the core group {leader:?} ms, \
             did not {follower:?} ms"
        );
        let leader_max = leader
            .iter()
            .copied()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        let all: Vec<f64> = leader.iter().chain(&follower).copied().collect();
        let silent = match silent_rounds(runs).await {
            Ok(v) => {
                eprintln!("silent to down: {v:?} ms");
                median(v)
            }
            Err(e) => {
                eprintln!("silent_to_down_ms not measured: {e} (needs root and iproute2)");
                None
            }
        };
        println!(
            "{}",
            json!({"bench": "failover",
                   "kill_to_redispatch_ms": median(kill),
                   "silent_to_down_ms": silent,
                   "restart_to_work_ms": median(restart),
                   "takeover_ms": median(all),
                   "takeover_leader_ms": median(leader),
                   "takeover_leader_max_ms": leader_max.map(|x| (x * 10.0).round() / 10.0),
                   "takeover_follower_ms": median(follower),
                   "takeover_after_ms": grace})
        );
    });
}
