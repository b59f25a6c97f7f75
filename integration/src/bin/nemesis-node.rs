//! The node binary of the nemesis bench: `troupe-node` with the `accounts` actors and two
//! tasks of its own. `nemesis.effect` (input `{"ms": N}`) appends one line
//! `{"job","step","attempt","node","ts_ms"}` to `$NEMESIS_LEDGER/<node>.jsonl` when an
//! attempt starts, then sleeps N ms and returns `{"node", "attempt"}`: the ledger is how
//! the checker counts a step's effects. The spin fault uses the built-in `troupe.spin`.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};
use troupe_runtime::{Task, TaskContext, TaskError, TaskRegistry};

#[derive(Deserialize)]
struct Ms {
    #[serde(default)]
    ms: u64,
}

struct Effect;

impl Task for Effect {
    type Input = Ms;
    type Output = Value;
    async fn run(&self, ctx: TaskContext, input: Ms) -> Result<Value, TaskError> {
        let dir = std::env::var("NEMESIS_LEDGER").map_err(|_| {
            TaskError::permanent(
                "NEMESIS_LEDGER is not set: start this node from the nemesis bench",
            )
        })?;
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let line = json!({
            "job": ctx.job_id, "step": ctx.step_id, "attempt": ctx.attempt,
            "node": ctx.node, "ts_ms": ts_ms,
        })
        .to_string()
            + "\n";
        let path = std::path::Path::new(&dir).join(format!("{}.jsonl", ctx.node));
        // One write(2) of the whole line with O_APPEND: lines never interleave.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| TaskError::transient(format!("ledger {}: {e}", path.display())))?;
        tokio::time::sleep(Duration::from_millis(input.ms)).await;
        Ok(json!({ "node": ctx.node, "attempt": ctx.attempt }))
    }
}

fn main() -> std::process::ExitCode {
    let mut tasks = TaskRegistry::with_builtins();
    troupe_example_accounts::register(&mut tasks);
    tasks.register("nemesis.effect", Effect);
    troupe_cluster_node::main_with(tasks)
}
