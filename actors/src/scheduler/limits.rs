//! Task limits (`task_limits` in the configuration): a gate per limited task that the
//! scheduler asks before a waiting attempt of that task takes a slot.
//!
//! A gate counts the task's running attempts against a concurrency cap and holds a token
//! bucket for its rate. Cluster-wide figures are divided evenly among the nodes that serve
//! the task now, as this node's membership sees them (worked out again every 200 ms), so
//! the cluster stays within a limit while views agree. Plain data but for that share,
//! which reads the cluster view.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use troupe_runtime::config::TaskLimit;

use crate::ClusterView;

/// How often a gate's share of cluster-wide limits is worked out again.
const SHARE_EVERY: Duration = Duration::from_millis(200);

/// The gate of one task with limits.
#[derive(Debug)]
struct Gate {
    running: usize,
    cap: Option<usize>,
    rate: Option<f64>,
    tokens: f64,
    refilled: Instant,
    computed: Instant,
}

/// Gates by task, and whether a timer will pump when rate tokens come back.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    by_task: HashMap<String, Gate>,
    /// A timer will start waiting attempts when the next rate token comes.
    pub(crate) timer_armed: bool,
    /// The tasks at their cap as last told to the cluster.
    pub(crate) saturated: Vec<String>,
}

/// This node's share of `limit`: its concurrency cap and its rate, from the nodes that
/// serve the task now (cluster-wide figures divided among them; the remainder of the
/// concurrency goes to the first nodes by name; every node at least 1).
fn shares(view: &ClusterView, limit: &TaskLimit) -> (Option<usize>, Option<f64>) {
    let mut nodes: Vec<String> = view
        .live_pools(&limit.task)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    nodes.sort();
    nodes.dedup();
    let n = nodes.len().max(1);
    let rank = nodes.iter().position(|x| *x == view.node).unwrap_or(0);
    let cluster = limit
        .max_in_cluster
        .map(|m| (m / n + usize::from(rank < m % n)).max(1));
    let cap = match (limit.max_per_node, cluster) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (cap, limit.rate_per_s.map(|r| r / n as f64))
}

impl Gates {
    /// The gate of `task`, its shares fresh; `None` for a task without limits.
    fn gate(
        &mut self,
        view: &ClusterView,
        limits: &[TaskLimit],
        task: &str,
        now: Instant,
    ) -> Option<&mut Gate> {
        let limit = limits.iter().find(|l| l.task == task)?;
        let g = self.by_task.entry(task.to_string()).or_insert_with(|| {
            let (cap, rate) = shares(view, limit);
            Gate {
                running: 0,
                cap,
                rate,
                tokens: rate.map_or(0.0, |r| r.max(1.0)),
                refilled: now,
                computed: now,
            }
        });
        if now.duration_since(g.computed) >= SHARE_EVERY {
            (g.cap, g.rate) = shares(view, limit);
            g.computed = now;
        }
        if let Some(r) = g.rate {
            let dt = now.duration_since(g.refilled).as_secs_f64();
            g.tokens = (g.tokens + r * dt).min(r.max(1.0));
            g.refilled = now;
        }
        Some(g)
    }

    /// Whether an attempt of `task` may start now; `Err(Some(wait))` when it waits for a
    /// rate token, `Err(None)` when the task is at its concurrency cap.
    pub(crate) fn check(
        &mut self,
        view: &ClusterView,
        limits: &[TaskLimit],
        task: &str,
        now: Instant,
    ) -> Result<(), Option<Duration>> {
        let Some(g) = self.gate(view, limits, task, now) else {
            return Ok(());
        };
        if g.cap.is_some_and(|c| g.running >= c) {
            return Err(None);
        }
        match g.rate {
            Some(r) if g.tokens < 1.0 => Err(Some(Duration::from_secs_f64(
                ((1.0 - g.tokens) / r).clamp(0.001, 1.0),
            ))),
            _ => Ok(()),
        }
    }

    /// An attempt of `task` took a slot.
    pub(crate) fn started(&mut self, task: &str) {
        if let Some(g) = self.by_task.get_mut(task) {
            g.running += 1;
            if g.rate.is_some() {
                g.tokens -= 1.0;
            }
        }
    }

    /// An attempt of `task` ended.
    pub(crate) fn finished(&mut self, task: &str) {
        if let Some(g) = self.by_task.get_mut(task) {
            g.running = g.running.saturating_sub(1);
        }
    }

    /// Tasks at their concurrency cap now.
    pub(crate) fn at_cap(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .by_task
            .iter()
            .filter(|(_, g)| g.cap.is_some_and(|c| g.running >= c))
            .map(|(k, _)| k.clone())
            .collect();
        t.sort();
        t
    }
}
