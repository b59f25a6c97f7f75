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
