//! The words both sides of the crate boundary share: what runtime (task authors, clients,
//! the wire) and the system actors in `troupe-actors` both name.
//!
//! This module is a leaf: it imports nothing else of the crate, so that anything may use
//! it without an import cycle.

use serde::{Deserialize, Serialize};

/// The task that runs a job step which targets an actor (`actor` and `key` in a job
/// file): its input is `{"actor", "key", "message"}`. Every node serves it.
pub const ACTOR_STEP_TASK: &str = "troupe.actor";

/// Whether an attempt continues a job already under way (see the worker pool's lanes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// A later step, a fan-out child, a call or sub-job, a retry.
    Continuing,
    /// A first step of a job.
    #[default]
    New,
}

/// A node that holds something the core group hands out (a job, an actor's lease), and
/// the fencing epoch since which it holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The node.
    pub node: String,
    /// The fencing epoch: 0 for the node that accepted a job, else the Raft log index of
    /// the decision that handed it over.
    pub epoch: u64,
}
