//! # troupe-runtime
//!
//! The library every other Troupe crate depends on. It holds the vocabulary of the
//! system and the pieces that both nodes and clients need:
//!
//! - [`task`]: the [`Task`](task::Task) trait users implement, the [`TaskRegistry`](task::TaskRegistry),
//!   and the typed [`TaskError`](task::TaskError) classes (transient, permanent).
//! - [`builtin`]: the diagnostic tasks every node serves (`troupe.echo`, `troupe.sum`, ...).
//! - [`job`]: job files (parsing), validation of the step DAG, the scheduling state
//!   machine that a job supervisor folds events into, and the status JSON.
//! - [`wire`]: rmp-serde encoding of every payload that crosses a node boundary.
//! - [`protocol`]: the messages of the remotely reachable actors and the process-group names.
//! - [`config`]: the node configuration, layered file < environment < flags.
//! - [`cluster`]: starting a ractor_cluster `NodeServer` and watching its sessions.
//! - [`observe`]: the cluster event stream, job summaries, metric names.
//! - [`client`]: the supervisor handle: connect to a cluster, submit jobs, follow them.
//!
//! The system actors themselves live in the `troupe-actors` crate.

pub mod actor;
pub mod builtin;
pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
pub mod gearman;
pub mod job;
pub mod merge;
pub mod observe;
pub mod protocol;
pub mod task;
pub mod tls;
pub mod vocab;
pub mod wire;

pub use actor::{ActorContext, ActorError, KeyedActor};
pub use client::{Client, ClientOptions, JobHandle};
pub use error::{ClientError, JobFileError, ValidationError};
pub use job::spec::{JobSpec, RetryPolicy, StepSpec};
pub use job::status::{JobEvent, JobState, JobStatus, StepState, StepStatus};
pub use task::{Task, TaskContext, TaskError, TaskRegistry};
