//! Troupe's Gearman port against Debian's gearmand, packet by packet.
//!
//! GEARMAN.md promises that an existing Gearman client or worker can point at a Troupe
//! node instead of gearmand without a code change. This test holds Troupe to that with
//! the reference server itself, in the same run: every scenario is a short script of
//! request packets sent by raw-protocol clients and workers (every packet type a client
//! or worker sends: `CAN_DO`, `CAN_DO_TIMEOUT`, `CANT_DO`, `RESET_ABILITIES`,
//! `PRE_SLEEP`, `GRAB_JOB*`, every `SUBMIT_JOB*`, `WORK_*`, `GET_STATUS*`, `ECHO_REQ`,
//! `SET_CLIENT_ID`, `OPTION_REQ`, `ALL_YOURS`, plus an unknown type, a response type sent
//! as a request, response magic, missing arguments and a missing trailing data
//! argument). The script runs once against `/usr/sbin/gearmand` (1.1.20) and once
//! against a one-node Troupe cluster's `--gearman` port, at the same time, and every
//! packet each connection receives is recorded: (type, arguments), or "nothing in time",
//! or "connection closed". The two transcripts must be equal after normalising only what
//! must differ:
//!
//! - job handles: gearmand's `H:host:N`, Troupe's job id. The handles clients see
//!   (`JOB_CREATED`, `WORK_*`, `STATUS_RES`) become `{J1}`, `{J2}`... by first appearance
//!   across all connections, so coalescing (two clients, one handle) is still checked.
//!   The handles workers see (`JOB_ASSIGN*`) become `{W1}`... per worker connection: that
//!   a worker is given the very handle its client got is checked by one scenario of its
//!   own (`worker_is_given_the_handle_its_client_got`), so that one difference does not
//!   show in every scenario with a worker;
//! - the text of an `ERROR` packet (its code is compared);
//! - gearmand's `WORK_FAIL` made from a `WORK_EXCEPTION` (for a client that did not ask
//!   for exceptions) carries its handle with the NUL that ended it in the worker's packet;
//!   a gearmand artefact, dropped.
//!
//! Where Troupe differs on purpose (GEARMAN.md: the tables and "What differs"), the
//! scenario asserts both servers' answers explicitly, with the reason, in a `kept(...)`
//! step, and compares the rest. The kept differences: `GRAB_JOB_UNIQ`/`_ALL` give
//! `JOB/STEP` as the unique id; `GET_STATUS*` say running once the job is queued for a
//! node's workers; `STATUS_RES_UNIQUE` counts a background submission as a client;
//! `SUBMIT_JOB_SCHED`, `_EPOCH` and the reduce submissions answer `ERROR NOT_SUPPORTED`;
//! `CAN_DO_TIMEOUT` fails the job held too long (gearmand 1.1 queues it again); an
//! unknown packet type and missing arguments get an `ERROR` and the connection goes on
//! (gearmand drops it); a `SUBMIT_JOB*` or `WORK_COMPLETE` without its data argument is
//! read as empty data (gearmand's parser waits for the missing NUL); a second end from
//! the worker that held a job is ignored (gearmand answers `ERROR JOB_NOT_FOUND`). Everything else
//! must be equal: scenarios that assert gearmand's behaviour where Troupe differs without
//! saying so fail until Troupe is fixed, and the failure lists every failing scenario with
//! both transcripts side by side (normalised, then as received).
//!
//! Reads wait at most a few seconds; a packet that is expected is awaited, never slept
//! for. That nothing arrives is checked with a short quiet window, or, on the connection
//! that would get the answer, by an `ECHO_REQ` read up to its `ECHO_RES` (whatever came
//! before it is recorded). State on the server's side that a script needs before going on
//! (a worker registered, jobs queued, a status updated) is polled for through the admin
//! `status` command or `GET_STATUS` on a connection of its own, not recorded. Both
//! servers run each scenario concurrently; the scenarios run one after another, each with
//! functions of its own. `GEARMAN_VS_GEARMAND_ONLY=name,name` runs only the scenarios
//! whose names contain one of those words.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_integration::gearman::{Conn, Gearmand, Packet};
use troupe_integration::needs::{self, Need};
use troupe_integration::Cluster;
use troupe_runtime::gearman::packet::PacketType as P;

/// A client connection (index into the scenario's connections).
const C: usize = 0;
/// A worker connection.
const W: usize = 1;
/// A second client.
const C2: usize = 2;
/// A second worker.
const W2: usize = 3;
/// A third client.
const C3: usize = 4;

/// How long a read waits for the packets it expects.
const WAIT: Duration = Duration::from_secs(5);
/// How long a connection must stay silent when nothing may arrive.
const QUIET: Duration = Duration::from_millis(400);
/// What a read renders when the packets it expected did not come.
const NOTHING: &str = "(nothing in time)";
/// What a read renders when the server closed the connection.
const CLOSED: &str = "(connection closed)";

// ---------------------------------------------------------------------------------------
// Servers.

/// Which server a transcript comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Srv {
    Gearmand,
    Troupe,
}

/// One Troupe node serving Gearman, up and answering (as `gearman_cluster` in
/// tests/gearman.rs does it).
fn troupe_node() -> Cluster {
    let mut c = Cluster::plan(1);
    c.serve_gearman = true;
    c.start_node(0);
    let mut conn = Conn::connect(&c.gearman_addrs[0]).expect("connect to the node's Gearman port");
    let p = conn.call("troupe.echo", b"up").expect("a troupe.echo job");
    assert_eq!(p.kind, P::WORK_COMPLETE, "{p:?}");
    wait_nodes(&c, 1);
    c
}

fn wait_nodes(c: &Cluster, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
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

/// The admin protocol's `status` answer (both servers speak it on the same port).
fn admin_status(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"status\n").ok()?;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while !(text == b".\n" || text.ends_with(b"\n.\n")) {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&text).into_owned())
}

/// (total, running, workers) of `function` in a `status` answer.
fn status_of(text: &str, function: &str) -> Option<(u64, u64, u64)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        (f.len() == 4 && f[0] == function).then(|| {
            (
                f[1].parse().unwrap_or(0),
                f[2].parse().unwrap_or(0),
                f[3].parse().unwrap_or(0),
            )
        })
    })
}

// ---------------------------------------------------------------------------------------
// Scripts.

/// An argument of a packet a script sends.
#[derive(Clone)]
enum A {
    /// These bytes.
    L(Vec<u8>),
    /// The scenario's function number i (`cmp-SCENARIO-i`: no two scenarios share one).
    F(usize),
    /// The n-th handle (from 1) given to connection c, by `JOB_CREATED` or `JOB_ASSIGN*`,
    /// as that server spelled it.
    H(usize, usize),
}
use A::{F, H};

fn l(b: impl AsRef<[u8]>) -> A {
    A::L(b.as_ref().to_vec())
}

/// What a read waits for.
#[derive(Clone, Copy)]
enum Want {
    /// This many packets (recording "nothing in time" if fewer come).
    Exactly(usize),
    /// Packets up to and including one of this type.
    Until(P),
    /// Whatever comes within the window (expected: nothing).
    All,
}

/// The state a scenario's run has gathered: its function names and the handles each
/// connection was given.
struct Ctx {
    fns: Vec<String>,
    given: Vec<Vec<Vec<u8>>>,
}

impl Ctx {
    fn handle(&self, conn: usize, n: usize) -> Vec<u8> {
        self.given
            .get(conn)
            .and_then(|h| h.get(n.wrapping_sub(1)))
            .cloned()
            .unwrap_or_else(|| format!("(no handle {n} on c{conn})").into_bytes())
    }

    fn arg(&self, a: &A) -> Vec<u8> {
        match a {
            A::L(b) => b.clone(),
            A::F(i) => self.fns[*i].clone().into_bytes(),
            A::H(c, n) => self.handle(*c, *n),
        }
    }

    /// `$F0`... in an expected line, as this scenario names its functions.
    fn expand(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (i, f) in self.fns.iter().enumerate() {
            s = s.replace(&format!("$F{i}"), &format!("{:?}", f));
        }
        s
    }
}

/// What a connection received, in one read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Pkt(P, Vec<Vec<u8>>),
    Nothing,
    Closed,
    Broken(String),
    Note(String),
}

fn render(ev: &Ev) -> String {
    match ev {
        Ev::Pkt(kind, args) => {
            let mut s = kind.name().to_string();
            for a in args {
                s.push_str(&format!(" \"{}\"", a.escape_ascii()));
            }
            s
        }
        Ev::Nothing => NOTHING.to_string(),
        Ev::Closed => CLOSED.to_string(),
        Ev::Broken(e) => format!("(read error: {e})"),
        Ev::Note(n) => format!("({n})"),
    }
}

type CheckFn = dyn Fn(Srv, &Ctx, &mut Vec<Ev>) -> Result<(), String> + Send + Sync;
type ValFn = dyn Fn(&Ctx) -> Vec<u8> + Send + Sync;

/// A kept difference: asserts what each server answered in one read (normalised), then
/// puts the same thing in both transcripts so that the rest is compared.
#[derive(Clone)]
struct Kept {
    check: Arc<CheckFn>,
}

/// The whole read differs: gearmand answers one of `gearmand` (alternatives, when its
/// answer is a symptom of a parser stuck on the packet, as for missing arguments),
/// Troupe answers `troupe`. Lines are as `render` writes them; `$F0` is function 0.
fn kept(why: &'static str, gearmand: &[&[&str]], troupe: &[&str]) -> Kept {
    let gearmand: Vec<Vec<String>> = gearmand
        .iter()
        .map(|alt| alt.iter().map(|s| s.to_string()).collect())
        .collect();
    let troupe: Vec<String> = troupe.iter().map(|s| s.to_string()).collect();
    Kept {
        check: Arc::new(move |srv, ctx, evs| {
            let got: Vec<String> = evs.iter().map(render).collect();
            let ok = match srv {
                Srv::Gearmand => gearmand
                    .iter()
                    .any(|alt| alt.iter().map(|s| ctx.expand(s)).eq(got.iter().cloned())),
                Srv::Troupe => troupe.iter().map(|s| ctx.expand(s)).eq(got.iter().cloned()),
            };
            if !ok {
                let want = match srv {
                    Srv::Gearmand => format!("{gearmand:?}"),
                    Srv::Troupe => format!("{troupe:?}"),
                };
                return Err(format!(
                    "kept difference \"{why}\": {srv:?} answered {got:?}, expected {want}"
                ));
            }
            *evs = vec![Ev::Note(format!("kept difference: {why}"))];
            Ok(())
        }),
    }
}

/// One argument of the first packet of the read differs: gearmand's is `gearmand`,
/// Troupe's is `troupe`.
fn kept_arg(why: &'static str, index: usize, gearmand: Arc<ValFn>, troupe: Arc<ValFn>) -> Kept {
    Kept {
        check: Arc::new(move |srv, ctx, evs| {
            let want = match srv {
                Srv::Gearmand => gearmand(ctx),
                Srv::Troupe => troupe(ctx),
            };
            let Some(Ev::Pkt(_, args)) = evs.first_mut() else {
                return Err(format!("kept difference \"{why}\": {srv:?} sent no packet"));
            };
            match args.get_mut(index) {
                Some(a) if *a == want => {
                    *a = format!("<kept difference: {why}>").into_bytes();
                    Ok(())
                }
                other => Err(format!(
                    "kept difference \"{why}\": {srv:?}'s argument {index} is {:?}, expected {:?}",
                    other.map(|a| a.escape_ascii().to_string()),
                    want.escape_ascii().to_string()
                )),
            }
        }),
    }
}

fn val(s: &'static str) -> Arc<ValFn> {
    Arc::new(move |_| s.as_bytes().to_vec())
}

/// Troupe's unique id in `JOB_ASSIGN_UNIQ`/`_ALL`: `JOB/STEP` of the job whose handle
/// connection `conn` got as its `n`-th.
fn job_step(conn: usize, n: usize) -> Arc<ValFn> {
    Arc::new(move |ctx| [ctx.handle(conn, n), b"/gearman".to_vec()].concat())
}

/// Kept: a job handed to the node's workers (queued for a connected worker) is running
/// for Troupe's `GET_STATUS`/`GET_STATUS_UNIQUE`, not only once a worker grabbed it.
fn kept_running() -> Kept {
    kept_arg(
        "GET_STATUS running is 1 once the step is handed to a node's workers (GEARMAN.md, What differs)",
        2,
        val("0"),
        val("1"),
    )
}

/// Kept: `STATUS_RES_UNIQUE`'s client count is the submissions that joined the job (a
/// background submission counts; gearmand counts only clients waiting).
fn kept_clients(gearmand: &'static str, troupe: &'static str) -> Kept {
    kept_arg(
        "STATUS_RES_UNIQUE's client count is the submissions that joined the job (GEARMAN.md, What differs)",
        5,
        val(gearmand),
        val(troupe),
    )
}

/// Kept: `GRAB_JOB_UNIQ`/`_ALL` give `JOB/STEP` as the unique id, not the client's.
fn kept_unique(gearmand: &'static str, client: usize, n: usize) -> Kept {
    kept_arg(
        "GRAB_JOB_UNIQ/_ALL give JOB/STEP as the unique id (GEARMAN.md)",
        2,
        val(gearmand),
        job_step(client, n),
    )
}

enum Step {
    Send {
        conn: usize,
        code: u32,
        res_magic: bool,
        args: Vec<A>,
    },
    Read {
        conn: usize,
        want: Want,
        within: Duration,
        kept: Vec<Kept>,
    },
    /// Wait until the admin `status` shows function `f` with `total` jobs and/or
    /// `workers` workers (not recorded unless it never does).
    Admin {
        f: usize,
        total: Option<u64>,
        workers: Option<u64>,
    },
    /// Send `kind` with `args` on a connection of its own until the answer satisfies
    /// `until` (not recorded unless it never does).
    Poll {
        kind: P,
        args: Vec<A>,
        what: &'static str,
        until: fn(&Packet) -> bool,
    },
    Close(usize),
}

struct Scenario {
    name: &'static str,
    /// One handle numbering for clients and workers (see the file's doc).
    one_namespace: bool,
    steps: Vec<Step>,
}

fn sc(name: &'static str) -> Scenario {
    Scenario {
        name,
        one_namespace: false,
        steps: Vec::new(),
    }
}

impl Scenario {
    fn send(mut self, conn: usize, kind: P, args: &[A]) -> Self {
        self.steps.push(Step::Send {
            conn,
            code: kind.code(),
            res_magic: false,
            args: args.to_vec(),
        });
        self
    }

    fn send_code(mut self, conn: usize, code: u32, res_magic: bool, args: &[A]) -> Self {
        self.steps.push(Step::Send {
            conn,
            code,
            res_magic,
            args: args.to_vec(),
        });
        self
    }

    fn read(mut self, conn: usize, want: Want, within: Duration) -> Self {
        self.steps.push(Step::Read {
            conn,
            want,
            within,
            kept: Vec::new(),
        });
        self
    }

    /// Expect `n` packets on `conn`.
    fn recv(self, conn: usize, n: usize) -> Self {
        self.read(conn, Want::Exactly(n), WAIT)
    }

    /// Expect `n` packets on `conn` within `ms` milliseconds (where one server is known to
    /// send nothing, so that the wait is short).
    fn recv_within(self, conn: usize, n: usize, ms: u64) -> Self {
        self.read(conn, Want::Exactly(n), Duration::from_millis(ms))
    }

    /// Nothing may arrive on `conn` for a moment.
    fn quiet(self, conn: usize) -> Self {
        self.read(conn, Want::All, QUIET)
    }

    /// `ECHO_REQ` on `conn`, and everything up to its `ECHO_RES`: the packets sent
    /// before on `conn` were handled, and answered with what came before the echo.
    fn sync(self, conn: usize) -> Self {
        self.send(conn, P::ECHO_REQ, &[l("sync")])
            .read(conn, Want::Until(P::ECHO_RES), WAIT)
    }

    /// The last read is a kept difference.
    fn kept(mut self, k: Kept) -> Self {
        match self.steps.last_mut() {
            Some(Step::Read { kept, .. }) => kept.push(k),
            _ => panic!("{}: kept() must follow a read", self.name),
        }
        self
    }

    fn workers(mut self, f: usize, n: u64) -> Self {
        self.steps.push(Step::Admin {
            f,
            total: None,
            workers: Some(n),
        });
        self
    }

    fn queued(mut self, f: usize, n: u64) -> Self {
        self.steps.push(Step::Admin {
            f,
            total: Some(n),
            workers: None,
        });
        self
    }

    fn poll(mut self, kind: P, args: &[A], what: &'static str, until: fn(&Packet) -> bool) -> Self {
        self.steps.push(Step::Poll {
            kind,
            args: args.to_vec(),
            what,
            until,
        });
        self
    }

    fn close(mut self, conn: usize) -> Self {
        self.steps.push(Step::Close(conn));
        self
    }

    fn one_namespace(mut self) -> Self {
        self.one_namespace = true;
        self
    }

    /// Worker `w` can do function `f`, and the server lists it.
    fn can_do(self, w: usize, f: usize) -> Self {
        self.send(w, P::CAN_DO, &[F(f)]).workers(f, 1)
    }

    /// A background job for `f` (with this unique id and workload), created.
    fn bg(self, c: usize, f: usize, unique: &str, data: &str) -> Self {
        self.send(c, P::SUBMIT_JOB_BG, &[F(f), l(unique), l(data)])
            .recv(c, 1)
    }
}

// ---------------------------------------------------------------------------------------
// Running a script.

/// A packet on the wire.
fn wire(res_magic: bool, code: u32, args: &[Vec<u8>]) -> Vec<u8> {
    let body = args.join(&0u8);
    let mut b = Vec::with_capacity(12 + body.len());
    b.extend_from_slice(if res_magic { b"\0RES" } else { b"\0REQ" });
    b.extend_from_slice(&code.to_be_bytes());
    b.extend_from_slice(&(body.len() as u32).to_be_bytes());
    b.extend_from_slice(&body);
    b
}

/// One recorded read result.
#[derive(Clone, Debug)]
struct Rec {
    step: usize,
    conn: usize,
    ev: Ev,
}

/// A scenario's transcript on one server.
struct Run {
    /// Normalised, kept differences applied: what is compared.
    lines: Vec<(usize, usize, String)>,
    /// As received.
    raw: Vec<(usize, usize, String)>,
    /// Kept differences that did not hold.
    problems: Vec<String>,
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
    )
}

fn gives_handle(kind: P) -> bool {
    matches!(
        kind,
        P::JOB_CREATED | P::JOB_ASSIGN | P::JOB_ASSIGN_UNIQ | P::JOB_ASSIGN_ALL
    )
}

fn carries_handle(kind: P) -> bool {
    gives_handle(kind)
        || matches!(
            kind,
            P::WORK_STATUS
                | P::WORK_COMPLETE
                | P::WORK_FAIL
                | P::WORK_EXCEPTION
                | P::WORK_DATA
                | P::WORK_WARNING
                | P::STATUS_RES
        )
}

fn run(srv: Srv, addr: &str, s: &Scenario) -> Run {
    let mut ctx = Ctx {
        fns: (0..4).map(|i| format!("cmp-{}-{i}", s.name)).collect(),
        given: Vec::new(),
    };
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut dead: Vec<bool> = Vec::new();
    let mut poller: Option<Conn> = None;
    let mut recs: Vec<Rec> = Vec::new();
    for (i, step) in s.steps.iter().enumerate() {
        if let Step::Send { conn, .. } | Step::Read { conn, .. } | Step::Close(conn) = step {
            while conns.len() <= *conn {
                conns.push(None);
                dead.push(false);
                ctx.given.push(Vec::new());
            }
            if conns[*conn].is_none() && !dead[*conn] {
                match Conn::connect(addr) {
                    Ok(c) => conns[*conn] = Some(c),
                    Err(e) => {
                        dead[*conn] = true;
                        recs.push(Rec {
                            step: i,
                            conn: *conn,
                            ev: Ev::Broken(format!("connect: {e}")),
                        });
                    }
                }
            }
        }
        match step {
            Step::Send {
                conn,
                code,
                res_magic,
                args,
            } => {
                let args: Vec<Vec<u8>> = args.iter().map(|a| ctx.arg(a)).collect();
                if let Some(c) = conns[*conn].as_mut() {
                    // A server that closed the connection shows in the next read.
                    let _ = c.send_raw(&wire(*res_magic, *code, &args));
                }
            }
            Step::Read {
                conn, want, within, ..
            } => {
                let deadline = Instant::now() + *within;
                let mut got = 0;
                loop {
                    if matches!(want, Want::Exactly(n) if got >= *n) {
                        break;
                    }
                    let Some(c) = conns[*conn].as_mut() else {
                        recs.push(Rec {
                            step: i,
                            conn: *conn,
                            ev: Ev::Closed,
                        });
                        break;
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    let outcome = if left.is_zero() {
                        Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
                    } else {
                        c.read(left)
                    };
                    let ev = match outcome {
                        Ok(Some(p)) => {
                            if gives_handle(p.kind) && !ctx.given[*conn].contains(&p.args[0]) {
                                ctx.given[*conn].push(p.args[0].clone());
                            }
                            let last = matches!(want, Want::Until(k) if *k == p.kind);
                            recs.push(Rec {
                                step: i,
                                conn: *conn,
                                ev: Ev::Pkt(p.kind, p.args),
                            });
                            got += 1;
                            if last {
                                break;
                            }
                            continue;
                        }
                        Err(e) if is_timeout(&e) => {
                            if !matches!(want, Want::All) {
                                recs.push(Rec {
                                    step: i,
                                    conn: *conn,
                                    ev: Ev::Nothing,
                                });
                            }
                            break;
                        }
                        Ok(None) => Ev::Closed,
                        Err(e) if is_closed(&e) => Ev::Closed,
                        Err(e) => Ev::Broken(e.to_string()),
                    };
                    recs.push(Rec {
                        step: i,
                        conn: *conn,
                        ev,
                    });
                    conns[*conn] = None;
                    dead[*conn] = true;
                    break;
                }
            }
            Step::Admin { f, total, workers } => {
                let deadline = Instant::now() + WAIT;
                let mut last = String::new();
                let reached = loop {
                    last = admin_status(addr).unwrap_or(last);
                    let now = status_of(&last, &ctx.fns[*f]);
                    if now.is_some_and(|(t, _, w)| {
                        total.is_none_or(|n| n == t) && workers.is_none_or(|n| n == w)
                    }) {
                        break true;
                    }
                    if Instant::now() > deadline {
                        break false;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                if !reached {
                    recs.push(Rec {
                        step: i,
                        conn: usize::MAX,
                        ev: Ev::Note(format!(
                            "status never showed {} with total {total:?} workers {workers:?}: {last:?}",
                            ctx.fns[*f]
                        )),
                    });
                }
            }
            Step::Poll {
                kind,
                args,
                what,
                until,
            } => {
                let args: Vec<Vec<u8>> = args.iter().map(|a| ctx.arg(a)).collect();
                let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                let deadline = Instant::now() + WAIT;
                let mut last = None;
                let reached = loop {
                    if poller.is_none() {
                        poller = Conn::connect(addr).ok();
                    }
                    if let Some(p) = poller.as_mut() {
                        let answer = p
                            .send(*kind, &refs)
                            .and_then(|()| p.read(Duration::from_secs(2)));
                        match answer {
                            Ok(Some(a)) if until(&a) => break true,
                            Ok(Some(a)) => last = Some(a),
                            _ => poller = None,
                        }
                    }
                    if Instant::now() > deadline {
                        break false;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                if !reached {
                    recs.push(Rec {
                        step: i,
                        conn: usize::MAX,
                        ev: Ev::Note(format!("waited in vain for {what}; last answer {last:?}")),
                    });
                }
            }
            Step::Close(conn) => {
                conns[*conn] = None;
                dead[*conn] = true;
            }
        }
    }
    drop(conns);
    let raw = recs
        .iter()
        .map(|r| (r.step, r.conn, render(&r.ev)))
        .collect();
    normalise(&mut recs, s.one_namespace);
    let mut problems = Vec::new();
    let mut out: Vec<Rec> = Vec::new();
    let mut at = 0;
    while at < recs.len() {
        let step = recs[at].step;
        let conn = recs[at].conn;
        let end = at + recs[at..].iter().take_while(|r| r.step == step).count();
        let mut evs: Vec<Ev> = recs[at..end].iter().map(|r| r.ev.clone()).collect();
        if let Step::Read { kept, .. } = &s.steps[step] {
            for k in kept {
                if let Err(e) = (k.check)(srv, &ctx, &mut evs) {
                    problems.push(format!("step {step}: {e}"));
                }
            }
        }
        out.extend(evs.into_iter().map(|ev| Rec { step, conn, ev }));
        at = end;
    }
    Run {
        lines: out
            .iter()
            .map(|r| (r.step, r.conn, render(&r.ev)))
            .collect(),
        raw,
        problems,
    }
}

/// Handles to placeholders; `ERROR` texts dropped (see the file's doc).
fn normalise(recs: &mut [Rec], one_namespace: bool) {
    let mut shared: HashMap<Vec<u8>, String> = HashMap::new();
    let mut per_conn: HashMap<(usize, Vec<u8>), String> = HashMap::new();
    let mut next_shared = 0;
    let mut next_conn: HashMap<usize, usize> = HashMap::new();
    for r in recs.iter_mut() {
        let Ev::Pkt(kind, args) = &mut r.ev else {
            continue;
        };
        if *kind == P::ERROR {
            if let Some(text) = args.get_mut(1) {
                *text = b"<text>".to_vec();
            }
            continue;
        }
        if !carries_handle(*kind) || args.is_empty() {
            continue;
        }
        let mut handle = args[0].clone();
        if *kind == P::WORK_FAIL && handle.last() == Some(&0) {
            // gearmand 1.1 turns a WORK_EXCEPTION into the WORK_FAIL of a client that did
            // not ask for exceptions by copying the worker's handle argument with the NUL
            // that ended it: an artefact of gearmand (a client that compares handles as
            // bytes cannot match it), not something Troupe must copy.
            handle.pop();
        }
        let worker_side = matches!(kind, P::JOB_ASSIGN | P::JOB_ASSIGN_UNIQ | P::JOB_ASSIGN_ALL);
        if gives_handle(*kind) {
            if worker_side && !one_namespace {
                per_conn.entry((r.conn, handle.clone())).or_insert_with(|| {
                    let n = next_conn.entry(r.conn).or_insert(0);
                    *n += 1;
                    format!("{{W{n}}}")
                });
            } else {
                shared.entry(handle.clone()).or_insert_with(|| {
                    next_shared += 1;
                    let tag = if one_namespace { "H" } else { "J" };
                    format!("{{{tag}{next_shared}}}")
                });
            }
        }
        let named = if worker_side && !one_namespace {
            per_conn.get(&(r.conn, handle.clone())).cloned()
        } else {
            shared.get(&handle).cloned()
        };
        let named = named
            .or_else(|| per_conn.get(&(r.conn, handle.clone())).cloned())
            .or_else(|| {
                per_conn
                    .iter()
                    .find(|((_, h), _)| *h == handle)
                    .map(|((c, _), n)| format!("{n} of c{c}"))
            });
        args[0] = named.map(String::into_bytes).unwrap_or(handle);
    }
}

/// Two transcripts lined up: equal lines side by side (a longest common subsequence),
/// and between them the lines of each that differ, paired in order.
fn align<'a, T: PartialEq>(a: &'a [T], b: &'a [T]) -> Vec<(Option<&'a T>, Option<&'a T>)> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    let flush = |out: &mut Vec<_>, only_a: &mut Vec<&'a T>, only_b: &mut Vec<&'a T>| {
        for k in 0..only_a.len().max(only_b.len()) {
            out.push((only_a.get(k).copied(), only_b.get(k).copied()));
        }
        only_a.clear();
        only_b.clear();
    };
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            flush(&mut out, &mut only_a, &mut only_b);
            out.push((Some(&a[i]), Some(&b[j])));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            only_b.push(&b[j]);
            j += 1;
        } else {
            only_a.push(&a[i]);
            i += 1;
        }
    }
    flush(&mut out, &mut only_a, &mut only_b);
    out
}

/// The differences of two transcripts, side by side; `None` if equal.
fn compare(s: &Scenario, g: &Run, t: &Run) -> Option<String> {
    let same = g.lines == t.lines && g.problems.is_empty() && t.problems.is_empty();
    if same {
        return None;
    }
    let mut out = format!("=== {} ===\n", s.name);
    for p in g.problems.iter().chain(&t.problems) {
        out.push_str(&format!("  ! {p}\n"));
    }
    let cell = |l: Option<&(usize, usize, String)>| match l {
        Some((step, conn, text)) if *conn == usize::MAX => format!("{step:>2} --  {text}"),
        Some((step, conn, text)) => format!("{step:>2} c{conn}  {text}"),
        None => "-".to_string(),
    };
    out.push_str("  normalised (step, connection, packet): gearmand | troupe\n");
    for (a, b) in align(&g.lines, &t.lines) {
        let mark = if a == b { ' ' } else { '≠' };
        out.push_str(&format!("  {mark} {:<70} | {}\n", cell(a), cell(b)));
    }
    out.push_str("  as received, gearmand:\n");
    for l in &g.raw {
        out.push_str(&format!("    {}\n", cell(Some(l))));
    }
    out.push_str("  as received, troupe:\n");
    for l in &t.raw {
        out.push_str(&format!("    {}\n", cell(Some(l))));
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// The scenarios.

/// A foreground job for function 0 from client C (after `OPTION_REQ exceptions` if
/// `exceptions`), grabbed by worker W, which ends it with `end`.
fn work_end(name: &'static str, exceptions: bool, end: P) -> Scenario {
    let mut s = sc(name);
    if exceptions {
        s = s.send(C, P::OPTION_REQ, &[l("exceptions")]).recv(C, 1);
    }
    s = s
        .can_do(W, 0)
        .send(C, P::SUBMIT_JOB, &[F(0), l(""), l("in")])
        .recv(C, 1)
        .queued(0, 1)
        .send(W, P::GRAB_JOB, &[])
        .recv(W, 1);
    s = match end {
        P::WORK_FAIL => s.send(W, end, &[H(W, 1)]),
        _ => s.send(W, end, &[H(W, 1), l(b"ex\0data \xff")]),
    };
    s.recv(C, 1).sync(W).quiet(C)
}

fn scenarios() -> Vec<Scenario> {
    vec![
        // -- Workers asking for work.
        sc("grab_with_nothing_queued_is_no_job")
            .send(W, P::CAN_DO, &[F(0)])
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB_UNIQ, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB_ALL, &[])
            .recv(W, 1)
            // A connection that never said CAN_DO.
            .send(W2, P::GRAB_JOB, &[])
            .recv(W2, 1),
        sc("pre_sleep_is_woken_by_noop_when_its_work_arrives")
            .send(W, P::CAN_DO, &[F(0)])
            .send(W, P::PRE_SLEEP, &[])
            .sync(W)
            // Work for another function does not wake it.
            .bg(C, 1, "", "other")
            .quiet(W)
            .bg(C, 0, "", "mine")
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1),
        sc("pre_sleep_with_work_waiting_is_answered_noop_at_once")
            .can_do(W, 0)
            .bg(C, 0, "", "waiting")
            .queued(0, 1)
            .send(W, P::PRE_SLEEP, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1),
        sc("every_sleeping_worker_is_woken_and_one_gets_the_job")
            .send(W, P::CAN_DO, &[F(0)])
            .send(W, P::PRE_SLEEP, &[])
            .sync(W)
            .send(W2, P::CAN_DO, &[F(0)])
            .send(W2, P::PRE_SLEEP, &[])
            .sync(W2)
            .workers(0, 2)
            .bg(C, 0, "", "one job")
            .recv(W, 1)
            .recv(W2, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W2, P::GRAB_JOB, &[])
            .recv(W2, 1),
        sc("a_job_held_by_a_worker_that_disconnects_goes_to_another_worker")
            .can_do(W, 0)
            .send(C, P::SUBMIT_JOB, &[F(0), l(""), l("in")])
            .recv(C, 1)
            .queued(0, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W2, P::CAN_DO, &[F(0)])
            .send(W2, P::PRE_SLEEP, &[])
            .sync(W2)
            .close(W)
            .recv(W2, 1)
            .send(W2, P::GRAB_JOB, &[])
            .recv(W2, 1)
            .send(W2, P::WORK_COMPLETE, &[H(W2, 1), l("done by the second")])
            .recv(C, 1),
        // -- Submissions.
        sc("every_submit_variant_answers_job_created")
            .send(C, P::SUBMIT_JOB, &[F(0), l(""), l("normal")])
            .recv(C, 1)
            .send(C, P::SUBMIT_JOB_HIGH, &[F(0), l(""), l("high")])
            .recv(C, 1)
            .send(C, P::SUBMIT_JOB_LOW, &[F(0), l(""), l("low")])
            .recv(C, 1)
            .send(C, P::SUBMIT_JOB_BG, &[F(0), l(""), l("bg")])
            .recv(C, 1)
            .send(C, P::SUBMIT_JOB_HIGH_BG, &[F(0), l(""), l("high bg")])
            .recv(C, 1)
            .send(C, P::SUBMIT_JOB_LOW_BG, &[F(0), l(""), l("low bg")])
            .recv(C, 1)
            .sync(C),
        sc("grab_order_is_priority_then_age")
            .can_do(W, 0)
            .bg(C, 0, "", "low 1")
            .bg(C, 0, "", "normal 1")
            .send(C, P::SUBMIT_JOB_HIGH_BG, &[F(0), l(""), l("high 1")])
            .recv(C, 1)
            .send(C, P::SUBMIT_JOB_LOW_BG, &[F(0), l(""), l("low 2")])
            .recv(C, 1)
            .send(C, P::SUBMIT_JOB_LOW_BG, &[F(0), l(""), l("low 3")])
            .recv(C, 1)
            .send(C, P::SUBMIT_JOB_HIGH_BG, &[F(0), l(""), l("high 2")])
            .recv(C, 1)
            .send(C2, P::SUBMIT_JOB_HIGH, &[F(0), l(""), l("high 3 (foreground)")])
            .recv(C2, 1)
            .send(C2, P::SUBMIT_JOB_LOW, &[F(0), l(""), l("low 4 (foreground)")])
            .recv(C2, 1)
            .queued(0, 8)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1),
        sc("grab_job_uniq_gives_the_unique_id")
            .can_do(W, 0)
            .bg(C, 0, "order-1", "a")
            .bg(C, 0, "", "b")
            .queued(0, 2)
            .send(W, P::GRAB_JOB_UNIQ, &[])
            .recv(W, 1)
            .kept(kept_unique("order-1", C, 1))
            .send(W, P::GRAB_JOB_UNIQ, &[])
            .recv(W, 1)
            .kept(kept_unique("", C, 2))
            .send(W, P::GRAB_JOB_UNIQ, &[])
            .recv(W, 1),
        // gearmand answers GRAB_JOB_ALL with JOB_ASSIGN_UNIQ for a job without a reducer
        // (JOB_ASSIGN_ALL only for map-reduce jobs, which Troupe does not take).
        sc("grab_job_all_is_answered_as_gearmand_answers_it")
            .can_do(W, 0)
            .bg(C, 0, "order-2", "c")
            .queued(0, 1)
            .send(W, P::GRAB_JOB_ALL, &[])
            .recv(W, 1)
            .kept(kept_unique("order-2", C, 1)),
        sc("the_same_unique_id_from_three_clients_is_one_job")
            .can_do(W, 0)
            .send(C, P::SUBMIT_JOB, &[F(0), l("k"), l("first")])
            .recv(C, 1)
            .send(C2, P::SUBMIT_JOB, &[F(0), l("k"), l("second")])
            .recv(C2, 1)
            .send(C3, P::SUBMIT_JOB_BG, &[F(0), l("k"), l("third")])
            .recv(C3, 1)
            .queued(0, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::WORK_DATA, &[H(W, 1), l("part")])
            .send(W, P::WORK_COMPLETE, &[H(W, 1), l("whole")])
            .recv(C, 2)
            .recv(C2, 2)
            .quiet(C3)
            // Once it ended, the unique id makes a new job.
            .send(C, P::SUBMIT_JOB, &[F(0), l("k"), l("again")])
            .recv(C, 1),
        // gearmand counts each submission as a client of the job, also two on one
        // connection: each gets the job's packets (a library that sent two tasks waits
        // for two answers).
        sc("the_same_unique_id_twice_on_one_connection_is_answered_twice")
            .can_do(W, 0)
            .send(C, P::SUBMIT_JOB, &[F(0), l("twice"), l("x")])
            .recv(C, 1)
            .send(C, P::SUBMIT_JOB, &[F(0), l("twice"), l("x")])
            .recv(C, 1)
            .queued(0, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::WORK_DATA, &[H(W, 1), l("part")])
            .send(W, P::WORK_COMPLETE, &[H(W, 1), l("whole")])
            .recv(C, 4),
        sc("submit_job_sched_is_not_supported")
            .send(
                C,
                P::SUBMIT_JOB_SCHED,
                &[F(0), l("s"), l("1"), l("2"), l("3"), l("4"), l("5"), l("data")],
            )
            .recv(C, 1)
            .kept(kept(
                // gearmand 1.1 refuses it too, as a command it does not expect.
                "SUBMIT_JOB_SCHED answers ERROR NOT_SUPPORTED (GEARMAN.md, Not supported)",
                &[&["ERROR \"INVALID_COMMAND\" \"<text>\""]],
                &["ERROR \"NOT_SUPPORTED\" \"<text>\""],
            ))
            .sync(C),
        sc("submit_job_epoch_is_not_supported")
            .send(
                C,
                P::SUBMIT_JOB_EPOCH,
                &[F(0), l("e"), l("4102444800"), l("data")],
            )
            .recv(C, 1)
            .kept(kept(
                "SUBMIT_JOB_EPOCH answers ERROR NOT_SUPPORTED (GEARMAN.md, Not supported)",
                &[&["JOB_CREATED \"{J1}\""]],
                &["ERROR \"NOT_SUPPORTED\" \"<text>\""],
            ))
            .sync(C),
        sc("submit_reduce_job_is_not_supported")
            .send(
                C,
                P::SUBMIT_REDUCE_JOB,
                &[F(0), l("r1"), l("reducer"), l("aggregator"), l("data")],
            )
            .recv(C, 1)
            .kept(kept(
                "SUBMIT_REDUCE_JOB answers ERROR NOT_SUPPORTED (GEARMAN.md, Not supported)",
                &[&["JOB_CREATED \"{J1}\""]],
                &["ERROR \"NOT_SUPPORTED\" \"<text>\""],
            ))
            .send(
                C,
                P::SUBMIT_REDUCE_JOB_BACKGROUND,
                &[F(0), l("r2"), l("reducer"), l("aggregator"), l("data")],
            )
            .recv(C, 1)
            .kept(kept(
                "SUBMIT_REDUCE_JOB_BACKGROUND answers ERROR NOT_SUPPORTED (GEARMAN.md, Not supported)",
                &[&["JOB_CREATED \"{J2}\""]],
                &["ERROR \"NOT_SUPPORTED\" \"<text>\""],
            ))
            .sync(C),
        // -- What a worker sends reaches the waiting client.
        sc("work_status_data_warning_and_complete_reach_the_client")
            .send(W, P::CAN_DO, &[F(0)])
            .send(W, P::PRE_SLEEP, &[])
            .sync(W)
            .send(C, P::SUBMIT_JOB, &[F(0), l(""), l("in")])
            .recv(C, 1)
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::WORK_STATUS, &[H(W, 1), l("1"), l("3")])
            .send(W, P::WORK_DATA, &[H(W, 1), l(b"d\0x\xff")])
            .send(W, P::WORK_WARNING, &[H(W, 1), l("careful")])
            .send(W, P::WORK_STATUS, &[H(W, 1), l("2"), l("3")])
            .send(W, P::WORK_DATA, &[H(W, 1), l("")])
            .send(W, P::WORK_COMPLETE, &[H(W, 1), l(b"res\0ult")])
            .recv(C, 6)
            .sync(W)
            .quiet(C),
        work_end("work_fail_reaches_the_client", false, P::WORK_FAIL),
        work_end(
            "work_fail_reaches_a_client_that_asked_for_exceptions",
            true,
            P::WORK_FAIL,
        ),
        work_end(
            "work_exception_reaches_a_client_without_the_option_as_work_fail",
            false,
            P::WORK_EXCEPTION,
        ),
        work_end(
            "work_exception_reaches_a_client_that_asked_for_exceptions",
            true,
            P::WORK_EXCEPTION,
        ),
        work_end(
            "work_complete_reaches_a_client_that_asked_for_exceptions",
            true,
            P::WORK_COMPLETE,
        ),
        // gearmand answers a WORK_* packet for a job the connection does not hold (another
        // worker's, one that ended, one that never was) with ERROR JOB_NOT_FOUND, and the
        // connection goes on.
        sc("work_packets_for_a_handle_the_worker_does_not_hold_are_refused")
            .can_do(W, 0)
            .send(C, P::SUBMIT_JOB, &[F(0), l(""), l("in")])
            .recv(C, 1)
            .queued(0, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            // Another worker reports on W's job: refused, one ERROR JOB_NOT_FOUND each.
            .send(W2, P::CAN_DO, &[F(0)])
            .send(W2, P::WORK_STATUS, &[H(W, 1), l("1"), l("2")])
            .send(W2, P::WORK_DATA, &[H(W, 1), l("d")])
            .send(W2, P::WORK_WARNING, &[H(W, 1), l("w")])
            .send(W2, P::WORK_COMPLETE, &[H(W, 1), l("stolen")])
            .send(W2, P::WORK_FAIL, &[H(W, 1)])
            .send(W2, P::WORK_EXCEPTION, &[H(W, 1), l("x")])
            .sync(W2)
            .quiet(C)
            .send(W, P::WORK_COMPLETE, &[H(W, 1), l("mine")])
            .recv(C, 1)
            // The job is over: a second end from the worker that held it is ignored
            // by Troupe (Perl's Gearman::Worker sends WORK_FAIL after the WORK_EXCEPTION
            // of a `die`, and dies on gearmand's ERROR); a handle never given is refused.
            .send(W, P::WORK_COMPLETE, &[H(W, 1), l("again")])
            .sync(W)
            .kept(kept(
                "a second end from the worker that held the job is ignored (GEARMAN.md, What differs)",
                &[&["ERROR \"JOB_NOT_FOUND\" \"<text>\"", "ECHO_RES \"sync\""]],
                &["ECHO_RES \"sync\""],
            ))
            .send(W, P::WORK_COMPLETE, &[l("H:nowhere:1"), l("x")])
            .sync(W),
        // gearmand has one handle per job: JOB_ASSIGN carries the handle JOB_CREATED gave
        // the client, and GET_STATUS knows it.
        sc("worker_is_given_the_handle_its_client_got")
            .one_namespace()
            .can_do(W, 0)
            .bg(C, 0, "", "in")
            .queued(0, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            // A worker (or anyone it tells) asks for the status of the job it holds.
            .send(C2, P::GET_STATUS, &[H(W, 1)])
            .recv(C2, 1),
        // -- Status.
        sc("get_status_of_queued_running_finished_and_unknown_jobs")
            .can_do(W, 0)
            .bg(C, 0, "", "in")
            .queued(0, 1)
            .send(C, P::GET_STATUS, &[H(C, 1)])
            .recv(C, 1)
            .kept(kept_running())
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(C, P::GET_STATUS, &[H(C, 1)])
            .recv(C, 1)
            .send(W, P::WORK_STATUS, &[H(W, 1), l("5"), l("7")])
            .poll(P::GET_STATUS, &[H(C, 1)], "numerator 5", |p| p.text(3) == "5")
            .send(C, P::GET_STATUS, &[H(C, 1)])
            .recv(C, 1)
            .send(W, P::WORK_COMPLETE, &[H(W, 1), l("done")])
            .sync(W)
            .poll(P::GET_STATUS, &[H(C, 1)], "the job unknown", |p| p.text(1) == "0")
            .send(C, P::GET_STATUS, &[H(C, 1)])
            .recv(C, 1)
            .send(C, P::GET_STATUS, &[l("H:nowhere:1")])
            .recv(C, 1)
            .send(C, P::GET_STATUS, &[l("n9-0-1")])
            .recv(C, 1),
        sc("get_status_of_a_job_no_worker_can_do")
            .bg(C, 0, "nobody", "in")
            .send(C, P::GET_STATUS, &[H(C, 1)])
            .recv(C, 1)
            .send(C, P::GET_STATUS_UNIQUE, &[l("nobody")])
            .recv(C, 1)
            .kept(kept_clients("0", "1")),
        sc("get_status_unique_of_a_coalesced_foreground_job")
            .can_do(W, 0)
            .send(C, P::SUBMIT_JOB, &[F(0), l("u-1"), l("x")])
            .recv(C, 1)
            .queued(0, 1)
            .send(C2, P::GET_STATUS_UNIQUE, &[l("u-1")])
            .recv(C2, 1)
            .kept(kept_running())
            .send(C3, P::SUBMIT_JOB, &[F(0), l("u-1"), l("y")])
            .recv(C3, 1)
            .send(C2, P::GET_STATUS_UNIQUE, &[l("u-1")])
            .recv(C2, 1)
            .kept(kept_running())
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::WORK_STATUS, &[H(W, 1), l("1"), l("4")])
            .recv(C, 1)
            .recv(C3, 1)
            .poll(
                P::GET_STATUS_UNIQUE,
                &[l("u-1")],
                "numerator 1",
                |p| p.text(3) == "1",
            )
            .send(C2, P::GET_STATUS_UNIQUE, &[l("u-1")])
            .recv(C2, 1)
            .send(W, P::WORK_COMPLETE, &[H(W, 1), l("r")])
            .recv(C, 1)
            .recv(C3, 1)
            .poll(
                P::GET_STATUS_UNIQUE,
                &[l("u-1")],
                "the job unknown",
                |p| p.text(1) == "0",
            )
            .send(C2, P::GET_STATUS_UNIQUE, &[l("u-1")])
            .recv(C2, 1)
            .send(C2, P::GET_STATUS_UNIQUE, &[l("never-used")])
            .recv(C2, 1),
        sc("get_status_unique_of_a_background_job")
            .can_do(W, 0)
            .bg(C, 0, "u-bg", "x")
            .queued(0, 1)
            .send(C, P::GET_STATUS_UNIQUE, &[l("u-bg")])
            .recv(C, 1)
            .kept(kept_running())
            .kept(kept_clients("0", "1"))
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(C, P::GET_STATUS_UNIQUE, &[l("u-bg")])
            .recv(C, 1)
            .kept(kept_clients("0", "1")),
        // -- Abilities.
        sc("can_do_timeout_registers_the_function")
            // gearmand reads the limit as milliseconds, Troupe as seconds: large enough
            // for both.
            .send(W, P::CAN_DO_TIMEOUT, &[F(0), l("100000")])
            .sync(W)
            .workers(0, 1)
            .send(C, P::SUBMIT_JOB, &[F(0), l(""), l("in")])
            .recv(C, 1)
            .queued(0, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::WORK_COMPLETE, &[H(W, 1), l("in time")])
            .recv(C, 1),
        sc("can_do_timeout_expiry")
            // "1": 1 s for Troupe; 1 ms for gearmand, which raises it to its floor, 1 s.
            .send(W, P::CAN_DO_TIMEOUT, &[F(0), l("1")])
            .sync(W)
            .workers(0, 1)
            .send(C, P::SUBMIT_JOB, &[F(0), l(""), l("in")])
            .recv(C, 1)
            .queued(0, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .recv_within(C, 1, 3000)
            .kept(kept(
                // GEARMAN.md: "CAN_DO_TIMEOUT fails an attempt the worker holds too long",
                // as the protocol description says ("the job server will mark the job as
                // failed and notify any listening clients"); gearmand 1.1 puts the job
                // back in the queue instead and tells the client nothing.
                "CAN_DO_TIMEOUT fails the job held too long (GEARMAN.md)",
                &[&[NOTHING]],
                &["WORK_FAIL \"{J1}\""],
            ))
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .kept(kept(
                "CAN_DO_TIMEOUT fails the job held too long, gearmand queues it again (GEARMAN.md)",
                &[&["JOB_ASSIGN \"{W1}\" $F0 \"in\""]],
                &["NO_JOB"],
            )),
        sc("cant_do_stops_the_worker_getting_the_function")
            .send(W, P::CAN_DO, &[F(0)])
            .send(W, P::CAN_DO, &[F(1)])
            .send(W, P::CANT_DO, &[F(0)])
            .sync(W)
            .workers(1, 1)
            .bg(C, 0, "", "not for W")
            .bg(C, 1, "", "for W")
            .queued(1, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1),
        sc("reset_abilities_forgets_every_function")
            .send(W, P::CAN_DO, &[F(0)])
            .send(W, P::CAN_DO, &[F(1)])
            .send(W, P::RESET_ABILITIES, &[])
            .sync(W)
            .bg(C, 0, "", "zero")
            .bg(C, 1, "", "one")
            .send(W, P::PRE_SLEEP, &[])
            .quiet(W)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            // Able again: the waiting job wakes it.
            .send(W, P::CAN_DO, &[F(1)])
            .send(W, P::PRE_SLEEP, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1),
        // -- Everything else a client or worker says.
        sc("echo_req_returns_its_data_byte_for_byte")
            .send(C, P::ECHO_REQ, &[l(b"ping\0pong \xff\x00")])
            .recv(C, 1)
            .send(C, P::ECHO_REQ, &[])
            .recv(C, 1),
        sc("set_client_id_is_answered_with_nothing")
            .send(W, P::SET_CLIENT_ID, &[l("worker-7")])
            .sync(W),
        sc("option_req_exceptions_and_an_unknown_option")
            .send(C, P::OPTION_REQ, &[l("exceptions")])
            .recv(C, 1)
            .send(C, P::OPTION_REQ, &[l("no-such-option")])
            .recv(C, 1)
            .sync(C),
        // ALL_YOURS is "not yet implemented" in the protocol; gearmand answers it
        // ERROR INVALID_COMMAND, and the connection goes on.
        sc("all_yours_is_refused_as_gearmand_refuses_it")
            .send(W, P::CAN_DO, &[F(0)])
            .send(W, P::ALL_YOURS, &[])
            .sync(W),
        // -- Wrong packets.
        sc("an_unknown_packet_type")
            .send_code(C, 999, false, &[l("x")])
            .send(C, P::ECHO_REQ, &[l("after")])
            .recv(C, 2)
            .kept(kept(
                "an unknown packet type gets ERROR and the connection goes on (GEARMAN.md, Bad input); gearmand closes it",
                &[&[CLOSED]],
                &["ERROR \"UNKNOWN_COMMAND\" \"<text>\"", "ECHO_RES \"after\""],
            )),
        // A response type with request magic: gearmand answers ERROR INVALID_COMMAND
        // (INVALID_MAGIC is its answer to response magic, the next scenario).
        sc("a_response_type_sent_as_a_request")
            .send(C, P::NOOP, &[])
            .recv(C, 1)
            .send(C, P::JOB_CREATED, &[l("H:x:1")])
            .recv(C, 1)
            .send(C, P::ECHO_RES, &[l("x")])
            .recv(C, 1)
            .sync(C),
        sc("a_request_with_response_magic")
            .send_code(C, P::ECHO_REQ.code(), true, &[l("x")])
            .recv(C, 1)
            .sync(C),
        sc("a_packet_missing_arguments")
            // SUBMIT_JOB with its function only (no NUL at all).
            .send(C, P::SUBMIT_JOB, &[F(0)])
            .send(C, P::ECHO_REQ, &[l("after")])
            .recv_within(C, 2, 1500)
            .kept(kept(
                // gearmand waits for the NUL that ends the argument, reads the next
                // packet as the rest of this one, and drops the connection.
                "missing arguments get ERROR and the connection goes on (GEARMAN.md, Bad input)",
                &[&[CLOSED], &[NOTHING]],
                &["ERROR \"INVALID_PACKET\" \"<text>\"", "ECHO_RES \"after\""],
            ))
            // CAN_DO_TIMEOUT without its timeout.
            .send(W, P::CAN_DO_TIMEOUT, &[F(0)])
            .send(W, P::ECHO_REQ, &[l("after")])
            .recv_within(W, 2, 1500)
            .kept(kept(
                "missing arguments get ERROR and the connection goes on (GEARMAN.md, Bad input)",
                &[&[CLOSED], &[NOTHING]],
                &["ERROR \"INVALID_PACKET\" \"<text>\"", "ECHO_RES \"after\""],
            )),
        sc("submit_job_missing_its_trailing_data")
            // FUNCTION NUL UNIQUE, and no NUL for the (empty) workload.
            .send(C, P::SUBMIT_JOB_BG, &[F(0), l("")])
            .send(C, P::ECHO_REQ, &[l("after")])
            .recv_within(C, 2, 1500)
            .kept(kept(
                // gearmand 1.1.20 waits for the missing NUL, reads the next packet as the
                // rest of this one, and drops the connection.
                "a SUBMIT_JOB* without its data argument has empty data (GEARMAN.md, Payloads are bytes)",
                &[&[CLOSED], &[NOTHING]],
                &["JOB_CREATED \"{J1}\"", "ECHO_RES \"after\""],
            )),
        sc("work_complete_missing_its_trailing_data")
            .can_do(W, 0)
            .send(C, P::SUBMIT_JOB, &[F(0), l(""), l("in")])
            .recv(C, 1)
            .queued(0, 1)
            .send(W, P::GRAB_JOB, &[])
            .recv(W, 1)
            // The handle alone, no NUL, no data (Perl's Gearman::Worker for '' or '0').
            .send(W, P::WORK_COMPLETE, &[H(W, 1)])
            .recv_within(C, 1, 1500)
            .kept(kept(
                // gearmand 1.1.20 waits for the missing NUL (the client gets nothing),
                // then fails on the worker's next packet and drops its connection
                // (GEARMAN.md says so).
                "a WORK_COMPLETE without its data argument is empty data (GEARMAN.md, Payloads are bytes)",
                &[&[NOTHING]],
                &["WORK_COMPLETE \"{J1}\" \"\""],
            ))
            .send(W, P::ECHO_REQ, &[l("after")])
            .recv_within(W, 1, 1500)
            .kept(kept(
                "a WORK_COMPLETE without its data argument is empty data (GEARMAN.md, Payloads are bytes)",
                &[&[CLOSED], &[NOTHING]],
                &["ECHO_RES \"after\""],
            )),
    ]
}

// ---------------------------------------------------------------------------------------

#[test]
fn every_client_and_worker_packet_is_answered_as_gearmand_answers_it() {
    if !needs::has(
        "every_client_and_worker_packet_is_answered_as_gearmand_answers_it",
        &[Need::Gearmand],
    ) {
        return;
    }
    let started = Instant::now();
    let troupe = troupe_node();
    let gearmand = Gearmand::start(&troupe.dir);
    let (g_addr, t_addr) = (gearmand.addr.clone(), troupe.gearman_addrs[0].clone());
    eprintln!(
        "gearmand on {g_addr}, troupe on {t_addr}; up in {:?}",
        started.elapsed()
    );
    let only: Vec<String> = std::env::var("GEARMAN_VS_GEARMAND_ONLY")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let all = scenarios();
    let mut names = std::collections::HashSet::new();
    for s in &all {
        assert!(names.insert(s.name), "two scenarios named {}", s.name);
    }
    let mut failed = Vec::new();
    let mut report = String::new();
    for s in all
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| s.name.contains(o.as_str())))
    {
        let t0 = Instant::now();
        let (g, t) = std::thread::scope(|scope| {
            let g = scope.spawn(|| run(Srv::Gearmand, &g_addr, s));
            let t = scope.spawn(|| run(Srv::Troupe, &t_addr, s));
            (
                g.join().expect("the gearmand run"),
                t.join().expect("the troupe run"),
            )
        });
        match compare(s, &g, &t) {
            None => eprintln!("same  {} ({:?})", s.name, t0.elapsed()),
            Some(diff) => {
                eprintln!("DIFF  {} ({:?})", s.name, t0.elapsed());
                failed.push(s.name);
                report.push_str(&diff);
            }
        }
    }
    eprintln!("all scenarios in {:?}", started.elapsed());
    assert!(
        failed.is_empty(),
        "Troupe answered differently from gearmand in {} scenario(s): {}\n\n{report}",
        failed.len(),
        failed.join(", ")
    );
}
