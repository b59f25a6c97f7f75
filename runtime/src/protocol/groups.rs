//! The names of the process groups and registered actors that nodes and clients find
//! each other by (see the table in [`crate::protocol`]), and how to read a node's name back
//! out of one.
//!
//! Peers are found through process groups, never through a stored reference: an actor
//! restarted by its supervisor is found again at once.

/// Group of every node's membership actor.
pub const MEMBERSHIP_GROUP: &str = "troupe.membership";

/// The group holding the core member of `node` (every node has one; only core nodes vote).
pub fn core_group(node: &str) -> String {
    format!("troupe.core.{node}")
}

/// The core members that vote in the core group's Raft.
pub const CORE_VOTERS_GROUP: &str = "troupe.core_voters";

/// The group holding the job manager of `node`.
pub fn job_manager_group(node: &str) -> String {
    format!("troupe.job_manager.{node}")
}

/// The member of `group` to send to, as a typed reference: this process's own if it has
/// one, else the one seen on the newest connection. A per-node group has one member per
/// connection to that node, and for a moment two: a closed connection's actors stay in
/// their groups until ractor_cluster stops them, and what is sent to them is lost, while
/// the connection that replaced it is always newer (ractor_cluster numbers connections
/// in order).
pub fn first_member<M: ractor::Message>(group: &str) -> Option<ractor::ActorRef<M>> {
    ractor::pg::get_members(&group.to_string())
        .into_iter()
        .max_by_key(|c| match c.get_id() {
            ractor::ActorId::Local(_) => (1, 0, 0),
            ractor::ActorId::Remote { node_id, pid } => (0, node_id, pid),
        })
        .map(Into::into)
}

/// The group of worker pools that serve `task`.
pub fn task_group(task: &str) -> String {
    format!("troupe.task.{task}")
}

/// The task name of a worker group, if `group` is one.
pub fn task_of_group(group: &str) -> Option<&str> {
    group.strip_prefix("troupe.task.")
}

/// The group holding the worker pool of `node` (for replies to calls, and cancels).
pub fn worker_pool_group(node: &str) -> String {
    format!("troupe.worker_pool.{node}")
}

/// The group of a client's watcher.
pub fn client_group(client: &str) -> String {
    format!("troupe.client.{client}")
}

/// The group holding the merger of `node`.
pub fn merger_group(node: &str) -> String {
    format!("troupe.merger.{node}")
}

/// Group of every node's event hub.
pub const EVENT_HUBS_GROUP: &str = "troupe.event_hubs";

/// The group holding the event hub of `node`.
pub fn event_hub_group(node: &str) -> String {
    format!("troupe.event_hub.{node}")
}

/// The node of an event hub's group, if `group` is one.
pub fn node_of_event_hub_group(group: &str) -> Option<&str> {
    group.strip_prefix("troupe.event_hub.")
}

/// The registered name of `node`'s membership actor (as a member of
/// [`MEMBERSHIP_GROUP`] seen from another process, too).
pub fn membership_name(node: &str) -> String {
    format!("{MEMBERSHIP_GROUP}@{node}")
}

/// The registered name of `node`'s actor host (also how a member of an actor type's
/// group names its node: ractor_cluster's remote shims carry their actor's name).
pub fn actor_host_name(node: &str) -> String {
    format!("troupe.actor_host@{node}")
}

/// The node of an actor host's registered name.
pub fn node_of_actor_host(name: &str) -> Option<&str> {
    name.strip_prefix("troupe.actor_host@")
}

/// The group of the actor hosts that serve actor type `actor_type`.
pub fn actor_type_group(actor_type: &str) -> String {
    format!("troupe.actor.{actor_type}")
}

/// Group of every node's actor host.
pub const ACTOR_HOSTS_GROUP: &str = "troupe.actor_hosts";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_hub_groups_name_their_node() {
        assert_eq!(
            node_of_event_hub_group(&event_hub_group("n-1")),
            Some("n-1")
        );
        assert_eq!(node_of_event_hub_group(EVENT_HUBS_GROUP), None);
    }
}
