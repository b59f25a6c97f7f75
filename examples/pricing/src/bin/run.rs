//! `pricing-run --seeds ... --cookie ... [--portfolios 12 --universe 15 --size 6] [--fresh]`:
//! prices the portfolios and prints each value, then how many instrument pricings were
//! asked for and how many actually ran.

use std::collections::BTreeSet;

use clap::Parser;
use troupe_runtime::{Client, ClientOptions, JobState};

/// Prices portfolios by re-entrant calls to a pure instrument-pricing task; shared instruments are priced once.
#[derive(Parser)]
struct Args {
    /// HOST:PORT of nodes, comma-separated.
    #[arg(long, env = "TROUPE_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// The cluster's cookie.
    #[arg(long, env = "TROUPE_COOKIE", default_value = troupe_runtime::config::DEV_COOKIE)]
    cookie: String,
    /// Portfolios.
    #[arg(long, default_value_t = 12)]
    portfolios: usize,
    /// Distinct instruments they are drawn from.
    #[arg(long, default_value_t = 15)]
    universe: usize,
    /// Instruments per portfolio.
    #[arg(long, default_value_t = 6)]
    size: usize,
    /// Do not use cached prices (each instrument is priced once in this run).
    #[arg(long)]
    fresh: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let client = match Client::connect(ClientOptions::new(a.seeds, &a.cookie)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pricing-run: {e}");
            return std::process::ExitCode::from(e.exit_code());
        }
    };
    let pfs = troupe_example_pricing::portfolios(a.portfolios, a.universe, a.size);
    let distinct: BTreeSet<&String> = pfs.iter().flat_map(|p| &p.instruments).collect();
    let st = match client
        .submit(troupe_example_pricing::job(&pfs, a.fresh))
        .await
    {
        Ok(mut h) => match h.wait().await {
            Ok(st) => st,
            Err(e) => {
                eprintln!("pricing-run: {e}");
                return std::process::ExitCode::from(e.exit_code());
            }
        },
        Err(e) => {
            eprintln!("pricing-run: {e}");
            return std::process::ExitCode::from(e.exit_code());
        }
    };
    if st.state != JobState::Succeeded {
        eprintln!(
            "pricing-run: job {} {:?}: {}",
            st.id,
            st.state,
            st.error.unwrap_or_default()
        );
        return std::process::ExitCode::from(1);
    }
    for p in &pfs {
        let v = st
            .output
            .as_ref()
            .and_then(|o| o.get(&p.name))
            .cloned()
            .unwrap_or_default();
        println!("{} = {}", p.name, v["value"]);
    }
    let calls: Vec<_> = st
        .steps
        .values()
        .filter(|s| s.task == "pricing.instrument")
        .collect();
    let ran = calls.iter().filter(|s| !s.cache_hit && !s.merged).count();
    let merged = calls.iter().filter(|s| s.merged).count();
    let cached = calls.iter().filter(|s| s.cache_hit).count();
    println!(
        "instrument pricings asked: {}, ran: {ran}, merged: {merged}, from cache: {cached}, distinct instruments: {}",
        calls.len(),
        distinct.len()
    );
    std::process::ExitCode::SUCCESS
}
