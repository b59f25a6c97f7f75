//! Gearman from the outside: a small raw-protocol client and worker (blocking, std
//! sockets) for what the `gearman` command cannot do (`GET_STATUS`, exact packets,
//! garbage), and helpers that run Debian's `gearman` and `gearadmin` commands
//! (package `gearman-tools`, installed by `.ci/run`) with a time limit.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use troupe_runtime::gearman::packet::{request, PacketType};

/// A response packet: its type and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Its type.
    pub kind: PacketType,
    /// Its arguments.
    pub args: Vec<Vec<u8>>,
}

impl Packet {
    /// Argument `i` as text.
    pub fn text(&self, i: usize) -> String {
        String::from_utf8_lossy(self.args.get(i).map(Vec::as_slice).unwrap_or(b"")).into_owned()
    }
}

/// One connection to a Gearman server, speaking the binary protocol.
pub struct Conn {
    stream: TcpStream,
    /// `NO_JOB` answers this worker connection got to `GRAB_JOB` (each costs the server
    /// two more packets: `NOOP` once a job comes, and `JOB_ASSIGN` on the next grab).
    pub no_jobs: u64,
}

impl Conn {
    /// Connects to `addr` (HOST:PORT), retrying for up to 10 s while the server starts.
    pub fn connect(addr: &str) -> io::Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect(addr) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(Self { stream, no_jobs: 0 });
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends a request packet.
    pub fn send(&mut self, kind: PacketType, args: &[&[u8]]) -> io::Result<()> {
        self.stream.write_all(&request(kind, args))
    }

    /// Sends raw bytes (garbage, truncated packets).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response packet, waiting up to `timeout`. `Ok(None)`: the server closed.
    pub fn read(&mut self, timeout: Duration) -> io::Result<Option<Packet>> {
        self.stream.set_read_timeout(Some(timeout))?;
        let mut head = [0u8; 12];
        match self.stream.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        if &head[..4] != b"\0RES" {
            return Err(io::Error::other(format!("bad magic {:?}", &head[..4])));
        }
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let size = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let mut body = vec![0u8; size];
        self.stream.read_exact(&mut body)?;
        let kind = PacketType::from_code(code)
            .ok_or_else(|| io::Error::other(format!("unknown packet type {code}")))?;
        let n = kind.arg_count();
        let mut args = Vec::with_capacity(n);
        let mut rest = &body[..];
        for i in 0..n {
            if i + 1 == n {
                args.push(rest.to_vec());
            } else {
                let at = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                args.push(rest[..at].to_vec());
                rest = rest.get(at + 1..).unwrap_or(&[]);
            }
        }
        Ok(Some(Packet { kind, args }))
    }

    /// Reads until a packet of one of `kinds` arrives (others are skipped).
    pub fn expect(&mut self, kinds: &[PacketType], timeout: Duration) -> io::Result<Packet> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no {kinds:?}"),
                ));
            }
            match self.read(left)? {
                Some(p) if kinds.contains(&p.kind) => return Ok(p),
                Some(_) => continue,
                None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
            }
        }
    }

    /// Submits a job of `kind` (one of the `SUBMIT_JOB*` types); returns its handle.
    pub fn submit(
        &mut self,
        kind: PacketType,
        function: &str,
        unique: &str,
        data: &[u8],
    ) -> io::Result<String> {
        self.send(kind, &[function.as_bytes(), unique.as_bytes(), data])?;
        let p = self.expect(
            &[PacketType::JOB_CREATED, PacketType::ERROR],
            Duration::from_secs(20),
        )?;
        match p.kind {
            PacketType::JOB_CREATED => Ok(p.text(0)),
            _ => Err(io::Error::other(format!("{}: {}", p.text(0), p.text(1)))),
        }
    }

    /// Waits for the end of a foreground job: `WORK_COMPLETE`, `WORK_FAIL` or
    /// `WORK_EXCEPTION`.
    pub fn wait_end(&mut self, timeout: Duration) -> io::Result<Packet> {
        self.expect(
            &[
                PacketType::WORK_COMPLETE,
                PacketType::WORK_FAIL,
                PacketType::WORK_EXCEPTION,
            ],
            timeout,
        )
    }

    /// `SUBMIT_JOB` and wait for its end.
    pub fn call(&mut self, function: &str, data: &[u8]) -> io::Result<Packet> {
        self.submit(PacketType::SUBMIT_JOB, function, "", data)?;
        self.wait_end(Duration::from_secs(30))
    }

    /// `GET_STATUS`: (known, running, numerator, denominator).
    pub fn status(&mut self, handle: &str) -> io::Result<(bool, bool, u64, u64)> {
        self.send(PacketType::GET_STATUS, &[handle.as_bytes()])?;
        let p = self.expect(&[PacketType::STATUS_RES], Duration::from_secs(10))?;
        Ok((
            p.text(1) == "1",
            p.text(2) == "1",
            p.text(3).parse().unwrap_or(0),
            p.text(4).parse().unwrap_or(0),
        ))
    }

    /// Worker: `CAN_DO`.
    pub fn can_do(&mut self, function: &str) -> io::Result<()> {
        self.send(PacketType::CAN_DO, &[function.as_bytes()])
    }

    /// Worker: a job if there is one, after sleeping (`PRE_SLEEP`, wait for `NOOP`) up to
    /// `timeout` for one to come: (handle, function, data).
    pub fn grab(&mut self, timeout: Duration) -> io::Result<Option<(String, String, Vec<u8>)>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.send(PacketType::GRAB_JOB, &[])?;
            let p = self.expect(
                &[PacketType::JOB_ASSIGN, PacketType::NO_JOB],
                Duration::from_secs(10),
            )?;
            if p.kind == PacketType::JOB_ASSIGN {
                return Ok(Some((p.text(0), p.text(1), p.args[2].clone())));
            }
            self.no_jobs += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.send(PacketType::PRE_SLEEP, &[])?;
            match self.expect(&[PacketType::NOOP], left) {
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Worker: `WORK_COMPLETE`.
    pub fn complete(&mut self, handle: &str, data: &[u8]) -> io::Result<()> {
        self.send(PacketType::WORK_COMPLETE, &[handle.as_bytes(), data])
    }
}

/// True if Debian's `gearman` and `gearadmin` commands are installed.
pub fn tools_installed() -> bool {
    ["gearman", "gearadmin"].iter().all(|t| {
        Command::new(t)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

fn host_port(addr: &str) -> (&str, &str) {
    addr.rsplit_once(':').unwrap_or((addr, "4730"))
}

/// Runs the `gearman` command against `addr` with `args`, killed after `timeout`.
pub fn gearman(addr: &str, args: &[&str], timeout: Duration) -> Output {
    let (h, p) = host_port(addr);
    let mut cmd = Command::new("gearman");
    cmd.args(["-h", h, "-p", p]).args(args).stdin(Stdio::null());
    crate::run_with_timeout(cmd, timeout)
}

/// Runs `gearadmin` against `addr` with `args`.
pub fn gearadmin(addr: &str, args: &[&str]) -> Output {
    let (h, p) = host_port(addr);
    let mut cmd = Command::new("gearadmin");
    cmd.args(["-h", h, "-p", p]).args(args).stdin(Stdio::null());
    crate::run_with_timeout(cmd, Duration::from_secs(10))
}

/// `gearadmin --status` as (function, total, running, workers) rows.
pub fn admin_status(addr: &str) -> Vec<(String, u64, u64, u64)> {
    let out = gearadmin(addr, &["--status"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .take_while(|l| *l != ".")
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4).then(|| {
                (
                    f[0].to_string(),
                    f[1].parse().unwrap_or(0),
                    f[2].parse().unwrap_or(0),
                    f[3].parse().unwrap_or(0),
                )
            })
        })
        .collect()
}

/// An external worker process (`gearman -w ...`), in its own process group so that the
/// commands it runs per job end with it; killed (the whole group, by its id) on drop.
pub struct ExternalWorker {
    child: Option<Child>,
}

impl ExternalWorker {
    /// Starts `gearman -w -h HOST -p PORT -f FUNCTION -- COMMAND...` with its output in
    /// `log`.
    pub fn start(addr: &str, function: &str, command: &[&str], log: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        let (h, p) = host_port(addr);
        let out = std::fs::File::create(log).expect("worker log");
        let err = out.try_clone().expect("worker log");
        let child = Command::new("gearman")
            .args(["-w", "-h", h, "-p", p, "-f", function, "--"])
            .args(command)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .expect("start gearman -w (apt-get install gearman-tools)");
        Self { child: Some(child) }
    }

    /// Kills the worker and what it runs at once (SIGKILL to its process group).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the process group this worker leads; we started it and
            // have not reaped it.
            unsafe {
                libc::kill(-(c.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for ExternalWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Debian's gearmand (package `gearman-job-server`), for comparisons in the same run;
/// killed (by its PID) when dropped.
pub struct Gearmand {
    child: std::process::Child,
    /// Its `127.0.0.1:PORT`.
    pub addr: String,
}

impl Gearmand {
    /// Starts `/usr/sbin/gearmand` on a free loopback port, its pid file in `dir`.
    pub fn start(dir: &std::path::Path) -> Self {
        let port = crate::free_port().expect("free port");
        let child = std::process::Command::new("/usr/sbin/gearmand")
            .args([
                "-L",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--log-file",
                "none",
            ])
            .arg("-P")
            .arg(dir.join("gearmand.pid"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start /usr/sbin/gearmand (apt-get install gearman-job-server)");
        let addr = format!("127.0.0.1:{port}");
        // Listening within 5 s, or the caller's first connect says so.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(&addr).is_err() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, addr }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gearmand {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
