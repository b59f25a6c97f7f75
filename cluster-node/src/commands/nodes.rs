//! `troupe-node nodes`: the cluster's nodes and their task groups.

use serde_json::{json, Value};
use troupe_runtime::protocol::NodeInfo;

use crate::cli::NodesArgs;
use crate::commands::{connect, fail};
use crate::exit;

/// One node as `nodes --json` and `GET /api/nodes` show it.
pub fn node_json(n: &NodeInfo) -> Value {
    json!({"name": n.name, "address": n.address, "state": n.state, "tasks": n.tasks,
           "slots": n.slots, "busy": n.busy, "queued": n.queued, "cache": n.cache})
}

/// Prints the node list, as a table or as `{"nodes": [...]}`.
pub async fn run(a: NodesArgs) -> u8 {
    let client = match connect(&a.cluster).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let nodes = match client.nodes().await {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    if a.json {
        let list: Vec<_> = nodes.iter().map(node_json).collect();
        println!("{}", json!({ "nodes": list }));
    } else {
        println!(
            "{:<12} {:<22} {:<8} {:>9}  tasks",
            "NODE", "ADDRESS", "STATE", "BUSY"
        );
        for n in &nodes {
            let state = n.state.as_str();
            println!(
                "{:<12} {:<22} {:<8} {:>9}  {}",
                n.name,
                n.address,
                state,
                format!("{}/{}", n.busy, n.slots),
                n.tasks.join(", ")
            );
        }
    }
    exit::OK
}
