//! Test harness: real `troupe-node` processes on loopback.
//!
//! [`Cluster`] reserves ports, starts node processes (in any order), hands out clients and
//! runs the CLI against them. Every process it starts is ended by PID when the cluster is
//! dropped, also when a test panics; on a panic the nodes' logs are kept and their folder
//! printed.

pub mod browser;
pub mod gearman;
pub mod http;
pub mod needs;
pub mod nemesis;
pub mod netns;
pub mod tinyfs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub use troupe_cluster_node::local::{free_port, NodeProcess, NodeSpec};
use troupe_runtime::{Client, ClientOptions};

/// The folder holding cargo's output for the profile this test binary was built with.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let mut dir = exe.parent().expect("deps folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of binary `bin` of package `package`, built (or found up to date) by cargo in the
/// same profile as the running test or benchmark.
pub fn cargo_bin(package: &str, bin: &str) -> PathBuf {
    let dir = profile_dir();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let target_dir = dir.parent().expect("target folder").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    if release {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo build");
    assert!(st.success(), "cargo build -p {package} --bin {bin} failed");
    let path = dir.join(bin);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The `troupe-node` binary: `TROUPE_NODE_BIN` if set (a benchmark comparing two builds in
/// one run), else built by cargo in this test's profile.
pub fn troupe_node() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("TROUPE_NODE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => cargo_bin("troupe-cluster-node", "troupe-node"),
    })
}

/// The example `wordcount` node binary (built with the cluster-node library entry point).
pub fn wordcount_node() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| cargo_bin("troupe-example-wordcount", "wordcount"))
}

/// A planned local cluster: names `n1..nN` on reserved ports, started on demand.
pub struct Cluster {
    /// The cookie all nodes share.
    pub cookie: String,
    /// Folder for logs and job files.
    pub dir: PathBuf,
    /// Planned addresses, by node index.
    pub addrs: Vec<String>,
    /// Extra `start` arguments for every node.
    pub extra: Vec<String>,
    /// Worker slots per node.
    pub slots: usize,
    /// Environment variables for every node.
    pub env: Vec<(String, String)>,
    /// Reserved `--http` addresses, by node index (used when `serve_http` is set).
    pub http_addrs: Vec<String>,
    /// Start every node with `--http` on its reserved address.
    pub serve_http: bool,
    /// Reserved `--gearman` addresses, by node index (used when `serve_gearman` is set).
    pub gearman_addrs: Vec<String>,
    /// Start every node with `--gearman` on its reserved address.
    pub serve_gearman: bool,
    /// TLS settings of this harness's clients (see [`Cluster::use_tls`]).
    pub client_tls: Option<troupe_runtime::tls::TlsConfig>,
    nodes: Vec<Option<NodeProcess>>,
    /// The namespaces the nodes run in (see [`Cluster::plan_in_netns`]); removed after the
    /// nodes are stopped.
    net: Option<netns::Netns>,
}

impl Cluster {
    /// Plans `n` nodes; none runs yet.
    pub fn plan(n: usize) -> Self {
        let tag = format!("{}-{:x}", std::process::id(), rand_tag());
        let dir = std::env::temp_dir().join(format!("troupe-it-{tag}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let addrs = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port().expect("free port")))
            .collect();
        let http_addrs = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port().expect("free port")))
            .collect();
        let gearman_addrs = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port().expect("free port")))
            .collect();
        Self {
            cookie: format!("it-cookie-{tag}"),
            dir,
            addrs,
            http_addrs,
            serve_http: false,
            gearman_addrs,
            serve_gearman: false,
            client_tls: None,
            extra: vec![],
            slots: 2,
            env: vec![],
            nodes: (0..n).map(|_| None).collect(),
            net: None,
        }
    }

    /// Plans `n` nodes, each in its own network namespace on a private bridge (see
    /// [`netns::Netns`]), so that a test can cut one off with [`Cluster::cut`]. Needs root.
    pub fn plan_in_netns(n: usize) -> Result<Self, String> {
        let net = netns::Netns::new(n)?;
        let mut c = Self::plan(n);
        c.addrs = (0..n).map(|i| format!("{}:7100", net.ip(i))).collect();
        c.net = Some(net);
        Ok(c)
    }

    /// Starts every planned node and returns a client through n1 once all are up and
    /// their gossip (slots, load) has gone round, so that placement sees every node.
    pub async fn start_all_settled(&mut self) -> Client {
        for i in 0..self.addrs.len() {
            self.start_node(i);
        }
        self.settled_client(&[0]).await
    }

    /// A client through `via` once every planned node (started by the caller) is up and
    /// their gossip has gone round.
    pub async fn settled_client(&self, via: &[usize]) -> Client {
        let client = self.client_via(via).await;
        client
            .wait_for_nodes(self.addrs.len(), Duration::from_secs(20))
            .await
            .expect("every node up");
        core_group_of(&client, self.addrs.len()).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        client
    }

    /// Drops all of node `i`'s traffic silently (its connections stay open).
    pub fn cut(&self, i: usize) -> Result<(), String> {
        self.net.as_ref().ok_or("not planned in namespaces")?.cut(i)
    }

    /// The namespaces the nodes run in, if planned with [`Cluster::plan_in_netns`].
    pub fn netns(&self) -> Option<&netns::Netns> {
        self.net.as_ref()
    }

    /// Lets node `i`'s traffic through again.
    pub fn heal(&self, i: usize) -> Result<(), String> {
        self.net
            .as_ref()
            .ok_or("not planned in namespaces")?
            .heal(i)
    }

    /// Plans and starts `n` nodes.
    pub fn start(n: usize) -> Self {
        let mut c = Self::plan(n);
        for i in 0..n {
            c.start_node(i);
        }
        c
    }

    /// Name of node `i`.
    pub fn name(i: usize) -> String {
        format!("n{}", i + 1)
    }

    /// The spec for node `i`: every other planned node is a seed.
    pub fn spec(&self, i: usize) -> NodeSpec {
        NodeSpec {
            name: Self::name(i),
            addr: self.addrs[i].clone(),
            seeds: self
                .addrs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| a.clone())
                .collect(),
            cookie: self.cookie.clone(),
            slots: self.slots,
            extra: {
                // Each node's journal in the cluster's folder (the default, under the
                // user's data folder by node name, would be shared by parallel tests).
                let mut e = vec![
                    "--data".to_string(),
                    self.dir
                        .join(format!("data-{}", Self::name(i)))
                        .display()
                        .to_string(),
                ];
                e.extend(self.extra.clone());
                if self.serve_http {
                    e.extend(["--http".to_string(), self.http_addrs[i].clone()]);
                }
                if self.serve_gearman {
                    e.extend(["--gearman".to_string(), self.gearman_addrs[i].clone()]);
                }
                e
            },
            env: self.env.clone(),
            netns: self.net.as_ref().map(|n| n.ns(i)),
        }
    }

    /// Plans and starts `n` nodes of a user-built node binary.
    pub fn start_with_binary(n: usize, exe: &Path) -> Self {
        let mut c = Self::plan(n);
        for i in 0..n {
            let spec = c.spec(i);
            c.start_with(i, exe, &spec);
        }
        c
    }

    /// Runs a program (an example's client) with `--seeds` and `--cookie` of this cluster.
    pub fn run_program(&self, exe: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(exe);
        cmd.args(["--seeds", &self.seeds(), "--cookie", &self.cookie])
            .args(args)
            .stdin(Stdio::null());
        run_with_timeout(cmd, Duration::from_secs(120))
    }

    /// Starts node `i` with `troupe-node`.
    pub fn start_node(&mut self, i: usize) {
        let spec = self.spec(i);
        self.start_with(i, troupe_node(), &spec);
    }

    /// Starts node `i` with `troupe-node` and its data folder at `data` (on a small
    /// tmpfs, say).
    pub fn start_node_on(&mut self, i: usize, data: &Path) {
        let mut spec = self.spec(i);
        let data = data.display().to_string();
        match spec.extra.iter().position(|a| a == "--data") {
            Some(at) if at + 1 < spec.extra.len() => spec.extra[at + 1] = data,
            _ => spec.extra.extend(["--data".to_string(), data]),
        }
        self.start_with(i, troupe_node(), &spec);
    }

    /// Starts node `i` from `exe` with `spec`.
    pub fn start_with(&mut self, i: usize, exe: &Path, spec: &NodeSpec) {
        let log = self.dir.join(format!("{}.log", spec.name));
        // A restart keeps the earlier lives' logs (`NAME.life0.log`, ...), which a failed
        // test leaves behind to read; `log(i)` stays the current life's.
        if log.exists() {
            let kept = (0..)
                .map(|k| self.dir.join(format!("{}.life{k}.log", spec.name)))
                .find(|p| !p.exists());
            if let Some(kept) = kept {
                let _ = std::fs::rename(&log, kept);
            }
        }
        let p = NodeProcess::spawn(exe, spec, log)
            .expect("spawn node")
            .with_grace(Duration::from_millis(500));
        self.nodes[i] = Some(p);
    }

    /// Node `i`'s process.
    pub fn node(&mut self, i: usize) -> &mut NodeProcess {
        self.nodes[i].as_mut().expect("node not started")
    }

    /// The log of node `i`.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", Self::name(i)))).unwrap_or_default()
    }

    /// `http://ADDR` of node `i`'s HTTP server (start with `serve_http` set).
    pub fn http_url(&self, i: usize) -> String {
        format!("http://{}", self.http_addrs[i])
    }

    /// All planned addresses, comma-separated.
    pub fn seeds(&self) -> String {
        self.addrs.join(",")
    }

    /// A client connected through the given nodes' addresses.
    pub async fn client_via(&self, nodes: &[usize]) -> Client {
        let seeds: Vec<String> = nodes.iter().map(|&i| self.addrs[i].clone()).collect();
        let mut o = ClientOptions::new(seeds, &self.cookie);
        o.tls = self.client_tls.clone();
        connect_retrying(o).await
    }

    /// Turns on mutual TLS: `troupe-node certs` makes a CA and a `node` and a `client`
    /// certificate in the cluster's folder; nodes started after this, and this harness's
    /// clients, use them.
    pub fn use_tls(&mut self) {
        let pki = self.dir.join("pki");
        let out = self.cli(
            &[
                "certs",
                "--dir",
                &pki.display().to_string(),
                "--names",
                "node,client",
            ],
            false,
        );
        assert!(out.status.success(), "certs: {}", texts(&out).1);
        let file = |n: &str| pki.join(n);
        self.extra.extend(
            [
                ("--tls-cert", "node.pem"),
                ("--tls-key", "node-key.pem"),
                ("--tls-ca", "ca.pem"),
            ]
            .into_iter()
            .flat_map(|(flag, f)| [flag.to_string(), file(f).display().to_string()]),
        );
        let files = troupe_runtime::tls::TlsFiles {
            cert: file("client.pem"),
            key: file("client-key.pem"),
            ca: file("ca.pem"),
        };
        self.client_tls = Some(files.load().expect("client TLS files"));
    }

    /// A client through the given nodes that is told only of job ends (no progress
    /// events), as benchmarks want.
    pub async fn quiet_client_via(&self, nodes: &[usize]) -> Client {
        self.quiet_client_via_within(nodes, Duration::from_secs(20))
            .await
    }

    /// As [`Self::quiet_client_via`], trying for up to `limit` (a large cluster forming on
    /// a small machine answers its first handshake late).
    pub async fn quiet_client_via_within(&self, nodes: &[usize], limit: Duration) -> Client {
        let seeds: Vec<String> = nodes.iter().map(|&i| self.addrs[i].clone()).collect();
        let mut o = ClientOptions::new(seeds, &self.cookie);
        o.progress = false;
        o.tls = self.client_tls.clone();
        connect_within(o, limit).await
    }

    /// A client connected through every node that runs.
    pub async fn client(&self) -> Client {
        let running: Vec<usize> = (0..self.addrs.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect();
        self.client_via(&running).await
    }

    /// Waits until a client sees every started node up.
    pub async fn ready(&self) {
        let n = self.nodes.iter().filter(|n| n.is_some()).count();
        self.client()
            .await
            .wait_for_nodes(n, Duration::from_secs(15))
            .await
            .expect("cluster up");
        core_group_of(&self.client().await, n).await;
    }

    /// `troupe-node submit FILE --wait ARGS...`: the exit code, the final status JSON on
    /// stdout (`Null` if there is none) and stderr.
    pub fn submit_wait(
        &self,
        file: &str,
        args: &[&str],
    ) -> (Option<i32>, serde_json::Value, String) {
        let mut all = vec!["submit", file, "--wait"];
        all.extend_from_slice(args);
        let out = self.cli(&all, true);
        let (stdout, stderr) = texts(&out);
        let status = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
        (out.status.code(), status, stderr)
    }

    /// Runs `troupe-node ARGS` (with `--seeds`/`--cookie` appended when `cluster` is
    /// true) and returns its output.
    pub fn cli(&self, args: &[&str], cluster: bool) -> Output {
        let mut cmd = Command::new(troupe_node());
        cmd.args(args);
        if cluster {
            cmd.args(["--seeds", &self.seeds(), "--cookie", &self.cookie]);
        }
        cmd.stdin(Stdio::null());
        run_with_timeout(cmd, Duration::from_secs(60))
    }

    /// `troupe-node ARGS --seeds <node i> --cookie ...` run inside node `i`'s network
    /// namespace (planned with [`Cluster::plan_in_netns`]): it sees what node `i` sees.
    pub fn cli_inside(&self, i: usize, args: &[&str]) -> Command {
        let ns = self.spec(i).netns.expect("planned in namespaces");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns])
            .arg(troupe_node())
            .args(args)
            .args(["--seeds", &self.addrs[i], "--cookie", &self.cookie])
            .stdin(Stdio::null());
        cmd
    }

    /// Starts n1..n3 first, so that they form the core group (the first three nodes by
    /// name that n1 sees), then the others. Returns a client through n1..n3 (the core's
    /// voters are seen through it; keep it) and one through every node.
    pub async fn start_core_then_others(&mut self) -> (Client, Client) {
        for i in 0..3 {
            self.start_node(i);
        }
        let first = self.client_via(&[0, 1, 2]).await;
        first
            .wait_for_nodes(3, Duration::from_secs(20))
            .await
            .expect("n1..n3 up");
        core_formed(3).await;
        for i in 3..self.addrs.len() {
            self.start_node(i);
        }
        let all: Vec<usize> = (0..self.addrs.len()).collect();
        let every = self.settled_client(&all).await;
        (first, every)
    }

    /// Panics unless a fresh client can still run a one-step job (after bad input).
    pub async fn assert_serves(&self) {
        use troupe_runtime::{JobSpec, JobState, StepSpec};
        let client = self.client().await;
        let mut h = client
            .submit(JobSpec::new("alive").step(StepSpec::new("n", "troupe.node")))
            .await
            .expect("submit after bad input");
        let st = h.wait().await.expect("result");
        assert_eq!(st.state, JobState::Succeeded, "{st:?}");
    }

    /// `submit FILE --wait` through node `i` only: the final status JSON (panics if the
    /// command fails).
    pub fn submit_wait_via(&self, i: usize, file: &str) -> serde_json::Value {
        let out = self.cli(
            &[
                "submit",
                "--seeds",
                &self.addrs[i],
                "--cookie",
                &self.cookie,
                file,
                "--wait",
            ],
            false,
        );
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("status JSON on stdout")
    }

    /// Writes a job file into the cluster's folder and returns its path.
    pub fn job_file(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).expect("write job file");
        p.display().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut() {
            if let Some(mut p) = n.take() {
                p.stop(Duration::from_millis(500));
            }
        }
        // TROUPE_IT_KEEP_LOGS=1 keeps them after a pass too (to compare with a failure).
        if std::thread::panicking() || std::env::var_os("TROUPE_IT_KEEP_LOGS").is_some() {
            eprintln!("node logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The state (`up`, `suspect`, `down`, `draining`) of `node` as the client's first node
/// sees it.
pub async fn node_state(client: &Client, node: &str) -> Option<String> {
    let nodes = client.nodes().await.ok()?;
    nodes
        .iter()
        .find(|n| n.name == node)
        .map(|n| n.state.as_str().to_string())
}

/// Submits `job` until a submission lands on `node` (ids start with the owner's name),
/// cancelling the others; returns that job's handle.
pub async fn submit_owned_by(
    client: &Client,
    job: &troupe_runtime::JobSpec,
    node: &str,
) -> troupe_runtime::JobHandle {
    let prefix = format!("{node}-");
    loop {
        let h = client.submit(job.clone()).await.expect("submit");
        if h.id().starts_with(&prefix) {
            return h;
        }
        let _ = h.cancel().await;
    }
}

/// Starts `n` nodes (two slots each) that take over the jobs of an owner down for
/// `takeover_after_ms`, and a client through all of them once the core group (three
/// voters) has formed.
pub async fn start_for_takeover(n: usize, takeover_after_ms: u64) -> (Cluster, Client) {
    let grace = takeover_after_ms.to_string();
    start_with_core(n, &[("TROUPE_FAILURE__TAKEOVER_AFTER_MS", &grace)]).await
}

/// Starts `n` nodes (two slots each) with the environment `env`, and a client through
/// all of them once the core group (three voters) has formed.
pub async fn start_with_core(n: usize, env: &[(&str, &str)]) -> (Cluster, Client) {
    let mut c = Cluster::plan(n);
    c.slots = 2;
    c.env
        .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    for i in 0..n {
        c.start_node(i);
    }
    let all: Vec<usize> = (0..n).collect();
    let client = c.settled_client(&all).await;
    core_formed(3).await;
    (c, client)
}

/// A key (`PREFIX-N`) of actor type `actor_type` whose owner among `nodes` is `node`.
pub fn key_owned_by(actor_type: &str, node: &str, nodes: &[&str], prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|k| {
            troupe_runtime::merge::owner(
                &troupe_runtime::actor::route::owner_key(actor_type, k),
                nodes.iter().copied(),
            ) == Some(node)
        })
        .unwrap_or_default()
}

/// Waits until a cluster of `n` nodes (started with the default core size, 3) has its
/// core group: the smallest node forms it once its view has settled (half a second), so
/// a test that kills a node right after the nodes are up would otherwise race it (a
/// 3-node cluster that loses a node before it has a group can never form one).
async fn core_group_of(client: &Client, n: usize) {
    if n < 3 {
        return;
    }
    // Once formed, the group names the cluster, and the node the client reaches says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let named = client
            .nodes()
            .await
            .ok()
            .and_then(|nodes| nodes.into_iter().next())
            .is_some_and(|me| me.cluster.is_some());
        if named {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the core group did not form (no cluster id after 20 s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 20 s) until this process sees `n` voters of the core group; panics if
/// it does not.
pub async fn core_formed(n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let group = troupe_runtime::protocol::CORE_VOTERS_GROUP.to_string();
    while ractor::pg::get_members(&group).len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the core group did not form: {} voters seen",
            ractor::pg::get_members(&group).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A benchmark setting from the environment variable `name`, or `default` when it is
/// unset or does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Connects with `opts`, retrying for up to 20 s while nodes start (2 s per attempt).
pub async fn connect_retrying(opts: ClientOptions) -> Client {
    connect_within(opts, Duration::from_secs(20)).await
}

/// Connects with `opts`, retrying for up to `limit` while nodes start (2 s per attempt).
pub async fn connect_within(mut opts: ClientOptions, limit: Duration) -> Client {
    opts.connect_timeout = Duration::from_secs(2);
    let start = std::time::Instant::now();
    loop {
        match Client::connect(opts.clone()).await {
            Ok(c) => return c,
            Err(e) if start.elapsed() > limit => panic!("cannot connect within {limit:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Runs a command to completion, killing it (by PID) if it outlives `timeout`. Output is
/// read while the command runs, so a large output cannot block it on a full pipe.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn command");
    let pid = child.id() as libc::pid_t;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if start.elapsed() > timeout {
                    // SAFETY: kill(2) on the PID of a child we have not reaped yet.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let out = child.wait_with_output().expect("collect output");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watchdog.join();
    out
}

/// Text of a command's stdout and stderr.
pub fn texts(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn rand_tag() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish() & 0xffff_ffff
}

/// CPU time (user and system, microseconds) process `pid` has used, from
/// `/proc/PID/stat`; 0 if it cannot be read.
pub fn cpu_us(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (in parentheses, which may hold spaces), from the
    // state on: utime and stime are the 12th and 13th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    match (field(11), field(12)) {
        (Some(u), Some(s)) => (u + s) * 1_000_000 / hz,
        _ => 0,
    }
}
