//! Seeds given as DNS names, resolved when membership dials them.
//!
//! In a StatefulSet or on a container network, a seed is a peer's stable name
//! (`troupe-1.troupe:7340`), and that name may not resolve yet: the peer's pod is being
//! rescheduled, or started after this one. Resolving at start would make the node exit and
//! crash-loop; resolving once would keep a moved pod's old address. So a named seed is
//! looked up again each time it is to be dialled (at most once per retry period), every
//! address it resolves to is dialled, and a failed lookup is logged and retried.
//!
//! Lookups run on tokio's blocking pool (`lookup_host`), never in the membership actor;
//! their results land in a map the actor reads on its next tick.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use troupe_runtime::observe::Throttle;
use troupe_runtime::protocol::MembershipMessage;

/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a named seed resolved to last, and when it was asked.
#[derive(Default)]
struct Lookup {
    addrs: Vec<String>,
    asked: Option<Instant>,
}

/// The named seeds' lookups (shared with the lookup tasks).
#[derive(Default, Clone)]
pub(crate) struct SeedNames {
    lookups: Arc<Mutex<HashMap<String, Lookup>>>,
    /// Failed lookups while this node has joined nobody, logged at most once a second.
    log: Arc<Throttle>,
}

/// True if `seed` (`HOST:PORT`) names its host rather than giving its IP address.
pub(crate) fn is_name(seed: &str) -> bool {
    seed.parse::<SocketAddr>().is_err()
}

impl SeedNames {
    /// The addresses to dial for the named `seed`: what it resolved to last (none before
    /// its first lookup ends). Starts a new lookup when the last was asked `every` ago or
    /// more; `alone` says whether a failure is worth a warning (nobody joined yet).
    /// Addresses of this node itself (`listen`) are left out: a node's own name is often
    /// in its seed list.
    pub(crate) fn addresses(
        &self,
        seed: &str,
        every: Duration,
        listen: SocketAddr,
        alone: bool,
        membership: &ActorRef<MembershipMessage>,
    ) -> Vec<String> {
        let mut lookups = crate::locked(&self.lookups);
        let lookup = lookups.entry(seed.to_string()).or_default();
        if lookup.asked.is_none_or(|t| t.elapsed() >= every) {
            lookup.asked = Some(Instant::now());
            let (seed, this, membership) = (seed.to_string(), self.clone(), membership.clone());
            tokio::spawn(async move {
                let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(&seed))
                    .await
                    .map_err(|_| format!("no answer in {} s", LOOKUP_TIMEOUT.as_secs()))
                    .and_then(|r| r.map_err(|e| e.to_string()));
                match found {
                    Ok(addrs) => {
                        let addrs: Vec<String> = addrs
                            .filter(|a| !is_own(*a, listen))
                            .map(|a| a.to_string())
                            .collect();
                        let mut lookups = crate::locked(&this.lookups);
                        let lookup = lookups.entry(seed.clone()).or_default();
                        let new = lookup.addrs != addrs;
                        if new {
                            tracing::info!(seed = %seed, addresses = ?addrs, "seed resolved");
                            lookup.addrs = addrs;
                        }
                        drop(lookups);
                        if new {
                            // Dial now rather than at the next tick.
                            let _ = membership.cast(MembershipMessage::Tick);
                        }
                    }
                    Err(e) if alone => this.log.warn(
                        &format!("not joined yet: cannot resolve seed ({e}); retrying. Check the name in --seeds, or wait for its host to come up"),
                        &seed,
                    ),
                    Err(e) => tracing::debug!(seed = %seed, error = %e, "cannot resolve seed; will retry"),
                }
            });
        }
        lookup.addrs.clone()
    }
}

/// True if `addr` is this node's own listening address: its port, and an IP address of
/// this host (one it can bind).
fn is_own(addr: SocketAddr, listen: SocketAddr) -> bool {
    addr.port() == listen.port()
        && (listen.ip().is_unspecified() || listen.ip() == addr.ip())
        && std::net::UdpSocket::bind((addr.ip(), 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_told_from_addresses() {
        assert!(is_name("troupe-1.troupe:7340"));
        assert!(is_name("localhost:7340"));
        assert!(!is_name("10.1.2.3:7340"));
        assert!(!is_name("[::1]:7340"));
    }

    #[test]
    fn own_address_is_one_of_this_hosts_ips_on_the_listen_port() {
        let any: SocketAddr = "0.0.0.0:7340".parse().expect("address");
        let lo: SocketAddr = "127.0.0.1:7340".parse().expect("address");
        assert!(is_own(lo, any));
        assert!(is_own(lo, lo));
        assert!(!is_own("127.0.0.1:7341".parse().expect("address"), any));
        // 192.0.2.0/24 is TEST-NET-1: never an address of this host.
        assert!(!is_own("192.0.2.7:7340".parse().expect("address"), any));
        assert!(!is_own(lo, "127.0.0.2:7340".parse().expect("address")));
    }
}
