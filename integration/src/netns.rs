//! A private network for partition tests: one network namespace per node, each joined by
//! a veth pair to a bridge in the test's own namespace, on a /24 of 10.213.0.0/16 chosen
//! from the test's PID. Cutting a node sets its bridge port down: its packets are
//! dropped silently in both directions and its TCP connections stay open, as in a real
//! partition or a frozen host (nothing is reset, nothing errors). Finer cuts (a
//! majority/minority split, a one-way cut) drop a peer's packets on arrival with a
//! policy rule `from PEER blackhole` in the receiver's namespace; each namespace's `local`
//! lookup rule is moved behind those rules (priority 1000), else it would deliver the
//! packet first. Everything is removed on drop. Needs root (CI runs as root) and
//! iproute2's `ip`.

use std::process::Command;

/// The namespaces, veth pairs and bridge of one test.
pub struct Netns {
    tag: String,
    subnet: u32,
    n: usize,
}

/// Runs `ip ARGS`, failing with its stderr.
/// Makes room in the kernel's ARP table for `n` namespaces that all talk to each other.
/// The table is one for every namespace of the machine, and its default hard limit
/// (`gc_thresh3`, 1,024 entries) is less than the n*(n-1) entries of a mesh of 33 nodes
/// or more: past it the kernel drops new neighbours ("neighbor table overflow"), and
/// handshakes to some nodes never complete. The limits are only raised, never lowered
/// (other tests may be running), and they are machine-wide sysctls, as root has them.
fn room_for_neighbours(n: usize) -> Result<(), String> {
    let wanted = 2 * n * n;
    for (name, share) in [("gc_thresh3", 1), ("gc_thresh2", 2), ("gc_thresh1", 4)] {
        let path = format!("/proc/sys/net/ipv4/neigh/default/{name}");
        let now: usize = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {path}: {e}"))?
            .trim()
            .parse()
            .map_err(|e| format!("{path}: {e}"))?;
        let want = wanted / share;
        if now < want {
            std::fs::write(&path, want.to_string())
                .map_err(|e| format!("cannot raise {path} to {want} (needs root): {e}"))?;
        }
    }
    Ok(())
}

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
        room_for_neighbours(n)?;
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
            // Drop rules (priority 100) must come before local delivery.
            ip(&[
                "-n", &ns, "rule", "add", "priority", "1000", "lookup", "local",
            ])?;
            ip(&["-n", &ns, "rule", "del", "priority", "0"])?;
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

    /// Drops, silently, every packet node `at` receives from node `from` (one direction
    /// only), until [`Netns::heal_all`].
    pub fn drop_from(&self, at: usize, from: usize) -> Result<(), String> {
        ip(&[
            "-n",
            &self.ns(at),
            "rule",
            "add",
            "from",
            &self.ip(from),
            "blackhole",
            "priority",
            "100",
        ])
    }

    /// Splits the nodes in two: the nodes in `side` and the others see each other on
    /// their own side only.
    pub fn split(&self, side: &[usize]) -> Result<(), String> {
        for a in side {
            for b in (0..self.n).filter(|b| !side.contains(b)) {
                self.drop_from(*a, b)?;
                self.drop_from(b, *a)?;
            }
        }
        Ok(())
    }

    /// A one-way cut: node `to` no longer receives what node `from` sends; `from` still
    /// hears `to`.
    pub fn one_way(&self, from: usize, to: usize) -> Result<(), String> {
        self.drop_from(to, from)
    }

    /// Undoes every [`Netns::cut`], [`Netns::split`] and [`Netns::one_way`].
    pub fn heal_all(&self) -> Result<(), String> {
        for at in 0..self.n {
            self.heal(at)?;
            for from in 0..self.n {
                // A rule is added at most once per pair by a split; delete until none.
                while ip(&[
                    "-n",
                    &self.ns(at),
                    "rule",
                    "del",
                    "from",
                    &self.ip(from),
                    "blackhole",
                    "priority",
                    "100",
                ])
                .is_ok()
                {}
            }
        }
        Ok(())
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
