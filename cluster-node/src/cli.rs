//! The command line, as DESIGN.md fixes it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// What `--version` prints after the name: the crate's version and the wire protocol's
/// ([`troupe_runtime::wire::WIRE_VERSION`]; a test keeps the two in step).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (wire 2)");

/// Troupe: run jobs across a cluster of actor nodes.
#[derive(Debug, Parser)]
#[command(name = "troupe-node", version = VERSION, propagate_version = true)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node until SIGINT or SIGTERM.
    Start(StartArgs),
    /// Submit a job file (TOML or JSON; `-` reads standard input).
    Submit(SubmitArgs),
    /// Print the status JSON of a job.
    Status(StatusArgs),
    /// List the cluster's jobs, newest first.
    Jobs(JobsArgs),
    /// Follow a job to its end, as `submit --wait` does.
    Watch(WatchArgs),
    /// Submit a job again with the job file it was submitted with; print the new id.
    Rerun(StatusArgs),
    /// Cancel a job: its running tasks are told to stop.
    Cancel(StatusArgs),
    /// Resume a step that stopped for a user's action.
    Resume(ResumeArgs),
    /// List the cluster's nodes and the task groups each serves.
    Nodes(NodesArgs),
    /// Send one message to a keyed actor and print its reply as JSON.
    Call(CallArgs),
    /// List the activations of keyed actors on every node.
    Actors(ActorsArgs),
    /// Start three local nodes, run an example job with progress, stop the nodes.
    Demo(DemoArgs),
    /// A live view of nodes and jobs in the terminal (q quits).
    Top(TopArgs),
    /// Make a development CA and certificates for mutual TLS (see SECURITY.md).
    Certs(CertsArgs),
}

/// Flags of `start`. Each also comes from the config file and from `TROUPE_<KEY>`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Configuration file (TOML); see config/default.toml for every key.
    #[arg(long, env = "TROUPE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Unique name of this node.
    #[arg(long)]
    pub name: Option<String>,
    /// HOST:PORT to listen on.
    #[arg(long)]
    pub listen: Option<String>,
    /// HOST:PORT peers dial to reach this node (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// HOST:PORT of nodes to join through, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// The cluster's shared secret (visible in `ps`: prefer --cookie-file or TROUPE_COOKIE).
    #[arg(long)]
    pub cookie: Option<String>,
    /// A file whose first line is the cluster's secret.
    #[arg(long)]
    pub cookie_file: Option<PathBuf>,
    /// TLS: this node's certificate and key and the cluster CA (PEM files; all three).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Tasks run at once (default: number of cores).
    #[arg(long)]
    pub slots: Option<usize>,
    /// Directory for the node's journal.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// HOST:PORT for the HTTP API, /metrics and the dashboard (off unless given).
    #[arg(long)]
    pub http: Option<String>,
    /// HOST:PORT to serve the Gearman protocol on, for Gearman clients, workers and
    /// gearadmin (off unless given; Gearman's usual port is 4730).
    #[arg(long)]
    pub gearman: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    pub log_format: Option<String>,
}

/// How a client reaches the cluster.
#[derive(Debug, Args, Clone)]
pub struct ClusterArgs {
    /// HOST:PORT of one or more nodes, comma-separated (default: a node started here with
    /// the default --listen).
    #[arg(long, env = "TROUPE_SEEDS", value_delimiter = ',', default_value = troupe_runtime::config::DEFAULT_LISTEN)]
    pub seeds: Vec<String>,
    /// The cluster's shared secret (visible in `ps`: prefer --cookie-file or TROUPE_COOKIE).
    #[arg(long, env = "TROUPE_COOKIE", default_value = troupe_runtime::config::DEV_COOKIE, hide_default_value = true, hide_env_values = true)]
    pub cookie: String,
    /// A file whose first line is the cluster's secret (overrides --cookie).
    #[arg(long, env = "TROUPE_COOKIE_FILE")]
    pub cookie_file: Option<PathBuf>,
    /// TLS: this client's certificate and key and the cluster CA (needed when the nodes
    /// use TLS).
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Mutual TLS files (PEM). All three or none; `troupe-node certs` makes a development set.
#[derive(Debug, Args, Clone, Default)]
pub struct TlsArgs {
    /// This member's certificate (PEM).
    #[arg(long, env = "TROUPE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This member's private key (PEM).
    #[arg(long, env = "TROUPE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the cluster's certificates.
    #[arg(long, env = "TROUPE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

/// Flags of `submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The job file; `-` reads standard input.
    pub file: String,
    /// JSON that replaces the file's `input`.
    #[arg(long)]
    pub input: Option<String>,
    /// Wait for the job to end: progress on stderr, final status JSON on stdout.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this many seconds (exit 3).
    #[arg(long)]
    pub timeout: Option<f64>,
}

/// Flags of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The job id.
    pub job_id: String,
}

/// Flags of `jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Only jobs in this state (queued, running, succeeded, failed, cancelled,
    /// waiting_for_user).
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs with this name (as in their job file).
    #[arg(long)]
    pub name: Option<String>,
    /// At most this many jobs, the newest (1 to 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print `{"jobs": [{"id", "name", "state", "submitted_at_ms", ...}]}`.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The job id.
    pub job_id: String,
    /// Give up waiting after this many seconds (exit 3; the job keeps running).
    #[arg(long)]
    pub timeout: Option<f64>,
}

/// Flags of `resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The job id.
    pub job_id: String,
    /// The step waiting for a user.
    pub step_id: String,
}

/// Flags of `nodes`.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Print `{"nodes": [...]}`.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The actor type (`troupe.counter`, or a type a node registered).
    pub actor_type: String,
    /// The actor's key.
    pub key: String,
    /// The message, as JSON (`{"op": "add", "n": 1}`).
    pub message: String,
    /// Seconds to wait for the reply (the call tries again while the actor moves).
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
}

/// Flags of `actors`.
#[derive(Debug, Args)]
pub struct ActorsArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Print `{"actors": [{"type", "key", "node", "epoch", "handled", "restarts"}]}`.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Print one frame as text and exit (for scripts, and terminals without a screen).
    #[arg(long)]
    pub once: bool,
    /// Width of the `--once` frame, in columns.
    #[arg(long, default_value_t = 120)]
    pub width: u16,
}

/// Flags of `certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Folder for the PEM files (made if missing). An existing ca.pem and ca-key.pem in it
    /// are reused, so certificates made later join the same cluster.
    #[arg(long, default_value = "troupe-certs")]
    pub dir: PathBuf,
    /// One certificate (NAME.pem, NAME-key.pem) per name, comma-separated; nodes and
    /// clients alike (each is good for both ends of a connection).
    #[arg(long, value_delimiter = ',', default_value = "n1,n2,n3,client")]
    pub names: Vec<String>,
    /// Host names and IPs peers dial, comma-separated: each certificate carries them (and
    /// its own name), and a member dialling HOST:PORT checks HOST is among them.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1,::1")]
    pub hosts: Vec<String>,
    /// Days the certificates stay valid (1 to 36500: a certificate's date ends at 9999).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,
}

/// Flags of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the nodes' log files (their folder is printed).
    #[arg(long)]
    pub keep_logs: bool,
    /// Keep the cluster running after the job, with a dashboard, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without --seeds (or TROUPE_SEEDS, unset here), a command looks for a node started
    /// here with the default --listen.
    #[test]
    fn seeds_default_to_the_local_default_address() {
        let Ok(cli) = Cli::try_parse_from(["troupe-node", "nodes"]) else {
            panic!("`nodes` without --seeds is refused");
        };
        let Command::Nodes(a) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(a.cluster.seeds, [troupe_runtime::config::DEFAULT_LISTEN]);
    }

    /// Numbers that would overflow a clock or a date are refused with a clear error, not
    /// a panic: a certificate's days, a wait's timeout.
    #[test]
    fn out_of_range_durations_are_refused() {
        let e = match Cli::try_parse_from(["troupe-node", "certs", "--days", "3000000"]) {
            Ok(_) => panic!("--days 3000000 is accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("--days"), "{e}");
        assert!(Cli::try_parse_from(["troupe-node", "certs", "--days", "36500"]).is_ok());
        use crate::commands::submit::check_timeout;
        assert!(check_timeout(Some(1e20)).is_err());
        assert!(check_timeout(Some(f64::NAN)).is_err());
        assert!(check_timeout(Some(0.0)).is_err());
        assert!(check_timeout(Some(3600.0)).is_ok());
        assert!(check_timeout(None).is_ok());
    }

    /// `--version` prints `troupe-node VERSION (wire N)` (DESIGN.md), N the wire version.
    #[test]
    fn version_names_the_crate_and_the_wire_protocol() {
        use clap::CommandFactory;
        assert_eq!(
            Cli::command().render_version().trim(),
            format!(
                "troupe-node {} (wire {})",
                env!("CARGO_PKG_VERSION"),
                troupe_runtime::wire::WIRE_VERSION
            )
        );
    }
}
