//! `dmap-run --seeds ... --cookie ... 1 2 3 ...`: squares the numbers across the cluster
//! and prints, in input order, `n -> n*n on NODE`.

use clap::Parser;
use troupe_runtime::{Client, ClientOptions};

/// Squares the numbers given across the cluster and prints them in input order, with the node that computed each.
#[derive(Parser)]
struct Args {
    /// HOST:PORT of nodes, comma-separated.
    #[arg(long, env = "TROUPE_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// The cluster's cookie.
    #[arg(long, env = "TROUPE_COOKIE", default_value = troupe_runtime::config::DEV_COOKIE)]
    cookie: String,
    /// The numbers.
    #[arg(required = true, allow_negative_numbers = true)]
    numbers: Vec<i64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let client = match Client::connect(ClientOptions::new(a.seeds, &a.cookie)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dmap-run: {e}");
            return std::process::ExitCode::from(e.exit_code());
        }
    };
    let inputs = a.numbers.iter().map(|n| serde_json::json!(n)).collect();
    match client.dmap("dmap.square", inputs).await {
        Ok(out) => {
            for (n, (v, node)) in a.numbers.iter().zip(out) {
                println!("{n} -> {v} on {node}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dmap-run: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
