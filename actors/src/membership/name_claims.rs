//! One process per node name: which authenticated session holds which name.
//!
//! A node's process goes by `NAME~INCARNATION` in ractor_cluster
//! (`troupe_runtime::cluster::member_name`), so a second process started under a name in
//! use is not taken by ractor_cluster for a reconnection of the first (which would drop
//! the first one's sessions and make every node see it leave and rejoin, over and over).
//! These claims decide instead: a session whose node name is this node's own, or is held
//! by another live session with another incarnation, is refused; the holder stays. A node
//! restarted after its old process died claims the name again once the old session has
//! closed (at once when the process died; after `failure.down_after_ms` of silence when
//! its host vanished).

use std::collections::HashMap;

use troupe_runtime::cluster::{member_of, node_name_of};

/// Why a session was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clash {
    /// The node name both claim.
    pub node: String,
    /// The refused process (`NAME~INCARNATION`).
    pub refused: String,
    /// Who holds the name: this node itself, or a peer's process (`NAME~INCARNATION`).
    pub holder: Holder,
}

/// Who holds a node name that a session claimed too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holder {
    /// This node.
    Us,
    /// A live peer (its process name).
    Peer(String),
}

impl std::fmt::Display for Clash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.holder {
            Holder::Us => write!(
                f,
                "another process ({}) uses this node's name {}: node names must be unique; start it under another --name",
                self.refused, self.node
            ),
            Holder::Peer(p) => write!(
                f,
                "duplicate node name {}: a live member ({p}) has it, refusing the second process ({}); start it under another --name (a restarted node is admitted once its old process is gone)",
                self.node, self.refused
            ),
        }
    }
}

/// The node names of this node's authenticated sessions (clients included: their names
/// carry no incarnation and never clash with a node's).
#[derive(Debug, Default)]
pub(crate) struct NameClaims {
    /// Session id -> the peer's process name (`NAME~INCARNATION`, or a client's name).
    held: HashMap<u64, String>,
}

impl NameClaims {
    /// Session `id` authenticated with peer name `peer` (`NAME~INC@host`); `me` is this
    /// node's process name. `Err` if the session must be refused (nothing is recorded).
    pub(crate) fn claim(&mut self, id: u64, peer: &str, me: &str) -> Result<(), Clash> {
        if let Some(clash) = self.clash(id, peer, me) {
            return Err(clash);
        }
        self.held.insert(id, member_of(peer).to_string());
        Ok(())
    }

    /// Whether session `id`, with peer name `peer`, clashes with a name held (without
    /// claiming it): also asked of a session that closed during its handshake, which a
    /// duplicate's second connection does while its first is being refused.
    pub(crate) fn clash(&self, id: u64, peer: &str, me: &str) -> Option<Clash> {
        let member = member_of(peer);
        let node = node_name_of(peer);
        let clash = |holder| Clash {
            node: node.to_string(),
            refused: member.to_string(),
            holder,
        };
        if node == node_name_of(me) && member != me {
            return Some(clash(Holder::Us));
        }
        self.held
            .iter()
            .find(|(i, m)| **i != id && node_name_of(m) == node && m.as_str() != member)
            .map(|(_, m)| clash(Holder::Peer(m.clone())))
    }

    /// Session `id` closed.
    pub(crate) fn release(&mut self, id: u64) {
        self.held.remove(&id);
    }
}

/// A new incarnation: differs between processes (and between starts of a node in one
/// process).
pub(crate) fn new_incarnation() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static STARTS: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        STARTS.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_process_under_a_live_name_is_refused_and_the_first_stays() {
        let mut c = NameClaims::default();
        assert_eq!(c.claim(1, "n2~a@127.0.0.1", "n1~x"), Ok(()));
        let e = c.claim(2, "n2~b@127.0.0.1", "n1~x").unwrap_err();
        assert_eq!(e.holder, Holder::Peer("n2~a".into()));
        assert!(e.to_string().contains("duplicate node name n2"), "{e}");
        // A second session of the same process (a duplicate connection) is no clash.
        assert_eq!(c.claim(3, "n2~a@127.0.0.1", "n1~x"), Ok(()));
        assert!(c.clash(9, "n2~b@127.0.0.1", "n1~x").is_some());
        assert!(c.clash(9, "n2~a@127.0.0.1", "n1~x").is_none());
        // Once the first process's sessions closed, a restarted one takes the name.
        c.release(1);
        assert!(
            c.claim(4, "n2~b@127.0.0.1", "n1~x").is_err(),
            "session 3 holds it"
        );
        c.release(3);
        assert_eq!(c.claim(4, "n2~b@127.0.0.1", "n1~x"), Ok(()));
    }

    #[test]
    fn a_process_under_this_nodes_own_name_is_refused() {
        let mut c = NameClaims::default();
        let e = c.claim(1, "n1~b@10.0.0.2", "n1~a").unwrap_err();
        assert_eq!(e.holder, Holder::Us);
        assert!(e.to_string().contains("this node's name n1"), "{e}");
        // Clients have no incarnation and their own names.
        assert_eq!(c.claim(2, "client-1@127.0.0.1", "n1~a"), Ok(()));
        assert_eq!(c.claim(3, "client-1@127.0.0.1", "n1~a"), Ok(()));
    }

    #[test]
    fn incarnations_differ() {
        assert_ne!(new_incarnation(), new_incarnation());
    }
}
