//! Which process of each peer node this node last had a session with.
//!
//! A node killed and started again at once under its name can be back before the others
//! noticed it leave (its old connections half open behind a cut, or their close handled
//! after the new session). Its old process's attempts would then look "running" on a live
//! member for good. Each session carries its process name (`NAME~INCARNATION`), so a new
//! incarnation under a known name means the old process is gone: membership announces it
//! lost before the new one joins.

use std::collections::HashMap;

use troupe_runtime::cluster::{member_of, node_name_of};

/// The process (`NAME~INCARNATION`) last seen for each peer node name.
#[derive(Debug, Default)]
pub(crate) struct Incarnations {
    by_node: HashMap<String, String>,
}

impl Incarnations {
    /// A session authenticated with peer name `peer` (`NAME~INC@host`). Returns the
    /// process it replaces when the node was last seen as another process; `None` for the
    /// first session of a node, another session of the same process, or a client (no
    /// incarnation).
    pub(crate) fn seen(&mut self, peer: &str) -> Option<String> {
        let member = member_of(peer);
        let node = node_name_of(peer);
        if troupe_runtime::cluster::is_client(peer) {
            return None;
        }
        match self.by_node.insert(node.to_string(), member.to_string()) {
            Some(old) if old != member => Some(old),
            _ => None,
        }
    }

    /// False if `process` (`NAME~INCARNATION`) was replaced by a later process of its node.
    pub(crate) fn is_current(&self, process: &str) -> bool {
        self.by_node
            .get(node_name_of(process))
            .is_none_or(|p| p == member_of(process))
    }

    /// Drops nodes for which `keep` is false (nodes forgotten by membership).
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.by_node.retain(|n, _| keep(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_process_under_a_known_name_replaces_the_old_one() {
        let mut i = Incarnations::default();
        assert_eq!(i.seen("n2~a@127.0.0.1"), None, "first session");
        assert_eq!(i.seen("n2~a@127.0.0.1"), None, "same process again");
        assert_eq!(i.seen("n3~x@127.0.0.1"), None, "another node");
        assert_eq!(i.seen("n2~b@127.0.0.1"), Some("n2~a".into()));
        assert_eq!(i.seen("n2~b@127.0.0.1"), None, "the new process again");
        assert!(!i.is_current("n2~a"), "the old process was replaced");
        assert!(i.is_current("n2~b"));
        assert!(i.is_current("n4~z"), "a node never seen");
    }

    #[test]
    fn clients_and_forgotten_nodes_are_no_replacement() {
        let mut i = Incarnations::default();
        assert_eq!(i.seen("client-1@127.0.0.1"), None);
        assert_eq!(i.seen("client-1@127.0.0.1"), None);
        assert_eq!(i.seen("n2~a@127.0.0.1"), None);
        i.retain(|n| n != "n2");
        assert_eq!(i.seen("n2~b@127.0.0.1"), None, "n2 was forgotten");
    }
}
