//! What `GET /healthz` and `GET /readyz` report: whether the node's actors run (a
//! liveness probe restarts a node that fails it), and whether it is ready for work:
//! joined to a peer if it has seeds, its core group known, not draining (a readiness
//! probe sends it no traffic until then).

use crate::{names, NodeContext};

/// The system actors without which the node does no work.
const VITAL: [&str; 5] = [
    names::MEMBERSHIP,
    names::JOB_MANAGER,
    names::DISPATCHER,
    names::WORKER_POOL,
    names::EVENT_HUB,
];

/// Why the node is not alive: a vital actor that is not running (between a crash and its
/// restart by the node's supervisor, or for good). Empty when it is alive.
pub fn unhealthy(ctx: &NodeContext) -> Vec<String> {
    VITAL
        .iter()
        .filter(|base| ractor::registry::where_is(names::of(base, &ctx.view.node)).is_none())
        .map(|base| format!("{base} is not running"))
        .collect()
}

/// Why the node is not ready for work; empty when it is.
pub fn not_ready(ctx: &NodeContext) -> Vec<String> {
    let mut why = unhealthy(ctx);
    if ctx.view.is_draining() {
        why.push("the node is draining: it leaves the cluster".into());
    }
    let me = &ctx.view.node;
    let peers = crate::live_nodes(&ctx.view)
        .into_iter()
        .filter(|n| n != me)
        .count();
    if !ctx.config.seeds.is_empty() && peers == 0 {
        why.push(format!(
            "not joined: none of its seeds ({}) answered yet",
            ctx.config.seeds.join(", ")
        ));
    }
    if !ctx.core.group_exists() {
        why.push(format!(
            "no core group known yet: it forms once {} nodes have met (core.size), or from \
             core.nodes",
            ctx.config.core.size
        ));
    }
    why
}
