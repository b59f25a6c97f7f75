//! Portfolio pricing on a grid, after seed 001 (Girder): requests look like function
//! calls, calls are referentially transparent so their results are memoized, and
//! different requests that make the same sub-request share one result.
//!
//! `pricing.portfolio` prices a portfolio by calling `pricing.instrument` for each of its
//! instruments in parallel (`ctx.call_many`); `pricing.instrument` is registered pure and
//! mergeable, so an instrument held by many portfolios is priced once: identical requests
//! in flight merge at the key's owner node, and later ones hit the cache.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use troupe_runtime::merge::{CacheMode, TaskProps};
use troupe_runtime::{JobSpec, StepSpec, Task, TaskContext, TaskError, TaskRegistry};

/// Input of `pricing.instrument`.
#[derive(Debug, Deserialize, Serialize)]
pub struct Instrument {
    /// The instrument's id.
    pub id: String,
    /// How long pricing takes (a model run), in milliseconds.
    #[serde(default = "default_cost")]
    pub cost_ms: u64,
}
fn default_cost() -> u64 {
    100
}

/// A deterministic price for an instrument id.
pub fn price_of(id: &str) -> f64 {
    let h = id
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    ((h % 10_000) as f64) / 100.0 + 1.0
}

/// `pricing.instrument`: prices one instrument (slowly).
pub struct PriceInstrument;
impl Task for PriceInstrument {
    type Input = Instrument;
    type Output = Value;
    async fn run(&self, _ctx: TaskContext, i: Instrument) -> Result<Value, TaskError> {
        tokio::time::sleep(std::time::Duration::from_millis(i.cost_ms)).await;
        Ok(json!({"id": i.id, "price": price_of(&i.id)}))
    }
}

/// Input of `pricing.portfolio`.
#[derive(Debug, Deserialize, Serialize)]
pub struct Portfolio {
    /// Its name.
    pub name: String,
    /// Instrument ids held (one unit each).
    pub instruments: Vec<String>,
    /// Model cost per instrument.
    #[serde(default = "default_cost")]
    pub cost_ms: u64,
}

/// `pricing.portfolio`: the sum of its instruments' prices, priced by re-entrant calls.
pub struct PricePortfolio;
impl Task for PricePortfolio {
    type Input = Portfolio;
    type Output = Value;
    async fn run(&self, ctx: TaskContext, p: Portfolio) -> Result<Value, TaskError> {
        let inputs = p
            .instruments
            .iter()
            .map(|id| json!({"id": id, "cost_ms": p.cost_ms}))
            .collect();
        let prices = ctx.call_many("pricing.instrument", inputs).await?;
        let total: f64 = prices.iter().filter_map(|v| v["price"].as_f64()).sum();
        Ok(json!({"portfolio": p.name, "value": (total * 100.0).round() / 100.0}))
    }
}

/// Adds the pricing tasks to `r`.
pub fn register(r: &mut TaskRegistry) {
    r.register_with("pricing.instrument", PriceInstrument, TaskProps::PURE)
        .register("pricing.portfolio", PricePortfolio);
}

/// `n` portfolios over a universe of `universe` instruments, each holding `size` of
/// them (overlapping).
pub fn portfolios(n: usize, universe: usize, size: usize) -> Vec<Portfolio> {
    (0..n)
        .map(|p| Portfolio {
            name: format!("pf-{p}"),
            instruments: (0..size)
                .map(|k| format!("INS-{}", (p * 3 + k * 7) % universe))
                .collect(),
            cost_ms: 100,
        })
        .collect()
}

/// The job: one step per portfolio, run in parallel; `fresh` bypasses the cache (each
/// instrument is then priced once in this run, shared by merging).
pub fn job(portfolios: &[Portfolio], fresh: bool) -> JobSpec {
    let mut j = JobSpec::new("pricing");
    if fresh {
        j.cache = CacheMode::Bypass;
    }
    for p in portfolios {
        j = j.step(StepSpec::new(p.name.clone(), "pricing.portfolio").input(json!(p)));
    }
    j
}
