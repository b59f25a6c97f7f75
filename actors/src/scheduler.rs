//! Scheduling of this node: which waiting attempt gets a worker slot (the lanes) and which
//! node takes an attempt of this node's jobs (placement).
//!
//! - [`lanes`]: the priority lanes of attempts waiting for a slot here.
//! - [`placement`]: the pull-based choice of a node, from this node's count of its own
//!   attempts on each peer and the peers' gossiped load.

pub mod lanes;
pub mod placement;
