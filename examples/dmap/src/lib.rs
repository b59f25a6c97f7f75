//! An ordered distributed map, after seed 004 (Gearman's `dmap` in Perl):
//! `client.dmap(task, inputs)` spreads the calls over the cluster and returns the results
//! in input order, whatever order they finish in.

use std::time::Duration;

use troupe_runtime::{Task, TaskContext, TaskError, TaskRegistry};

/// `dmap.square`: sleeps a little (longer for small numbers, so items finish out of
/// order), then returns n * n.
pub struct Square;
impl Task for Square {
    type Input = i64;
    type Output = i64;
    async fn run(&self, _ctx: TaskContext, n: i64) -> Result<i64, TaskError> {
        tokio::time::sleep(Duration::from_millis((50 - n.clamp(0, 50)) as u64)).await;
        n.checked_mul(n)
            .ok_or_else(|| TaskError::permanent(format!("{n} squared overflows")))
    }
}

/// Adds `dmap.square` to `r`.
pub fn register(r: &mut TaskRegistry) {
    r.register("dmap.square", Square);
}
