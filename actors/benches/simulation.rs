//! Seeds per second of the deterministic simulation (`troupe_actors::simulation`).
//!
//! `cargo bench -p troupe-actors --features simulation --bench simulation`; `SIM_SEEDS`
//! seeds (default 200) from `SIM_FIRST_SEED` (default 0). The last line is the JSON the
//! bench contract fixes: `{"bench": "simulation", "seeds", "seeds_per_s", "steps_per_s"}`, plus
//! `failed` (seeds that broke an invariant; then the exit status is 1).

use std::time::Instant;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (first, count) = (env("SIM_FIRST_SEED", 0), env("SIM_SEEDS", 200));
    let started = Instant::now();
    let mut steps = 0u64;
    let mut failed = Vec::new();
    for seed in first..first + count {
        match troupe_actors::simulation::run_seed(seed) {
            Ok(s) => steps += s.steps,
            Err(e) => {
                eprintln!("{e}");
                failed.push(seed);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    if !failed.is_empty() {
        eprintln!("seeds that broke an invariant: {failed:?}");
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "simulation",
            "seeds": count,
            "failed": failed.len(),
            "seeds_per_s": (count as f64 / secs * 10.0).round() / 10.0,
            "steps_per_s": (steps as f64 / secs).round(),
        })
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
