//! # troupe-runtime
//!
//! The library every other Troupe crate depends on: what task authors, clients and the
//! wire share. The system actors themselves live in the `troupe-actors` crate.
//!
//! # Layout
//!
//! - [`vocab`]: the shared words (ids, stages, the holder of a job); imports nothing of
//!   the crate.
//! - [`error`]: the errors that reach users: job files, validation, clients, and the
//!   [`TaskError`] and [`ActorCallError`](error::ActorCallError) classes.
//! - [`task`]: the [`Task`] trait users implement and the [`TaskRegistry`].
//! - [`actor`]: the [`KeyedActor`] trait of user actors and their type
//!   erasure; [`actor::route`] finds where an actor lives and sends it a message.
//! - [`builtin`]: the diagnostic tasks every node serves (`troupe.echo`, `troupe.sum`, ...).
//! - [`job`]: job files (parsing), validation of the step DAG, CEL expressions, the
//!   status JSON.
//! - [`merge`]: rendezvous ranking of nodes for a key; task properties (merge, cache).
//! - [`wire`]: rmp-serde encoding of every payload that crosses a node boundary.
//! - [`protocol`]: the messages of the remotely reachable actors, one submodule per actor,
//!   the process-group names, and the one way to submit a job
//!   ([`protocol::submit`]).
//! - [`observe`]: the cluster event stream, job summaries, metric names.
//! - [`config`]: the node configuration, layered file < environment < flags.
//! - [`cluster`]: starting a ractor_cluster `NodeServer` and watching its sessions.
//! - [`tls`]: mutual TLS: certificates, dialling, accepting.
//! - [`gearman`]: the Gearman protocol's vocabulary (packets, framing, workloads).
//! - [`client`]: connect to a cluster, submit jobs, follow them.
//!
//! Modules depend on each other in one direction only (no import cycles between files):
//! the errors and words at the bottom, the client at the top.

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
