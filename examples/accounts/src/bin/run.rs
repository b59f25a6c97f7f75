//! `accounts-run --seeds ... --cookie ... [--accounts 8] [--initial 1000] [--transfers 200]
//! [--seed 1] [--parallel 8]`: opens the accounts, runs random transfers between them (some
//! overdraw and are refused, some go to accounts never opened and are refunded), and checks
//! that the money in all accounts is what it was. Prints a summary JSON on stdout; exits 0
//! if the money is conserved, 1 if not.

use clap::Parser;
use serde_json::json;
use troupe_example_accounts as accounts;
use troupe_runtime::{Client, ClientOptions};

/// Opens accounts (keyed actors) across the cluster, runs random transfers between them, and checks that no money was made or lost.
#[derive(Parser)]
struct Args {
    /// HOST:PORT of nodes, comma-separated.
    #[arg(long, env = "TROUPE_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// The cluster's cookie.
    #[arg(long, env = "TROUPE_COOKIE", default_value = troupe_runtime::config::DEV_COOKIE)]
    cookie: String,
    /// Accounts (`acc-0` ...).
    #[arg(long, default_value_t = 8)]
    accounts: usize,
    /// Opening balance of each.
    #[arg(long, default_value_t = 1000)]
    initial: i64,
    /// Transfers.
    #[arg(long, default_value_t = 200)]
    transfers: usize,
    /// Seed of the random plan.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Transfers in flight at once.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let fail = |e: troupe_runtime::ClientError| {
        eprintln!("accounts-run: {e}");
        std::process::ExitCode::from(e.exit_code())
    };
    if a.accounts < 2 {
        eprintln!("accounts-run: --accounts must be at least 2");
        return std::process::ExitCode::from(2);
    }
    let client = match Client::connect(ClientOptions::new(a.seeds, &a.cookie)).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let names: Vec<String> = (0..a.accounts).map(|i| format!("acc-{i}")).collect();
    if let Err(e) = accounts::open_all(&client, &names, a.initial).await {
        return fail(e);
    }
    let before = match accounts::total(&client, &names).await {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let plan = accounts::plan(&names, a.transfers, a.seed);
    let n = plan.len();
    let outcome = accounts::run_transfers(&client, plan, a.parallel, |done| {
        if done % 20 == 0 || done == n {
            eprintln!("accounts-run: {done}/{n} transfers ended");
        }
    })
    .await;
    let after = match accounts::total(&client, &names).await {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    println!(
        "{}",
        json!({
            "transfers": n, "succeeded": outcome.succeeded, "refused": outcome.refused,
            "refunded": outcome.refunded, "other": outcome.other,
            "resubmitted": outcome.resubmitted, "total_before": before, "total_after": after,
        })
    );
    if before == after && outcome.other.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("accounts-run: money was not conserved ({before} before, {after} after) or a transfer ended oddly");
        std::process::ExitCode::from(1)
    }
}
