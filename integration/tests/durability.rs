//! Acknowledged means durable, on real node processes: a keyed actor's update that too
//! few nodes hold is refused (and its node's state rolled back), also when its host and
//! replica are cut off together on the minority side of a partition, and a job whose start
//! the journal cannot commit (a full disk) is refused with a clear error, the node
//! accepting again once there is space. Both need root (network namespaces, tmpfs).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use troupe_integration::http::{get, post};
use troupe_integration::tinyfs::TinyFs;
use troupe_integration::{core_formed, key_owned_by, node_state, run_with_timeout, texts, Cluster};
use troupe_runtime::Client;

/// `add n` to the counter `key`; the new total, or the error as text.
async fn add(client: &Client, key: &str, n: i64) -> Result<i64, String> {
    client
        .call_actor("troupe.counter", key, json!({"op": "add", "n": n}))
        .await
        .map(|v| v["total"].as_i64().unwrap_or(-1))
        .map_err(|e| e.to_string())
}

/// The counter's total, asked until it answers (at most 20 s).
/// Adds 1 to `key` until an add is acknowledged (at most 20 s); returns how many failed
/// first (each may have been applied or not).
async fn add_after_heal(client: &Client, key: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failed = 0;
    loop {
        match add(client, key, 1).await {
            Ok(_) => return failed,
            Err(e) => {
                failed += 1;
                assert!(Instant::now() < deadline, "no add after the heal: {e}")
            }
        }
    }
}

async fn total(client: &Client, key: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client
            .call_actor("troupe.counter", key, json!({"op": "get"}))
            .await
        {
            Ok(v) => return v["total"].as_i64().expect("a total"),
            Err(e) => assert!(Instant::now() < deadline, "get {key}: {e}"),
        }
    }
}

/// `troupe-node call ... add n` to run inside node `i`'s network namespace, so that it
/// reaches node `i` even while `i` is cut off from the others.
fn add_from_inside(c: &Cluster, i: usize, key: &str, n: i64) -> Command {
    let add = json!({"op": "add", "n": n}).to_string();
    c.cli_inside(i, &["call", "--timeout", "4", "troupe.counter", key, &add])
}

/// Waits until `client` sees node `name` in `state` (at most 20 s).
async fn until_state(client: &Client, name: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while node_state(client, name).await.as_deref() != Some(state) {
        assert!(
            Instant::now() < deadline,
            "{name} is {:?}, not {state}",
            node_state(client, name).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that an add from inside the cut-off node was refused as unavailable, saying
/// why: its update reached too few nodes, or (its activation already ended) the node
/// could not get the actor's lease from the core group it is cut off from.
fn assert_refused(out: &std::process::Output) {
    let (stdout, stderr) = texts(out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "an add on a node cut off from every replica was not refused (exit {:?}); stdout: {stdout} stderr: {stderr}",
        out.status.code()
    );
    assert!(
        stderr.contains("unavailable")
            && (stderr.contains("enough nodes") || stderr.contains("gave no lease")),
        "the refusal does not say why: {stderr}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_actor_update_no_second_node_holds_is_refused_and_no_acknowledged_update_is_lost() {
    if !troupe_integration::needs::has(
        "an_actor_update_no_second_node_holds_is_refused_and_no_acknowledged_update_is_lost",
        &[troupe_integration::needs::Need::Root],
    ) {
        return;
    }
    let mut c = Cluster::plan_in_netns(3)
        .expect("network namespaces (this test needs root and iproute2; CI runs as root)");
    for i in 0..3 {
        c.start_node(i);
    }
    let all = c.settled_client(&[0, 1, 2]).await;
    core_formed(3).await;
    let key = key_owned_by("troupe.counter", "n1", &["n1", "n2", "n3"], "durable");
    let mut acked = 0;
    for _ in 0..5 {
        acked += 1;
        assert_eq!(add(&all, &key, 1).await, Ok(acked));
    }

    // 1. n1 alone, nobody takes the key over: its update reaches no second node, so it is
    // refused, and n1's state goes back to what was acknowledged.
    c.cut(0).unwrap();
    assert_refused(&run_with_timeout(
        add_from_inside(&c, 0, &key, 100),
        Duration::from_secs(30),
    ));
    c.heal(0).unwrap();
    let via_n2 = c.client_via(&[1]).await;
    until_state(&via_n2, "n1", "up").await;
    assert_eq!(
        total(&all, &key).await,
        acked,
        "the refused add is in n1's state"
    );
    acked += 1;
    assert_eq!(add(&all, &key, 1).await, Ok(acked), "n1 took adds again");

    // 2. n1 cut off while the others take the key over and go on: n1 acknowledges
    // nothing meanwhile, and after the heal every acknowledged add is counted.
    c.cut(0).unwrap();
    let cmd = add_from_inside(&c, 0, &key, 1000);
    let refused = std::thread::spawn(move || run_with_timeout(cmd, Duration::from_secs(30)));
    // While the key moves an add may fail after it was applied (its caller's time limit
    // passed): those may count or not, never n1's refused 1000. (A retry inside one call
    // is answered, not applied again.)
    let (mut majority, mut unknown, mut last) = (0, 0, String::new());
    // Generous: the key moves only once n1 is declared down and the core group grants
    // the lease, which a loaded 2-core CI machine can slow down a lot.
    let deadline = Instant::now() + Duration::from_secs(60);
    while majority < 10 {
        assert!(
            Instant::now() < deadline,
            "the majority side took {majority} adds in 60 s (last error: {last})"
        );
        match add(&via_n2, &key, 1).await {
            Ok(_) => majority += 1,
            Err(e) => {
                unknown += 1;
                last = e;
            }
        }
    }
    acked += majority;
    assert_refused(&refused.join().expect("the call's thread"));
    c.heal(0).unwrap();
    until_state(&via_n2, "n1", "up").await;
    // The first add after the heal may meet n1's old activation, which then learns it
    // was replaced; it is acknowledged only by the current one.
    unknown += add_after_heal(&all, &key).await;
    acked += 1;
    let after = total(&all, &key).await;
    eprintln!("acknowledged {acked}, failed (applied or not) {unknown}, total {after}");
    assert!(
        after >= acked,
        "acknowledged adds were lost: total {after}, acknowledged {acked}"
    );
    assert!(
        after < acked + 100,
        "an add n1 refused counts: total {after}, acknowledged {acked}, failed {unknown}"
    );
    assert_eq!(total(&via_n2, &key).await, after);
}

/// A key of `troupe.counter` whose first two hosts in rendezvous order over n1..n5 are
/// n4 then n5: its activation runs on n4, and its first replica is n5.
fn key_first_on_n4_then_n5() -> String {
    let nodes = ["n1", "n2", "n3", "n4", "n5"];
    (0..)
        .map(|i| format!("split-{i}"))
        .find(|k| {
            let ranked = troupe_runtime::merge::ranked(
                &troupe_runtime::actor::route::owner_key("troupe.counter", k),
                nodes.iter().copied(),
            );
            ranked.starts_with(&["n4", "n5"])
        })
        .unwrap_or_default()
}

/// Keyed actors lose no acknowledged update across a 2/3 partition that leaves the
/// actor's host and its replica on the side without the core group's majority: that side
/// acknowledges nothing (a majority of the five hosts must hold a save), the other side
/// takes the key over from a majority of the stores (so from the newest acknowledged
/// state), and after the heal the total is the number of acknowledged adds.
#[tokio::test(flavor = "current_thread")]
async fn an_actor_cut_off_with_its_replica_on_the_minority_side_loses_no_acknowledged_update() {
    if !troupe_integration::needs::has(
        "an_actor_cut_off_with_its_replica_on_the_minority_side_loses_no_acknowledged_update",
        &[troupe_integration::needs::Need::Root],
    ) {
        return;
    }
    let mut c = Cluster::plan_in_netns(5)
        .expect("network namespaces (this test needs root and iproute2; CI runs as root)");
    // n1..n3 form the core group: the 3-node side of the split holds its majority.
    let (_first, all) = c.start_core_then_others().await;
    let key = key_first_on_n4_then_n5();
    let mut acked = 0;
    for _ in 0..5 {
        acked += 1;
        assert_eq!(add(&all, &key, 1).await, Ok(acked));
    }

    // n4 and n5 (the key's host and first replica) on one side, n1..n3 on the other.
    let net = c.netns().expect("planned in namespaces");
    net.split(&[3, 4]).expect("split");
    let started = Instant::now();
    // The minority side: adds of 1000 from inside n4, each refused (exit 3).
    let minority: Vec<Command> = (0..3).map(|_| add_from_inside(&c, 3, &key, 1000)).collect();
    let minority = tokio::task::spawn_blocking(move || {
        minority
            .into_iter()
            .map(|cmd| run_with_timeout(cmd, Duration::from_secs(30)))
            .collect::<Vec<_>>()
    });
    // The majority side: adds of 1 from inside n1 until 10 are acknowledged (the first
    // ones wait for n4 to be declared down and the key to be taken over).
    let majority: Vec<Command> = (0..40).map(|_| add_from_inside(&c, 0, &key, 1)).collect();
    let majority = tokio::task::spawn_blocking(move || {
        let (mut ok, mut failed) = (0, Vec::new());
        for cmd in majority {
            let out = run_with_timeout(cmd, Duration::from_secs(30));
            if out.status.success() {
                ok += 1;
                if ok == 10 {
                    break;
                }
            } else {
                failed.push(texts(&out).1);
            }
        }
        (ok, failed)
    });
    let (majority, failed) = majority.await.expect("the majority's adds");
    for out in minority.await.expect("the minority's adds") {
        let (stdout, stderr) = texts(&out);
        assert_eq!(
            out.status.code(),
            Some(3),
            "an add on the minority side was not refused (exit {:?}); stdout: {stdout} stderr: {stderr}",
            out.status.code()
        );
        assert!(stderr.contains("unavailable"), "{stderr}");
    }
    eprintln!(
        "split for {} ms: majority side acknowledged {majority}, failed {} ({failed:?})",
        started.elapsed().as_millis(),
        failed.len()
    );
    assert_eq!(
        majority, 10,
        "the majority side took {majority} adds: {failed:?}"
    );
    acked += majority;

    net.heal_all().expect("heal");
    until_state(&all, "n4", "up").await;
    until_state(&all, "n5", "up").await;
    // The first add after the heal may meet n4's old activation, which then learns it was
    // replaced; it is acknowledged only by the current one.
    let mut unknown = failed.len();
    unknown += add_after_heal(&all, &key).await;
    acked += 1;
    let after = total(&all, &key).await;
    eprintln!("acknowledged {acked}, failed (applied or not) {unknown}, total {after}");
    assert!(
        after >= acked,
        "acknowledged adds were lost: total {after}, acknowledged {acked}"
    );
    // A failed add of 1 may have been applied (a timeout is indeterminate); none of 1000
    // from the minority side may.
    assert!(
        after <= acked + unknown as i64,
        "adds nobody acknowledged count: total {after}, acknowledged {acked}, failed {unknown}"
    );
    if unknown == 0 {
        assert_eq!(after, acked, "none lost, none extra");
    }
}

/// Submits a one-step job with the CLI through node 0; the output.
fn submit(c: &Cluster, file: &str) -> std::process::Output {
    c.cli(&["submit", "--wait", "--timeout", "20", file], true)
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_disk_refuses_jobs_with_a_clear_error_and_the_node_accepts_again_once_freed() {
    if !troupe_integration::needs::has(
        "a_full_disk_refuses_jobs_with_a_clear_error_and_the_node_accepts_again_once_freed",
        &[troupe_integration::needs::Need::Root],
    ) {
        return;
    }
    let mut c = Cluster::plan(1);
    c.serve_http = true;
    let disk = TinyFs::mount(&c.dir.join("tiny"), 16)
        .expect("a tmpfs (this test needs root; CI runs as root)");
    let data = disk.path().join("data-n1");
    c.start_node_on(0, &data);
    c.ready().await;
    let file = c.job_file(
        "one.toml",
        "[[steps]]\nid = \"a\"\ntask = \"troupe.echo\"\ninput = { v = 1 }\n",
    );
    let out = submit(&c, &file);
    assert!(
        out.status.success(),
        "before the disk is full: {:?}",
        texts(&out)
    );

    let filler = disk.fill("filler").expect("fill the tmpfs");
    // The journal's log may still take a few records into the free bytes of its last
    // page (those jobs are on disk, rightly accepted); once it cannot grow, submissions
    // are refused.
    let mut accepted = 0;
    let out = loop {
        let out = submit(&c, &file);
        if out.status.success() {
            accepted += 1;
            assert!(
                accepted < 50,
                "50 jobs accepted on a full disk: {:?}",
                texts(&out)
            );
            continue;
        }
        break out;
    };
    let (stdout, stderr) = texts(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "not refused as unavailable on a full disk; stdout: {stdout} stderr: {stderr}"
    );
    assert!(
        stderr.contains(&data.display().to_string()) && stderr.contains("space"),
        "the refusal does not name the folder and the cause: {stderr}"
    );
    let url = c.http_url(0);
    let answer = post(
        &format!("{url}/api/jobs"),
        &json!({"steps": [{"id": "a", "task": "troupe.echo"}]}).to_string(),
    );
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body.contains("journal"), "{}", answer.body);
    let log = c.log(0);
    assert!(
        log.contains("journal commit failed")
            && log.contains(&data.display().to_string())
            && log.contains("No space left on device"),
        "the log does not name the folder and the OS error:\n{log}"
    );
    // The node runs on.
    let nodes: Value = get(&format!("{url}/api/nodes")).json();
    assert!(nodes.to_string().contains("n1"), "{nodes}");

    std::fs::remove_file(&filler).expect("free the space");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = submit(&c, &file);
        if out.status.success() {
            let st: Value = serde_json::from_slice(&out.stdout).expect("a status");
            assert_eq!(st["state"], "succeeded", "{st}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no job accepted 20 s after the space was freed: {:?}",
            texts(&out)
        );
    }
}
