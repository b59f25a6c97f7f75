//! The Gearman front door (`--gearman`) on real node processes, driven by Debian's
//! `gearman` and `gearadmin` commands (package `gearman-tools`, installed by `.ci/run`)
//! and, for what they cannot do, by a raw-protocol client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_integration::gearman::{admin_status, gearadmin, gearman, Conn, ExternalWorker};
use troupe_integration::needs::{self, Need};
use troupe_integration::{texts, Cluster};
use troupe_runtime::gearman::packet::PacketType;

const T: Duration = Duration::from_secs(30);

/// `n` nodes, each serving Gearman on its reserved address; `None` (the test returns)
/// without Debian's Gearman tools, outside CI.
fn gearman_cluster(test: &str, n: usize) -> Option<Cluster> {
    if !needs::has(test, &[Need::GearmanTools]) {
        return None;
    }
    let mut c = Cluster::plan(n);
    c.serve_gearman = true;
    for i in 0..n {
        c.start_node(i);
    }
    for i in 0..n {
        // Wait until each node answers and sees the whole cluster.
        let mut conn = Conn::connect(&c.gearman_addrs[i]).expect("connect");
        let p = conn.call("troupe.echo", b"up").expect("echo job");
        assert_eq!(p.kind, PacketType::WORK_COMPLETE, "{p:?}");
    }
    wait_nodes(&c, n);
    Some(c)
}

fn wait_nodes(c: &Cluster, n: usize) {
    let deadline = Instant::now() + T;
    loop {
        let out = c.cli(&["nodes", "--json"], true);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let up = v["nodes"]
            .as_array()
            .map(|a| a.iter().filter(|n| n["state"] == "up").count())
            .unwrap_or(0);
        if up == n {
            return;
        }
        assert!(Instant::now() < deadline, "cluster never formed: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn gearman_clients_run_jobs_on_every_node_with_status_and_exceptions() {
    let Some(c) = gearman_cluster(
        "gearman_clients_run_jobs_on_every_node_with_status_and_exceptions",
        3,
    ) else {
        return;
    };
    for i in 0..3 {
        let a = &c.gearman_addrs[i];
        let out = gearman(a, &["-f", "troupe.echo", "hello"], T);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(texts(&out).0, "hello");
        let out = gearman(a, &["-f", "troupe.sum", r#"{"add": 5}"#], T);
        assert_eq!(texts(&out).0, "5", "{out:?}");
    }
    // A failing job: the CLI fails; a client that asked for exceptions gets the message.
    let out = gearman(
        &c.gearman_addrs[1],
        &["-f", "troupe.fail", r#"{"message": "bad"}"#],
        T,
    );
    assert!(!out.status.success(), "{out:?}");
    let mut conn = Conn::connect(&c.gearman_addrs[1]).unwrap();
    conn.send(PacketType::OPTION_REQ, &[b"exceptions"]).unwrap();
    let p = conn.expect(&[PacketType::OPTION_RES], T).unwrap();
    assert_eq!(p.text(0), "exceptions");
    conn.submit(
        PacketType::SUBMIT_JOB,
        "troupe.fail",
        "",
        br#"{"message": "bad input 7"}"#,
    )
    .unwrap();
    let p = conn.wait_end(T).unwrap();
    assert_eq!(p.kind, PacketType::WORK_EXCEPTION, "{p:?}");
    assert!(p.text(1).contains("bad input 7"), "{p:?}");
    // ECHO_REQ.
    conn.send(PacketType::ECHO_REQ, &[b"ping\0pong"]).unwrap();
    let p = conn.expect(&[PacketType::ECHO_RES], T).unwrap();
    assert_eq!(p.args[0], b"ping\0pong");

    // A background job submitted on n1 by the CLI, then its status asked on n3 by
    // handle: known and running while it sleeps, unknown once done.
    let mut bg = Conn::connect(&c.gearman_addrs[0]).unwrap();
    let handle = bg
        .submit(
            PacketType::SUBMIT_JOB_BG,
            "troupe.sleep",
            "",
            br#"{"ms": 1500}"#,
        )
        .unwrap();
    let mut other = Conn::connect(&c.gearman_addrs[2]).unwrap();
    eventually("the background job runs", || {
        let (known, running, _, _) = other.status(&handle).unwrap();
        known && running
    });
    eventually("the background job ends", || {
        !other.status(&handle).unwrap().0
    });
    let st = c.cli(&["status", &handle], true);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).expect("status JSON");
    assert_eq!(v["state"], "succeeded", "{v}");
    // A handle nobody knows.
    assert_eq!(other.status("H:nowhere:1").unwrap(), (false, false, 0, 0));
    // The CLI's background mode answers at once.
    let t0 = Instant::now();
    let out = gearman(
        &c.gearman_addrs[1],
        &["-b", "-f", "troupe.sleep", r#"{"ms": 3000}"#],
        T,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "-b waited for the job"
    );
}

#[test]
fn an_external_gearman_worker_serves_job_file_steps_and_gearman_clients() {
    let Some(c) = gearman_cluster(
        "an_external_gearman_worker_serves_job_file_steps_and_gearman_clients",
        3,
    ) else {
        return;
    };
    let _w = ExternalWorker::start(
        &c.gearman_addrs[1],
        "reverse",
        &["rev"],
        &c.dir.join("worker.log"),
    );
    eventually("n2 lists the worker", || {
        admin_status(&c.gearman_addrs[1])
            .iter()
            .any(|(f, _, _, w)| f == "reverse" && *w == 1)
    });
    // Its function shows among n2's task groups (gossiped within a moment).
    eventually("nodes lists reverse on n2", || {
        let out = c.cli(&["nodes", "--json"], true);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["nodes"].as_array().is_some_and(|ns| {
            ns.iter().any(|n| {
                n["name"] == "n2"
                    && n["tasks"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|t| t == "reverse"))
            })
        })
    });
    // A Troupe job file whose step runs on the Gearman worker, submitted through n1.
    let file = c.job_file(
        "rev.toml",
        r#"
name = "reverse"
output = "r"
[[steps]]
id = "r"
task = "reverse"
input = "troupe"
[[steps]]
id = "after"
task = "troupe.echo"
after = ["r"]
input = "done"
"#,
    );
    let st = c.submit_wait_via(0, &file);
    assert_eq!(st["state"], "succeeded", "{st}");
    assert_eq!(st["steps"]["r"]["node"], "n2", "{st}");
    // The worker got the step's input as text and its output (rev ends it with a
    // newline) came back as a string.
    assert_eq!(
        st["output"].as_str().map(str::trim_end),
        Some("epuort"),
        "{st}"
    );
    assert_eq!(st["steps"]["after"]["state"], "succeeded", "{st}");
    // The same worker serves a Gearman client on another node.
    let out = gearman(&c.gearman_addrs[2], &["-f", "reverse", "hello"], T);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(texts(&out).0.trim_end(), "olleh");
    // gearadmin --workers lists it with its function.
    let out = gearadmin(&c.gearman_addrs[1], &["--workers"]);
    assert!(texts(&out).0.contains(": reverse"), "{out:?}");
}

#[test]
fn high_priority_jobs_go_before_low_ones_under_load() {
    let Some(c) = gearman_cluster("high_priority_jobs_go_before_low_ones_under_load", 3) else {
        return;
    };
    let addr = &c.gearman_addrs[0];
    let mut worker = Conn::connect(addr).unwrap();
    worker.can_do("prio").unwrap();
    eventually("the function is served", || {
        admin_status(addr)
            .iter()
            .any(|(f, _, _, w)| f == "prio" && *w == 1)
    });
    // While the worker does not grab, three low then three high jobs queue up, submitted
    // by the gearman CLI through other nodes.
    for i in 0..3 {
        let out = gearman(
            &c.gearman_addrs[1],
            &["-b", "-L", "-f", "prio", &format!("low{i}")],
            T,
        );
        assert!(out.status.success(), "{out:?}");
    }
    for i in 0..3 {
        let out = gearman(
            &c.gearman_addrs[2],
            &["-b", "-I", "-f", "prio", &format!("high{i}")],
            T,
        );
        assert!(out.status.success(), "{out:?}");
    }
    eventually("six jobs wait at n1", || {
        admin_status(addr)
            .iter()
            .any(|(f, t, _, _)| f == "prio" && *t == 6)
    });
    let mut order = Vec::new();
    while let Some((h, _, data)) = worker.grab(Duration::from_millis(500)).unwrap() {
        order.push(String::from_utf8_lossy(&data).into_owned());
        worker.complete(&h, b"ok").unwrap();
    }
    assert_eq!(order, ["high0", "high1", "high2", "low0", "low1", "low2"]);
}

#[test]
fn the_same_unique_id_submitted_to_two_nodes_at_once_runs_once() {
    let Some(c) = gearman_cluster(
        "the_same_unique_id_submitted_to_two_nodes_at_once_runs_once",
        3,
    ) else {
        return;
    };
    let executions = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A worker on n2 that counts executions and takes 600 ms per job.
    let worker = {
        let (addr, executions, stop) =
            (c.gearman_addrs[1].clone(), executions.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut w = Conn::connect(&addr).unwrap();
            w.can_do("slowcount").unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Some((h, _, data)) = w.grab(Duration::from_millis(200)).unwrap() {
                    executions.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(600));
                    w.complete(&h, &data).unwrap();
                }
            }
        })
    };
    eventually("the function is served", || {
        admin_status(&c.gearman_addrs[1])
            .iter()
            .any(|(f, _, _, w)| f == "slowcount" && *w == 1)
    });
    let mut a = Conn::connect(&c.gearman_addrs[0]).unwrap();
    let mut b = Conn::connect(&c.gearman_addrs[2]).unwrap();
    a.send(PacketType::SUBMIT_JOB, &[b"slowcount", b"u-42", b"payload"])
        .unwrap();
    b.send(PacketType::SUBMIT_JOB, &[b"slowcount", b"u-42", b"payload"])
        .unwrap();
    let ha = a.expect(&[PacketType::JOB_CREATED], T).unwrap().text(0);
    let hb = b.expect(&[PacketType::JOB_CREATED], T).unwrap().text(0);
    assert_eq!(ha, hb, "both submissions joined one job");
    // While it runs, GET_STATUS_UNIQUE from the third node sees two clients.
    let mut q = Conn::connect(&c.gearman_addrs[1]).unwrap();
    q.send(PacketType::GET_STATUS_UNIQUE, &[b"u-42"]).unwrap();
    let s = q.expect(&[PacketType::STATUS_RES_UNIQUE], T).unwrap();
    assert_eq!(s.text(0), "u-42");
    assert_eq!(s.text(1), "1", "known: {s:?}");
    assert_eq!(s.text(5), "2", "client count: {s:?}");
    let ea = a.wait_end(T).unwrap();
    let eb = b.wait_end(T).unwrap();
    assert_eq!(ea.kind, PacketType::WORK_COMPLETE);
    assert_eq!(eb.kind, PacketType::WORK_COMPLETE);
    assert_eq!(ea.args[1], b"payload");
    assert_eq!(eb.args[1], b"payload");
    assert_eq!(
        executions.load(Ordering::Relaxed),
        1,
        "one execution for both"
    );
    // Once it ended, the same unique id runs again.
    let p = a.call_unique("slowcount", "u-42", b"again");
    assert_eq!(p.kind, PacketType::WORK_COMPLETE);
    assert_eq!(executions.load(Ordering::Relaxed), 2);
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
}

trait CallUnique {
    fn call_unique(&mut self, f: &str, u: &str, d: &[u8]) -> troupe_integration::gearman::Packet;
}

impl CallUnique for Conn {
    fn call_unique(&mut self, f: &str, u: &str, d: &[u8]) -> troupe_integration::gearman::Packet {
        self.submit(PacketType::SUBMIT_JOB, f, u, d).unwrap();
        self.wait_end(T).unwrap()
    }
}

#[test]
fn a_killed_external_worker_loses_its_attempt_and_another_worker_finishes_the_job() {
    let Some(c) = gearman_cluster(
        "a_killed_external_worker_loses_its_attempt_and_another_worker_finishes_the_job",
        3,
    ) else {
        return;
    };
    let mut first = ExternalWorker::start(
        &c.gearman_addrs[0],
        "slowrev",
        &["sh", "-c", "sleep 30; rev"],
        &c.dir.join("w1.log"),
    );
    eventually("n1 lists the first worker", || {
        admin_status(&c.gearman_addrs[0])
            .iter()
            .any(|(f, _, _, w)| f == "slowrev" && *w == 1)
    });
    let client = {
        let addr = c.gearman_addrs[2].clone();
        std::thread::spawn(move || {
            gearman(&addr, &["-f", "slowrev", "abc"], Duration::from_secs(60))
        })
    };
    eventually("the first worker holds the job", || {
        admin_status(&c.gearman_addrs[0])
            .iter()
            .any(|(f, _, r, _)| f == "slowrev" && *r == 1)
    });
    let _second = ExternalWorker::start(
        &c.gearman_addrs[1],
        "slowrev",
        &["sh", "-c", "sleep 0.2; rev"],
        &c.dir.join("w2.log"),
    );
    // Admin answers are the cluster's: n2 counts both workers.
    eventually("n2 lists the second worker beside the first", || {
        admin_status(&c.gearman_addrs[1])
            .iter()
            .any(|(f, _, _, w)| f == "slowrev" && *w == 2)
    });
    first.kill();
    let out = client.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(texts(&out).0.trim_end(), "cba");
    assert!(
        c.log(0).contains("disconnected holding an attempt"),
        "n1 logs the lost attempt"
    );
}

#[test]
fn garbage_truncated_and_wrong_packets_get_errors_and_the_node_keeps_serving() {
    if !needs::has(
        "garbage_truncated_and_wrong_packets_get_errors_and_the_node_keeps_serving",
        &[Need::GearmanTools],
    ) {
        return;
    }
    let mut c = Cluster::plan(1);
    c.serve_gearman = true;
    c.serve_http = true;
    c.start_node(0);
    let addr = c.gearman_addrs[0].clone();
    // Unknown type, a response sent as a request, too few arguments: an ERROR each, and
    // the connection goes on.
    let mut conn = Conn::connect(&addr).unwrap();
    let mut p = troupe_runtime::gearman::packet::request(PacketType::ECHO_REQ, &[b"x"]).to_vec();
    p[4..8].copy_from_slice(&999u32.to_be_bytes());
    conn.send_raw(&p).unwrap();
    let e = conn.expect(&[PacketType::ERROR], T).unwrap();
    assert_eq!(e.text(0), "UNKNOWN_COMMAND", "{e:?}");
    let mut p = troupe_runtime::gearman::packet::request(PacketType::ECHO_REQ, &[b"x"]).to_vec();
    p[..4].copy_from_slice(b"\0RES");
    conn.send_raw(&p).unwrap();
    let e = conn.expect(&[PacketType::ERROR], T).unwrap();
    assert_eq!(e.text(0), "INVALID_MAGIC", "{e:?}");
    conn.send(PacketType::SUBMIT_JOB, &[b"only-a-function"])
        .unwrap();
    let e = conn.expect(&[PacketType::ERROR], T).unwrap();
    assert_eq!(e.text(0), "INVALID_PACKET", "{e:?}");
    assert!(e.text(1).contains("needs 3 arguments"), "{e:?}");
    conn.send(PacketType::ECHO_REQ, &[b"still here"]).unwrap();
    assert_eq!(
        conn.expect(&[PacketType::ECHO_RES], T).unwrap().text(0),
        "still here"
    );
    // Bad magic: ERROR, then closed.
    let mut g = Conn::connect(&addr).unwrap();
    g.send_raw(b"\0BAD\0\0\0\x10\0\0\0\0").unwrap();
    let e = g.read(T).unwrap().expect("an ERROR before the close");
    assert_eq!(e.kind, PacketType::ERROR);
    assert!(g.read(T).unwrap().is_none(), "closed after bad magic");
    // A size over the limit: ERROR, then closed, without reading the body.
    let mut g = Conn::connect(&addr).unwrap();
    let mut p = troupe_runtime::gearman::packet::request(PacketType::ECHO_REQ, &[]).to_vec();
    p[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    g.send_raw(&p).unwrap();
    let e = g.read(T).unwrap().expect("an ERROR before the close");
    assert!(e.text(1).contains("over the limit"), "{e:?}");
    assert!(g.read(T).unwrap().is_none());
    // A truncated packet, then the client goes away.
    let mut g = Conn::connect(&addr).unwrap();
    let p = troupe_runtime::gearman::packet::request(PacketType::SUBMIT_JOB, &[b"f", b"", b"data"]);
    g.send_raw(&p[..15]).unwrap();
    drop(g);
    // Random bytes.
    let mut g = Conn::connect(&addr).unwrap();
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = g.send_raw(&junk);
    drop(g);
    // An admin line that is not a command.
    let out = gearadmin(&addr, &["--status"]);
    assert!(out.status.success(), "{out:?}");
    // The node still serves, and counted what it refused.
    let out = gearman(&addr, &["-f", "troupe.echo", "alive"], T);
    assert_eq!(texts(&out).0, "alive", "{out:?}");
    let m = troupe_integration::http::get(&format!("{}/metrics", c.http_url(0)));
    let metrics = troupe_integration::http::parse_metrics(&m.body);
    let refused = troupe_integration::http::metric_sum(&metrics, "troupe_gearman_errors_total");
    assert!(refused >= 5.0, "errors counted: {refused}");
    assert!(c.node(0).is_running());
}

#[test]
fn gearadmin_reports_and_shuts_down_only_from_loopback() {
    let Some(mut c) = gearman_cluster("gearadmin_reports_and_shuts_down_only_from_loopback", 1)
    else {
        return;
    };
    let addr = c.gearman_addrs[0].clone();
    let out = gearadmin(&addr, &["--server-version"]);
    assert!(texts(&out).0.contains("troupe"), "{out:?}");
    let out = gearadmin(&addr, &["--status"]);
    assert_eq!(texts(&out).0, ".\n", "no function yet: {out:?}");
    let out = gearadmin(&addr, &["--getpid"]);
    assert!(out.status.success(), "{out:?}");
    // A waiting job shows in its priority lane.
    let mut w = Conn::connect(&addr).unwrap();
    w.can_do("lanes").unwrap();
    let mut cl = Conn::connect(&addr).unwrap();
    cl.submit(PacketType::SUBMIT_JOB_HIGH_BG, "lanes", "", b"x")
        .unwrap();
    eventually("prioritystatus shows the high job", || {
        texts(&gearadmin(&addr, &["--priority-status"])).0 == "lanes\t1\t0\t0\t1\n.\n"
    });
    // gearadmin has no shutdown option: the admin line itself, from loopback.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"shutdown graceful\n").unwrap();
    let mut ok = [0u8; 4];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"OK\r\n", "as gearmand ends it");
    let code = c.node(0).wait_exit(Duration::from_secs(10));
    assert!(
        code.is_some_and(|s| s.success()),
        "the node stopped cleanly: {code:?}"
    );
}

#[test]
fn worker_status_and_data_reach_the_waiting_client_and_get_status() {
    let Some(c) = gearman_cluster(
        "worker_status_and_data_reach_the_waiting_client_and_get_status",
        2,
    ) else {
        return;
    };
    let addr = c.gearman_addrs[1].clone();
    let (to_worker, go) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let mut w = Conn::connect(&addr).unwrap();
        w.can_do("progress").unwrap();
        // Two jobs: for each, report 1/2 and a chunk of data, wait for the go, complete.
        for _ in 0..2 {
            let (h, _, _) = w.grab(Duration::from_secs(30)).unwrap().expect("a job");
            w.send(PacketType::WORK_STATUS, &[h.as_bytes(), b"1", b"2"])
                .unwrap();
            w.send(PacketType::WORK_DATA, &[h.as_bytes(), b"part\0one"])
                .unwrap();
            w.send(PacketType::WORK_WARNING, &[h.as_bytes(), b"careful"])
                .unwrap();
            go.recv().unwrap();
            w.complete(&h, b"whole").unwrap();
        }
    });
    eventually("the function is served", || {
        admin_status(&c.gearman_addrs[1])
            .iter()
            .any(|(f, _, _, w)| f == "progress" && *w == 1)
    });
    // Foreground, from the other node: status, data and warning arrive before the end.
    let mut cl = Conn::connect(&c.gearman_addrs[0]).unwrap();
    let h = cl
        .submit(PacketType::SUBMIT_JOB, "progress", "", b"in")
        .unwrap();
    let s = cl.expect(&[PacketType::WORK_STATUS], T).unwrap();
    assert_eq!(
        (s.text(0), s.text(1), s.text(2)),
        (h.clone(), "1".into(), "2".into())
    );
    let d = cl.expect(&[PacketType::WORK_DATA], T).unwrap();
    assert_eq!(d.args[1], b"part\0one");
    let wn = cl.expect(&[PacketType::WORK_WARNING], T).unwrap();
    assert_eq!(wn.text(1), "careful");
    to_worker.send(()).unwrap();
    let end = cl.wait_end(T).unwrap();
    assert_eq!(
        (end.kind, end.text(1)),
        (PacketType::WORK_COMPLETE, "whole".into())
    );
    // Background: GET_STATUS shows the worker's numerator and denominator.
    let h = cl
        .submit(PacketType::SUBMIT_JOB_BG, "progress", "", b"in")
        .unwrap();
    eventually("GET_STATUS shows 1/2", || {
        cl.status(&h).unwrap() == (true, true, 1, 2)
    });
    to_worker.send(()).unwrap();
    eventually("the background job ends", || !cl.status(&h).unwrap().0);
    worker.join().unwrap();
}

#[test]
fn grab_variants_can_do_timeout_and_maxqueue() {
    let Some(c) = gearman_cluster("grab_variants_can_do_timeout_and_maxqueue", 1) else {
        return;
    };
    let addr = c.gearman_addrs[0].clone();
    let mut w = Conn::connect(&addr).unwrap();
    w.send(PacketType::CAN_DO_TIMEOUT, &[b"slow", b"1"])
        .unwrap();
    w.can_do("uniq").unwrap();
    eventually("both functions served", || admin_status(&addr).len() == 2);
    let mut cl = Conn::connect(&addr).unwrap();
    // GRAB_JOB_UNIQ and GRAB_JOB_ALL carry a unique id (job/step) before the data.
    let h1 = cl
        .submit(PacketType::SUBMIT_JOB_BG, "uniq", "", b"one")
        .unwrap();
    let h2 = cl
        .submit(PacketType::SUBMIT_JOB_BG, "uniq", "", b"two")
        .unwrap();
    w.send(PacketType::GRAB_JOB_UNIQ, &[]).unwrap();
    let a = w.expect(&[PacketType::JOB_ASSIGN_UNIQ], T).unwrap();
    assert_eq!(
        (a.text(1), a.text(2), a.text(3)),
        ("uniq".into(), format!("{h1}/gearman"), "one".into())
    );
    w.complete(&a.text(0), b"1").unwrap();
    // GRAB_JOB_ALL: JOB_ASSIGN_UNIQ, as gearmand answers it for a job that is not
    // map-reduce; the handle is the one the client got.
    w.send(PacketType::GRAB_JOB_ALL, &[]).unwrap();
    let a = w.expect(&[PacketType::JOB_ASSIGN_UNIQ], T).unwrap();
    assert_eq!(
        (a.text(0), a.text(2), a.text(3)),
        (h2.clone(), format!("{h2}/gearman"), "two".into())
    );
    w.complete(&a.text(0), b"2").unwrap();
    // A worker that holds a job past its CAN_DO_TIMEOUT: the client is told it failed.
    let t0 = Instant::now();
    cl.submit(PacketType::SUBMIT_JOB, "slow", "", b"x").unwrap();
    let (held, _, _) = w.grab(T).unwrap().expect("the slow job");
    let end = cl.wait_end(T).unwrap();
    assert_eq!(end.kind, PacketType::WORK_FAIL);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "failed after {waited:?}"
    );
    // Its late result is ignored; the worker goes on.
    w.complete(&held, b"late").unwrap();
    w.send(PacketType::ECHO_REQ, &[b"ok"]).unwrap();
    assert_eq!(w.expect(&[PacketType::ECHO_RES], T).unwrap().text(0), "ok");
    // maxqueue: one job may wait for `uniq` here; the next submission is refused.
    use std::io::{Read, Write};
    let mut admin = std::net::TcpStream::connect(&addr).unwrap();
    admin.write_all(b"maxqueue uniq 1\n").unwrap();
    let mut ok = [0u8; 4];
    admin.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"OK\r\n", "as gearmand ends it");
    drop(w); // no worker grabs any more... but the function must stay served:
    let mut w2 = Conn::connect(&addr).unwrap();
    w2.can_do("uniq").unwrap();
    eventually("uniq served again", || {
        admin_status(&addr)
            .iter()
            .any(|(f, _, _, n)| f == "uniq" && *n == 1)
    });
    cl.submit(PacketType::SUBMIT_JOB_BG, "uniq", "", b"a")
        .unwrap();
    eventually("one waits", || {
        admin_status(&addr)
            .iter()
            .any(|(f, t, _, _)| f == "uniq" && *t == 1)
    });
    let e = cl
        .submit(PacketType::SUBMIT_JOB_BG, "uniq", "", b"b")
        .unwrap_err();
    assert!(e.to_string().contains("QUEUE_FULL"), "{e}");
}

/// Submissions are pipelined: 100 `SUBMIT_JOB`s written at once, an `ECHO_REQ` and a
/// refused submission among them, are answered in the order they were sent (each
/// `WORK_COMPLETE` carries the workload of the submission whose `JOB_CREATED` came in its
/// place), with no `WORK_COMPLETE` before its `JOB_CREATED`.
#[test]
fn pipelined_submissions_on_one_connection_are_answered_in_order() {
    use troupe_runtime::gearman::packet::request;
    let Some(c) = gearman_cluster(
        "pipelined_submissions_on_one_connection_are_answered_in_order",
        2,
    ) else {
        return;
    };
    let mut conn = Conn::connect(&c.gearman_addrs[1]).expect("connect");
    let mut burst = Vec::new();
    // What each answer (other than WORK_*) should be, in order: Some(workload) for a job.
    let mut expected: Vec<Option<String>> = Vec::new();
    for i in 0..100 {
        if i == 50 {
            burst.extend_from_slice(&request(PacketType::ECHO_REQ, &[b"marker"]));
            expected.push(Some("echo".into()));
        }
        if i == 70 {
            burst.extend_from_slice(&request(PacketType::SUBMIT_JOB, &[b"", b"", b"1"]));
            expected.push(Some("error".into()));
        }
        let data = format!("{}", 1000 + i);
        burst.extend_from_slice(&request(
            PacketType::SUBMIT_JOB,
            &[b"troupe.echo", b"", data.as_bytes()],
        ));
        expected.push(Some(data));
    }
    conn.send_raw(&burst).expect("send the burst");
    let mut handles: std::collections::HashMap<String, String> = Default::default();
    let mut answers = expected.iter();
    let mut completed = 0;
    while completed < 100 || answers.len() > 0 {
        let p = conn
            .read(T)
            .expect("read")
            .expect("the node keeps the connection");
        match p.kind {
            PacketType::WORK_COMPLETE => {
                let want = handles
                    .get(&p.text(0))
                    .unwrap_or_else(|| panic!("WORK_COMPLETE before JOB_CREATED: {p:?}"));
                assert_eq!(&p.text(1), want, "the answers came out of order");
                completed += 1;
            }
            PacketType::JOB_CREATED => {
                let want = answers.next().cloned().flatten().expect("an answer is due");
                handles.insert(p.text(0), want);
            }
            PacketType::ECHO_RES => {
                assert_eq!(answers.next().cloned().flatten().as_deref(), Some("echo"));
                assert_eq!(p.text(0), "marker");
            }
            PacketType::ERROR => {
                assert_eq!(
                    answers.next().cloned().flatten().as_deref(),
                    Some("error"),
                    "{p:?}"
                );
                assert_eq!(p.text(0), "INVALID_ARGUMENT");
            }
            other => panic!("unexpected {other:?}: {p:?}"),
        }
    }
    assert_eq!(handles.len(), 100);
}

/// A Gearman port already taken stops the node at start with one line that names the
/// address and what to do (not a nested actor start-up error).
#[tokio::test(flavor = "current_thread")]
async fn a_taken_gearman_port_is_one_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let c = troupe_integration::Cluster::plan(1);
    let mut spec = c.spec(0);
    spec.extra.extend(["--gearman".to_string(), addr.clone()]);
    let log = c.dir.join("n1-taken.log");
    let mut node = troupe_integration::NodeProcess::spawn(
        troupe_integration::troupe_node(),
        &spec,
        log.clone(),
    )
    .expect("start the node");
    let st = node
        .wait_exit(std::time::Duration::from_secs(20))
        .expect("the node stops");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(st.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!("cannot listen for Gearman on {addr}"))
            && text.contains("Pick another --gearman address")
            && !text.contains("panicked"),
        "{text}"
    );
}

/// gearadmin's `status`, `prioritystatus` and `workers` answer for the whole cluster on
/// every node, as one gearmand would: a worker connected to n1, and a job waiting for it,
/// show on n2 too.
#[test]
fn gearadmin_answers_for_the_whole_cluster_on_every_node() {
    let Some(c) = gearman_cluster("gearadmin_answers_for_the_whole_cluster_on_every_node", 2)
    else {
        return;
    };
    let (a1, a2) = (c.gearman_addrs[0].clone(), c.gearman_addrs[1].clone());
    let mut w = Conn::connect(&a1).unwrap();
    w.can_do("spread").unwrap();
    eventually("n2's status lists n1's worker", || {
        admin_status(&a2).contains(&("spread".to_string(), 0, 0, 1))
    });
    let workers = texts(&gearadmin(&a2, &["--workers"])).0;
    assert!(workers.contains(": spread"), "{workers}");
    // A job for it, submitted through n2, waits on n1's board: every node counts it.
    let mut cl = Conn::connect(&a2).unwrap();
    let plain = cl
        .submit(PacketType::SUBMIT_JOB_LOW_BG, "spread", "", b"x")
        .unwrap();
    for addr in [&a1, &a2] {
        eventually("the waiting job shows in prioritystatus", || {
            texts(&gearadmin(addr, &["--priority-status"])).0 == "spread\t0\t0\t1\t1\n.\n"
        });
    }
    assert_eq!(
        admin_status(&a1),
        admin_status(&a2),
        "both nodes answer alike"
    );
    // `show unique jobs` names each waiting job by the client's unique id (by its handle
    // when it has none), on every node.
    let keyed = cl
        .submit(PacketType::SUBMIT_JOB_BG, "spread", "order-7", b"y")
        .unwrap();
    for addr in [&a1, &a2] {
        eventually("show unique jobs lists both jobs", || {
            let shown = texts(&gearadmin(addr, &["--show-unique-jobs"])).0;
            let mut lines: Vec<&str> = shown.lines().collect();
            lines.sort_unstable();
            let mut want = vec![".", "order-7", plain.as_str()];
            want.sort_unstable();
            lines == want
        });
    }
    // `cancel job` from loopback ends the job wherever it waits; a second cancel, or one
    // of a job that never was, is UNKNOWN_JOB (gearadmin prints "Error: UNKNOWN_JOB").
    let out = gearadmin(&a1, &["--cancel-job", &keyed]);
    assert_eq!(texts(&out).0.trim(), "OK", "{out:?}");
    let jobs = texts(&gearadmin(&a2, &["--show-jobs"])).0;
    assert!(!jobs.contains(&keyed) && jobs.contains(&plain), "{jobs}");
    // No worker grabbed it: it ended by the cancel, and is unknown to GET_STATUS now.
    assert_eq!(cl.status(&keyed).unwrap(), (false, false, 0, 0));
    for handle in [keyed.as_str(), "n9-no-such-job"] {
        let out = gearadmin(&a2, &["--cancel-job", handle]);
        let (o, e) = texts(&out);
        assert!(
            o.contains("UNKNOWN_JOB") || e.contains("UNKNOWN_JOB"),
            "{out:?}"
        );
    }
}

#[test]
fn a_real_gearman_library_gets_every_byte_back_exactly_across_nodes() {
    if !needs::has(
        "a_real_gearman_library_gets_every_byte_back_exactly_across_nodes",
        &[Need::PythonGear],
    ) {
        return;
    }
    // Python's gear library (PyPI): its worker on n1, its client on n2.
    library_script("python3", "gear_bytes.py", 16);
}

#[test]
fn a_worker_may_leave_out_the_data_of_an_empty_result_as_with_gearmand() {
    let Some(c) = gearman_cluster(
        "a_worker_may_leave_out_the_data_of_an_empty_result_as_with_gearmand",
        1,
    ) else {
        return;
    };
    let mut worker = Conn::connect(&c.gearman_addrs[0]).expect("worker");
    worker.can_do("perl_like").expect("can_do");
    let mut client = Conn::connect(&c.gearman_addrs[0]).expect("client");
    client
        .submit(PacketType::SUBMIT_JOB, "perl_like", "", b"x")
        .expect("submit");
    let (handle, _, _) = worker.grab(T).expect("grab").expect("a job");
    // Perl's Gearman::Worker, for a result of '' or '0': WORK_COMPLETE with the handle
    // alone, no NUL, no data.
    worker
        .send(PacketType::WORK_COMPLETE, &[handle.as_bytes()])
        .expect("work complete");
    let end = client.wait_end(T).expect("the client's answer");
    assert_eq!(end.kind, PacketType::WORK_COMPLETE, "{end:?}");
    assert_eq!(end.args.get(1).map(|a| a.len()), Some(0), "{end:?}");
    // The worker's connection is still served (it was answered ERROR and closed before).
    worker.send(PacketType::ECHO_REQ, &[b"ping"]).expect("echo");
    let echo = worker
        .expect(&[PacketType::ECHO_RES, PacketType::ERROR], T)
        .expect("an answer");
    assert_eq!(echo.kind, PacketType::ECHO_RES, "{echo:?}");
    let mut status = Conn::connect(&c.gearman_addrs[0]).expect("status");
    assert_eq!(
        status.status(&handle).expect("status"),
        (false, false, 0, 0),
        "a finished job is unknown, with no progress, as gearmand says"
    );
}

#[test]
fn exceptions_reach_the_client_as_the_worker_sent_them_and_work_fail_as_work_fail() {
    let Some(c) = gearman_cluster(
        "exceptions_reach_the_client_as_the_worker_sent_them_and_work_fail_as_work_fail",
        2,
    ) else {
        return;
    };
    // The worker on n1, the clients on n2.
    let mut worker = Conn::connect(&c.gearman_addrs[0]).expect("worker");
    worker.can_do("thrower").expect("can_do");
    eventually("n2 lists the worker", || {
        admin_status(&c.gearman_addrs[1])
            .iter()
            .any(|(f, _, _, w)| f == "thrower" && *w == 1)
    });
    let blob: Vec<u8> = (0..=255u8).rev().collect();
    // (client asked for exceptions, worker ends with an exception) -> what the client gets.
    for (asked, exception, want) in [
        (true, true, PacketType::WORK_EXCEPTION),
        (false, true, PacketType::WORK_FAIL),
        (true, false, PacketType::WORK_FAIL),
    ] {
        let mut client = Conn::connect(&c.gearman_addrs[1]).expect("client");
        if asked {
            client
                .send(PacketType::OPTION_REQ, &[b"exceptions"])
                .expect("option");
            client
                .expect(&[PacketType::OPTION_RES], T)
                .expect("option answered");
        }
        client
            .submit(PacketType::SUBMIT_JOB, "thrower", "", b"x")
            .expect("submit");
        let (handle, _, _) = worker.grab(T).expect("grab").expect("a job");
        match exception {
            true => worker.send(PacketType::WORK_EXCEPTION, &[handle.as_bytes(), &blob]),
            false => worker.send(PacketType::WORK_FAIL, &[handle.as_bytes()]),
        }
        .expect("the worker's end");
        let end = client.wait_end(T).expect("the client's answer");
        assert_eq!(
            end.kind, want,
            "asked {asked}, exception {exception}: {end:?}"
        );
        if want == PacketType::WORK_EXCEPTION {
            assert_eq!(
                end.args.get(1),
                Some(&blob),
                "the exception's bytes, exactly"
            );
        }
    }
}

/// Perl's Gearman::Client and Gearman::Worker (a second library, another language):
/// bytes both ways, the `''` and `'0'` results it sends without data, a `die` as an
/// exception the client thaws, `undef` as WORK_FAIL, `status` and `show jobs` through its
/// admin plumbing.
#[test]
fn perls_gearman_library_gets_bytes_exceptions_and_admin_answers_across_nodes() {
    if !needs::has(
        "perls_gearman_library_gets_bytes_exceptions_and_admin_answers_across_nodes",
        &[Need::PerlGearman],
    ) {
        return;
    }
    library_script("perl", "perl_bytes.pl", 14);
}

/// Runs `program tests/gearman_libs/SCRIPT WORKER_ADDR CLIENT_ADDR` against two nodes (the
/// library's worker on n1, its client on n2) and requires its JSON summary to list
/// `cases` cases and no difference.
fn library_script(program: &str, script: &str, cases: u64) {
    let mut c = Cluster::plan(2);
    c.serve_gearman = true;
    c.start_node(0);
    c.start_node(1);
    wait_nodes(&c, 2);
    let path = format!("{}/tests/gearman_libs/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = std::process::Command::new(program);
    cmd.args([path.as_str(), &c.gearman_addrs[0], &c.gearman_addrs[1]])
        .stdin(std::process::Stdio::null());
    let out = troupe_integration::run_with_timeout(cmd, Duration::from_secs(180));
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}\nn1:\n{}",
        c.log(0)
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("summary JSON");
    assert_eq!(summary["different"], serde_json::json!([]), "{stdout}");
    assert_eq!(summary["cases"], cases, "{stdout}");
}

/// Admission by waiting time through the Gearman door: Gearman clients have no "retry
/// after", so a submission the cluster refuses as overloaded waits at the door and is
/// retried, and the client only sees its `JOB_CREATED` later: a pipelined burst of
/// background jobs on one slot all get created (none `ERROR`), spread over the time the
/// slot takes to drain the queue, and all run.
#[tokio::test(flavor = "current_thread")]
async fn submissions_refused_as_overloaded_wait_at_the_door_and_are_all_created() {
    use troupe_runtime::gearman::packet::request;
    let mut c = Cluster::plan(1);
    c.slots = 1;
    c.serve_gearman = true;
    c.env.push((
        "TROUPE_ADMISSION__WAIT_TARGET_MS".into(),
        "5000,100,50".into(),
    ));
    c.start_node(0);
    c.ready().await;
    let mut conn = Conn::connect(&c.gearman_addrs[0]).expect("connect");
    let burst = |conn: &mut Conn| {
        let mut b = Vec::new();
        for _ in 0..12 {
            b.extend_from_slice(&request(
                PacketType::SUBMIT_JOB_BG,
                &[b"troupe.sleep", b"", br#"{"ms": 100}"#],
            ));
        }
        conn.send_raw(&b).expect("send the burst");
        let t0 = Instant::now();
        let mut created = Vec::new();
        while created.len() < 12 {
            let p = conn
                .read(T)
                .expect("read")
                .expect("the node keeps the connection");
            assert_eq!(p.kind, PacketType::JOB_CREATED, "{p:?}");
            created.push((p.text(0), t0.elapsed()));
        }
        created
    };
    // The first burst is queued: nothing has waited yet, and the node learns how long
    // an item takes. The second arrives while it waits, past the target.
    let mut created = burst(&mut conn);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = burst(&mut conn);
    let (first, last) = (second[0].1, second[11].1);
    assert!(
        last - first >= Duration::from_millis(300),
        "the later submissions were held while the queue drained: {second:?}"
    );
    created.extend(second);
    let client = c.client().await;
    for (id, _) in &created {
        let mut h = client.watch(id).await.expect("watch");
        let st = tokio::time::timeout(T, h.wait())
            .await
            .expect("ends")
            .expect("status");
        assert_eq!(st.state, troupe_runtime::JobState::Succeeded, "{id}");
    }
}

/// A foreground job's result can only go back over its client's connection to the node
/// that owns it, and that node's crash closes the connection: such a job is not journaled
/// (`gearman_journal_foreground`, off by default), while a background job is. After a
/// kill -9 and a restart on the same data folder, the background job is still there for a
/// worker; the foreground one is gone, and its client saw its connection close.
#[test]
fn after_a_crash_a_background_job_is_still_there_and_a_foreground_one_is_not() {
    let Some(mut c) = gearman_cluster(
        "after_a_crash_a_background_job_is_still_there_and_a_foreground_one_is_not",
        1,
    ) else {
        return;
    };
    let addr = c.gearman_addrs[0].clone();
    // No worker does `held.work` yet: both jobs wait for one.
    let mut fg = Conn::connect(&addr).expect("connect");
    let fg_handle = fg
        .submit(PacketType::SUBMIT_JOB, "held.work", "", b"foreground")
        .expect("foreground job created");
    let mut bg = Conn::connect(&addr).expect("connect");
    let bg_handle = bg
        .submit(PacketType::SUBMIT_JOB_BG, "held.work", "", b"background")
        .expect("background job created");
    assert!(
        bg.status(&fg_handle).expect("status").0,
        "the foreground job is known before the crash"
    );
    // Past the journal's commit window.
    std::thread::sleep(Duration::from_millis(300));
    c.node(0).kill();
    match fg.read(T) {
        Ok(None) | Err(_) => {}
        Ok(Some(p)) => panic!("the foreground client got {p:?} from a killed node"),
    }
    c.start_node(0);
    let restarted = Instant::now();
    let mut worker = loop {
        if let Ok(mut w) = Conn::connect(&addr) {
            if w.call("troupe.echo", b"up").is_ok() {
                break w;
            }
        }
        assert!(
            restarted.elapsed() < T,
            "the restarted node never served Gearman"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    worker.can_do("held.work").expect("CAN_DO");
    let (handle, _, data) = worker
        .grab(T)
        .expect("grab")
        .expect("the background job is handed out after the restart");
    assert_eq!(data, b"background");
    worker.complete(&handle, b"done").expect("WORK_COMPLETE");
    assert!(
        worker.grab(Duration::from_secs(2)).expect("grab").is_none(),
        "the foreground job was journaled and ran again with nobody waiting for it"
    );
    let mut asker = Conn::connect(&addr).expect("connect");
    assert!(
        !asker.status(&fg_handle).expect("status").0,
        "the foreground job outlived the crash"
    );
    eventually("the background job's end", || {
        asker.status(&bg_handle).map(|s| !s.0).unwrap_or(false)
    });
}

/// Work waits where it was submitted when no node has room for it, as in gearmand's
/// queue, instead of crossing to another node's workers that are as busy: ten background
/// jobs submitted through n1, whose worker takes them one at a time, while n2's worker
/// takes nothing. At most what the placement lets a node hold beyond its slots
/// (`scheduling.prefetch`) waits on n2; n1's worker does the rest.
#[test]
fn gearman_work_with_no_room_anywhere_waits_on_the_node_it_was_submitted_to() {
    let Some(c) = gearman_cluster(
        "gearman_work_with_no_room_anywhere_waits_on_the_node_it_was_submitted_to",
        2,
    ) else {
        return;
    };
    let mut idle = Conn::connect(&c.gearman_addrs[1]).expect("connect");
    idle.can_do("local.first").expect("CAN_DO");
    let mut busy = Conn::connect(&c.gearman_addrs[0]).expect("connect");
    busy.can_do("local.first").expect("CAN_DO");
    // Both workers are known cluster-wide before the first submission.
    std::thread::sleep(Duration::from_secs(1));
    let mut client = Conn::connect(&c.gearman_addrs[0]).expect("connect");
    for i in 0..10 {
        client
            .submit(
                PacketType::SUBMIT_JOB_BG,
                "local.first",
                "",
                format!("{i}").as_bytes(),
            )
            .expect("job created");
    }
    let mut here = 0;
    while let Some((h, _, _)) = busy.grab(Duration::from_secs(2)).expect("grab") {
        busy.complete(&h, b"ok").expect("WORK_COMPLETE");
        here += 1;
    }
    let mut there = 0;
    while let Some((h, _, _)) = idle.grab(Duration::from_secs(1)).expect("grab") {
        idle.complete(&h, b"ok").expect("WORK_COMPLETE");
        there += 1;
    }
    assert_eq!(
        here + there,
        10,
        "every job ran once: {here} on n1, {there} on n2"
    );
    // n2's room as n1 counts it: 2 slots (the test cluster's) and a prefetch of 1.
    assert!(
        there <= 3,
        "{there} of the jobs crossed to n2's worker, which took nothing while n1's worked"
    );
}

/// Gearman's queues are bounded by `maxqueue`, as in gearmand, not by the limit on one
/// Troupe client's jobs in flight (`limits.max_jobs_per_client`, 5 here): every Gearman
/// connection of a node shares one watcher group, and background jobs have none, so that
/// limit would count them all as one client (it refused a bulk of 40,000 background jobs
/// at 10,000, naming "the HTTP API").
#[tokio::test(flavor = "current_thread")]
async fn gearman_jobs_queue_past_the_limit_on_one_clients_jobs() {
    let mut c = Cluster::plan(1);
    c.serve_gearman = true;
    c.env
        .push(("TROUPE_LIMITS__MAX_JOBS_PER_CLIENT".into(), "5".into()));
    c.start_node(0);
    c.ready().await;
    let mut conn = Conn::connect(&c.gearman_addrs[0]).expect("connect");
    for (kind, n) in [
        (PacketType::SUBMIT_JOB_BG, 20),
        (PacketType::SUBMIT_JOB, 20),
    ] {
        for i in 0..n {
            // No worker does `nobody.yet`: every job waits.
            conn.submit(kind, "nobody.yet", "", format!("{i}").as_bytes())
                .unwrap_or_else(|e| panic!("{kind:?} {i} refused: {e}"));
        }
    }
    // A Troupe client is still held to the limit.
    let client = c.client().await;
    let job = troupe_runtime::JobSpec::new("held").step(
        troupe_runtime::StepSpec::new("s", "troupe.sleep").input(serde_json::json!({"ms": 5000})),
    );
    let mut refused = None;
    for _ in 0..6 {
        if let Err(e) = client.submit(job.clone()).await {
            refused = Some(e.to_string());
            break;
        }
    }
    let refused = refused.expect("a sixth job of one client was accepted");
    assert!(refused.contains("max_jobs_per_client"), "{refused}");
}
