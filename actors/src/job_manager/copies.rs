//! Copies and takeovers, the job manager's side: it carries out what the takeover rules
//! ([`super::takeover`]) decide.
//!
//! Other nodes copy their journal writes here (`journal_replicas`): they are kept in this
//! node's journal unless fenced (from an epoch that is over), and a fenced writer is told
//! who owns the job now. Every `SWEEP_EVERY` the rules look for copies whose owner stayed
//! gone; this asks the core group for them off the mailbox, rebuilds a granted job from its
//! copy and runs it at the new epoch, tells every node (`JobMoved`), stops this node's own
//! run of a job another node holds at a newer epoch, and tells a node that comes back of
//! the jobs taken from it.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::core::{CoreCommand, CoreDecision};
use ractor::ActorRef;
use troupe_runtime::protocol::{
    first_member, job_manager_group, worker_pool_group, AbandonedRun, JobManagerMessage, JobMoved,
    ReplicaBatch, ReplicaWhat, WorkerPoolMessage,
};
use troupe_runtime::vocab::Holder;
use troupe_runtime::wire::Wire;

use super::takeover::{Effect, WriteKind, WriteVerdict};
use super::JobManagerState;

/// The most job ends one core group entry records.
const MAX_ENDS_PER_RECORD: usize = 1_000;

/// How often recording ends is tried every 500 ms (as long as a takeover's grace period
/// by default) before it is logged and tried every 2 s.
const RECORD_TRIES: u32 = 20;

/// How long a takeover question the core group refused is asked again at once (an
/// election under way ends within a lease and an election timeout), and how often.
const ASK_AGAIN_FOR: std::time::Duration = std::time::Duration::from_secs(3);
const ASK_AGAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// [`record_ends`], off the mailbox, in entries of at most [`MAX_ENDS_PER_RECORD`] jobs.
pub(super) fn record_ends_later(
    node: &str,
    ends: Vec<(String, u64)>,
    journal: crate::journal::Journal,
    myself: &ActorRef<JobManagerMessage>,
) {
    let me = node.to_string();
    let myself = myself.clone();
    tokio::spawn(async move {
        for chunk in ends.chunks(MAX_ENDS_PER_RECORD) {
            record_ends(&me, chunk.to_vec(), &journal, &myself).await;
        }
    });
}

/// How long a node that came up is looked for, to tell it of the jobs taken from it: its
/// job manager joins its process group a little after the node is seen up.
const TELL_MOVED_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Tells node `to` that the jobs of `moves` belong to other nodes now, waiting (off the
/// mailbox) for its job manager to be visible. Without this a restarted node whose job
/// manager was not visible yet would not hear of them, and would answer for a job with
/// its own run's end, which is not the job's.
fn tell_moved(to: String, moves: Vec<JobMoved>) {
    tokio::spawn(async move {
        let start = Instant::now();
        loop {
            if let Some(jm) = first_member::<JobManagerMessage>(&job_manager_group(&to)) {
                for m in moves {
                    let _ = jm.cast(JobManagerMessage::JobMoved(Wire::new(m)));
                }
                return;
            }
            if start.elapsed() >= TELL_MOVED_FOR {
                tracing::warn!(node = %to, jobs = moves.len(), "could not tell a node that came up of the jobs taken over from it (its job manager is not visible); it learns of them from the core group when asked");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
}

/// Has the core group record that `node`'s runs of `ends` (job, epoch) ended, trying again
/// while it does not answer; tells `myself` of each job another node holds now.
async fn record_ends(
    node: &str,
    ends: Vec<(String, u64)>,
    journal: &crate::journal::Journal,
    myself: &ActorRef<JobManagerMessage>,
) {
    let jobs: Vec<String> = ends.iter().map(|(j, _)| j.clone()).collect();
    let cmd = CoreCommand::JobsEnded {
        node: node.to_string(),
        jobs: ends,
    };
    // Ends wait for this answer to be published: asked until the core group answers
    // (a minority side waits for the heal).
    for tries in 1u32.. {
        match crate::core::decide(node, cmd.clone()).await {
            Ok(CoreDecision::Owners(holders)) => {
                for (job, holder) in jobs.into_iter().zip(holders) {
                    // A supervisor waiting to publish the end hears it; else the job
                    // manager learns of a move.
                    if journal.end_recorded(&job, holder.clone()) {
                        continue;
                    }
                    let _ = match holder {
                        Some(h) => {
                            tracing::warn!(job = %job, owner = %h.node, epoch = h.epoch, "a job that ended here was taken over meanwhile; its holder answers for it");
                            myself.cast(JobManagerMessage::JobMoved(Wire::new(JobMoved {
                                job,
                                owner: h.node,
                                epoch: h.epoch,
                            })))
                        }
                        None => myself.cast(JobManagerMessage::EndRecorded(job)),
                    };
                }
                return;
            }
            Ok(other) => {
                tracing::warn!(answer = ?other, "unexpected answer to recording job ends");
                return;
            }
            Err(r) => {
                if tries == RECORD_TRIES {
                    tracing::warn!(jobs = jobs.len(), reason = %r.message, "the core group does not answer; the ends of these jobs are not published until it records them (asked again every 2 s)");
                }
                let wait = if tries < RECORD_TRIES { 500 } else { 2000 };
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
        }
    }
}

/// How long a node that came up is asked which copied jobs it knows nothing of.
const ASK_OWNER_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// How often the owners of copies kept here since the last look are asked again which of
/// them they know nothing of (see [`super::takeover::Takeovers::long_held`]): a copy is
/// at least this old when its owner is asked, and a job whose owner lost it waits at most
/// about twice this long.
const ASK_OWNERS_AGAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks `owner`, off the mailbox, which of `jobs` (its own, copied here) it knows nothing
/// of, and tells `myself` ([`JobManagerMessage::Forsaken`]). With `journal_ack =
/// "copied"` a submission is answered once a replica holds its start, before the owner's
/// commit: an owner that crashed and came back within that window lost the job, which
/// only its copies hold now. Asked again while the owner's job manager is not in view or
/// does not answer, for [`ASK_OWNER_FOR`].
fn unknown_to_owner(owner: String, jobs: Vec<String>, myself: ActorRef<JobManagerMessage>) {
    tokio::spawn(async move {
        let start = Instant::now();
        while start.elapsed() < ASK_OWNER_FOR {
            if let Some(jm) = first_member::<JobManagerMessage>(&job_manager_group(&owner)) {
                let asked = jm
                    .call(
                        |r| JobManagerMessage::Unknown(Wire::new(jobs.clone()), r),
                        Some(std::time::Duration::from_secs(2)),
                    )
                    .await;
                if let Ok(ractor::rpc::CallResult::Success(answer)) = asked {
                    match answer.into_inner() {
                        Ok(unknown) => {
                            let gone: HashSet<&String> = unknown.iter().collect();
                            let known: Vec<String> =
                                jobs.iter().filter(|j| !gone.contains(j)).cloned().collect();
                            if !unknown.is_empty() {
                                let _ = myself.cast(JobManagerMessage::Forsaken(
                                    owner.clone(),
                                    Wire::new(unknown),
                                ));
                            }
                            if !known.is_empty() {
                                ended_at_owner(&jm, owner, known, &myself).await;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(owner = %owner, error = %e, "unreadable answer about copied jobs")
                        }
                    }
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        tracing::debug!(owner = %owner, "no answer about the jobs copied here; the usual takeover rules apply");
    });
}

/// Asks the job manager `jm` of `owner` which of `jobs` (copied here, known to it) ended
/// there, and tells `myself` ([`JobManagerMessage::CopiesEnded`]): their copies are stale.
/// One try; the next look asks again.
async fn ended_at_owner(
    jm: &ActorRef<JobManagerMessage>,
    owner: String,
    jobs: Vec<String>,
    myself: &ActorRef<JobManagerMessage>,
) {
    let asked = jm
        .call(
            |r| JobManagerMessage::Ended(Wire::new(jobs), r),
            Some(std::time::Duration::from_secs(2)),
        )
        .await;
    match asked {
        Ok(ractor::rpc::CallResult::Success(answer)) => match answer.into_inner() {
            Ok(ended) if !ended.is_empty() => {
                let _ = myself.cast(JobManagerMessage::CopiesEnded(owner, Wire::new(ended)));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(owner = %owner, error = %e, "unreadable answer about ended jobs")
            }
        },
        _ => {
            tracing::debug!(owner = %owner, "no answer about which copied jobs ended; asked again at the next look")
        }
    }
}

impl JobManagerState {
    /// This node leaves: drops every copy it keeps, and keeps no new one. True once the
    /// drop is committed (then owners may be told, [`JobManagerMessage::CopiesDropped`]).
    pub(super) async fn drop_copies(&mut self) -> bool {
        let Some(journal) = self.ctx.journal.clone() else {
            return false;
        };
        self.copies_dropped = true;
        self.takeovers.drop_copies();
        journal.forget_all().await.is_ok()
    }

    /// Keeps another node's journal writes, refusing those from an epoch that is over.
    pub(super) fn keep(&mut self, mut batch: ReplicaBatch) {
        let Some(journal) = self.ctx.journal.clone() else {
            return;
        };
        // A batch is acked on receipt (unless `synced`), once the takeover rules here know
        // of it (below), before the commit: an owner waits for that ack to answer a
        // submission (the copy is then in this node's memory, and committed in its next
        // group commit) or to publish an end. A crash of this node before the commit
        // loses the copy, not the job: its owner holds it. (An end's copy comes back with
        // such a crash; the owner's record in the core group, made when an end goes
        // unacked, does not cover that window.) An end sent ahead of the owner's own
        // write (`ahead`) keeps the copy: the owner may die before its write, and come
        // back without the job; the end sent again once written drops it.
        let ends_only = !batch.writes.is_empty()
            && batch
                .writes
                .iter()
                .all(|w| matches!(w.what, ReplicaWhat::End));
        // Not a write to keep: the copy stays as it is.
        let end_ahead = |w: &troupe_runtime::protocol::ReplicaWrite| {
            w.ahead && matches!(w.what, ReplicaWhat::End)
        };
        if self.copies_dropped {
            // Leaving: keeps nothing, and an end asks nothing of a node with no copy.
            if let Some(token) = batch.ack.filter(|_| ends_only) {
                crate::journal::ack_to(&batch.owner, token);
            }
            return;
        }
        let mut fenced: HashMap<String, Holder> = HashMap::new();
        let mut later = false;
        let mut kept = Vec::with_capacity(batch.writes.len());
        for w in batch.writes {
            let kind = match &w.what {
                ReplicaWhat::Start(_) => WriteKind::Start,
                ReplicaWhat::Input(..) => WriteKind::Input,
                ReplicaWhat::End if w.ahead => WriteKind::EndAhead,
                ReplicaWhat::End => WriteKind::End,
            };
            match self
                .takeovers
                .replica_write(&batch.owner, &w.job, w.epoch, kind)
            {
                WriteVerdict::Keep if end_ahead(&w) => {}
                WriteVerdict::Keep => kept.push(w),
                WriteVerdict::Later => later = true,
                WriteVerdict::Fenced(holder) => {
                    fenced.insert(w.job.clone(), holder);
                }
            }
        }
        // Acked here unless a write is fenced (its owner lost the job, told below, and
        // must not publish that end; the others come again without it) or waits for
        // the core group's word; a `synced` batch is acked by the journal's writer once
        // it is committed here.
        let ack = batch.ack.take().filter(|_| fenced.is_empty() && !later);
        let (ack_now, ack_committed) = match ack {
            Some(token) if batch.synced && !kept.is_empty() => (None, Some(token)),
            other => (other, None),
        };
        let n = kept.len() as u64;
        if n > 0 {
            journal.keep(ReplicaBatch {
                owner: batch.owner.clone(),
                writes: kept,
                ack: ack_committed,
                synced: ack_committed.is_some(),
            });
            metrics::counter!(troupe_runtime::observe::metric::REPLICA_WRITES, "direction" => "kept")
                .increment(n);
        }
        if !fenced.is_empty() {
            metrics::counter!(troupe_runtime::observe::metric::REPLICA_WRITES, "direction" => "fenced")
                .increment(fenced.len() as u64);
            if let Some(jm) = first_member::<JobManagerMessage>(&job_manager_group(&batch.owner)) {
                for (job, o) in fenced {
                    tracing::info!(job = %job, from = %batch.owner, owner = %o.node, epoch = o.epoch, "fenced journal writes from a former owner");
                    let _ = jm.cast(JobManagerMessage::JobMoved(Wire::new(JobMoved {
                        job,
                        owner: o.node,
                        epoch: o.epoch,
                    })));
                }
            }
        }
        if let Some(token) = ack_now {
            crate::journal::ack_to(&batch.owner, token);
        }
    }

    /// Another node owns `m.job` now: stop this node's run of it, if any (fenced).
    pub(super) async fn job_moved(&mut self, myself: &ActorRef<JobManagerMessage>, m: JobMoved) {
        self.not_resuming(&m);
        // Attempts of the job's older runs waiting or running here (a dead or cut-off
        // owner's) must not go on: the job runs under its holder now. Through this
        // node's pool, which tells its external Gearman workers' board too.
        if let Some(pool) =
            first_member::<WorkerPoolMessage>(&worker_pool_group(&self.ctx.config.name))
        {
            let run = AbandonedRun {
                job: m.job.clone(),
                below_epoch: m.epoch,
            };
            let _ = pool.cast(WorkerPoolMessage::Abandon(Wire::new(run)));
        }
        let newer = self
            .takeovers
            .run_epoch(&m.job)
            .is_some_and(|e| e < m.epoch);
        if let (Some(j), true) = (&self.ctx.journal, newer && m.owner != self.ctx.config.name) {
            // A run here whose end waits to be confirmed gives way to the holder's end.
            j.end_recorded(
                &m.job,
                Some(Holder {
                    node: m.owner.clone(),
                    epoch: m.epoch,
                }),
            );
        }
        if self.held_ends.remove(&m.job).is_some() && m.owner != self.ctx.config.name {
            // Its end here was never confirmed: the holder's end is the job's, here and
            // after a restart.
            if let Some(j) = &self.ctx.journal {
                j.drop_job(&m.job, &m.holder());
            }
        }
        let effects = self.takeovers.job_moved(m);
        self.carry_out(myself, effects).await;
    }

    /// A node came (back) up: tell it of the jobs this node took over from it, and ask
    /// it which of the jobs copied here it knows nothing of (see [`unknown_to_owner`]).
    pub(super) async fn node_up(&mut self, myself: &ActorRef<JobManagerMessage>, node: &str) {
        let effects = self.takeovers.node_up(node);
        self.carry_out(myself, effects).await;
        let jobs = self.takeovers.copies_of(node);
        if !jobs.is_empty() {
            unknown_to_owner(node.to_string(), jobs, myself.clone());
        }
    }

    /// The owner `owner` knows nothing of `jobs`: ask the core group for those copied here.
    pub(super) async fn forsaken(
        &mut self,
        myself: &ActorRef<JobManagerMessage>,
        owner: &str,
        jobs: Vec<String>,
    ) {
        let effects = self.takeovers.forsaken(owner, &jobs);
        if !effects.is_empty() {
            tracing::warn!(owner, jobs = effects.len(), "a node came back without jobs it had accepted (it restarted before committing them); taking them over from the copies here");
        }
        self.carry_out(myself, effects).await;
    }

    /// The owner `owner` holds the ends of `jobs`: drop the copies of them kept here.
    pub(super) async fn copies_ended(
        &mut self,
        myself: &ActorRef<JobManagerMessage>,
        owner: &str,
        jobs: Vec<String>,
    ) {
        let effects = self.takeovers.ended_at_owner(owner, &jobs);
        if !effects.is_empty() {
            tracing::info!(owner, jobs = effects.len(), "dropping copies of jobs whose owner holds their ends (the end sent after its write did not arrive)");
        }
        self.carry_out(myself, effects).await;
    }

    /// Which of `jobs` ended here (its answer to [`JobManagerMessage::Ended`]): their
    /// ends are in its journal (a job's end is reported to this manager only once
    /// written), and it still holds them.
    pub(super) fn ended_here(&self, jobs: Vec<String>) -> Vec<String> {
        jobs.into_iter()
            .filter(|job| {
                !self.live.contains_key(job)
                    && self.finished.contains_key(job)
                    && self.takeovers.moved_to(job).is_none()
            })
            .collect()
    }

    /// Which of `jobs` this node knows nothing of (its answer to
    /// [`JobManagerMessage::Unknown`]): not running, not waiting to resume, not in its
    /// journal, not ended, not moved.
    pub(super) fn unknown(&self, jobs: Vec<String>) -> Vec<String> {
        let recovered = crate::locked(&self.ctx.view.recovered);
        let resuming = |job: &str| {
            recovered
                .as_ref()
                .is_some_and(|r| r.jobs.iter().any(|(rec, _)| rec.id == job))
        };
        jobs.into_iter()
            .filter(|job| {
                !self.live.contains_key(job)
                    && !self.finished.contains_key(job)
                    && !self.held_ends.contains_key(job)
                    && self.takeovers.moved_to(job).is_none()
                    && !resuming(job)
                    && !self.ctx.journal.as_ref().is_some_and(|j| j.holds(job))
            })
            .collect()
    }

    /// Asks the core group for the jobs whose owner has been gone for the grace period.
    pub(super) async fn sweep_copies(&mut self, myself: &ActorRef<JobManagerMessage>) {
        // Only nodes that own copied jobs matter; most sweeps have none to look at.
        let live: HashSet<String> = if self.takeovers.keeps_copies() {
            crate::live_nodes(&self.ctx.view).into_iter().collect()
        } else {
            HashSet::new()
        };
        let effects = self.takeovers.tick(Instant::now(), &live);
        self.carry_out(myself, effects).await;
        if self.owners_asked_at.elapsed() >= ASK_OWNERS_AGAIN_EVERY {
            self.owners_asked_at = Instant::now();
            for (owner, jobs) in self.takeovers.long_held(&live) {
                unknown_to_owner(owner, jobs, myself.clone());
            }
        }
        self.confirm_ends(myself);
    }

    /// Has the core group record the ends of this node's jobs that some holder of a copy
    /// did not ack in time, off the mailbox; a job another node holds now is a `JobMoved`
    /// here (questions about it go there).
    pub(super) fn confirm_ends(&self, myself: &ActorRef<JobManagerMessage>) {
        let Some(journal) = &self.ctx.journal else {
            return;
        };
        let ends = journal.unconfirmed_ends();
        if ends.is_empty() {
            return;
        }
        record_ends_later(&self.ctx.config.name, ends, journal.clone(), myself);
    }

    /// The core group answered a takeover.
    pub(super) async fn takeover_decided(
        &mut self,
        myself: &ActorRef<JobManagerMessage>,
        job: String,
        decision: Result<Holder, String>,
    ) {
        let effects = self.takeovers.decided(&job, decision);
        self.carry_out(myself, effects).await;
    }

    /// Does what the takeover rules ask, in order.
    async fn carry_out(&mut self, myself: &ActorRef<JobManagerMessage>, effects: Vec<Effect>) {
        let mut questions = Vec::new();
        let mut tells: HashMap<String, Vec<JobMoved>> = HashMap::new();
        for effect in effects {
            match effect {
                Effect::AskCore { job, from } => self.ask_core(myself, job, from),
                Effect::AskOwner { job, from } => questions.push((job, from)),
                Effect::Adopt { job, epoch } => self.adopt(myself, job, epoch).await,
                Effect::Denied { job, holder } => {
                    metrics::counter!(troupe_runtime::observe::metric::TAKEOVERS, "outcome" => "denied").increment(1);
                    tracing::info!(job = %job, owner = %holder.node, epoch = holder.epoch, "another node owns the job now");
                }
                Effect::Undecided { job, reason } => {
                    metrics::counter!(troupe_runtime::observe::metric::TAKEOVERS, "outcome" => "failed").increment(1);
                    tracing::warn!(job = %job, reason = %reason, "no takeover decision yet; asking again");
                }
                Effect::StopRun { job, holder } => self.stop_run(&job, &holder),
                Effect::ForgetCopy { job } => {
                    if let Some(j) = &self.ctx.journal {
                        j.forget(&job);
                    }
                }
                Effect::TellMoved { to, job, holder } => {
                    tells
                        .entry(to)
                        .or_default()
                        .push(JobMoved::new(job, holder));
                }
            }
        }
        if !questions.is_empty() {
            self.ask_owners(myself, questions);
        }
        for (to, moves) in tells {
            tell_moved(to, moves);
        }
    }

    /// Asks the core group, off the mailbox, to hand `job` over from `from` to this node;
    /// the answer comes back as `TakeoverDecided`.
    fn ask_core(&self, myself: &ActorRef<JobManagerMessage>, job: String, from: Holder) {
        tracing::info!(job = %job, owner = %from.node, "the job's owner stayed down or lost it; asking the core group for the job");
        let me = self.ctx.config.name.clone();
        let cmd = CoreCommand::Takeover {
            job: job.clone(),
            from: from.node,
            epoch: from.epoch,
            to: me.clone(),
        };
        let myself = myself.clone();
        let first = !self.takeovers.was_undecided(&job);
        tokio::spawn(async move {
            // The first refusal is most often an election under way (the owner that
            // died led the core group): ask again as soon as it ends, not a sweep later.
            // (Later questions go once per sweep: a core group down for long must not
            // be asked about every job 20 times a second.)
            let start = Instant::now();
            let answer = loop {
                match crate::core::decide(&me, cmd.clone()).await {
                    Err(_) if first && start.elapsed() < ASK_AGAIN_FOR => {
                        tokio::time::sleep(ASK_AGAIN_EVERY).await;
                    }
                    answer => break answer,
                }
            };
            let d = match answer {
                Ok(CoreDecision::Granted { epoch }) => Ok(Holder { node: me, epoch }),
                Ok(CoreDecision::Denied { owner }) => Ok(owner),
                Ok(other) => Err(format!("unexpected answer to a takeover: {other:?}")),
                Err(refusal) => Err(refusal.message),
            };
            let _ = myself.cast(JobManagerMessage::TakeoverDecided(job, Wire::new(d)));
        });
    }

    /// Asks the core group in one read, off the mailbox, who holds each job of
    /// `questions` (an earlier takeover of it got no answer); each answer comes back as
    /// `TakeoverDecided`, the copy's holder (`from`) when the job was never handed over.
    fn ask_owners(&self, myself: &ActorRef<JobManagerMessage>, questions: Vec<(String, Holder)>) {
        let me = self.ctx.config.name.clone();
        let cmd = CoreCommand::Owners {
            jobs: questions.iter().map(|(job, _)| job.clone()).collect(),
        };
        let myself = myself.clone();
        tokio::spawn(async move {
            let (mut owners, failed) = match crate::core::decide(&me, cmd).await {
                Ok(CoreDecision::Owners(o)) => (o.into_iter(), None),
                Ok(other) => (
                    Vec::new().into_iter(),
                    Some(format!("unexpected answer to an owner query: {other:?}")),
                ),
                Err(refusal) => (Vec::new().into_iter(), Some(refusal.message)),
            };
            for (job, from) in questions {
                let d = match (&failed, owners.next()) {
                    (Some(why), _) => Err(why.clone()),
                    (None, Some(owner)) => Ok(owner.unwrap_or(from)),
                    (None, None) => Err("the core group answered for fewer jobs".to_string()),
                };
                let _ = myself.cast(JobManagerMessage::TakeoverDecided(job, Wire::new(d)));
            }
        });
    }

    /// Stops this node's run of `job`, which `holder` owns at a newer epoch, and drops it
    /// from the journal.
    fn stop_run(&mut self, job: &str, holder: &Holder) {
        let Some(sup) = self.live.remove(job) else {
            return;
        };
        tracing::warn!(job = %job, owner = %holder.node, epoch = holder.epoch, "job taken over by another node while this one was cut off; stopping this node's run of it");
        if let crate::light_jobs::Supervisor::Own(a) = &sup {
            self.by_actor.remove(&a.get_id());
        }
        sup.stop(job);
        self.specs.remove(job);
        if let Some(j) = &self.ctx.journal {
            j.drop_job(job, holder);
        }
        self.forget_client(job);
        // Its attempts waiting or running here and on peers must not go on: the job may
        // have ended under its new owner already.
        let run = AbandonedRun {
            job: job.to_string(),
            below_epoch: holder.epoch,
        };
        let mut told = self.ctx.scheduler.abandon_own_run(run.clone());
        // This node's pool too: it tells the node's external Gearman workers' board.
        told.push(self.ctx.config.name.clone());
        for peer in told {
            if let Some(pool) = first_member::<WorkerPoolMessage>(&worker_pool_group(&peer)) {
                let _ = pool.cast(WorkerPoolMessage::Abandon(Wire::new(run.clone())));
            }
        }
        self.count_owned();
        if let Some(hub) = first_member::<troupe_runtime::protocol::EventHubMessage>(
            &troupe_runtime::protocol::event_hub_group(&self.ctx.config.name),
        ) {
            let _ = hub.cast(troupe_runtime::protocol::EventHubMessage::JobLeft(
                job.to_string(),
            ));
        }
    }

    /// Runs `job` here from its copy, at `epoch`, and tells every node.
    async fn adopt(&mut self, myself: &ActorRef<JobManagerMessage>, job: String, epoch: u64) {
        let Some(journal) = self.ctx.journal.clone() else {
            return;
        };
        let (mut record, inputs) = match journal.copy(&job) {
            Ok(Some(c)) => c,
            Ok(None) => {
                tracing::error!(job = %job, "granted a job whose copy is gone; it cannot run here");
                return;
            }
            Err(e) => {
                tracing::error!(job = %job, error = %e, "cannot read the copy of a job granted to this node");
                return;
            }
        };
        let from = self
            .takeovers
            .take_copy(&job)
            .map(|o| o.node)
            .unwrap_or_default();
        record.epoch = epoch;
        journal.start(
            &job,
            epoch,
            &record.spec,
            &record.limits,
            record.submitted_at_ms,
        );
        for (i, input) in inputs.iter().enumerate() {
            journal.input(&job, i as u64 + 1, input);
        }
        journal.forget(&job);
        let seq = inputs.len() as u64;
        let run = match crate::job_supervisor::replay::replay(
            record,
            inputs,
            Instant::now(),
            troupe_runtime::observe::now_ms(),
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "a job taken over cannot be rebuilt");
                return;
            }
        };
        let reason = format!(
            "job taken over by {} from {from}, which stayed down; its attempts run again",
            self.ctx.config.name
        );
        if !self
            .start_supervisor(myself, run, epoch, Some((seq, reason)))
            .await
        {
            return;
        }
        self.count_owned();
        metrics::counter!(troupe_runtime::observe::metric::TAKEOVERS, "outcome" => "taken")
            .increment(1);
        tracing::info!(job = %job, from = %from, epoch, "took the job over");
        let prefix = job_manager_group("");
        let moved = JobMoved {
            job,
            owner: self.ctx.config.name.clone(),
            epoch,
        };
        for g in ractor::pg::which_groups() {
            if g.starts_with(&prefix) && g != job_manager_group(&self.ctx.config.name) {
                if let Some(jm) = first_member::<JobManagerMessage>(&g) {
                    let _ = jm.cast(JobManagerMessage::JobMoved(Wire::new(moved.clone())));
                }
            }
        }
    }
}
