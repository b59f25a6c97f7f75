//! Limits against hostile or careless input, on real processes: an oversized job, a
//! flood of idle connections, too many jobs from one client, the cookie kept secret.

use std::net::TcpStream;
use std::time::Duration;

use troupe_integration::{texts, Cluster};
use troupe_runtime::{JobSpec, JobState, StepSpec};

#[tokio::test]
async fn a_64_mib_job_file_is_refused_with_exit_2_and_the_node_keeps_serving() {
    let mut c = Cluster::plan(1);
    c.serve_http = true;
    c.start_node(0);
    c.ready().await;
    let path = c.dir.join("huge.toml");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(f, "[[steps]]\nid = \"a\"\ntask = \"troupe.echo\"").unwrap();
        write!(f, "input = {{ blob = \"").unwrap();
        let chunk = "x".repeat(1 << 20);
        for _ in 0..64 {
            f.write_all(chunk.as_bytes()).unwrap();
        }
        writeln!(f, "\" }}").unwrap();
    }
    let out = c.cli(&["submit", path.to_str().unwrap(), "--wait"], true);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("huge.toml") && stderr.contains("at most 8388608 bytes"),
        "{stderr}"
    );
    // The same from standard input, which has no size to look at first.
    let mut cmd = std::process::Command::new(troupe_integration::troupe_node());
    cmd.args(["submit", "-", "--seeds", &c.seeds(), "--cookie", &c.cookie])
        .stdin(std::fs::File::open(&path).unwrap());
    let out = troupe_integration::run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(2), "{}", texts(&out).1);
    assert!(
        texts(&out).1.contains("standard input"),
        "{}",
        texts(&out).1
    );

    // Over HTTP: 413, with the limit in the message.
    let body = format!(
        "{{\"steps\": [{{\"id\": \"a\", \"task\": \"troupe.echo\", \"input\": \"{}\"}}]}}",
        "y".repeat(9 << 20)
    );
    let a = troupe_integration::http::post(&format!("{}/api/jobs", c.http_url(0)), &body);
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(a.body.contains("at most"), "{}", a.body);
    c.assert_serves().await;
}

#[tokio::test]
async fn a_thousand_idle_connections_do_not_lock_out_a_real_client() {
    let c = Cluster::start(1);
    c.ready().await;
    let addr: std::net::SocketAddr = c.addrs[0].parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..1000 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            idle.push(s);
        }
    }
    assert!(idle.len() >= 900, "only {} connections opened", idle.len());
    // They stay open (no handshake, well within handshake_timeout_ms): a real job, from a
    // new client that must do its handshake now, still completes.
    let out = c.cli(
        &[
            "submit",
            &c.job_file(
                "one.toml",
                "[[steps]]\nid = \"a\"\ntask = \"troupe.node\"\n",
            ),
            "--wait",
        ],
        true,
    );
    assert!(out.status.success(), "{}", texts(&out).1);
    let log = c.log(0);
    assert!(
        log.contains("closed the oldest connection still in its handshake"),
        "{log}"
    );
    drop(idle);
    c.assert_serves().await;
}

#[tokio::test]
async fn one_client_cannot_hold_more_jobs_in_flight_than_the_limit() {
    let mut c = Cluster::plan(1);
    c.env
        .push(("TROUPE_LIMITS__MAX_JOBS_PER_CLIENT".into(), "2".into()));
    c.slots = 4; // the sleeping jobs hold two slots; other work needs free ones
    c.start_node(0);
    c.ready().await;
    let client = c.client().await;
    let nap = || {
        JobSpec::new("nap")
            .step(StepSpec::new("s", "troupe.sleep").input(serde_json::json!({"ms": 30000})))
    };
    let first = client.submit(nap()).await.expect("first");
    let _second = client.submit(nap()).await.expect("second");
    let err = client.submit(nap()).await.expect_err("a third is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("2 jobs in flight") && msg.contains("max_jobs_per_client"),
        "{msg}"
    );
    // Another client is not held back by this one.
    let other = c.client().await;
    let mut h = other
        .submit(JobSpec::new("quick").step(StepSpec::new("e", "troupe.echo")))
        .await
        .expect("another client");
    assert_eq!(h.wait().await.unwrap().state, JobState::Succeeded);
    // When one of its jobs ends, the client may submit again.
    first.cancel().await.expect("cancel");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.submit(nap()).await {
            Ok(_) => break,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_cookie_comes_from_a_file_and_is_never_shown() {
    let mut c = Cluster::plan(2);
    let secret = format!("s3cr3t-{}", std::process::id());
    let file = c.dir.join("cookie");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The file overrides the --cookie the harness passes.
    c.extra = vec!["--cookie-file".into(), file.display().to_string()];
    c.start_node(0);
    c.start_node(1);
    let nodes = |args: &[&str], env: Option<&str>| {
        let mut cmd = std::process::Command::new(troupe_integration::troupe_node());
        cmd.args(["nodes", "--json", "--seeds", &c.addrs[0]])
            .args(args);
        if let Some(f) = env {
            cmd.env("TROUPE_COOKIE_FILE", f);
        }
        troupe_integration::run_with_timeout(cmd, Duration::from_secs(30))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let out = nodes(&["--cookie-file", file.to_str().unwrap()], None);
        let text = texts(&out).0;
        if out.status.success() && text.matches("\"state\":\"up\"").count() == 2 {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{out:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!listed.contains(&secret), "{listed}");
    // From the environment too.
    assert!(nodes(&[], Some(file.to_str().unwrap())).status.success());
    // The harness's own cookie is not the cluster's any more: refused, exit 3.
    let out = nodes(&["--cookie", &c.cookie], None);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // A missing file is bad input, and the message does not echo a secret.
    let out = nodes(&["--cookie-file", "/nonexistent/cookie"], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    for i in 0..2 {
        assert!(!c.log(i).contains(&secret), "n{} logged the cookie", i + 1);
    }
}

#[tokio::test]
async fn a_thousand_wrong_cookie_handshakes_in_a_row_do_not_stop_honest_clients() {
    use troupe_runtime::cluster::{start_server, ServerOptions};
    let c = Cluster::start(1);
    c.ready().await;
    // An attacker in this process: a cluster member of its own with the wrong cookie.
    let attacker = start_server(
        &ServerOptions {
            name: "attacker".into(),
            host: "127.0.0.1".into(),
            bind: "127.0.0.1".parse().unwrap(),
            port: 0,
            cookie: "not-the-cookie".into(),
            max_frame_bytes: 1 << 20,
            tls: None,
            session_ping_ms: troupe_runtime::cluster::DEFAULT_SESSION_PING_MS,
        },
        None,
        None,
    )
    .await
    .expect("attacker server");
    let target = c.addrs[0].clone();
    let flood = tokio::spawn(async move {
        let mut opened = 0;
        for _ in 0..1000 {
            if ractor_cluster::client_connect(&attacker, target.as_str())
                .await
                .is_ok()
            {
                opened += 1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        attacker.stop(None);
        opened
    });
    // Honest work goes on meanwhile, through a client that connects during the flood.
    let client = c.client().await;
    let mut done = 0;
    while !flood.is_finished() || done < 5 {
        let mut h = client
            .submit(JobSpec::new("honest").step(StepSpec::new("n", "troupe.node")))
            .await
            .expect("honest submit during the flood");
        assert_eq!(h.wait().await.unwrap().state, JobState::Succeeded);
        done += 1;
    }
    let opened = flood.await.unwrap();
    assert!(opened >= 900, "only {opened} attempts made");
    assert!(done >= 5);
    let late = c.client().await;
    let mut h = late
        .submit(JobSpec::new("after").step(StepSpec::new("n", "troupe.node")))
        .await
        .expect("a new client after the flood");
    assert_eq!(h.wait().await.unwrap().state, JobState::Succeeded);
    let log = c.log(0);
    assert!(log.contains("closed before it authenticated"), "{log}");
    // Logged at most about once a second, not once per attempt.
    let lines = log.matches("closed before it authenticated").count();
    assert!(lines < 100, "{lines} log lines for the flood");
}
