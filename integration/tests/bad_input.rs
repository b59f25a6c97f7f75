//! Bad input gets a clear error and the nodes keep serving: malformed and cyclic job files,
//! unknown tasks, a wrong cookie, garbage and half handshakes on the port, a panicking task.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use troupe_integration::{texts, Cluster};

#[tokio::test]
async fn malformed_and_cyclic_job_files_exit_2_naming_the_problem() {
    let c = Cluster::start(1);
    c.ready().await;

    let f = c.job_file("broken.toml", "[[steps]]\nid = \"a\"\ntask = \n");
    let out = c.cli(&["submit", &f], true);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("broken.toml") && stderr.contains("line 3"),
        "{stderr}"
    );

    let f = c.job_file("missing.toml", "[[steps]]\nid = \"a\"\n");
    let out = c.cli(&["submit", &f], true);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("step \"a\" names no task"), "{stderr}");

    let f = c.job_file(
        "cycle.toml",
        "[[steps]]\nid = \"start\"\ntask = \"troupe.echo\"\n[[steps]]\nid = \"x\"\ntask = \"troupe.echo\"\nafter = [\"start\", \"z\"]\n[[steps]]\nid = \"y\"\ntask = \"troupe.echo\"\nafter = [\"x\"]\n[[steps]]\nid = \"z\"\ntask = \"troupe.echo\"\nafter = [\"y\"]\n",
    );
    let out = c.cli(&["submit", &f, "--wait"], true);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cycle"), "{stderr}");
    for s in ["x", "y", "z"] {
        assert!(
            stderr.contains(&format!("{s} ->")) || stderr.contains(&format!("-> {s}")),
            "{stderr}"
        );
    }

    let f = c.job_file(
        "dup.json",
        r#"{"steps": [{"id": "a", "task": "troupe.echo"}, {"id": "a", "task": "troupe.echo"}]}"#,
    );
    let out = c.cli(&["submit", &f], true);
    assert_eq!(out.status.code(), Some(2));
    assert!(texts(&out).1.contains("duplicate step id \"a\""));

    let out = c.cli(&["submit", "/nonexistent/job.toml"], true);
    assert_eq!(out.status.code(), Some(2));
    assert!(texts(&out).1.contains("/nonexistent/job.toml"));

    let f = c.job_file("ok.toml", "[[steps]]\nid = \"a\"\ntask = \"troupe.echo\"\n");
    let out = c.cli(&["submit", &f, "--input", "{not json"], true);
    assert_eq!(out.status.code(), Some(2));
    assert!(texts(&out).1.contains("--input"));

    let out = c.cli(&["submit"], false);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    c.assert_serves().await;
}

#[tokio::test]
async fn an_unknown_task_is_refused_naming_the_step() {
    let mut c = Cluster::plan(1);
    c.env = vec![("TROUPE_TASK_WAIT_MS".into(), "300".into())];
    c.start_node(0);
    c.ready().await;
    let f = c.job_file("unknown.toml", "[[steps]]\nid = \"ok\"\ntask = \"troupe.echo\"\n[[steps]]\nid = \"mystery\"\ntask = \"no.such.task\"\n");
    let out = c.cli(&["submit", &f, "--wait"], true);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"mystery\"") && stderr.contains("no.such.task"),
        "{stderr}"
    );
    assert!(
        stderr.contains("troupe.echo"),
        "lists the known tasks: {stderr}"
    );
    c.assert_serves().await;
}

#[tokio::test]
async fn a_wrong_cookie_is_refused_with_exit_3() {
    let c = Cluster::start(1);
    c.ready().await;
    let out = c.cli(
        &["nodes", "--seeds", &c.seeds(), "--cookie", "not-the-cookie"],
        false,
    );
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("cookie"),
        "{stderr}"
    );

    // Nothing listens here: unreachable, also exit 3.
    let port = troupe_integration::free_port().unwrap();
    let out = c.cli(
        &[
            "nodes",
            "--seeds",
            &format!("127.0.0.1:{port}"),
            "--cookie",
            &c.cookie,
        ],
        false,
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(texts(&out).1.contains("cannot reach"), "{}", texts(&out).1);

    c.assert_serves().await;
    let log = c.log(0);
    assert!(log.contains("closed before it authenticated"), "{log}");
}

/// A node that cannot join says why in its log, again while it stays alone: a seed with
/// another cookie closes the handshake; a seed where nothing listens cannot be reached.
#[tokio::test]
async fn a_node_that_cannot_join_its_seeds_says_why() {
    let c = Cluster::start(1);
    c.ready().await;
    let nobody = format!("127.0.0.1:{}", troupe_integration::free_port().unwrap());
    let mut spec = c.spec(0);
    spec.name = "stranger".into();
    spec.addr = format!("127.0.0.1:{}", troupe_integration::free_port().unwrap());
    spec.cookie = "another-cookie".into();
    spec.seeds = vec![c.addrs[0].clone(), nobody.clone()];
    spec.extra[1] = c.dir.join("data-stranger").display().to_string();
    let log = c.dir.join("stranger.log");
    let _stranger = troupe_integration::NodeProcess::spawn(
        troupe_integration::troupe_node(),
        &spec,
        log.clone(),
    )
    .expect("start the stranger");
    let says = |what: &str, addr: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(what) && l.contains(addr))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(says("cookie differs", &c.addrs[0]) && says("cannot reach seed", &nobody)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the stranger did not say why it cannot join:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    c.assert_serves().await;
}

/// A client pointed at a node's HTTP or Gearman port is told which port it found, not
/// that its cookie is wrong.
#[tokio::test]
async fn a_client_pointed_at_the_http_or_gearman_port_is_told_so() {
    let mut c = Cluster::plan(1);
    c.serve_http = true;
    c.serve_gearman = true;
    c.start_node(0);
    c.ready().await;
    for (addr, what) in [
        (c.http_addrs[0].clone(), "HTTP server"),
        (c.gearman_addrs[0].clone(), "Gearman server"),
    ] {
        let out = c.cli(&["nodes", "--seeds", &addr, "--cookie", &c.cookie], false);
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(2), "{addr}: {stderr}");
        assert!(
            stderr.contains(what) && stderr.contains("not a Troupe node's cluster port"),
            "{addr}: {stderr}"
        );
    }
    c.assert_serves().await;
}

#[tokio::test]
async fn garbage_and_half_handshakes_are_dropped_and_the_node_keeps_serving() {
    let mut c = Cluster::plan(1);
    c.env = vec![("TROUPE_HANDSHAKE_TIMEOUT_MS".into(), "500".into())];
    c.start_node(0);
    c.ready().await;
    let addr = c.addrs[0].clone();

    // Random bytes: a huge length prefix, then noise.
    let mut g = TcpStream::connect(&addr).unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = g.write_all(&noise);
    // A frame that claims 100 bytes and sends 10, then stalls.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(&100u64.to_be_bytes()).unwrap();
    half.write_all(&[0x0a; 10]).unwrap();
    // A connection that sends nothing at all.
    let mut silent = TcpStream::connect(&addr).unwrap();

    // The node closes all three: read sees EOF (or a reset), not a timeout.
    for (what, s) in [
        ("garbage", &mut g),
        ("half frame", &mut half),
        ("silent", &mut silent),
    ] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    break false
                }
                Err(_) => break true,
            }
        };
        assert!(closed, "the node did not drop the {what} connection");
    }
    c.assert_serves().await;
    let log = c.log(0);
    assert!(
        log.contains("did not finish the handshake")
            || log.contains("closed before it authenticated"),
        "{log}"
    );
    assert!(c.node(0).is_running());
}

#[tokio::test]
async fn a_panicking_task_fails_its_step_and_the_node_survives() {
    let c = Cluster::start(1);
    c.ready().await;
    let f = c.job_file(
        "crash.toml",
        "[[steps]]\nid = \"boom\"\ntask = \"troupe.crash\"\n",
    );
    let (code, st, stderr) = c.submit_wait(&f, &[]);
    assert_eq!(code, Some(1), "{st}\n{stderr}");
    assert_eq!(st["steps"]["boom"]["state"], "failed");
    assert!(
        st["steps"]["boom"]["error"]
            .as_str()
            .unwrap()
            .contains("panicked"),
        "{st}"
    );
    assert_eq!(st["steps"]["boom"]["attempts"], 1);
    c.assert_serves().await;
    // The same node again, twice, to be sure its worker slots were given back.
    c.assert_serves().await;
}

/// Node `i`'s `VmSize` (virtual memory) in KiB, from `/proc`.
fn vm_size_kib(c: &mut Cluster, i: usize) -> u64 {
    let pid = c.node(i).pid().expect("the node runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc status")
}

#[tokio::test]
async fn gearman_headers_claiming_big_bodies_do_not_make_the_node_reserve_them() {
    use troupe_integration::gearman::Conn;
    use troupe_runtime::gearman::packet::{request, PacketType};
    let mut c = Cluster::plan(1);
    c.serve_gearman = true;
    c.start_node(0);
    c.ready().await;
    let addr = c.gearman_addrs[0].clone();
    let before = vm_size_kib(&mut c, 0);
    // 64 connections, each a header claiming a body just under the limit (16 MiB) and
    // one byte of it: 1 GiB if the node set aside what the headers claim.
    let mut held = Vec::new();
    for _ in 0..64 {
        let mut g = Conn::connect(&addr).unwrap();
        let mut p = request(PacketType::SUBMIT_JOB, &[]).to_vec();
        p[8..12].copy_from_slice(&(16 * 1024 * 1024u32 - 1).to_be_bytes());
        p.push(b'f');
        g.send_raw(&p).unwrap();
        held.push(g);
    }
    // Every connection's bytes have been read once a later connection answers an echo.
    let mut probe = Conn::connect(&addr).unwrap();
    probe.send(PacketType::ECHO_REQ, &[b"ok"]).unwrap();
    let echo = probe
        .expect(&[PacketType::ECHO_RES], Duration::from_secs(10))
        .unwrap();
    assert_eq!(echo.text(0), "ok");
    std::thread::sleep(Duration::from_millis(200));
    let grew_mib = vm_size_kib(&mut c, 0).saturating_sub(before) / 1024;
    assert!(
        grew_mib < 256,
        "64 headers made the node's memory grow by {grew_mib} MiB"
    );
    drop(held);
    c.assert_serves().await;
}

#[tokio::test]
async fn gearman_maxqueue_from_another_machine_is_refused() {
    if !troupe_integration::needs::has(
        "gearman_maxqueue_from_another_machine_is_refused",
        &[troupe_integration::needs::Need::Root],
    ) {
        return;
    }
    use troupe_integration::gearman::Conn;
    use troupe_runtime::gearman::packet::PacketType;
    // The node in its own network namespace: this test reaches it from the bridge's
    // address, not from loopback.
    let mut c = Cluster::plan_in_netns(1).expect("network namespaces (run as root)");
    let ip = c.addrs[0].split(':').next().unwrap().to_string();
    c.gearman_addrs[0] = format!("{ip}:7300");
    c.serve_gearman = true;
    c.start_node(0);
    c.ready().await;
    let addr = c.gearman_addrs[0].clone();
    let t = Duration::from_secs(10);
    // A worker for `f` that takes nothing, so jobs wait on the node's board.
    let mut w = Conn::connect(&addr).unwrap();
    w.can_do("f").unwrap();
    let mut admin = TcpStream::connect(&addr).unwrap();
    admin.set_read_timeout(Some(t)).unwrap();
    admin.write_all(b"maxqueue f 1\n").unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while admin.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let line = String::from_utf8_lossy(&line).to_string();
    assert!(line.starts_with("ERR NOT_ALLOWED"), "{line}");
    // No limit was set: three jobs wait for `f` (each on the board before the next).
    let mut cl = Conn::connect(&addr).unwrap();
    for (n, data) in [&b"a"[..], b"b", b"c"].into_iter().enumerate() {
        cl.submit(PacketType::SUBMIT_JOB_BG, "f", "", data)
            .unwrap_or_else(|e| panic!("a submission of f was refused: {e}"));
        let deadline = std::time::Instant::now() + t;
        while waiting_for(&mut admin, "f") < n as u64 + 1 {
            assert!(std::time::Instant::now() < deadline, "job {n} never waited");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(w);
}

/// With `gearman_admin_from` naming the operators' network, a peer there may change
/// state (`maxqueue`, `cancel job`); the node in its own namespace, reached from the bridge.
#[tokio::test]
async fn gearman_admin_from_lets_an_operators_network_change_state() {
    if !troupe_integration::needs::has(
        "gearman_admin_from_lets_an_operators_network_change_state",
        &[troupe_integration::needs::Need::Root],
    ) {
        return;
    }
    use troupe_integration::gearman::Conn;
    use troupe_runtime::gearman::packet::PacketType;
    let mut c = Cluster::plan_in_netns(1).expect("network namespaces (run as root)");
    let ip = c.addrs[0].split(':').next().unwrap().to_string();
    let net = format!("{}.0/24", ip.rsplit_once('.').unwrap().0);
    c.gearman_addrs[0] = format!("{ip}:7300");
    c.serve_gearman = true;
    c.env.push((
        "TROUPE_GEARMAN_ADMIN_FROM".into(),
        format!("10.255.255.0/24,{net}"),
    ));
    c.start_node(0);
    c.ready().await;
    let addr = c.gearman_addrs[0].clone();
    let mut admin = TcpStream::connect(&addr).unwrap();
    admin
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut ask = |line: &str| {
        admin.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 1];
        while admin.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
            got.push(b[0]);
        }
        String::from_utf8_lossy(&got).trim_end().to_string()
    };
    assert_eq!(ask("maxqueue f 1"), "OK");
    let mut w = Conn::connect(&addr).unwrap();
    w.can_do("f").unwrap();
    let mut cl = Conn::connect(&addr).unwrap();
    let handle = cl.submit(PacketType::SUBMIT_JOB_BG, "f", "", b"a").unwrap();
    assert_eq!(ask(&format!("cancel job {handle}")), "OK");
    assert_eq!(ask(&format!("cancel job {handle}")), "ERR UNKNOWN_JOB");
    drop(w);
}

/// The jobs of `function` on the node's board (admin `status`), over `admin`.
fn waiting_for(admin: &mut TcpStream, function: &str) -> u64 {
    admin.write_all(b"status\n").unwrap();
    let mut text = Vec::new();
    let mut b = [0u8; 1];
    while !text.ends_with(b".\n") {
        assert_eq!(
            admin.read(&mut b).unwrap(),
            1,
            "the admin connection closed"
        );
        text.push(b[0]);
    }
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| {
            let mut f = l.split('\t');
            (f.next() == Some(function)).then(|| f.next().and_then(|t| t.parse().ok()))?
        })
        .unwrap_or(0)
}
