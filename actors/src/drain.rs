//! Graceful leave. On SIGTERM a node stops taking work, hands its keyed actors off (each
//! activation saves, stops and releases its lease), lets the attempts it runs finish
//! within `drain_timeout_ms`, hands back everything else to the jobs' owners (which run
//! it elsewhere as new attempts, without using retries), and waits for the jobs it owns
//! to end (while another node is up to run their steps), so that nothing is lost; then
//! the node stops. Not an actor: one procedure the
//! node's main task runs before it stops the actor tree.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use troupe_runtime::protocol::{
    first_member, job_manager_group, task_group, worker_pool_group, ActorHostMessage,
    JobManagerMessage, MembershipMessage,
};

use crate::scheduler::attempt_of;
use crate::NodeContext;

/// What a drain did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// Waiting attempts handed back to their owners.
    pub handed_back: usize,
    /// Running attempts that finished during the drain.
    pub finished: usize,
    /// Running attempts stopped at the timeout and handed back.
    pub stopped: usize,
    /// Keyed-actor activations handed off (stopped after their saves, leases released).
    pub actors_handed_off: u64,
    /// Jobs owned here still running at the timeout (they stay in the journal: they
    /// resume when the node starts again, or move to a node holding a copy; without a
    /// journal they end with the node).
    pub jobs_left: u32,
}

/// True if some other node is up (its membership actor visible and not declared down).
fn peers_up(ctx: &NodeContext) -> bool {
    ractor::pg::get_members(&troupe_runtime::protocol::MEMBERSHIP_GROUP.to_string())
        .into_iter()
        .map(|c| ctx.view.node_of(c.get_id()))
        .any(|n| n != ctx.view.node && !ctx.view.is_down(&n))
}

/// Drains this node: see the module docs. Returns when nothing runs here and no job
/// owned here is running, or at `timeout`.
pub async fn drain(ctx: &NodeContext, timeout: Duration) -> DrainReport {
    let view = &ctx.view;
    view.draining.store(true, Ordering::SeqCst);
    let mut report = DrainReport::default();
    // No new work: out of the task groups, so no dispatcher picks this node (the local
    // one included), and peers learn the state from the next gossip, sent now.
    if let Some(pool) = ractor::pg::get_local_members(&worker_pool_group(&view.node))
        .into_iter()
        .next()
    {
        for task in ctx.registry.names() {
            ractor::pg::leave(task_group(&task), vec![pool.clone()]);
        }
    }
    if let Some(m) = crate::find_on::<MembershipMessage>(crate::names::MEMBERSHIP, &view.node) {
        let _ = m.cast(MembershipMessage::Announce);
    }
    // Keyed actors: every activation saves, stops and releases its lease; their next
    // messages activate them on the nodes that stay (from those saves).
    if let Some(host) = crate::find_on::<ActorHostMessage>(crate::names::ACTOR_HOST, &view.node) {
        let wait = timeout.min(Duration::from_secs(10));
        match host.call(ActorHostMessage::Leave, Some(wait)).await {
            Ok(ractor::rpc::CallResult::Success(n)) => report.actors_handed_off = n,
            _ => tracing::warn!("actors were not all handed off in time; the others are taken over from their saved copies"),
        }
    }
    let scheduler = &ctx.scheduler;
    let waiting = scheduler.take_waiting();
    report.handed_back = waiting.len();
    for r in waiting {
        scheduler.hand_back(&r.owner, attempt_of(&r));
    }
    let running_at_start = scheduler.running();
    tracing::info!(
        handed_back = report.handed_back,
        running = running_at_start,
        owned_jobs = view.owned_jobs.load(Ordering::Relaxed),
        timeout_ms = timeout.as_millis() as u64,
        "draining: no new work; waiting attempts handed back; letting running attempts finish"
    );
    let start = Instant::now();
    let mut last_log = start;
    loop {
        let running = scheduler.running();
        // The jobs owned here can only go on if another node runs their steps.
        let owned = if peers_up(ctx) {
            view.owned_jobs.load(Ordering::Relaxed)
        } else {
            0
        };
        if running == 0 && owned == 0 {
            break;
        }
        if start.elapsed() >= timeout {
            break;
        }
        if last_log.elapsed() >= Duration::from_secs(1) {
            last_log = Instant::now();
            tracing::info!(running, owned_jobs = owned, "draining");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Whatever still runs is stopped and handed back.
    let left = scheduler.stop_running();
    report.stopped = left.len();
    report.finished = running_at_start.saturating_sub(report.stopped);
    for (a, owner) in left {
        scheduler.hand_back(&owner, a);
    }
    report.jobs_left = view.owned_jobs.load(Ordering::Relaxed);
    if report.jobs_left > 0 {
        if ctx.journal.is_some() {
            tracing::warn!(
                jobs = report.jobs_left,
                "jobs owned by this node had not ended when the drain timed out; they stay in its journal and resume when it starts again, or move to a node with a copy after failure.takeover_after_ms"
            );
        } else {
            tracing::warn!(
                jobs = report.jobs_left,
                "jobs owned by this node had not ended when the drain timed out; without a journal they end with it"
            );
        }
    }
    if ctx.journal.is_some() {
        drop_copies(ctx).await;
    }
    hand_ends(ctx).await;
    tracing::info!(
        handed_back = report.handed_back,
        finished = report.finished,
        stopped = report.stopped,
        jobs_left = report.jobs_left,
        took_ms = start.elapsed().as_millis() as u64,
        "drained"
    );
    report
}

/// Hands the final statuses of the jobs that ended here to nodes that stay, so that
/// `status` answers for them while this node is gone.
async fn hand_ends(ctx: &NodeContext) {
    let Some(jm) = crate::find_on::<JobManagerMessage>(crate::names::JOB_MANAGER, &ctx.view.node)
    else {
        return;
    };
    match jm
        .call(JobManagerMessage::HandEnds, Some(Duration::from_secs(5)))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(n)) if n > 0 => {
            tracing::info!(
                jobs = n,
                "handed the statuses of the jobs that ended here to nodes that stay"
            )
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not hand the statuses of ended jobs to other nodes")
        }
    }
}

/// Drops the copies of other nodes' jobs kept here and tells their owners, so that their
/// jobs' ends wait for no ack from a node that is gone, and no copy here can be taken
/// over when this node starts again. (Owners that do not hear it wait for the core group
/// to record their ends instead, as for a node that died.)
async fn drop_copies(ctx: &NodeContext) {
    let me = &ctx.view.node;
    let dropped = match crate::find_on::<JobManagerMessage>(crate::names::JOB_MANAGER, me) {
        Some(jm) => matches!(
            jm.call(JobManagerMessage::DropCopies, Some(Duration::from_secs(5)))
                .await,
            Ok(ractor::rpc::CallResult::Success(true))
        ),
        None => false,
    };
    if !dropped {
        tracing::warn!("the copies of other nodes' jobs kept here could not be dropped; their owners wait for the core group to record those jobs' ends");
        return;
    }
    let owners: Vec<String> = crate::live_nodes(&ctx.view)
        .into_iter()
        .filter(|n| n != me)
        .collect();
    let told = futures::future::join_all(owners.iter().map(|owner| async move {
        let Some(jm) = first_member::<JobManagerMessage>(&job_manager_group(owner)) else {
            return false;
        };
        let me = me.clone();
        matches!(
            jm.call(
                move |reply| JobManagerMessage::CopiesDropped(me, reply),
                Some(Duration::from_secs(2))
            )
            .await,
            Ok(ractor::rpc::CallResult::Success(true))
        )
    }))
    .await;
    let told = told.into_iter().filter(|t| *t).count();
    tracing::info!(
        owners = told,
        of = owners.len(),
        "dropped the copies of other nodes' jobs kept here and told their owners"
    );
}
