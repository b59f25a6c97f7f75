//! The core group and the cluster's identity on real node processes: a data folder
//! belongs to one cluster, one cluster has one core group across restarts and joins, a
//! node cut off from the group activates no keyed actor without a lease, and a voter that
//! stays down is replaced.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use troupe_integration::{core_formed, run_with_timeout, start_with_core, texts, Cluster};

/// Node `i`'s data folder (as `Cluster::spec` sets it).
fn data_dir(c: &Cluster, i: usize) -> PathBuf {
    c.dir.join(format!("data-{}", Cluster::name(i)))
}

/// The cluster id in node `i`'s folder, if written.
fn cluster_id(c: &Cluster, i: usize) -> Option<String> {
    let text = std::fs::read_to_string(data_dir(c, i).join("cluster.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["cluster"].as_str().map(str::to_string)
}

/// Waits until `cond` holds, panicking with `what` after `limit`.
async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what} (waited {limit:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The nodes among `among` that vote in the core group, once `n` of them say so.
async fn voters(c: &Cluster, among: &[usize], n: usize) -> Vec<usize> {
    let says = |i: &usize| c.log(*i).contains("this node votes in the core group");
    until(Duration::from_secs(20), "the core group's voters", || {
        among.iter().filter(|i| says(i)).count() >= n
    })
    .await;
    among.iter().copied().filter(|i| says(i)).collect()
}

/// `troupe-node call` of a counter through the nodes `via`: exit code, stdout, stderr.
fn add_one(c: &Cluster, via: &[usize], key: &str, timeout_s: &str) -> (Option<i32>, String) {
    let seeds: Vec<String> = via.iter().map(|&i| c.addrs[i].clone()).collect();
    let out = c.cli(
        &[
            "call",
            "--seeds",
            &seeds.join(","),
            "--cookie",
            &c.cookie,
            "--timeout",
            timeout_s,
            "troupe.counter",
            key,
            r#"{"op":"add","n":1}"#,
        ],
        false,
    );
    let (stdout, stderr) = texts(&out);
    (out.status.code(), format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_started_on_another_clusters_folder_refuses_and_names_it() {
    // Three nodes form a cluster in folders A, B, C, and stop.
    let mut c = Cluster::plan(3);
    for i in 0..3 {
        c.start_node(i);
    }
    let _client = c.settled_client(&[0, 1, 2]).await;
    core_formed(3).await;
    until(
        Duration::from_secs(20),
        "every folder names the cluster",
        || (0..3).all(|i| cluster_id(&c, i).is_some()),
    )
    .await;
    let id = cluster_id(&c, 0);
    assert!((1..3).all(|i| cluster_id(&c, i) == id), "one cluster id");
    for i in 0..3 {
        c.node(i).stop(Duration::from_secs(5));
    }
    // A single n1 on folder A with another cookie: exit 2, naming the folder.
    let mut spec = c.spec(0);
    spec.cookie = format!("{}-other", c.cookie);
    spec.seeds.clear();
    c.start_with(0, troupe_integration::troupe_node(), &spec);
    let status = c.node(0).wait_exit(Duration::from_secs(20));
    let log = c.log(0);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    let folder = data_dir(&c, 0).display().to_string();
    assert!(
        log.contains(&folder) && log.contains("another cluster"),
        "the refusal names the folder {folder}: {log}"
    );
    // With its own cookie the folder is accepted again.
    let spec = c.spec(0);
    c.start_with(0, troupe_integration::troupe_node(), &spec);
    until(
        Duration::from_secs(20),
        "n1 starts on its own folder",
        || c.log(0).contains("node started"),
    )
    .await;
    assert!(c.node(0).is_running(), "{}", c.log(0));
}

#[tokio::test(flavor = "current_thread")]
async fn a_new_node_meeting_only_non_voters_does_not_form_a_second_core_group() {
    // n2..n6 form a cluster: three of them vote, two do not.
    let mut c = Cluster::plan(6);
    for i in 1..6 {
        c.start_node(i);
    }
    let client = c.client_via(&[1, 2, 3, 4, 5]).await;
    client
        .wait_for_nodes(5, Duration::from_secs(20))
        .await
        .expect("five nodes up");
    core_formed(3).await;
    let all = [1, 2, 3, 4, 5];
    let voting = voters(&c, &all, 3).await;
    let others: Vec<usize> = all.into_iter().filter(|i| !voting.contains(i)).collect();
    until(
        Duration::from_secs(20),
        "the non-voters learn the cluster id",
        || others.iter().all(|&i| cluster_id(&c, i).is_some()),
    )
    .await;
    let id = cluster_id(&c, others[0]);
    // The voters go; n1 (first by name) starts and meets only the two non-voters.
    for &i in &voting {
        c.node(i).kill();
    }
    c.start_node(0);
    until(
        Duration::from_secs(20),
        "n1 learns the cluster's id",
        || cluster_id(&c, 0).is_some(),
    )
    .await;
    assert_eq!(cluster_id(&c, 0), id, "n1 joined the existing cluster");
    // Past the time a formation takes (it happens within a tick of n1 seeing n5 and n6).
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in [0, others[0], others[1]] {
        assert!(
            !c.log(i).contains("forming the core group"),
            "a second core group formed: {}",
            c.log(i)
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_cut_off_from_the_core_group_activates_no_actor_without_a_lease() {
    if !troupe_integration::needs::has(
        "a_node_cut_off_from_the_core_group_activates_no_actor_without_a_lease",
        &[troupe_integration::needs::Need::Root],
    ) {
        return;
    }
    // Needs root: four nodes in their own network namespaces; three vote.
    let mut c = Cluster::plan_in_netns(4)
        .expect("network namespaces (this test needs root and iproute2; CI runs as root)");
    for i in 0..4 {
        c.start_node(i);
    }
    let _client = c.settled_client(&[0, 1, 2, 3]).await;
    core_formed(3).await;
    let voting = voters(&c, &[0, 1, 2, 3], 3).await;
    let cut = (0..4).find(|i| !voting.contains(i)).expect("a non-voter");
    until(
        Duration::from_secs(20),
        "the non-voter learns the cluster id",
        || cluster_id(&c, cut).is_some(),
    )
    .await;
    let (code, out) = add_one(&c, &[voting[0]], "before", "20");
    assert_eq!(code, Some(0), "the counter works before the cut: {out}");
    // Cut the non-voter off; it sees the others go down (2 s of silence).
    c.cut(cut).expect("cut");
    until(
        Duration::from_secs(15),
        "the cut node sees the others down",
        || c.log(cut).matches("node left").count() >= 3,
    )
    .await;
    // A call through it alone (from inside its namespace): "unavailable", exit 3.
    let ns = c.spec(cut).netns.expect("netns");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns])
        .arg(troupe_integration::troupe_node())
        .args([
            "call",
            "--seeds",
            &c.addrs[cut],
            "--cookie",
            &c.cookie,
            "--timeout",
            "8",
            "troupe.counter",
            "cut-key",
            r#"{"op":"add","n":1}"#,
        ]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let (stdout, stderr) = texts(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a cut-off node must not activate a key on its own: {stdout}{stderr}\n{}",
        c.log(cut)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_voter_that_stays_down_is_replaced_so_a_second_loss_keeps_a_majority() {
    // Five nodes, three voters; a voter down for 2 s is replaced. (Five, not four: the
    // counter's saves need a majority of the type's hosts, and three of five survive.)
    let all = [0, 1, 2, 3, 4];
    let (mut c, _client) = start_with_core(5, &[("TROUPE_CORE__REPLACE_AFTER_MS", "2000")]).await;
    let voting = voters(&c, &all, 3).await;
    let spares: Vec<usize> = all.into_iter().filter(|i| !voting.contains(i)).collect();
    let (code, out) = add_one(&c, &[voting[0]], "k", "20");
    assert_eq!(code, Some(0), "{out}");
    c.node(voting[2]).kill();
    let mut spare = None;
    until(
        Duration::from_secs(30),
        "a spare node becomes a voter",
        || {
            spare = spares
                .iter()
                .copied()
                .find(|&i| c.log(i).contains("this node votes in the core group"));
            spare.is_some()
        },
    )
    .await;
    let spare = spare.expect("a new voter");
    c.node(voting[1]).kill();
    // The group {first voter, spare, (second voter)} keeps its majority: a counter call
    // still gets a lease.
    let (code, out) = add_one(&c, &[voting[0], spare], "after", "30");
    assert_eq!(
        code,
        Some(0),
        "no lease after losing two voters: {out}\n{}\n{}",
        c.log(voting[0]),
        c.log(spare)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_of_another_cluster_with_the_same_cookie_is_refused() {
    // Cluster A: n1..n3, core {n1, n2, n3}; their seeds leave n4 out (else they would
    // dial it and it would join cluster A before it forms its own).
    let mut c = Cluster::plan(4);
    for i in 0..3 {
        let mut spec = c.spec(i);
        let n4 = c.addrs[3].clone();
        spec.seeds.retain(|a| *a != n4);
        c.start_with(i, troupe_integration::troupe_node(), &spec);
    }
    let client = c.client_via(&[0, 1, 2]).await;
    client
        .wait_for_nodes(3, Duration::from_secs(20))
        .await
        .expect("three nodes up");
    until(Duration::from_secs(20), "cluster A is named", || {
        cluster_id(&c, 0).is_some()
    })
    .await;
    // Cluster B: n4 alone (a core of one), same cookie, seeing nobody.
    let mut spec = c.spec(3);
    spec.seeds.clear();
    spec.env.push(("TROUPE_CORE__SIZE".into(), "1".into()));
    c.start_with(3, troupe_integration::troupe_node(), &spec);
    until(Duration::from_secs(20), "cluster B is named", || {
        cluster_id(&c, 3).is_some()
    })
    .await;
    let b = cluster_id(&c, 3);
    assert_ne!(b, cluster_id(&c, 0), "two clusters");
    c.node(3).stop(Duration::from_secs(5));
    // n4 comes back with cluster A as its seeds: refused on both sides, never merged.
    let mut spec = c.spec(3);
    spec.env.push(("TROUPE_CORE__SIZE".into(), "1".into()));
    c.start_with(3, troupe_integration::troupe_node(), &spec);
    until(Duration::from_secs(20), "cluster A refuses n4", || {
        c.log(0).contains("refused node n4") && c.log(3).contains("refused node n")
    })
    .await;
    assert_eq!(cluster_id(&c, 3), b, "n4 kept its own cluster");
    let nodes = client.nodes().await.expect("nodes");
    assert!(
        nodes
            .iter()
            .all(|n| n.name != "n4" || n.state.as_str() != "up"),
        "n4 must not be up in cluster A: {nodes:?}"
    );
}
