//! Local node processes, for the demo and for tests: started from a node binary, ended by
//! PID when dropped (SIGTERM, then SIGKILL after a grace period), so that nothing a demo or
//! a test starts outlives it, even when it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago, chosen below the kernel's ephemeral
/// range: a port from that range (what binding port 0 gives) can be taken, between this
/// check and the node's own bind, by any outgoing connection or `:0` listener on the
/// machine (a test opening a thousand connections takes a thousand of them).
pub fn free_port() -> std::io::Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if low > 12_000 {
        use std::sync::atomic::{AtomicU64, Ordering};
        // Each process walks the range from its own random start (parallel tests rarely
        // meet), one step per call (a process never gets the same port twice).
        static NEXT: AtomicU64 = AtomicU64::new(u64::MAX);
        let span = u64::from(low - 10_000);
        let seed = (u64::from(std::process::id()) * 7919)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::from(d.subsec_nanos()))
                .unwrap_or(0);
        let _ = NEXT.compare_exchange(u64::MAX, seed % span, Ordering::Relaxed, Ordering::Relaxed);
        for _ in 0..span {
            let port = 10_000 + (NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How to start one node process.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// `127.0.0.1:PORT` it listens on.
    pub addr: String,
    /// Seeds.
    pub seeds: Vec<String>,
    /// Cookie.
    pub cookie: String,
    /// Worker slots.
    pub slots: usize,
    /// More arguments for `start`.
    pub extra: Vec<String>,
    /// Environment variables for the process (e.g. `TROUPE_TASK_WAIT_MS`).
    pub env: Vec<(String, String)>,
    /// A network namespace to run it in (`ip netns exec NS ...`, which execs the node,
    /// so the PID is still the node's); needs root.
    pub netns: Option<String>,
}

/// A running node process, ended when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    /// Its name.
    pub name: String,
    /// Its address.
    pub addr: String,
    /// Its log file (stderr).
    pub log: PathBuf,
    child: Option<Child>,
    grace: Duration,
}

impl NodeProcess {
    /// Starts `exe start ...` for `spec`, with stderr to `log`.
    pub fn spawn(exe: &Path, spec: &NodeSpec, log: PathBuf) -> std::io::Result<Self> {
        let stderr = std::fs::File::create(&log)?;
        let mut cmd = match &spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.arg("start")
            .args([
                "--name",
                &spec.name,
                "--listen",
                &spec.addr,
                "--cookie",
                &spec.cookie,
            ])
            .args(["--slots", &spec.slots.to_string()])
            .args(&spec.extra)
            .envs(spec.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if !spec.seeds.is_empty() {
            cmd.args(["--seeds", &spec.seeds.join(",")]);
        }
        // Kill on drop covers every way out but one: a process that dies without
        // unwinding (an abort, a double panic, SIGKILL). The kernel then ends the node too:
        // it gets SIGKILL when the thread that started it exits.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Self {
            name: spec.name.clone(),
            addr: spec.addr.clone(),
            log,
            child: Some(child),
            grace: Duration::from_secs(3),
        })
    }

    /// Sets how long a drop waits after SIGTERM before SIGKILL.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends a signal to the process, by its PID.
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on a PID we started and have not reaped yet.
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
        }
    }

    /// SIGKILL at once, and reap.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = c.kill();
        c.wait().ok()
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(st)) = self.child.as_mut()?.try_wait() {
            self.child = None;
            return Some(st);
        }
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(st)) = self.child.as_mut()?.try_wait() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill()
    }

    /// Waits for the process to exit by itself, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.as_mut()?.try_wait() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The log written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let grace = self.grace;
        self.stop(grace);
    }
}
