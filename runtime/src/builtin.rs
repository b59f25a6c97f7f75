//! The built-in diagnostic tasks, registered on every node so that operators can test a
//! cluster without deploying code (like Gearman's command-line worker). DESIGN.md fixes
//! their behaviour.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::actor::{ActorContext, ActorError, KeyedActor};
use crate::job::spec::{JobSpec, StepSpec};
use crate::task::{Task, TaskContext, TaskError, TaskRegistry};

/// Adds every built-in task to `r`.
pub fn register(r: &mut TaskRegistry) {
    r.register("troupe.echo", Echo)
        .register("troupe.sleep", Sleep)
        .register("troupe.spin", Spin)
        .register("troupe.node", NodeName)
        .register("troupe.sum", Sum)
        .register("troupe.flaky", Flaky)
        .register("troupe.fail", Fail)
        .register("troupe.crash", Crash)
        .register("troupe.needs_action", NeedsAction)
        .register_with("troupe.fib", Fib, crate::merge::TaskProps::PURE)
        .register("troupe.tree", Tree)
        .register(crate::vocab::ACTOR_STEP_TASK, ActorStep)
        .register_actor("troupe.counter", Counter::<true>)
        .register_actor("troupe.memory_counter", Counter::<false>);
}

// Here rather than beside `TaskRegistry::new`: the registry knows nothing of the built-in
// tasks, which are ordinary tasks registered like a user's.
impl TaskRegistry {
    /// A registry holding the built-in diagnostic tasks (those [`register`] adds).
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        register(&mut r);
        r
    }
}

/// A message of `troupe.counter` (DESIGN.md): `{"op": "add", "n": N}`, `{"op": "get"}`,
/// `{"op": "panic"}`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CounterMessage {
    /// Adds `n`; replies the new total.
    Add {
        /// What to add.
        n: i64,
    },
    /// Replies the total.
    Get,
    /// Panics in the handler (the activation restarts from its saved state).
    Panic,
    /// Runs `task` with `input` in the cluster (a one-step job, from the handler's
    /// context) and adds its output, a number.
    AddFrom {
        /// The task.
        task: String,
        /// Its input.
        input: Value,
    },
    /// Sends `message` to the counter `key` of the same type and replies its reply (a
    /// call from one actor to another).
    Forward {
        /// The other counter.
        key: String,
        /// The message for it.
        message: Value,
    },
}

/// The state of a counter.
#[derive(Debug, Default, serde::Serialize, Deserialize)]
pub struct CounterState {
    /// The total.
    pub total: i64,
}

/// `troupe.counter` (`PERSISTENT = true`: its total survives the death of its node) and
/// `troupe.memory_counter` (the same in memory only, for benchmarks and tests).
pub struct Counter<const PERSISTENT: bool>;
impl<const P: bool> KeyedActor for Counter<P> {
    type State = CounterState;
    type Message = CounterMessage;
    type Reply = Value;
    const PERSISTENT: bool = P;
    async fn handle(
        &self,
        ctx: &ActorContext,
        state: &mut CounterState,
        msg: CounterMessage,
    ) -> Result<Value, ActorError> {
        let add = |state: &mut CounterState, n: i64| {
            state.total = state
                .total
                .checked_add(n)
                .ok_or_else(|| ActorError::refused("the total would overflow"))?;
            Ok::<(), ActorError>(())
        };
        match msg {
            CounterMessage::Add { n } => add(state, n)?,
            CounterMessage::Get => {}
            CounterMessage::Panic => panic!("the counter was asked to panic"),
            CounterMessage::AddFrom { task, input } => {
                let out = ctx
                    .call(&task, input)
                    .await
                    .map_err(|e| ActorError::refused(format!("task {task}: {e}")))?;
                let n = out.as_i64().ok_or_else(|| {
                    ActorError::refused(format!("task {task} returned {out}, not an integer"))
                })?;
                add(state, n)?;
            }
            CounterMessage::Forward { key, message } => {
                return ctx
                    .call_actor(&ctx.actor_type, &key, message)
                    .await
                    .map_err(|e| ActorError::refused(e.to_string()));
            }
        }
        Ok(json!({ "total": state.total }))
    }
}

/// The input of [`crate::vocab::ACTOR_STEP_TASK`].
#[derive(Deserialize)]
pub struct ActorStepInput {
    /// The actor type.
    pub actor: String,
    /// The key.
    pub key: String,
    /// The message.
    pub message: Value,
}

/// `troupe.actor`: sends a job step's message to its actor and returns the reply. An
/// unavailable actor is a transient error (the step's retry policy applies); a refusal or
/// a handler failure is permanent. Every attempt of the step is a try of one call
/// ([`crate::actor::route::step_call_id`]): the actor applies the message at most once
/// while it remembers the call, and answers each attempt alike.
pub struct ActorStep;
impl Task for ActorStep {
    type Input = ActorStepInput;
    type Output = Value;
    async fn run(&self, ctx: TaskContext, input: ActorStepInput) -> Result<Value, TaskError> {
        crate::actor::route::call_as(
            &input.actor,
            &input.key,
            input.message,
            crate::actor::route::CALL_TIMEOUT,
            crate::actor::route::step_call_id(&ctx.job_id, &ctx.step_id),
        )
        .await
        .map_err(crate::actor::ActorCallError::into_task_error)
    }
}

/// `troupe.echo`: returns its input.
pub struct Echo;
impl Task for Echo {
    type Input = Value;
    type Output = Value;
    async fn run(&self, _ctx: TaskContext, input: Value) -> Result<Value, TaskError> {
        Ok(input)
    }
}

/// Input of `troupe.sleep`.
#[derive(Deserialize)]
pub struct SleepInput {
    /// How long to sleep, in milliseconds.
    pub ms: u64,
}

/// `troupe.sleep`: sleeps `ms` milliseconds, returns `{"node", "ms"}`.
pub struct Sleep;
impl Task for Sleep {
    type Input = SleepInput;
    type Output = Value;
    async fn run(&self, ctx: TaskContext, input: SleepInput) -> Result<Value, TaskError> {
        tokio::time::sleep(std::time::Duration::from_millis(input.ms)).await;
        Ok(json!({"node": ctx.node, "ms": input.ms}))
    }
}

/// Input of `troupe.spin`.
#[derive(Deserialize)]
pub struct SpinInput {
    /// How long to keep a CPU busy, in milliseconds.
    pub ms: u64,
}

/// `troupe.spin`: keeps one CPU busy for `ms` milliseconds without yielding (a CPU-bound
/// task, as pricing or parsing is), returns `{"node", "ms"}`.
pub struct Spin;
impl Task for Spin {
    type Input = SpinInput;
    type Output = Value;
    async fn run(&self, ctx: TaskContext, input: SpinInput) -> Result<Value, TaskError> {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(input.ms);
        let mut x: u64 = 1;
        while std::time::Instant::now() < until {
            for _ in 0..1_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        Ok(json!({"node": ctx.node, "ms": input.ms}))
    }
}

/// `troupe.node`: returns the name of the node that ran it.
pub struct NodeName;
impl Task for NodeName {
    type Input = Value;
    type Output = String;
    async fn run(&self, ctx: TaskContext, _input: Value) -> Result<String, TaskError> {
        Ok(ctx.node)
    }
}

/// `troupe.sum`: `input.add` (default 0) plus the sum of the dependencies' outputs.
pub struct Sum;
impl Task for Sum {
    type Input = Value;
    type Output = Value;
    async fn run(&self, ctx: TaskContext, input: Value) -> Result<Value, TaskError> {
        let add = input.get("add").map(count).unwrap_or(0.0);
        let total = ctx.deps.values().map(count).sum::<f64>() + add;
        Ok(number(total))
    }
}

/// What one output counts for in `troupe.sum`: a number its value, an object with a
/// numeric `value` that value, a list the sum of its items, anything else 0.
pub fn count(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::Object(m) => match m.get("value") {
            Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            _ => 0.0,
        },
        Value::Array(items) => items.iter().map(count).sum(),
        _ => 0.0,
    }
}

/// A whole number stays an integer in JSON (`5`, not `5.0`).
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// Input of `troupe.flaky`.
#[derive(Deserialize)]
pub struct FlakyInput {
    /// How many attempts fail before one succeeds.
    #[serde(default)]
    pub fail_times: u32,
}

/// `troupe.flaky`: its first `fail_times` attempts fail with a transient error.
pub struct Flaky;
impl Task for Flaky {
    type Input = FlakyInput;
    type Output = Value;
    async fn run(&self, ctx: TaskContext, input: FlakyInput) -> Result<Value, TaskError> {
        if ctx.attempt <= input.fail_times {
            return Err(TaskError::transient(format!(
                "troupe.flaky: attempt {} of the {} that fail",
                ctx.attempt, input.fail_times
            )));
        }
        Ok(json!({"attempts": ctx.attempt}))
    }
}

/// Input of `troupe.fail`.
#[derive(Deserialize)]
pub struct FailInput {
    /// The error message.
    #[serde(default = "default_fail_message")]
    pub message: String,
}
fn default_fail_message() -> String {
    "troupe.fail was asked to fail".into()
}

/// `troupe.fail`: fails at once with a permanent error.
pub struct Fail;
impl Task for Fail {
    type Input = FailInput;
    type Output = Value;
    async fn run(&self, _ctx: TaskContext, input: FailInput) -> Result<Value, TaskError> {
        Err(TaskError::permanent(input.message))
    }
}

/// `troupe.crash`: panics inside the task; the node must survive.
pub struct Crash;
impl Task for Crash {
    type Input = Value;
    type Output = Value;
    async fn run(&self, ctx: TaskContext, _input: Value) -> Result<Value, TaskError> {
        panic!("troupe.crash panicked on purpose in step {}", ctx.step_id)
    }
}

/// Input of `troupe.needs_action`.
#[derive(Deserialize)]
pub struct NeedsActionInput {
    /// The message for the user.
    #[serde(default = "default_action_message")]
    pub message: String,
}
fn default_action_message() -> String {
    "troupe.needs_action waits for a user".into()
}

/// `troupe.needs_action`: stops its step for a user's action; after `resume` it succeeds
/// with its input.
pub struct NeedsAction;
impl Task for NeedsAction {
    type Input = Value;
    type Output = Value;
    async fn run(&self, ctx: TaskContext, input: Value) -> Result<Value, TaskError> {
        if ctx.resumed {
            return Ok(input);
        }
        let i: NeedsActionInput = serde_json::from_value(input)
            .map_err(|e| TaskError::permanent(format!("troupe.needs_action input: {e}")))?;
        Err(TaskError::needs_action(i.message))
    }
}

/// Input of `troupe.fib`.
#[derive(Deserialize)]
pub struct FibInput {
    /// Which Fibonacci number.
    pub n: u64,
}

/// `troupe.fib`: fib(n) by re-entrant calls to itself for n-1 and n-2.
pub struct Fib;
impl Task for Fib {
    type Input = FibInput;
    type Output = u64;
    async fn run(&self, ctx: TaskContext, i: FibInput) -> Result<u64, TaskError> {
        if i.n < 2 {
            return Ok(i.n);
        }
        if i.n > 90 {
            return Err(TaskError::permanent("troupe.fib: n above 90 overflows u64"));
        }
        let parts = ctx
            .call_many(
                "troupe.fib",
                vec![json!({"n": i.n - 1}), json!({"n": i.n - 2})],
            )
            .await?;
        Ok(parts.iter().filter_map(Value::as_u64).sum())
    }
}

/// Input of `troupe.tree`.
#[derive(Deserialize)]
pub struct TreeInput {
    /// Levels below this one.
    pub depth: u32,
    /// Children per level.
    pub fanout: u32,
}

/// `troupe.tree`: for depth > 0 starts `fanout` sub-jobs of itself with depth - 1 and
/// returns 1 + the sum of their results (the number of nodes of the tree).
pub struct Tree;
impl Task for Tree {
    type Input = TreeInput;
    type Output = u64;
    async fn run(&self, ctx: TaskContext, i: TreeInput) -> Result<u64, TaskError> {
        if i.depth == 0 {
            return Ok(1);
        }
        let child = JobSpec::new("tree").step(
            StepSpec::new("tree", "troupe.tree")
                .input(json!({"depth": i.depth - 1, "fanout": i.fanout})),
        );
        let runs = (0..i.fanout).map(|_| ctx.sub_job(child.clone()));
        let mut total = 1;
        for r in futures::future::join_all(runs).await {
            total += r?.as_u64().unwrap_or(0);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_counts_outputs() {
        assert_eq!(count(&json!(3)), 3.0);
        assert_eq!(count(&json!({"value": 2.5})), 2.5);
        assert_eq!(count(&json!([1, {"value": 2}, "x", [3]])), 6.0);
        assert_eq!(count(&json!("7")), 0.0);
        assert_eq!(number(5.0), json!(5));
        assert_eq!(number(0.5), json!(0.5));
    }
}
