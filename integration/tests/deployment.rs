//! What a fleet needs of a node: seeds and an advertised address given as DNS names,
//! resolved when dialled (never fatal at start), and a refusal, logged on both sides, of a
//! peer whose wire-protocol version this node cannot speak.

use std::time::{Duration, Instant};

use serde_json::Value;
use troupe_integration::{texts, Cluster};
use troupe_runtime::wire::{WireVersions, TEST_WIRE_VERSION_VAR, WIRE_VERSION};

/// Waits until `f` holds, or panics with `what` after `secs`.
async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `troupe-node nodes --json` through node `via` alone (its address as the only seed).
fn nodes_json(c: &Cluster, via: usize) -> std::process::Output {
    c.cli(
        &[
            "nodes",
            "--json",
            "--seeds",
            &c.addrs[via],
            "--cookie",
            &c.cookie,
        ],
        false,
    )
}

/// [`nodes_json`]'s answer, `Null` if it fails.
fn try_nodes_via(c: &Cluster, via: usize) -> Value {
    serde_json::from_slice(&nodes_json(c, via).stdout).unwrap_or(Value::Null)
}

/// [`nodes_json`]'s answer (the command must succeed).
fn nodes_via(c: &Cluster, via: usize) -> Value {
    let out = nodes_json(c, via);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_str(&stdout).expect("nodes --json is JSON")
}

fn up_names(v: &Value) -> Vec<String> {
    v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["state"] == "up")
        .filter_map(|n| n["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn seeds_and_advertise_by_name_join_and_a_name_that_does_not_resolve_is_retried() {
    let mut c = Cluster::plan(2);
    c.start_node(0);
    // n2's seeds: a name that never resolves (`.invalid` is reserved), and n1 by name.
    // It advertises itself by name too, which n1 resolves when it dials back.
    let ports: Vec<String> = c
        .addrs
        .iter()
        .map(|a| a.rsplit_once(':').expect("port").1.to_string())
        .collect();
    let port = |i: usize| ports[i].clone();
    let mut spec = c.spec(1);
    spec.seeds = vec![
        "not-yet-scheduled.invalid:7340".into(),
        format!("localhost:{}", port(0)),
    ];
    spec.extra
        .extend(["--advertise".into(), format!("localhost:{}", port(1))]);
    c.start_with(1, troupe_integration::troupe_node(), &spec);

    eventually(20, "n1 sees n2 up", || {
        up_names(&try_nodes_via(&c, 0)).contains(&"n2".to_string())
    })
    .await;
    let v = nodes_via(&c, 0);
    let n2 = v["nodes"]
        .as_array()
        .and_then(|l| l.iter().find(|n| n["name"] == "n2"))
        .cloned()
        .expect("n2 listed");
    assert_eq!(
        n2["address"],
        format!("localhost:{}", port(1)),
        "the advertised name is kept, not turned into an IP address: {v}"
    );
    // A job of many steps runs on both (n1 dials n2 by its name to send it work).
    let f = c.job_file(
        "wide.toml",
        &format!(
            "name = \"wide\"\n[[steps]]\nid = \"s\"\ntask = \"troupe.sleep\"\nfor_each = '[{}]'\n",
            [r#"{"ms": 200}"#; 8].join(", ")
        ),
    );
    let status = c.submit_wait_via(0, &f);
    assert_eq!(status["state"], "succeeded", "{status}");
    let on: std::collections::BTreeSet<&str> = status["steps"]
        .as_object()
        .expect("steps")
        .values()
        .filter_map(|s| s["node"].as_str())
        .collect();
    assert!(on.contains("n2"), "no step ran on n2: {status}");
    // The unresolvable seed was logged, not fatal; n2 is still running.
    let log = c.log(1);
    assert!(
        log.contains("not-yet-scheduled.invalid:7340") && log.contains("cannot resolve seed"),
        "{log}"
    );
    assert!(c.node(1).is_running(), "n2 exited: {log}");
}

#[tokio::test]
async fn a_node_refuses_a_peer_whose_wire_version_it_cannot_speak_and_both_say_why() {
    let mut c = Cluster::plan(2);
    c.start_node(0);
    let mut spec = c.spec(1);
    spec.env.push((TEST_WIRE_VERSION_VAR.into(), "99".into()));
    c.start_with(1, troupe_integration::troupe_node(), &spec);

    let ours = WireVersions::ours();
    let refused_by_n1 = format!("refused node n2: it speaks wire version 99, this node {ours}");
    let refused_by_n2 = format!("refused node n1: it speaks wire version {ours}, this node 99");
    eventually(20, "both nodes log the refusal", || {
        c.log(0).contains(&refused_by_n1) && c.log(1).contains(&refused_by_n2)
    })
    .await;
    // Neither joined the other.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(up_names(&nodes_via(&c, 0)), ["n1"], "{}", c.log(0));
    assert!(c.node(1).is_running(), "n2 keeps running: {}", c.log(1));

    // A client of another version is told what to do (exit 3), and n1 says whom it refused
    // (n2 gone first: refusals are logged at most once a second).
    c.node(1).kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut cmd = std::process::Command::new(troupe_integration::troupe_node());
    cmd.args(["nodes", "--seeds", &c.addrs[0], "--cookie", &c.cookie])
        .env(TEST_WIRE_VERSION_VAR, "99")
        .stdin(std::process::Stdio::null());
    let out = troupe_integration::run_with_timeout(cmd, Duration::from_secs(30));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "speak wire version {ours} and this troupe-node 99"
        )),
        "{stderr}"
    );
    eventually(10, "n1 logs the client it refused", || {
        c.log(0).contains("refused client client-")
    })
    .await;
}

#[test]
fn version_prints_the_crate_and_wire_versions() {
    let out = std::process::Command::new(troupe_integration::troupe_node())
        .arg("--version")
        .output()
        .expect("run troupe-node --version");
    let (stdout, _) = texts(&out);
    assert!(out.status.success());
    assert_eq!(
        stdout.trim(),
        format!(
            "troupe-node {} (wire {WIRE_VERSION})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// A node that speaks only wire version 1 (which gossips every record to every node each
/// interval, and judges peers by their silence) and nodes of version 2 (which probe)
/// make one cluster: nobody is suspect while all run, and the version-1 node cut off is
/// declared down by its silence. Needs root (network namespaces; CI runs as root).
#[tokio::test(flavor = "current_thread")]
async fn a_node_of_the_previous_wire_version_stays_a_member_and_is_judged_by_its_silence() {
    if !troupe_integration::needs::has(
        "a_node_of_the_previous_wire_version_stays_a_member_and_is_judged_by_its_silence",
        &[troupe_integration::needs::Need::Root],
    ) {
        return;
    }
    let mut c = Cluster::plan_in_netns(3)
        .expect("network namespaces (this test needs root and iproute2; CI runs as root)");
    c.start_node(0);
    c.start_node(1);
    let mut spec = c.spec(2);
    spec.env.push((TEST_WIRE_VERSION_VAR.into(), "1".into()));
    c.start_with(2, troupe_integration::troupe_node(), &spec);
    let client = c.settled_client(&[0, 1, 2]).await;
    // Several detection times with every node up: nobody is suspect.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for i in 0..3 {
        assert_eq!(
            up_names(&nodes_via(&c, i)),
            ["n1", "n2", "n3"],
            "n{} does not see every node up: {}",
            i + 1,
            c.log(i)
        );
        assert!(
            !c.log(i).contains("node suspect"),
            "n{} suspected a live node: {}",
            i + 1,
            c.log(i)
        );
    }
    let cut = Instant::now();
    c.cut(2).unwrap();
    eventually(10, "n1 declares the cut-off version-1 node down", || {
        c.log(0).contains("node=n3") && c.log(0).contains("silent for")
    })
    .await;
    eprintln!(
        "n3 (wire 1) declared down {:?} after it was cut off",
        cut.elapsed()
    );
    drop(client);
}
