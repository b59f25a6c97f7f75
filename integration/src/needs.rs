//! What some tests need beyond the Rust toolchain: root (network namespaces, a tmpfs),
//! a headless Chromium, Debian's Gearman tools, Python's `gear` library.
//!
//! On a developer's machine a test whose need is missing says so on stderr and passes
//! without running, so the README's test command works with the toolchain alone. CI
//! sets `TROUPE_TESTS_NEED_ALL=1` (`.ci/run`, which installs all of them): there a missing
//! need fails the test, so nothing is skipped in CI.

use std::process::{Command, Stdio};

/// The variable that makes every need a requirement (CI).
pub const NEED_ALL: &str = "TROUPE_TESTS_NEED_ALL";

/// Something a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Root and iproute2's `ip`: network namespaces, tmpfs mounts.
    Root,
    /// A headless Chromium (`/usr/bin/chromium` or `$CHROMIUM`).
    Chromium,
    /// Debian's `gearman` and `gearadmin` commands.
    GearmanTools,
    /// Python's `gear` Gearman library (PyPI), a real client and worker library.
    PythonGear,
    /// Perl's `Gearman::Client` and `Gearman::Worker` (Debian's `libgearman-client-perl`).
    PerlGearman,
    /// Debian's gearmand (`gearman-job-server`), to compare answers with.
    Gearmand,
}

impl Need {
    /// Whether this machine has it.
    pub fn present(self) -> bool {
        match self {
            Need::Root => {
                // SAFETY: geteuid has no preconditions.
                let root = unsafe { libc::geteuid() } == 0;
                root && runs("ip", "-V")
            }
            Need::Chromium => crate::browser::chromium_path().is_ok(),
            Need::GearmanTools => crate::gearman::tools_installed(),
            Need::PythonGear => Command::new("python3")
                .args(["-c", "import gear"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            Need::PerlGearman => Command::new("perl")
                .args(["-MGearman::Client", "-MGearman::Worker", "-e", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            Need::Gearmand => std::path::Path::new("/usr/sbin/gearmand").exists(),
        }
    }

    /// What to do to have it.
    pub fn how(self) -> &'static str {
        match self {
            Need::Root => "root and iproute2 (`ip`): run the tests as root",
            Need::Chromium => "a headless Chromium: apt-get install chromium (or set CHROMIUM)",
            Need::GearmanTools => "Debian's gearman tools: apt-get install gearman-tools",
            Need::PythonGear => "Python's gear library: pip install gear",
            Need::PerlGearman => "Perl's Gearman::Client: apt-get install libgearman-client-perl",
            Need::Gearmand => "Debian's gearmand: apt-get install gearman-job-server",
        }
    }
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// True if the test `test` can run: everything in `needs` is here. If not, it says on
/// stderr what is missing and the test should return; with [`NEED_ALL`] set it panics
/// instead.
pub fn has(test: &str, needs: &[Need]) -> bool {
    let missing: Vec<&str> = needs
        .iter()
        .filter(|n| !n.present())
        .map(|n| n.how())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let what = missing.join("; ");
    if std::env::var(NEED_ALL).is_ok_and(|v| v == "1") {
        panic!("{test} needs {what} ({NEED_ALL}=1: nothing is skipped here)");
    }
    eprintln!("SKIPPED {test}: it needs {what}; CI runs it ({NEED_ALL}=1)");
    false
}
