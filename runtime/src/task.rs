//! Tasks: the units of work a job's steps run.
//!
//! A user implements [`Task`] with typed serde input and output and registers it in a
//! [`TaskRegistry`] by name. A node's worker pool joins one process group per registered
//! task, so every node in the cluster can find who serves what.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

/// How a task failed, which decides what the job supervisor does next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum TaskError {
    /// Worth retrying (a timeout, a busy database): retried under the step's retry policy.
    #[error("transient error: {0}")]
    Transient(String),
    /// Retrying will not help (bad input, a bug, a panic): the step fails at once.
    #[error("permanent error: {0}")]
    Permanent(String),
}

impl TaskError {
    /// A transient error with this message.
    pub fn transient(msg: impl Into<String>) -> Self {
        TaskError::Transient(msg.into())
    }
    /// A permanent error with this message.
    pub fn permanent(msg: impl Into<String>) -> Self {
        TaskError::Permanent(msg.into())
    }
    /// True for errors that the retry policy may retry.
    pub fn is_transient(&self) -> bool {
        matches!(self, TaskError::Transient(_))
    }
}

/// What a running task knows about where it runs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The job this step belongs to.
    pub job_id: String,
    /// The step's id in the job.
    pub step_id: String,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The name of the node running the task.
    pub node: String,
    /// The outputs of the step's dependencies, by step id.
    pub deps: BTreeMap<String, Value>,
}

/// A unit of work with typed input and output.
///
/// ```
/// use troupe_runtime::{Task, TaskContext, TaskError};
/// struct Double;
/// impl Task for Double {
///     type Input = i64;
///     type Output = i64;
///     async fn run(&self, _ctx: TaskContext, n: i64) -> Result<i64, TaskError> {
///         Ok(n * 2)
///     }
/// }
/// ```
pub trait Task: Send + Sync + 'static {
    /// The input, decoded from the step's JSON input.
    type Input: DeserializeOwned + Send;
    /// The output, encoded as the step's JSON output.
    type Output: Serialize + Send;
    /// Runs the task once. A panic is caught and fails the step with a permanent error.
    fn run(
        &self,
        ctx: TaskContext,
        input: Self::Input,
    ) -> impl Future<Output = Result<Self::Output, TaskError>> + Send;
}

/// A boxed future returned by [`ErasedTask`].
pub type TaskFuture = Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>>;

/// A task with its types erased to JSON, as the registry stores it.
pub trait ErasedTask: Send + Sync + 'static {
    /// Decodes the input, runs the task and encodes its output.
    fn run_json(&self, ctx: TaskContext, input: Value) -> TaskFuture;
}

struct Typed<T>(Arc<T>, String);

impl<T: Task> ErasedTask for Typed<T> {
    fn run_json(&self, ctx: TaskContext, input: Value) -> TaskFuture {
        let task = self.0.clone();
        let name = self.1.clone();
        Box::pin(async move {
            let input: T::Input = serde_json::from_value(input).map_err(|e| {
                TaskError::permanent(format!("input does not fit task {name}: {e}"))
            })?;
            let out = task.run(ctx, input).await?;
            serde_json::to_value(out).map_err(|e| {
                TaskError::permanent(format!("output of task {name} is not JSON: {e}"))
            })
        })
    }
}

/// Tasks by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    tasks: BTreeMap<String, Arc<dyn ErasedTask>>,
}

impl std::fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tasks.keys()).finish()
    }
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the built-in diagnostic tasks (see [`crate::builtin`]).
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        crate::builtin::register(&mut r);
        r
    }

    /// Registers `task` under `name`, replacing a task of the same name.
    pub fn register<T: Task>(&mut self, name: impl Into<String>, task: T) -> &mut Self {
        let name = name.into();
        self.tasks
            .insert(name.clone(), Arc::new(Typed(Arc::new(task), name)));
        self
    }

    /// The task registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn ErasedTask>> {
        self.tasks.get(name).cloned()
    }

    /// Names of all registered tasks, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }
}
