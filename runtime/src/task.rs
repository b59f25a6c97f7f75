//! Tasks: the units of work a job's steps run.
//!
//! A user implements [`Task`] with typed serde input and output and registers it in a
//! [`TaskRegistry`] by name. A node's worker pool joins one process group per registered
//! task, so every node in the cluster can find who serves what.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use crate::error::TaskError;
use crate::job::spec::JobSpec;
use crate::job::spec::SpawnKind;
pub use crate::merge::TaskProps;

/// How a running task reaches its job's supervisor for sub-work. The worker pool
/// implements it; a [`TaskContext`] made with [`TaskContext::new`] has none.
pub trait SubWork: Send + Sync + 'static {
    /// Starts `kind` as children of attempt `attempt` of `step` and waits for the result.
    /// The implementation frees the caller's worker slot while it waits.
    fn spawn(
        &self,
        job: &str,
        step: &str,
        attempt: u32,
        kind: SpawnKind,
    ) -> Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>>;
}

/// What a running task knows about where it runs, and how it asks for more work.
#[derive(Clone)]
pub struct TaskContext {
    /// The job this step belongs to.
    pub job_id: String,
    /// The step's id in the job (a path such as `parent/call-3` for sub-work).
    pub step_id: String,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The name of the node running the task.
    pub node: String,
    /// The outputs of the step's dependencies, by step id.
    pub deps: BTreeMap<String, Value>,
    /// True for the first attempt after a user resumed the step (see
    /// [`TaskError::NeedsAction`]).
    pub resumed: bool,
    cancel: CancellationToken,
    link: Option<Arc<dyn SubWork>>,
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("job_id", &self.job_id)
            .field("step_id", &self.step_id)
            .field("attempt", &self.attempt)
            .field("node", &self.node)
            .field("deps", &self.deps)
            .field("resumed", &self.resumed)
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    /// A context with no cluster behind it (for unit tests of a task): calls and sub-jobs
    /// fail with a permanent error.
    pub fn new(
        job_id: &str,
        step_id: &str,
        attempt: u32,
        node: &str,
        deps: BTreeMap<String, Value>,
    ) -> Self {
        Self {
            job_id: job_id.into(),
            step_id: step_id.into(),
            attempt,
            node: node.into(),
            deps,
            resumed: false,
            cancel: CancellationToken::new(),
            link: None,
        }
    }

    /// Connects the context to a worker pool (used by the node, not by tasks).
    #[doc(hidden)]
    pub fn attach(
        mut self,
        link: Arc<dyn SubWork>,
        cancel: CancellationToken,
        resumed: bool,
    ) -> Self {
        self.link = Some(link);
        self.cancel = cancel;
        self.resumed = resumed;
        self
    }

    async fn spawn(&self, kind: SpawnKind) -> Result<Value, TaskError> {
        let link = self.link.as_ref().ok_or_else(|| {
            TaskError::permanent(
                "this task runs outside a cluster: calls and sub-jobs are not available",
            )
        })?;
        tokio::select! {
            r = link.spawn(&self.job_id, &self.step_id, self.attempt, kind) => r,
            _ = self.cancel.cancelled() => Err(TaskError::permanent("cancelled")),
        }
    }

    /// Calls `task` with `input` somewhere in the cluster and waits for its output, as a
    /// child step of this one (`STEP/call-N`). The wait does not hold a worker slot.
    pub async fn call(&self, task: &str, input: impl Serialize) -> Result<Value, TaskError> {
        let input = serde_json::to_value(input)
            .map_err(|e| TaskError::permanent(format!("call input is not JSON: {e}")))?;
        let mut out = self.call_many(task, vec![input]).await?;
        Ok(out.pop().unwrap_or(Value::Null))
    }

    /// Calls `task` once per input, in parallel across the cluster; the outputs come back
    /// in input order. The first failure fails the whole call, naming the child.
    pub async fn call_many(&self, task: &str, inputs: Vec<Value>) -> Result<Vec<Value>, TaskError> {
        match self
            .spawn(SpawnKind::Calls {
                task: task.into(),
                inputs,
            })
            .await?
        {
            Value::Array(items) => Ok(items),
            other => Err(TaskError::permanent(format!(
                "calls answered {other}, not a list"
            ))),
        }
    }

    /// Runs a sub-job that belongs to this job (its steps show as `STEP/CHILD`) and
    /// returns its output.
    pub async fn sub_job(&self, spec: JobSpec) -> Result<Value, TaskError> {
        self.spawn(SpawnKind::Job(spec)).await
    }

    /// True once the job (or this attempt) was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the job (or this attempt) is cancelled: `select!` on it in long work.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
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
            // A Gearman workload becomes JSON or text here, at the task's door.
            let input = crate::gearman::data::for_task(input).map_err(TaskError::permanent)?;
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

/// Tasks by name, with their [`TaskProps`]. Cheap to clone.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    tasks: BTreeMap<String, (Arc<dyn ErasedTask>, TaskProps)>,
    actors: crate::actor::ActorTypes,
}

impl std::fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRegistry")
            .field("tasks", &self.tasks.keys().collect::<Vec<_>>())
            .field("actors", &self.actors)
            .finish()
    }
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `task` under `name`, replacing a task of the same name. It is neither
    /// merged nor cached ([`TaskProps::PLAIN`]).
    pub fn register<T: Task>(&mut self, name: impl Into<String>, task: T) -> &mut Self {
        self.register_with(name, task, TaskProps::PLAIN)
    }

    /// Registers `task` under `name` with its properties: `mergeable` lets identical
    /// requests in flight share one execution, `pure` lets results be cached. Declare
    /// them only for tasks whose output depends on their input alone.
    pub fn register_with<T: Task>(
        &mut self,
        name: impl Into<String>,
        task: T,
        props: TaskProps,
    ) -> &mut Self {
        let name = name.into();
        self.tasks
            .insert(name.clone(), (Arc::new(Typed(Arc::new(task), name)), props));
        self
    }

    /// The task registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn ErasedTask>> {
        self.tasks.get(name).map(|(t, _)| t.clone())
    }

    /// The properties of every registered task.
    pub fn props(&self) -> BTreeMap<String, TaskProps> {
        self.tasks
            .iter()
            .map(|(k, (_, p))| (k.clone(), *p))
            .collect()
    }

    /// Names of all registered tasks, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }

    /// Registers keyed actor type `actor` under `name` (see [`crate::actor`]): nodes built
    /// with this registry host its actors.
    pub fn register_actor<A: crate::actor::KeyedActor>(
        &mut self,
        name: impl Into<String>,
        actor: A,
    ) -> &mut Self {
        self.actors.register(name, actor);
        self
    }

    /// The registered actor types.
    pub fn actors(&self) -> &crate::actor::ActorTypes {
        &self.actors
    }
}
