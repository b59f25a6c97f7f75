//! Mutual TLS on real processes: a cluster of three TLS nodes (certificates from
//! `troupe-node certs`) runs a job; a plaintext client, a client and a node with
//! certificates from another CA are refused, and nothing crashes; a thousand idle
//! connections do not lock a TLS node's handshakes.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use troupe_integration::{texts, troupe_node, Cluster};

/// `--tls-*` flags for member `name` with the files in `dir`.
fn tls_flags(dir: &Path, name: &str) -> Vec<String> {
    let f = |s: String| dir.join(s).display().to_string();
    vec![
        "--tls-cert".into(),
        f(format!("{name}.pem")),
        "--tls-key".into(),
        f(format!("{name}-key.pem")),
        "--tls-ca".into(),
        f("ca.pem".into()),
    ]
}

fn certs(c: &Cluster, dir: &Path, names: &str) {
    let out = c.cli(
        &[
            "certs",
            "--dir",
            &dir.display().to_string(),
            "--names",
            names,
        ],
        false,
    );
    assert!(out.status.success(), "certs: {}", texts(&out).1);
}

/// A client subcommand against `c` with the given TLS flags.
fn client(c: &Cluster, args: &[&str], tls: &[String]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--seeds", &c.addrs[0], "--cookie", &c.cookie]);
    all.extend(tls.iter().map(String::as_str));
    c.cli(&all, false)
}

/// Names of the nodes `nodes --json` lists as up.
fn nodes_up(c: &Cluster, tls: &[String]) -> Vec<String> {
    let out = client(c, &["nodes", "--json"], tls);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut up: Vec<String> = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["state"] == "up")
        .filter_map(|n| n["name"].as_str().map(str::to_string))
        .collect();
    up.sort();
    up
}

#[test]
fn a_tls_cluster_runs_jobs_and_refuses_members_without_the_right_certificate() {
    let mut c = Cluster::plan(4);
    let pki: PathBuf = c.dir.join("pki");
    // Two runs: the second reuses the CA of the first.
    certs(&c, &pki, "n1,n2");
    certs(&c, &pki, "n3,client");
    let rogue = c.dir.join("rogue");
    certs(&c, &rogue, "n4,client");

    for i in 0..3 {
        let mut spec = c.spec(i);
        spec.extra.extend(tls_flags(&pki, &Cluster::name(i)));
        c.start_with(i, troupe_node(), &spec);
    }
    let good = tls_flags(&pki, "client");
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes_up(&c, &good) != ["n1", "n2", "n3"] {
        assert!(Instant::now() < deadline, "the TLS cluster did not form");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A three-step chain over TLS.
    let job = c.job_file(
        "chain.toml",
        "[[steps]]\nid = \"a\"\ntask = \"troupe.echo\"\ninput = 2\n\
         [[steps]]\nid = \"b\"\ntask = \"troupe.sum\"\nafter = [\"a\"]\n\
         [[steps]]\nid = \"c\"\ntask = \"troupe.node\"\nafter = [\"b\"]\n",
    );
    let out = client(&c, &["submit", &job, "--wait"], &good);
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["state"], "succeeded", "{status}");

    // Plaintext: refused (exit 3), and the node says why.
    let out = client(&c, &["nodes"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", texts(&out).1);
    assert!(texts(&out).1.contains("refused"), "{}", texts(&out).1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.log(0).contains("refused a plaintext connection") {
        assert!(
            Instant::now() < deadline,
            "no plaintext log line: {}",
            c.log(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A client whose certificate (and CA) come from another CA: exit 3, naming TLS.
    let out = client(&c, &["nodes"], &tls_flags(&rogue, "client"));
    assert_eq!(out.status.code(), Some(3), "{}", texts(&out).1);
    assert!(texts(&out).1.contains("TLS"), "{}", texts(&out).1);
    // The right CA but a certificate it did not sign: the node refuses it (exit 3).
    let mut forged = tls_flags(&rogue, "client");
    forged[5] = pki.join("ca.pem").display().to_string();
    let out = client(&c, &["nodes"], &forged);
    assert_eq!(out.status.code(), Some(3), "{}", texts(&out).1);

    // A node with a certificate from another CA never joins.
    let mut spec = c.spec(3);
    spec.extra.extend(tls_flags(&rogue, "n4"));
    c.start_with(3, troupe_node(), &spec);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(nodes_up(&c, &good), ["n1", "n2", "n3"]);
    let rogue_log = c.log(3);
    assert!(
        rogue_log.contains("TLS handshake") || rogue_log.contains("certificate"),
        "{rogue_log}"
    );

    // A thousand idle connections to a TLS node: a real client still gets through.
    let addr: std::net::SocketAddr = c.addrs[0].parse().expect("addr");
    let idle: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(idle.len() >= 900, "only {} connections opened", idle.len());
    let out = client(&c, &["submit", &job, "--wait"], &good);
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    drop(idle);
    assert!(
        c.log(0)
            .contains("closed the oldest connection still in its TLS handshake"),
        "{}",
        c.log(0)
    );

    // Every node is still running.
    for i in 0..4 {
        assert!(c.node(i).is_running(), "node {} exited", i + 1);
    }
}

/// A client with certificates against nodes that do not use TLS is told so (exit 3),
/// not sent to check its CA.
#[tokio::test]
async fn a_tls_client_against_plaintext_nodes_is_told_they_do_not_use_tls() {
    let c = Cluster::start(1);
    c.ready().await;
    let pki = c.dir.join("pki");
    certs(&c, &pki, "client");
    let out = client(&c, &["nodes"], &tls_flags(&pki, "client"));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("do not use TLS"), "{stderr}");
    assert!(stderr.contains("drop --tls-cert"), "{stderr}");
    // The node keeps serving plaintext clients.
    assert_eq!(nodes_up(&c, &[]), vec![Cluster::name(0)]);
}
