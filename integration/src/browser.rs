//! A real headless Chromium, driven over the DevTools protocol, for dashboard tests.
//!
//! Written by hand (about a hundred lines) because the maintained Rust drivers either
//! download the protocol definition or a browser from the internet at build time, which
//! this machine's closed network refuses. Chromium's `--remote-debugging-pipe` speaks
//! NUL-terminated JSON on file descriptors 3 (commands in) and 4 (answers out): no
//! websocket needed.
//!
//! Needs Debian's `chromium` (`/usr/bin/chromium`, or the path in `CHROMIUM`); `.ci/run`
//! installs it. The browser process is killed when the [`Browser`] is dropped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A headless Chromium with one page open.
pub struct Browser {
    child: Child,
    to_browser: std::io::PipeWriter,
    from_browser: Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    profile: PathBuf,
}

/// Where Chromium is: `$CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium_path() -> Result<PathBuf, String> {
    let p = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "this test needs a headless Chromium at {} (Debian: apt-get install chromium; .ci/run installs it)",
            p.display()
        ))
    }
}

impl Browser {
    /// Starts Chromium headless with a fresh profile in `dir`, window `width` x `height`.
    pub fn launch(dir: &Path, width: u32, height: u32) -> Result<Self, String> {
        let exe = chromium_path()?;
        let profile = dir.join(format!("chromium-profile-{}", std::process::id()));
        let (cmd_read, cmd_write) = std::io::pipe().map_err(|e| e.to_string())?;
        let (out_read, out_write) = std::io::pipe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        // The flags that keep Chromium from reaching for the internet at start (this
        // machine refuses such connections, which slows it down), as root without sandbox.
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
            &format!("--window-size={width},{height}"),
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so that Drop ends the renderer processes too.
        .process_group(0);
        use std::os::fd::AsRawFd;
        let (r, w) = (cmd_read.as_raw_fd(), out_write.as_raw_fd());
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between fork and exec.
        // The pipes are first copied above 10, so that moving them to 3 and 4 cannot
        // clobber one with the other, and dup2 always clears close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                let r2 = libc::fcntl(r, libc::F_DUPFD, 10);
                let w2 = libc::fcntl(w, libc::F_DUPFD, 10);
                if r2 < 0 || w2 < 0 || libc::dup2(r2, 3) < 0 || libc::dup2(w2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(r2);
                libc::close(w2);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start chromium: {e}"))?;
        drop(cmd_read);
        drop(out_write);
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(out_read);
            loop {
                let mut buf = Vec::new();
                match reader.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        buf.pop();
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Self {
            child,
            to_browser: cmd_write,
            from_browser: rx,
            next_id: 0,
            session: None,
            profile,
        })
    }

    /// Sends a DevTools command (to the open page, once there is one) and waits for its
    /// answer.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .map_err(|e| format!("chromium closed its pipe: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from_browser
                .recv_timeout(left)
                .map_err(|_| format!("no answer from chromium to {method}"))?;
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    return Err(format!("{method}: {e}"));
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// Opens `url` in a new page and attaches to it.
    pub fn open(&mut self, url: &str) -> Result<(), String> {
        let t = self.call("Target.createTarget", json!({"url": url}))?;
        let target = t["targetId"].clone();
        let a = self.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )?;
        self.session = a["sessionId"].as_str().map(str::to_string);
        // The new target starts on about:blank (already "complete") and navigates after;
        // wait for the real page so that nothing runs in the blank one.
        self.wait_for(
            "location.href !== 'about:blank' && document.readyState === 'complete'",
            Duration::from_secs(20),
        )?;
        Ok(())
    }

    /// Evaluates a JavaScript expression in the page; answers its value.
    pub fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("{expr}: {e}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expr` until it is truthy (not false, null, 0 or ""), up to `timeout`.
    pub fn wait_for(&mut self, expr: &str, timeout: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expr).unwrap_or(Value::Null);
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out after {timeout:?} waiting for `{expr}` (last value {v})"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG screenshot of the page.
    pub fn screenshot(&mut self, path: &Path) -> Result<(), String> {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = r["data"].as_str().ok_or("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| e.to_string())?;
        std::fs::write(path, png).map_err(|e| e.to_string())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group we made at launch: the browser and the processes it started.
        // SAFETY: kill(2) on our own child's process group id.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
