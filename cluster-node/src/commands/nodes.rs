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
    let mut nodes = match client.nodes().await {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
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
                tasks_text(&n.tasks)
            );
        }
    }
    exit::OK
}

/// A node's tasks for the table: its own by name, the built-in ones (`troupe.*`, the
/// same on every node) folded into one mention.
fn tasks_text(tasks: &[String]) -> String {
    let builtin = tasks.iter().filter(|t| t.starts_with("troupe.")).count();
    let mut shown: Vec<String> = tasks
        .iter()
        .filter(|t| !t.starts_with("troupe."))
        .cloned()
        .collect();
    if builtin > 0 {
        shown.push(format!("{builtin} built-in (troupe.*)"));
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_tasks_are_folded_into_one_mention() {
        let tasks: Vec<String> = ["troupe.echo", "wordcount.map", "troupe.sleep"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(tasks_text(&tasks), "wordcount.map, 2 built-in (troupe.*)");
        assert_eq!(tasks_text(&[]), "");
    }
}
