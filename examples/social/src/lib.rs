//! Social media aggregation, after seed 000 (sweetiQ's distributed job control).
//!
//! A user's job fetches follower counts from each linked network, in parallel and only for
//! the networks that are linked (`when`), aggregates them without waiting for networks that
//! are not linked or that failed (`optional`), and breaks the total down over the user's
//! group hierarchy by a task that runs itself on each sub-group (recursive sub-jobs).
//! Twitter's API fails transiently on a first attempt (retried); LinkedIn's token is
//! revoked, so its fetch stops for the user's action until resumed.

use serde::Deserialize;
use serde_json::{json, Value};
use troupe_runtime::{JobSpec, RetryPolicy, StepSpec, Task, TaskContext, TaskError, TaskRegistry};

/// The networks a user can link.
pub const NETWORKS: [&str; 4] = ["facebook", "twitter", "instagram", "linkedin"];

/// Input of `social.fetch`.
#[derive(Debug, Deserialize)]
pub struct FetchInput {
    /// The network.
    pub network: String,
    /// The linked account.
    pub account: String,
}

/// A stable pseudo follower count for an account (no network access in an example).
pub fn followers(network: &str, account: &str) -> u64 {
    let h = network
        .bytes()
        .chain(account.bytes())
        .fold(1469598103934665603u64, |h, b| {
            (h ^ b as u64).wrapping_mul(1099511628211)
        });
    100 + h % 900
}

/// `social.fetch`: the follower count of one account.
pub struct Fetch;
impl Task for Fetch {
    type Input = FetchInput;
    type Output = Value;
    async fn run(&self, ctx: TaskContext, i: FetchInput) -> Result<Value, TaskError> {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        match i.network.as_str() {
            "twitter" if ctx.attempt == 1 => {
                Err(TaskError::transient("twitter: rate limited (HTTP 429)"))
            }
            "linkedin" if !ctx.resumed => Err(TaskError::needs_action(format!(
                "linkedin: the access token of {} was revoked; ask the user to re-link the account",
                i.account
            ))),
            _ => Ok(json!({"network": i.network, "value": followers(&i.network, &i.account)})),
        }
    }
}

/// `social.aggregate`: the sum of the fetched counts, by network.
pub struct Aggregate;
impl Task for Aggregate {
    type Input = Value;
    type Output = Value;
    async fn run(&self, ctx: TaskContext, _: Value) -> Result<Value, TaskError> {
        let by: serde_json::Map<String, Value> = ctx
            .deps
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.get("value")?.clone())))
            .collect();
        let total: u64 = by.values().filter_map(Value::as_u64).sum();
        Ok(json!({"total": total, "networks": by}))
    }
}

/// A group of the user's organisation: its own members and its sub-groups.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// People directly in the group.
    pub members: u64,
    /// Sub-groups.
    #[serde(default)]
    pub children: Vec<Group>,
}

/// `social.breakdown`: people per group, computed by running itself on every sub-group as
/// a sub-job of the same job.
pub struct Breakdown;
impl Task for Breakdown {
    type Input = Group;
    type Output = Value;
    async fn run(&self, ctx: TaskContext, g: Group) -> Result<Value, TaskError> {
        let mut subs = Vec::new();
        for (k, child) in g.children.iter().enumerate() {
            let spec = JobSpec::new("breakdown")
                .step(StepSpec::new(format!("g{k}"), "social.breakdown").input(json!(child)));
            subs.push(ctx.sub_job(spec));
        }
        let mut total = g.members;
        let mut parts = Vec::new();
        for r in futures::future::join_all(subs).await {
            let v = r?;
            total += v["total"].as_u64().unwrap_or(0);
            parts.push(v);
        }
        Ok(json!({"group": g.name, "total": total, "children": parts}))
    }
}

/// Adds the social tasks to `r`.
pub fn register(r: &mut TaskRegistry) {
    r.register("social.fetch", Fetch)
        .register("social.aggregate", Aggregate)
        .register("social.breakdown", Breakdown);
}

/// The job for a user with `accounts` (network -> account) and an organisation `org`.
pub fn job(accounts: &Value, org: &Group) -> JobSpec {
    let mut j = JobSpec::new("social").with_input(json!({"accounts": accounts}));
    j.retry = RetryPolicy {
        max_attempts: 3,
        backoff_ms: 50,
    };
    for n in NETWORKS {
        j = j.step(
            StepSpec::new(n, "social.fetch")
                .input(json!({"network": n, "account": accounts.get(n).cloned().unwrap_or(Value::Null)}))
                .when(format!("has(input.accounts.{n})")),
        );
    }
    j.step(StepSpec::new("aggregate", "social.aggregate").optional(NETWORKS))
        .step(StepSpec::new("breakdown", "social.breakdown").input(json!(org)))
}

/// A small organisation with three levels.
pub fn sample_org() -> Group {
    let leaf = |name: &str, members| Group {
        name: name.into(),
        members,
        children: vec![],
    };
    Group {
        name: "acme".into(),
        members: 2,
        children: vec![
            Group {
                name: "sales".into(),
                members: 3,
                children: vec![leaf("emea", 4), leaf("apac", 5)],
            },
            Group {
                name: "eng".into(),
                members: 6,
                children: vec![leaf("core", 7)],
            },
        ],
    }
}
