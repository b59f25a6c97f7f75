//! A private network for partition tests: one network namespace per node, each joined by
//! a veth pair to a bridge in the test's own namespace, on a /24 of 10.213.0.0/16 chosen
//! from the test's PID. Cutting a node sets its bridge port down: its packets are
//! dropped silently in both directions and its TCP connections stay open, as in a real
//! partition or a frozen host (nothing is reset, nothing errors). Everything is removed on
//! drop. Needs root (CI runs as root) and iproute2's `ip`.

use std::process::Command;

/// The namespaces, veth pairs and bridge of one test.
pub struct Netns {
    tag: String,
    subnet: u32,
    n: usize,
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Makes `n` namespaces on a bridge. Fails with a message if not root or `ip` is
    /// missing (tests that need it say so and fail; they are never skipped).
    pub fn new(n: usize) -> Result<Self, String> {
        let pid = std::process::id();
        let subnet = pid % 250 + 1;
        let net = Self {
            tag: format!("{}", pid % 10_000_000),
            subnet,
            n,
        };
        net.remove();
        let br = net.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.213.{subnet}.254/24"),
            "dev",
            &br,
        ])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 0..n {
            let (ns, host, inner) = (net.ns(i), net.host_end(i), net.inner_end(i));
            ip(&["netns", "add", &ns])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &host, "master", &br])?;
            ip(&["link", "set", &host, "up"])?;
            ip(&[
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{}/24", net.ip(i)),
                "dev",
                &inner,
            ])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", &inner, "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("trb{}", self.tag)
    }

    fn host_end(&self, i: usize) -> String {
        format!("trh{}x{i}", self.tag)
    }

    fn inner_end(&self, i: usize) -> String {
        format!("trn{}x{i}", self.tag)
    }

    /// The namespace of node `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("troupe-{}-{i}", self.tag)
    }

    /// The IP address of node `i`.
    pub fn ip(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.subnet, i + 1)
    }

    /// Drops all of node `i`'s traffic, silently, until [`Netns::heal`].
    pub fn cut(&self, i: usize) -> Result<(), String> {
        ip(&["link", "set", &self.host_end(i), "down"])
    }

    /// Lets node `i`'s traffic through again.
    pub fn heal(&self, i: usize) -> Result<(), String> {
        ip(&["link", "set", &self.host_end(i), "up"])
    }

    /// Removes what this test made (also what a killed earlier run with the same tag left).
    fn remove(&self) {
        for i in 0..self.n {
            // Deleting a namespace deletes its veth end, and so the pair.
            let _ = ip(&["netns", "del", &self.ns(i)]);
            let _ = ip(&["link", "del", &self.host_end(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}
