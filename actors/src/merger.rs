//! The merger: the owner of request keys on this node.
//!
//! Requests for tasks registered as mergeable or pure are routed by the dispatchers of all
//! nodes to the owner of their key (rendezvous hashing over the nodes that serve the
//! task; see `troupe_runtime::merge`), so identical requests from any job, client or node
//! meet here. A pure task's cached result answers at once (a cache hit). A mergeable
//! request identical to one in flight waits for it (merged). Otherwise the request runs
//! as an execution on a worker of the task, and its result goes to the requester's job
//! as usual and here, to answer every request that joined it and to fill the cache.
//!
//! If the execution is cancelled (the leading request's job was cancelled), the next
//! waiting request leads a new execution; if the node running it leaves, it runs again.
//! If this node leaves, the jobs' supervisors dispatch their waiting attempts again and
//! the keys move to the next owner.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use troupe_runtime::merge::CacheMode;
use troupe_runtime::protocol::{
    merger_group, CacheStats, JobManagerMessage, MergerMessage, ResultSource, StepRequest,
    StepResult, WorkerPoolMessage,
};
use troupe_runtime::task::TaskError;
use troupe_runtime::wire::Wire;

use crate::scheduler::pick_worker;
use crate::worker_pool::send_result;
use crate::{ClusterView, NodeContext};

/// Counters of a node's merger, shared with membership gossip.
#[derive(Debug, Default)]
pub struct CacheCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: Arc<AtomicU64>,
    merged: AtomicU64,
    entries: AtomicU64,
}

impl CacheCounters {
    /// A snapshot.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            merged: self.merged.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
        }
    }
}

/// The merger.
pub(crate) struct Merger;

struct InFlight {
    leader: StepRequest,
    waiters: Vec<StepRequest>,
    node: Option<String>,
}

/// State of the merger.
pub(crate) struct MergerState {
    ctx: NodeContext,
    inflight: HashMap<String, InFlight>,
    cache: moka::sync::Cache<String, Arc<Value>>,
    rr: usize,
}

fn answer(
    view: &Arc<ClusterView>,
    req: &StepRequest,
    node: &str,
    result: Result<Value, TaskError>,
    source: ResultSource,
) {
    send_result(
        view,
        StepResult {
            job: req.job.clone(),
            step: req.step.clone(),
            attempt: req.attempt,
            node: node.to_string(),
            result,
            source,
            epoch: req.epoch,
            ran_us: None,
        },
        &req.owner,
    );
}

impl MergerState {
    /// Runs `req` on a worker of its task; returns the node, or answers it with an error.
    fn execute(&mut self, req: &StepRequest) -> Option<String> {
        let mut run = req.clone();
        run.merger = Some(self.ctx.view.node.clone());
        match pick_worker(&self.ctx.view, &req.task, &mut self.rr) {
            Some((pool, node)) => {
                if pool.cast(WorkerPoolMessage::Run(Wire::new(run))).is_ok() {
                    return Some(node);
                }
                answer(
                    &self.ctx.view,
                    req,
                    &self.ctx.view.node,
                    Err(TaskError::transient(format!("worker on {node} went away"))),
                    ResultSource::Executed,
                );
            }
            None => answer(
                &self.ctx.view,
                req,
                &self.ctx.view.node,
                Err(TaskError::transient(format!(
                    "no node serves task {:?} right now",
                    req.task
                ))),
                ResultSource::Executed,
            ),
        }
        None
    }

    fn request(&mut self, req: StepRequest) {
        tracing::debug!(job = %req.job, step = %req.step, attempt = req.attempt, "merge request");
        let Some(key) = req.key.clone() else {
            tracing::warn!(job = %req.job, step = %req.step, "merge request without a key; running it");
            self.execute(&req);
            return;
        };
        let props = self.ctx.view.props(&req.task);
        let counters = &self.ctx.view.cache;
        if props.pure && req.cache == CacheMode::Use {
            if let Some(v) = self.cache.get(&key) {
                counters.hits.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(troupe_runtime::observe::metric::CACHE_HITS).increment(1);
                answer(
                    &self.ctx.view,
                    &req,
                    &self.ctx.view.node,
                    Ok((*v).clone()),
                    ResultSource::Cached,
                );
                return;
            }
            counters.misses.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(troupe_runtime::observe::metric::CACHE_MISSES).increment(1);
        }
        if props.mergeable && req.cache != CacheMode::Off {
            if let Some(f) = self.inflight.get_mut(&key) {
                counters.merged.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(troupe_runtime::observe::metric::MERGED).increment(1);
                f.waiters.push(req);
                return;
            }
        }
        let node = self.execute(&req);
        if node.is_some() && props.mergeable && req.cache != CacheMode::Off {
            self.inflight.entry(key).or_insert(InFlight {
                leader: req,
                waiters: Vec::new(),
                node,
            });
        }
    }

    /// Publishes the cache's entry count (`nodes --json`, `/api/nodes`). moka counts
    /// an insert or a removal only once its pending work ran: run it first, or the count
    /// lags (0 after the first insert). Only on a pure result or an invalidation.
    fn publish_entries(&self) {
        self.cache.run_pending_tasks();
        self.ctx
            .view
            .cache
            .entries
            .store(self.cache.entry_count(), Ordering::Relaxed);
    }

    fn executed(&mut self, key: String, result: StepResult, cancelled: bool) {
        let props = self.ctx.view.props(troupe_runtime::merge::key_task(&key));
        if let (false, true, Ok(v)) = (cancelled, props.pure, &result.result) {
            self.cache.insert(key.clone(), Arc::new(v.clone()));
            self.publish_entries();
        }
        let Some(mut f) = self.inflight.remove(&key) else {
            return;
        };
        if !(f.leader.job == result.job
            && f.leader.step == result.step
            && f.leader.attempt == result.attempt)
        {
            // An execution we replaced (its node left): the current one will answer.
            self.inflight.insert(key, f);
            return;
        }
        if cancelled {
            // The leader's job was cancelled; the next waiter leads a new execution.
            if !f.waiters.is_empty() {
                let next = f.waiters.remove(0);
                let node = self.execute(&next);
                self.inflight.insert(
                    key,
                    InFlight {
                        leader: next,
                        waiters: f.waiters,
                        node,
                    },
                );
            }
            return;
        }
        for w in &f.waiters {
            answer(
                &self.ctx.view,
                w,
                &result.node,
                result.result.clone(),
                ResultSource::Merged,
            );
        }
    }

    fn node_down(&mut self, lost: &str) {
        let keys: Vec<String> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.node.as_deref() == Some(lost))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(mut f) = self.inflight.remove(&k) {
                tracing::info!(key = %k, node = %lost, "execution lost with its node; running it again");
                f.node = self.execute(&f.leader);
                if f.node.is_some() {
                    self.inflight.insert(k, f);
                } else {
                    for w in &f.waiters {
                        answer(
                            &self.ctx.view,
                            w,
                            &self.ctx.view.node,
                            Err(TaskError::transient(format!(
                                "node {lost} left and no other serves the task"
                            ))),
                            ResultSource::Executed,
                        );
                    }
                }
            }
        }
    }
}

impl Actor for Merger {
    type Msg = MergerMessage;
    type State = MergerState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(merger_group(&ctx.view.node), vec![myself.get_cell()]);
        let evictions = ctx.view.cache.evictions.clone();
        let c = ctx.config.cache;
        let cache = moka::sync::Cache::builder()
            .weigher(|k: &String, v: &Arc<Value>| {
                let bytes = k.len()
                    + serde_json::to_string(v.as_ref())
                        .map(|s| s.len())
                        .unwrap_or(0);
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .max_capacity(c.max_bytes)
            .time_to_live(Duration::from_millis(c.ttl_ms.max(1)))
            .eviction_listener(move |_k, _v, cause| {
                if cause.was_evicted() {
                    evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Ok(MergerState {
            ctx,
            inflight: HashMap::new(),
            cache,
            rr: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MergerMessage::Request(r) => match r.into_inner() {
                Ok(r) => state.request(r),
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable merge request"),
            },
            MergerMessage::Executed(e) => match e.into_inner() {
                Ok(e) => state.executed(e.key, e.result, e.cancelled),
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable execution result"),
            },
            MergerMessage::Invalidate(key, reply) => {
                let had = state.cache.remove(&key).is_some();
                state.publish_entries();
                let _ = reply.send(had);
            }
            MergerMessage::NodeDown(n) => state.node_down(&n),
        }
        Ok(())
    }
}

/// Tells the job manager and merger of `this` node that `node` left.
pub(crate) fn announce_node_down(this: &str, node: &str) {
    let local = |group: String| ractor::pg::get_local_members(&group).into_iter().next();
    match local(troupe_runtime::protocol::job_manager_group(this)) {
        Some(jm) => {
            let jm: ActorRef<JobManagerMessage> = jm.into();
            let _ = jm.cast(JobManagerMessage::NodeDown(node.to_string()));
        }
        None => tracing::warn!(node, "no job manager to tell that a node left"),
    }
    if let Some(m) = local(merger_group(this)) {
        let m: ActorRef<MergerMessage> = m.into();
        let _ = m.cast(MergerMessage::NodeDown(node.to_string()));
    }
}
