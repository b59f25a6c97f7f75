//! Quorums over the hosts of an actor type: how many stores must hold a save before its
//! reply goes out, and how many a new activation must read (and fence) before it starts.
//!
//! With N the hosts of the type, a save is acknowledged once [`write_quorum`] of them hold
//! it, and a new activation starts once it has read [`read_quorum`] of them. The two always
//! meet (`read + write > N`), so a new activation sees every acknowledged save; and once it
//! has fenced its read quorum, the stores left are too few for the old activation's write
//! quorum, so that one acknowledges nothing more. This holds on whichever side of a
//! partition each of them is, with no clock.
//!
//! N must not shrink when nodes are cut off: a minority that counted only the hosts it
//! sees would call itself a majority. So N counts [`KnownHosts`]: every host of the type
//! this process has seen since it started (monotone), merged with the hosts named in the
//! saved states it read (each save names the hosts its writer counted), so a node that has
//! just restarted and sees few hosts yet learns the others from the states it reads. A host
//! that leaves for good is still counted until this process restarts: the price is
//! availability (with two of five hosts gone for good, every remaining host must answer),
//! never a lost update. We chose this over asking the core group for N because it costs no
//! Raft write when a host joins, and the core group is not reachable from every side.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// How many of `n` hosts of a type must hold a save (this node's store included) before it
/// is acknowledged: a majority, and never fewer than two, so that a save is never
/// acknowledged on one disk alone. With N = 1 nothing is acknowledged under a lease (a
/// persistent type needs two hosts, as before); with N = 2 both must hold it (a majority of
/// two is both).
pub(crate) fn write_quorum(n: usize) -> usize {
    (n / 2 + 1).max(2)
}

/// How many of `n` hosts' stores a new activation must read (its own included) before it
/// starts: a majority, which meets every [`write_quorum`]. With N <= 2 one store suffices,
/// as the write quorum is then every host: the survivor of two hosts takes over alone.
pub(crate) fn read_quorum(n: usize) -> usize {
    if n <= 2 {
        1
    } else {
        n / 2 + 1
    }
}

/// The hosts of each actor type this process has seen (monotone; see the module doc).
#[derive(Clone, Debug, Default)]
pub(crate) struct KnownHosts(Arc<Mutex<HashMap<String, BTreeSet<String>>>>);

impl KnownHosts {
    /// Adds `nodes` to the hosts of `actor_type`; returns every host known for it.
    pub(crate) fn learn<I, S>(&self, actor_type: &str, nodes: I) -> BTreeSet<String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut known = crate::locked(&self.0);
        let set = known.entry(actor_type.to_string()).or_default();
        set.extend(nodes.into_iter().map(Into::into));
        set.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any read quorum meets any write quorum, and a read quorum leaves too few stores
    /// for a write quorum of the activation it replaces.
    #[test]
    fn every_read_quorum_meets_every_write_quorum() {
        for n in 2..=9 {
            assert!(
                read_quorum(n) + write_quorum(n) > n,
                "N = {n}: read {} + write {}",
                read_quorum(n),
                write_quorum(n)
            );
            assert!(write_quorum(n) <= n, "N = {n}: a write quorum exists");
        }
        let table: Vec<(usize, usize)> =
            (1..=5).map(|n| (write_quorum(n), read_quorum(n))).collect();
        assert_eq!(table, vec![(2, 1), (2, 1), (2, 2), (3, 3), (3, 3)]);
    }

    /// Hosts once seen stay counted: a node cut off from most hosts does not think
    /// itself a majority.
    #[test]
    fn known_hosts_do_not_shrink_when_hosts_go_out_of_view() {
        let known = KnownHosts::default();
        known.learn("t", ["n1", "n2", "n3", "n4", "n5"]);
        let now = known.learn("t", ["n1", "n2"]);
        assert_eq!(now.len(), 5);
        assert_eq!(known.learn("other", ["n1"]).len(), 1);
    }
}
