//! Jobs: a DAG of steps, from the job file to the status JSON.
//!
//! - [`spec`]: the job file (TOML or JSON) as Rust types.
//! - [`validate`]: checks that run before anything is dispatched.
//! - [`expr`]: the CEL conditions and lists a job file's steps may carry.
//! - [`status`]: the status JSON and the events a handle follows.
//!
//! How a job runs (its scheduling state machine, its journal records and their replay) is
//! the job supervisor's business and lives beside it in `troupe-actors`.

pub mod expr;
pub mod spec;
pub mod status;
pub mod validate;
