//! `flood-run --seeds ... --cookie ... [--ms 5] [--secs 5] [--load 2]`: measures the
//! cluster's capacity for three-stage jobs, then floods it at `--load` times that for
//! `--secs` and prints what completed, the latency of accepted jobs and of jobs under
//! way, how many were left half-done and how many were refused.

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
    /// The offered load, as a multiple of the measured capacity.
    #[arg(long, default_value_t = 2.0)]
    load: f64,
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
    // The flood counts refusals instead of waiting them out.
    let open = match troupe_cluster_node::commands::connect_with(&a.cluster, |o| {
        o.overloaded_wait = std::time::Duration::ZERO;
    })
    .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flood-run: {e}");
            return std::process::ExitCode::from(e.exit_code());
        }
    };
    for f in troupe_example_flood::measure(&client, &open, a.ms, a.secs, &[a.load]).await {
        println!("{}", serde_json::to_string(&f).unwrap_or_default());
    }
    std::process::ExitCode::SUCCESS
}
