//! # troupe-cluster-node
//!
//! The `troupe-node` binary, as a library so that you can build a node binary with your
//! own tasks registered:
//!
//! ```no_run
//! use troupe_runtime::{Task, TaskContext, TaskError, TaskRegistry};
//! struct Shout;
//! impl Task for Shout {
//!     type Input = String;
//!     type Output = String;
//!     async fn run(&self, _: TaskContext, s: String) -> Result<String, TaskError> {
//!         Ok(s.to_uppercase())
//!     }
//! }
//! fn main() -> std::process::ExitCode {
//!     let mut tasks = TaskRegistry::with_builtins();
//!     tasks.register("my.shout", Shout);
//!     troupe_cluster_node::main_with(tasks)
//! }
//! ```
//!
//! The binary then has every subcommand of `troupe-node` (`start`, `submit`, `status`,
//! `nodes`, `demo`), and its nodes serve your tasks beside the built-in ones.

use std::process::ExitCode;

use troupe_runtime::TaskRegistry;

pub mod cli;
pub mod commands;
pub mod http;
pub mod local;
pub mod logging;

/// Exit codes of DESIGN.md.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The job failed or was cancelled.
    pub const JOB_FAILED: u8 = 1;
    /// Bad input: usage, job file, validation.
    pub const BAD_INPUT: u8 = 2;
    /// Cluster unreachable or refused (wrong cookie, timeout).
    pub const UNREACHABLE: u8 = 3;
}

/// Runs the `troupe-node` command line with `registry` as the node's tasks.
pub fn main_with(registry: TaskRegistry) -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    // Usage lines name the binary run (`dmap start ...` for an example's node binary).
    let bin = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "troupe-node".into());
    let matches = cli::Cli::command().bin_name(bin).get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    ExitCode::from(commands::run(cli, registry))
}
