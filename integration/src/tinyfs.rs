//! A tiny filesystem for disk-full tests: a tmpfs of a chosen size mounted on a fresh
//! folder, filled on demand, and unmounted (and the folder removed) when dropped, also
//! when a test panics. Needs root (CI runs as root) and `mount`/`umount`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs.
pub struct TinyFs {
    dir: PathBuf,
}

/// Runs `cmd ARGS`, failing with its stderr.
fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl TinyFs {
    /// Mounts a tmpfs of `mib` MiB on `dir` (created). Fails with a message if not root.
    pub fn mount(dir: &Path, mib: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.display().to_string();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs", &path],
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The mounted folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes file `name` until the filesystem is full; returns its path (delete it to
    /// free the space).
    pub fn fill(&self, name: &str) -> Result<PathBuf, String> {
        let path = self.dir.join(name);
        let mut f = std::fs::File::create(&path).map_err(|e| format!("{name}: {e}"))?;
        let chunk = vec![0x5a_u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => return Ok(path),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => return Ok(path),
                Err(e) => return Err(format!("filling {}: {e}", path.display())),
            }
        }
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let path = self.dir.display().to_string();
        // Lazy: a node process still holding a file must not keep the mount behind.
        let _ = run("umount", &["-l", &path]);
        let _ = std::fs::remove_dir(&self.dir);
    }
}
