//! The merger's messages (one per node, in `troupe.merger.NODE`): the owner of request keys,
//! which merges identical requests in flight and caches the results of pure tasks.

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use super::groups::{first_member, merger_group};
use super::job_manager::StepResult;
use super::worker_pool::StepRequest;
use crate::wire::Wire;

/// Messages of a node's merger (in `troupe.merger.NODE`): the owner of request keys.
#[derive(RactorClusterMessage)]
pub enum MergerMessage {
    /// A request for a mergeable or pure task whose key this node owns.
    Request(Wire<StepRequest>),
    /// An execution this merger started has ended (from a worker pool).
    Executed(Wire<Executed>),
    /// Drop a key from the cache; answers whether it was there.
    #[rpc]
    Invalidate(String, RpcReplyPort<bool>),
    /// Membership lost a node: executions there run again (local).
    NodeDown(String),
}

/// The end of an execution run for a merger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Executed {
    /// The request key.
    pub key: String,
    /// The result as the leading request got it.
    pub result: StepResult,
    /// True if the execution was cancelled rather than finished.
    pub cancelled: bool,
}

/// Cache and merge counters of a node's merger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests of pure tasks the cache could not answer.
    pub misses: u64,
    /// Entries dropped for size or age.
    pub evictions: u64,
    /// Requests that joined one in flight.
    pub merged: u64,
    /// Entries held now.
    pub entries: u64,
}

/// Tells `merger`, for an execution of request key `key` that ran for it, that the
/// execution ended with `result` (or was `cancelled`: the next request that joined it
/// leads a new one). Nothing for an attempt that is no merger's execution.
pub fn merger_execution_ended(
    merger: Option<&str>,
    key: Option<&str>,
    result: &StepResult,
    cancelled: bool,
) {
    if let (Some(m), Some(k)) = (merger, key) {
        if let Some(merger) = first_member::<MergerMessage>(&merger_group(m)) {
            let e = Executed {
                key: k.to_string(),
                result: result.clone(),
                cancelled,
            };
            let _ = merger.cast(MergerMessage::Executed(Wire::new(e)));
        }
    }
}
