//! The Gearman admin reporter's messages (one per node serving `--gearman`, in
//! `troupe.gearman_admin`): what that node's Gearman front door holds, so that any node
//! answers gearadmin's `status`, `prioritystatus` and `workers` for the whole cluster, as
//! one gearmand would.

use std::collections::BTreeMap;

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::wire::Wire;

/// The group of every node's Gearman admin reporter.
pub const GEARMAN_ADMIN_GROUP: &str = "troupe.gearman_admin";

/// Messages of a node's Gearman admin reporter.
#[derive(RactorClusterMessage)]
pub enum GearmanAdminMessage {
    /// What this node's Gearman front door holds now.
    #[rpc]
    Report(RpcReplyPort<Wire<GearmanReport>>),
}

/// What one node's Gearman front door holds (or, merged, the cluster's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GearmanReport {
    /// Every function with a worker or waiting work, by name.
    pub functions: Vec<FunctionLine>,
    /// Every connection, client or worker.
    pub workers: Vec<WorkerLine>,
    /// Every job waiting for an external worker or held by one.
    #[serde(default)]
    pub jobs: Vec<JobLine>,
}

/// A line of `show jobs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLine {
    /// The job's handle (its Troupe job id).
    pub handle: String,
    /// Attempts before this one (gearmand's retries).
    pub retries: u32,
    /// Waiting for a worker (else a worker holds it).
    pub queued: bool,
}

/// A line of `status` (and `prioritystatus`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionLine {
    /// The function.
    pub function: String,
    /// Jobs queued or running.
    pub total: u64,
    /// Jobs running.
    pub running: u64,
    /// Workers that can do it.
    pub workers: u64,
    /// Jobs queued by priority: high, normal, low.
    pub queued: [u64; 3],
}

/// A line of `workers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerLine {
    /// The connection's number on its node.
    pub id: u64,
    /// The peer's IP address.
    pub ip: String,
    /// What `SET_CLIENT_ID` said, or `-`.
    pub client_id: String,
    /// Functions it can do.
    pub functions: Vec<String>,
}

impl GearmanReport {
    /// Several nodes' reports as one: each function's counts summed over the nodes (by
    /// name), every connection listed.
    pub fn merge(reports: impl IntoIterator<Item = GearmanReport>) -> GearmanReport {
        let mut functions: BTreeMap<String, FunctionLine> = BTreeMap::new();
        let mut workers = Vec::new();
        let mut jobs = Vec::new();
        for r in reports {
            jobs.extend(r.jobs);
            for f in r.functions {
                let sum = functions
                    .entry(f.function.clone())
                    .or_insert_with(|| FunctionLine {
                        function: f.function.clone(),
                        ..FunctionLine::default()
                    });
                // Saturating: the counts come from peers.
                sum.total = sum.total.saturating_add(f.total);
                sum.running = sum.running.saturating_add(f.running);
                sum.workers = sum.workers.saturating_add(f.workers);
                for (s, q) in sum.queued.iter_mut().zip(f.queued) {
                    *s = s.saturating_add(q);
                }
            }
            workers.extend(r.workers);
        }
        GearmanReport {
            functions: functions.into_values().collect(),
            workers,
            jobs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_reports_sum_each_function_and_list_every_worker() {
        let line = |f: &str, total, workers, queued| FunctionLine {
            function: f.into(),
            total,
            running: 0,
            workers,
            queued,
        };
        let w = |id| WorkerLine {
            id,
            ip: "127.0.0.1".into(),
            client_id: "-".into(),
            functions: vec!["rev".into()],
        };
        let a = GearmanReport {
            functions: vec![line("rev", 2, 1, [0, 2, 0]), line("up", 0, 1, [0; 3])],
            workers: vec![w(1)],
            jobs: vec![],
        };
        let b = GearmanReport {
            functions: vec![line("rev", 1, 2, [1, 0, 0])],
            workers: vec![w(7), w(8)],
            jobs: vec![],
        };
        let m = GearmanReport::merge([a, b]);
        assert_eq!(
            m.functions,
            vec![line("rev", 3, 3, [1, 2, 0]), line("up", 0, 1, [0; 3])]
        );
        assert_eq!(
            m.workers.iter().map(|w| w.id).collect::<Vec<_>>(),
            [1, 7, 8]
        );
    }
}
