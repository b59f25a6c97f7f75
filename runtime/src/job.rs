//! Jobs: a DAG of steps, from the job file to the status JSON.
//!
//! - [`spec`]: the job file (TOML or JSON) as Rust types.
//! - [`validate`]: checks that run before anything is dispatched.
//! - [`run`]: the scheduling state machine a job supervisor folds events into. It does no
//!   I/O, so its order of dispatch is unit-tested directly.
//! - [`status`]: the status JSON and the events a handle follows.

pub mod expr;
pub mod journal;
pub mod run;
pub mod spec;
pub mod status;
pub mod validate;
