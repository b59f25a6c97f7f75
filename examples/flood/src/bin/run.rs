//! `flood-run --seeds ... --cookie ... [--ms 5] [--secs 5]`: measures the cluster's
//! capacity for three-stage jobs, then floods it at twice that for `--secs` and prints
//! what completed, the latency of jobs under way and how many were left half-done.

use clap::Parser;
use troupe_cluster_node::cli::ClusterArgs;

/// Floods the cluster with stage-1 jobs while measuring how long jobs already under way take (starvation).
#[derive(Parser)]
struct Args {
    /// How to reach the cluster (as for `troupe-node` client commands).
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Milliseconds per stage.
    #[arg(long, default_value_t = 5)]
    ms: u64,
    /// Seconds of flood.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let client = match troupe_cluster_node::commands::connect(&a.cluster).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flood-run: {e}");
            return std::process::ExitCode::from(e.exit_code());
        }
    };
    let f = troupe_example_flood::measure(&client, a.ms, a.secs).await;
    println!("{}", serde_json::to_string(&f).unwrap_or_default());
    std::process::ExitCode::SUCCESS
}
