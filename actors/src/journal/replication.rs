//! Copies of this node's journal on other nodes (`journal_replicas`), so that a job whose
//! owner stays down can be taken over by a node that holds its inputs.
//!
//! The replica set of a job is the next `journal_replicas` live nodes in the job's
//! rendezvous order, the owner left out ([`ReplicaSet`]). Once each group commit's batch
//! is in the log's file (before its sync: see `writer`) the writer thread sends it to each
//! job's replicas; a node that becomes a job's
//! replica (a replica left, a node joined) first gets the job's whole journal, and every
//! [`CHECK_EVERY`] the writer looks whether the live nodes changed. Copies are
//! asynchronous: they trail the owner by one commit window and a message.
//!
//! Ends are acknowledged. A job's end is owed to every node that holds a copy of it: its
//! replicas when it ends, and every node that left its replica set before (it was thought
//! down, or a joining node ranks before it). An owed end is sent while its node is live,
//! again every [`RESEND_AFTER`] until the node acks it (a paused node, a one-way cut), so
//! that no stale copy stays behind to be taken over after the job ended. An end that some
//! holder has not acked within [`CONFIRM_WITHIN`] is handed to the job manager, which has
//! the core group record it ([`Journal::unconfirmed_ends`](super::Journal)): the core
//! group then hands the job to nobody, whatever copy asks. Owed ends are kept in memory,
//! at most [`MAX_OWED`]; an owner that restarts forgets them (the core group's record,
//! made within [`CONFIRM_WITHIN`], still stands).
//!
//! Acks. A submission with `journal_ack = "copied"` is answered once one replica holds
//! its job's start and the start is queued for the commit here. The journal's handle
//! sends the start to the replicas itself, ahead of the local commit, in a batch with an
//! ack token ([`Replicator::start_ahead`]); the replica acks the batch on receipt and
//! commits it in its next group commit; [`Pending`] matches the tokens to the
//! submissions, and refuses those no replica answered yet if the local commit fails
//! ([`Pending::commit_failed`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use troupe_runtime::protocol::{
    first_member, job_manager_group, JobManagerMessage, ReplicaWhat, ReplicaWrite,
};
use troupe_runtime::wire::Wire;

use super::store::{Recovered, Store};
use super::write::Write;
use crate::ClusterView;

/// The most ends owed to holders of copies that are remembered (past it, new ones are
/// not: the core group's record of the end still guards them).
const MAX_OWED: usize = 100_000;

/// How long an owed end waits for its ack before it is sent again.
const RESEND_AFTER: Duration = CHECK_EVERY;

/// How long a job's end may wait for the acks of every holder of a copy before the core
/// group is asked to record it (well under `failure.takeover_after_ms`, so that a copy
/// whose owner then goes down is refused the takeover).
pub(super) const CONFIRM_WITHIN: Duration = Duration::from_secs(1);

/// Where the writer sends copies of what it writes.
pub struct Replication {
    /// Who is alive.
    pub view: Arc<ClusterView>,
    /// Copies per job.
    pub copies: usize,
}

/// How often the writer checks that every job's replicas are still the right nodes.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long a wait stays pending at most (its submission was answered at
/// [`super::ACK_WAIT`]).
const PENDING_FOR: Duration = Duration::from_secs(5);

/// A submission waiting for its job's start to be committed here and on a replica.
struct Wait {
    done: tokio::sync::oneshot::Sender<super::write::Durable>,
    local: bool,
    copy: bool,
    since: Instant,
}

/// A batch of ends sent to one node, waiting for its ack.
struct EndToken {
    node: String,
    /// Each end's job, and whether it went marked `ahead` (not written here yet).
    jobs: Vec<(String, bool)>,
    sent: Instant,
}

/// Submissions whose job's start went to replicas ahead of the local commit, and the ack
/// tokens of the batches that carried them (a job's copies may go to more than one node:
/// the first ack counts).
#[derive(Default)]
pub(super) struct Pending {
    next_token: u64,
    by_token: HashMap<u64, Vec<u64>>,
    waits: HashMap<u64, Wait>,
    next_wait: u64,
    /// The ends carried by each token of an end batch.
    end_tokens: HashMap<u64, EndToken>,
    /// Ends acked since the writer last looked, by node.
    acked_ends: Vec<(String, Vec<(String, bool)>)>,
    /// Ends not acked within [`CONFIRM_WITHIN`], for the core group to record (job, epoch).
    pub(super) unconfirmed: Vec<(String, u64)>,
    /// Who waits for each job's end to be confirmed (see [`EndConfirmation`]).
    end_waiters: HashMap<String, tokio::sync::oneshot::Sender<EndConfirmation>>,
    /// Nodes that dropped every copy of this node's jobs (they drained), not yet told
    /// to the replica set.
    pub(super) dropped_by: Vec<String>,
    /// Jobs another node holds now, not yet told to the replica set (their ends are owed
    /// no more).
    pub(super) moved_away: Vec<String>,
    /// Ended jobs whose end only the core group's record confirms (acks do not).
    pub(super) core_only: HashSet<String>,
    /// When [`Pending::purge`] last ran.
    purged: Option<Instant>,
}

/// How often the waits nobody waits for are purged: a purge walks every wait, which
/// cost 1-2% of a busy owner's CPU when done per submission (perf).
const PURGE_EVERY: Duration = Duration::from_millis(100);

/// What the owner of a job learns about its end before it publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndConfirmation {
    /// Every holder of a copy acked the end, or the core group recorded it: no copy can
    /// be taken over, the end stands.
    Confirmed,
    /// The core group says this node holds the job no more (it was taken over while this
    /// node was cut off): the holder's end is the job's, not this one.
    Moved(troupe_runtime::vocab::Holder),
}

impl Pending {
    /// Marks wait `id` committed here (`local`) or on a replica; answers it once both are.
    fn mark(&mut self, id: u64, local: bool) {
        let Some(w) = self.waits.get_mut(&id) else {
            return;
        };
        if local {
            w.local = true;
        } else {
            w.copy = true;
        }
        if w.local && w.copy {
            if let Some(w) = self.waits.remove(&id) {
                let _ = w.done.send(Ok(()));
            }
        }
    }

    /// The starts of `waits` are committed here: answered once a replica holds them too.
    pub(super) fn committed_here(&mut self, waits: &[u64]) {
        for id in waits {
            self.mark(*id, true);
        }
    }

    /// The local commit of the starts of `waits` failed: those no replica answered yet
    /// are refused with `why` (an answered one is held by its replica, which commits it).
    pub(super) fn commit_failed(&mut self, waits: &[u64], why: &super::write::CommitFailed) {
        for id in waits {
            if let Some(w) = self.waits.remove(id) {
                let _ = w.done.send(Err(why.clone()));
            }
        }
    }

    /// [`Pending::purge`], if it has not run for [`PURGE_EVERY`].
    fn purge_if_due(&mut self) {
        if self.purged.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
            self.purged = Some(Instant::now());
            self.purge();
        }
    }

    /// Drops waits nobody waits for any more (the job manager answered at `ACK_WAIT`).
    fn purge(&mut self) {
        self.waits
            .retain(|_, w| !w.done.is_closed() && w.since.elapsed() < PENDING_FOR);
        let waits = &self.waits;
        self.by_token
            .retain(|_, ids| ids.iter().any(|id| waits.contains_key(id)));
    }

    /// A replica committed the batch that carried `token`: its submissions are copied,
    /// or its ends are held (then true: the writer is to take them in).
    pub(super) fn acked(&mut self, token: u64) -> bool {
        if let Some(ids) = self.by_token.remove(&token) {
            for id in ids {
                self.mark(id, false);
            }
        }
        match self.end_tokens.remove(&token) {
            Some(t) => {
                self.acked_ends.push((t.node, t.jobs));
                true
            }
            None => false,
        }
    }

    /// Forgets end tokens too old to be acked still (their ends are sent again).
    fn purge_end_tokens(&mut self) {
        self.end_tokens
            .retain(|_, t| t.sent.elapsed() < RESEND_AFTER * 10);
    }

    /// Takes the ends the core group is to record (job, epoch).
    pub(super) fn take_unconfirmed(&mut self) -> Vec<(String, u64)> {
        std::mem::take(&mut self.unconfirmed)
    }

    /// `done` waits for the end of `job` to be confirmed.
    pub(super) fn wait_for_end(
        &mut self,
        job: &str,
        done: tokio::sync::oneshot::Sender<EndConfirmation>,
    ) {
        self.end_waiters.insert(job.to_string(), done);
    }

    /// How many ends wait for their confirmation.
    pub(super) fn ends_waiting(&self) -> usize {
        self.end_waiters.len()
    }

    /// The holders' acks confirm the end of `job`: tells whoever waits, unless only the
    /// core group's record confirms it.
    fn acks_confirm(&mut self, job: &str) {
        if !self.core_only.contains(job) {
            self.end_is(job, EndConfirmation::Confirmed);
        }
    }

    /// Tells whoever waits for the end of `job`; false if nobody does.
    pub(super) fn end_is(&mut self, job: &str, what: EndConfirmation) -> bool {
        match self.end_waiters.remove(job) {
            Some(w) => {
                let _ = w.send(what);
                true
            }
            None => false,
        }
    }
}

/// Which nodes hold copies of which of this node's jobs: bookkeeping only, no I/O.
struct ReplicaSet {
    me: String,
    copies: usize,
    /// This node's epoch of each job it journals.
    epochs: HashMap<String, u64>,
    /// The replicas each live job's writes went to last.
    targets: HashMap<String, Vec<String>>,
    /// The live nodes at the last look.
    live: Vec<String>,
    /// Nodes holding copies they must drop, owed an `End` for each (by job): the
    /// replicas of jobs that ended, and former replicas. Kept until acked.
    owed: HashMap<String, HashMap<String, Owed>>,
    /// How many ends are owed in all.
    owed_count: usize,
    /// Ended jobs whose end was handed to the core group to record.
    confirming: HashSet<String>,
    /// Ended jobs that no holder of a copy owes an ack any more, not yet told.
    confirmed: Vec<String>,
    /// Live nodes that dropped every copy they kept (they drain): they get no new copy
    /// and are owed no end. Forgotten once they are not live.
    dropped: HashSet<String>,
    /// Jobs whose end went to their holders ahead of the writer's commit
    /// ([`Replicator::end_ahead`]), until the writer has written it here: true once every
    /// holder acked it. The writer copies none of their writes.
    ahead: HashMap<String, bool>,
    /// Ends written here that went ahead and were acked, to send again unmarked (the
    /// holder drops its copy on it), by node: sent once, not owed. One that is lost
    /// leaves a copy behind, which the holder's next question to this node about its
    /// copies (`JobManagerMessage::Ended`) drops; an ack for each would cost a message
    /// per job.
    unmarked: HashMap<String, Vec<(String, u64)>>,
}

/// An `End` owed to one node for one job.
#[derive(Debug, Clone, Copy)]
struct Owed {
    /// The job's epoch here.
    epoch: u64,
    /// Since when the job has ended (`None`: it runs on; the node left its replicas).
    ended: Option<Instant>,
    /// When the end was last sent.
    sent: Option<Instant>,
    /// The end is not written here yet (it went ahead, [`Replicator::end_ahead`]): it is
    /// sent marked `ahead`, and the holder keeps its copy.
    unwritten: bool,
    /// The holder acked the end sent ahead: it counts for the end's confirmation, and the
    /// end goes to it again, unmarked, once written here (then it drops its copy).
    acked_ahead: bool,
}

/// A write the writer committed about one of this node's jobs, to copy to its replicas.
pub(super) struct Outgoing {
    job: String,
    /// Set by a start: this node's epoch for the job.
    epoch: Option<u64>,
    what: ReplicaWhat,
}

/// Copies per replica node.
type ToSend = HashMap<String, Vec<ReplicaWrite>>;

impl ReplicaSet {
    /// The replicas of `job` among the live nodes.
    fn targets_for(&self, job: &str) -> Vec<String> {
        troupe_runtime::merge::ranked(
            job,
            self.live
                .iter()
                .map(String::as_str)
                .filter(|n| *n != self.me && !self.dropped.contains(*n)),
        )
        .into_iter()
        .take(self.copies)
        .map(str::to_string)
        .collect()
    }

    /// Who gets which of `writes`: each job's replicas its write, a job's new replica its
    /// whole journal (`history`, what redb holds) and then the write. An end is owed to
    /// every holder of a copy (see [`ReplicaSet::settle`]), not sent here.
    fn route(
        &mut self,
        writes: Vec<Outgoing>,
        history: impl Fn(&str, u64) -> Vec<ReplicaWrite>,
        at: Instant,
    ) -> ToSend {
        let mut out = ToSend::new();
        for Outgoing { job, epoch, what } in writes {
            if let Some(e) = epoch {
                self.epochs.insert(job.clone(), e);
            }
            let epoch = self.epochs.get(&job).copied().unwrap_or(0);
            let now = self.targets_for(&job);
            let before = self.targets.get(&job);
            let is_start = matches!(what, ReplicaWhat::Start(_));
            let is_end = matches!(what, ReplicaWhat::End);
            for node in now.iter().filter(|_| !is_end) {
                let had = before.is_some_and(|b| b.contains(node));
                if had || is_start {
                    out.entry(node.clone()).or_default().push(ReplicaWrite {
                        job: job.clone(),
                        epoch,
                        what: what.clone(),
                        ahead: false,
                    });
                } else {
                    // The history is what redb holds: this write is in the log only.
                    let to = out.entry(node.clone()).or_default();
                    to.extend(history(&job, epoch));
                    to.push(ReplicaWrite {
                        job: job.clone(),
                        epoch,
                        what: what.clone(),
                        ahead: false,
                    });
                }
            }
            let left: Vec<String> = before
                .map(|b| b.iter().filter(|n| !now.contains(n)).cloned().collect())
                .unwrap_or_default();
            if is_end {
                self.targets.remove(&job);
                self.epochs.remove(&job);
                // Every holder of a copy, replica now or before, is owed this end.
                for node in now.into_iter().chain(left) {
                    self.owe(node, &job, epoch, None);
                }
                let mut holders = 0;
                for jobs in self.owed.values_mut() {
                    if let Some(o) = jobs.get_mut(&job) {
                        o.ended = Some(at);
                        o.epoch = epoch;
                        holders += 1;
                    }
                }
                if holders == 0 {
                    // No copy anywhere: nothing to take over.
                    self.confirmed.push(job);
                }
            } else {
                self.now_replicas(&job, &now);
                for node in left {
                    self.owe(node, &job, epoch, None);
                }
                self.targets.insert(job, now);
            }
        }
        out
    }

    /// `nodes` are `job`'s replicas now: they owe nothing for it (they get its journal).
    fn now_replicas(&mut self, job: &str, nodes: &[String]) {
        for node in nodes {
            if let Some(jobs) = self.owed.get_mut(node) {
                if jobs.remove(job).is_some() {
                    self.owed_count -= 1;
                }
                if jobs.is_empty() {
                    self.owed.remove(node);
                }
            }
        }
    }

    /// `node` holds a copy of `job` (at `epoch`) that it must drop: it is owed an end
    /// (`ended`: since when the job has ended, `None` if it runs on).
    fn owe(&mut self, node: String, job: &str, epoch: u64, ended: Option<Instant>) {
        if self.owed_count >= MAX_OWED {
            tracing::warn!(node = %node, job = %job, "too many ends owed to holders of copies; this one is not remembered (the core group's record of the end still guards the copy)");
            return;
        }
        let jobs = self.owed.entry(node).or_default();
        if !jobs.contains_key(job) {
            self.owed_count += 1;
            jobs.insert(
                job.to_string(),
                Owed {
                    epoch,
                    ended,
                    sent: None,
                    unwritten: false,
                    acked_ahead: false,
                },
            );
        }
    }

    /// The ends owed to live nodes that are due (never sent, or sent [`RESEND_AFTER`] ago
    /// with no ack), by node; they stay owed until acked ([`ReplicaSet::acked`]). The
    /// unmarked ends of [`ReplicaSet::written`] are taken with them (to be sent in the
    /// same batches, but not acked): the second map.
    fn settle(&mut self, at: Instant) -> (ToSend, ToSend) {
        let mut once = ToSend::new();
        for (node, jobs) in self.unmarked.drain() {
            once.insert(
                node,
                jobs.into_iter()
                    .map(|(job, epoch)| ReplicaWrite {
                        job,
                        epoch,
                        what: ReplicaWhat::End,
                        ahead: false,
                    })
                    .collect(),
            );
        }
        let mut out = ToSend::new();
        for (node, jobs) in &mut self.owed {
            if !self.live.contains(node) {
                continue;
            }
            for (job, o) in jobs.iter_mut() {
                // An end acked ahead waits here to be written before it goes again.
                if o.acked_ahead || o.sent.is_some_and(|s| at.duration_since(s) < RESEND_AFTER) {
                    continue;
                }
                o.sent = Some(at);
                out.entry(node.clone()).or_default().push(ReplicaWrite {
                    job: job.clone(),
                    epoch: o.epoch,
                    what: ReplicaWhat::End,
                    ahead: o.unwritten,
                });
            }
        }
        (out, once)
    }

    /// `node` holds the ends of `jobs` (each marked `ahead` or not): they are owed no
    /// more, but an end acked ahead of its write here waits for that write (then it goes
    /// again unmarked, [`ReplicaSet::written`]). A job that ended and that no node owes
    /// an ack any more is confirmed.
    fn acked(&mut self, node: &str, jobs: &[(String, bool)]) {
        let Some(owed) = self.owed.get_mut(node) else {
            return;
        };
        let mut ended = Vec::new();
        for (job, ahead) in jobs {
            let Some(o) = owed.get_mut(job) else {
                continue;
            };
            // Its first ack (ahead or not) is the one that counts for the confirmation.
            let counts = o.ended.is_some() && !o.acked_ahead;
            if *ahead && o.unwritten {
                o.acked_ahead = true;
            } else {
                if *ahead {
                    // Written here since it went: the unmarked end goes now.
                    self.unmarked
                        .entry(node.to_string())
                        .or_default()
                        .push((job.clone(), o.epoch));
                }
                owed.remove(job);
                self.owed_count -= 1;
            }
            if counts {
                ended.push(job.clone());
            }
        }
        if owed.is_empty() {
            self.owed.remove(node);
        }
        self.confirming
            .retain(|job| self.owed.values().any(|jobs| jobs.contains_key(job)));
        for job in ended {
            if !self.awaits_ack(&job) {
                self.confirmed.push(job);
            }
        }
    }

    /// Whether some holder owes an ack of the end of `job` (one acked ahead does not).
    fn awaits_ack(&self, job: &str) -> bool {
        self.owed
            .values()
            .any(|jobs| jobs.get(job).is_some_and(|o| !o.acked_ahead))
    }

    /// The end of `job`, which went ahead, is written here now: the holders that acked it
    /// get it again, unmarked, at once (they drop their copies on it), and are owed it no
    /// more; those that did not are owed it unmarked.
    fn written(&mut self, job: &str) {
        for (node, jobs) in self.owed.iter_mut() {
            let Some(o) = jobs.get_mut(job) else {
                continue;
            };
            if o.acked_ahead {
                self.unmarked
                    .entry(node.clone())
                    .or_default()
                    .push((job.to_string(), o.epoch));
                jobs.remove(job);
                self.owed_count -= 1;
            } else {
                o.unwritten = false;
            }
        }
        self.owed.retain(|_, jobs| !jobs.is_empty());
    }

    /// The end of `job` goes ahead of its write here: every holder owed it is sent it
    /// marked `ahead` until [`ReplicaSet::written`].
    fn ahead_of_write(&mut self, job: &str) {
        for jobs in self.owed.values_mut() {
            if let Some(o) = jobs.get_mut(job) {
                o.unwritten = true;
            }
        }
    }

    /// `node` dropped every copy it kept (it drains): it is owed no end, is a replica of
    /// nothing, and gets no new copy while it is live. Ended jobs nobody else owes an
    /// ack are confirmed.
    fn dropped_by(&mut self, node: &str) {
        self.dropped.insert(node.to_string());
        for targets in self.targets.values_mut() {
            targets.retain(|n| n != node);
        }
        let Some(owed) = self.owed.remove(node) else {
            return;
        };
        self.owed_count -= owed.len();
        let still = &self.owed;
        self.confirming
            .retain(|job| still.values().any(|jobs| jobs.contains_key(job)));
        for (job, o) in owed {
            if o.ended.is_some() && !o.acked_ahead && !self.awaits_ack(&job) {
                self.confirmed.push(job);
            }
        }
    }

    /// Another node holds `job` now: nobody is owed this node's end of it.
    fn moved_away(&mut self, job: &str) {
        for jobs in self.owed.values_mut() {
            if jobs.remove(job).is_some() {
                self.owed_count -= 1;
            }
        }
        self.owed.retain(|_, jobs| !jobs.is_empty());
        self.confirming.remove(job);
    }

    /// The ended jobs (and their epochs) some holder has not acked the end of within
    /// [`CONFIRM_WITHIN`], not handed over before: the core group is to record them.
    fn unconfirmed(&mut self, at: Instant) -> Vec<(String, u64)> {
        let mut due = Vec::new();
        for jobs in self.owed.values() {
            for (job, o) in jobs {
                let late = !o.acked_ahead
                    && o.ended
                        .is_some_and(|e| at.duration_since(e) >= CONFIRM_WITHIN);
                if late && self.confirming.insert(job.clone()) {
                    due.push((job.clone(), o.epoch));
                }
            }
        }
        due.sort();
        due
    }

    /// With the live nodes now `live`: the whole journal (`history`) of every job for
    /// each of its replicas that is new. Nothing if neither the nodes nor the jobs changed.
    fn rehome(
        &mut self,
        live: Vec<String>,
        history: impl Fn(&str, u64) -> Vec<ReplicaWrite>,
    ) -> ToSend {
        let mut out = ToSend::new();
        self.dropped.retain(|n| live.contains(n));
        if live == self.live && self.targets.len() == self.epochs.len() {
            return out;
        }
        self.live = live;
        let jobs: Vec<(String, u64)> = self.epochs.iter().map(|(j, e)| (j.clone(), *e)).collect();
        for (job, epoch) in jobs {
            let now = self.targets_for(&job);
            let before = self.targets.get(&job).cloned().unwrap_or_default();
            for node in now.iter().filter(|n| !before.contains(n)) {
                out.entry(node.clone())
                    .or_default()
                    .extend(history(&job, epoch));
            }
            self.now_replicas(&job, &now);
            for node in before.into_iter().filter(|n| !now.contains(n)) {
                self.owe(node, &job, epoch, None);
            }
            self.targets.insert(job, now);
        }
        out
    }
}

/// Sends what the writer committed to each job's replicas (runs on the writer thread).
pub(super) struct Replicator {
    /// Submissions waiting for a replica's commit (shared with the journal's handle).
    pending: Arc<Mutex<Pending>>,
    view: Arc<ClusterView>,
    set: ReplicaSet,
    checked: Instant,
    /// The live nodes, and when they were read (see [`Replicator::live_nodes`]).
    live: Option<(Instant, Vec<String>)>,
    /// Starts sent ahead and not sent yet, by replica (see [`Replicator::start_ahead`]),
    /// and whether their replicas are to ack once committed (`synced`).
    held: HashMap<String, HeldStarts>,
    held_synced: bool,
}

/// The starts gathered for one replica's next batch, and the waits its ack answers.
#[derive(Default)]
struct HeldStarts {
    writes: Vec<ReplicaWrite>,
    waits: Vec<u64>,
}

/// How long the live nodes read for one submission serve the next ones.
const LIVE_NODES_FOR: Duration = Duration::from_millis(20);

impl Replicator {
    /// The live nodes, read again at most every [`LIVE_NODES_FOR`]: reading them walks
    /// every process group, which cost 3% of an owner's CPU when done per submission
    /// (profiled at 3,000 jobs/s). Membership takes far longer than that to see a node
    /// go, so a node down is not chosen for longer than it would be anyway.
    fn live_nodes(&mut self) -> Vec<String> {
        match &self.live {
            Some((at, live)) if at.elapsed() < LIVE_NODES_FOR => live.clone(),
            _ => {
                let live = crate::live_nodes(&self.view);
                self.live = Some((Instant::now(), live.clone()));
                live
            }
        }
    }

    /// A replicator for a journal that held `recovered`, sharing `pending` with its
    /// handle; `None` if no copies are asked for.
    pub(super) fn new(
        replication: Option<Replication>,
        pending: Arc<Mutex<Pending>>,
        recovered: &Recovered,
    ) -> Option<Replicator> {
        replication.filter(|r| r.copies > 0).map(|r| Replicator {
            pending,
            set: ReplicaSet {
                me: r.view.node.clone(),
                copies: r.copies,
                epochs: recovered
                    .jobs
                    .iter()
                    .map(|(r, _)| (r.id.clone(), r.epoch))
                    .collect(),
                targets: HashMap::new(),
                live: Vec::new(),
                owed: HashMap::new(),
                owed_count: 0,
                confirming: HashSet::new(),
                confirmed: Vec::new(),
                dropped: HashSet::new(),
                ahead: HashMap::new(),
                unmarked: HashMap::new(),
            },
            view: r.view,
            checked: Instant::now(),
            live: None,
            held: HashMap::new(),
            held_synced: false,
        })
    }

    /// Sends `writes` (committed, or ends about to be) to their jobs' replicas (a job's
    /// new replica gets its whole journal), and the ends owed to live nodes.
    pub(super) fn send_copies(&mut self, store: &Store, writes: Vec<Outgoing>) {
        let (writes, written) = self.skip_ended_ahead(writes);
        if writes.is_empty() {
            if written {
                // The holders that acked those ends ahead get them unmarked now.
                self.send_ends();
            }
            return;
        }
        let history = |job: &str, epoch| store.history(job, epoch);
        let live = self.live_nodes();
        let mut out = self.set.rehome(live, history);
        for (node, w) in self.set.route(writes, history, Instant::now()) {
            out.entry(node).or_default().extend(w);
        }
        self.send(out);
        self.send_ends();
    }

    /// Drops from `writes` those of jobs whose end went ahead: their holders have their
    /// end, and a start or input arriving after it would be a copy nobody ends. The
    /// job's end written here, its confirmation (if every holder acked) is told now, and
    /// its holders are owed it unmarked (true if some end went ahead and is written now).
    fn skip_ended_ahead(&mut self, writes: Vec<Outgoing>) -> (Vec<Outgoing>, bool) {
        if self.set.ahead.is_empty() {
            return (writes, false);
        }
        let mut written = Vec::new();
        let writes = writes
            .into_iter()
            .filter(|o| {
                if !self.set.ahead.contains_key(&o.job) {
                    return true;
                }
                if matches!(o.what, ReplicaWhat::End) {
                    let acked = self.set.ahead.remove(&o.job) == Some(true);
                    written.push((o.job.clone(), acked));
                }
                false
            })
            .collect();
        if written.is_empty() {
            return (writes, false);
        }
        for (job, _) in &written {
            self.set.written(job);
        }
        let mut p = crate::locked(&self.pending);
        for (job, acked) in written {
            if acked {
                p.acks_confirm(&job);
            }
        }
        (writes, true)
    }

    /// Sends the end of `job`, just queued for the writer behind every other write of
    /// the job (under this replicator's lock, so that the writer cannot have copied it
    /// yet), to the holders of its copies now, from the ending actor's thread, with an
    /// ack token: the round trip then overlaps the writer's wake-up and write, and the
    /// end is confirmed once both are done (every holder acked, and the writer wrote it
    /// here: see [`Replicator::skip_ended_ahead`]). Ordered with the writer's copies by
    /// the replicator's lock: what the writer sent before is received before it, what
    /// it would send after is not sent. A job no other node holds a copy of is left to
    /// the writer (its commit alone confirms the end).
    pub(super) fn end_ahead(&mut self, job: &str) {
        if !self.has_copies(job) {
            return;
        }
        self.set.ahead.insert(job.to_string(), false);
        let end = Outgoing {
            job: job.to_string(),
            epoch: None,
            what: ReplicaWhat::End,
        };
        // An end sends nothing itself: it is owed to the holders, sent by `send_ends`.
        let none = self.set.route(vec![end], |_, _| Vec::new(), Instant::now());
        debug_assert!(none.is_empty());
        self.set.ahead_of_write(job);
        self.send_ends();
    }

    /// If the end of `job` went ahead and is not written here yet, counts it as acked by
    /// every holder (the core group recorded it), so that the writer confirms it once
    /// written (true); false if it is written or did not go ahead.
    pub(super) fn confirm_once_written(&mut self, job: &str) -> bool {
        match self.set.ahead.get_mut(job) {
            Some(acked) => {
                *acked = true;
                true
            }
            None => false,
        }
    }

    /// Whether another node holds (or was sent) a copy of `job`.
    pub(super) fn has_copies(&self, job: &str) -> bool {
        self.set.targets.get(job).is_some_and(|t| !t.is_empty())
            || self.set.owed.values().any(|jobs| jobs.contains_key(job))
    }

    /// The jobs whose ends in `outgoing` the local commit alone confirms: no other node
    /// holds a copy or gets one with this batch, and the core group is not to record them.
    pub(super) fn confirmed_by_commit(&self, outgoing: &[Outgoing]) -> Vec<String> {
        let p = crate::locked(&self.pending);
        let nobody_gets = |job: &str| self.set.targets_for(job).is_empty();
        let busy: HashSet<&str> = outgoing
            .iter()
            .filter(|o| !matches!(o.what, ReplicaWhat::End))
            .map(|o| o.job.as_str())
            .collect();
        outgoing
            .iter()
            .filter(|o| matches!(o.what, ReplicaWhat::End))
            .filter(|o| !self.set.ahead.contains_key(&o.job))
            .filter(|o| !self.has_copies(&o.job) && !p.core_only.contains(&o.job))
            .filter(|o| !busy.contains(o.job.as_str()) || nobody_gets(&o.job))
            .map(|o| o.job.clone())
            .collect()
    }

    /// Takes in the ends replicas acked, tells who waits for them, and sends the ends due.
    pub(super) fn ends_acked(&mut self) {
        self.send_ends();
    }

    /// Tells those who wait for the ends the replica set confirmed.
    fn tell_confirmed(&mut self) {
        if self.set.confirmed.is_empty() {
            return;
        }
        let mut p = crate::locked(&self.pending);
        for job in self.set.confirmed.drain(..) {
            if let Some(acked) = self.set.ahead.get_mut(&job) {
                // Told once the writer wrote it here too.
                *acked = true;
                continue;
            }
            p.acks_confirm(&job);
        }
    }

    /// Sends the start of a submitted `job` (its record `b`, this node's `epoch`) to the
    /// job's replicas ahead of the local commit, with an ack token; `done` is answered
    /// once a replica holds it in memory (`copied`), or (`synced`) once a replica
    /// committed it and [`Pending::committed_here`] says it is committed here too. Gives
    /// `done` back if the job has no live replica.
    ///
    /// The start is held, not sent: returns the wait's id and whether it is the first
    /// start held, in which case the caller has [`Replicator::flush_starts`] run once the
    /// burst of submissions it belongs to is handled. A burst so costs one batch and one
    /// ack per replica, not a message each way per job. Anything else sent before the
    /// flush sends what is held first, so a job's later writes never reach a replica
    /// before its start.
    pub(super) fn start_ahead(
        &mut self,
        store: &Store,
        job: &str,
        epoch: u64,
        b: &[u8],
        done: tokio::sync::oneshot::Sender<super::write::Durable>,
        synced: bool,
    ) -> Result<(u64, bool), tokio::sync::oneshot::Sender<super::write::Durable>> {
        // The live nodes first: jobs whose replicas changed get their journals there.
        let live = self.live_nodes();
        let out = self
            .set
            .rehome(live, |job, epoch| store.history(job, epoch));
        self.send(out);
        let targets = self.set.targets_for(job);
        if targets.is_empty() {
            return Err(done);
        }
        let mut p = crate::locked(&self.pending);
        p.purge_if_due();
        p.next_wait += 1;
        let id = p.next_wait;
        p.waits.insert(
            id,
            Wait {
                done,
                local: !synced,
                copy: false,
                since: Instant::now(),
            },
        );
        drop(p);
        if self.held_synced != synced {
            self.flush_starts();
            self.held_synced = synced;
        }
        let first = self.held.is_empty();
        for node in &targets {
            let held = self.held.entry(node.clone()).or_default();
            held.writes.push(ReplicaWrite {
                job: job.to_string(),
                epoch,
                what: ReplicaWhat::Start(b.to_vec()),
                ahead: false,
            });
            held.waits.push(id);
        }
        self.set.epochs.insert(job.to_string(), epoch);
        self.set.targets.insert(job.to_string(), targets);
        Ok((id, first))
    }

    /// Sends the starts [`Replicator::start_ahead`] holds, one batch per replica, each
    /// with an ack token that answers the submissions it carries.
    pub(super) fn flush_starts(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut tokens = HashMap::new();
        let mut out = ToSend::new();
        {
            let mut p = crate::locked(&self.pending);
            for (node, held) in self.held.drain() {
                let token = p.next_token;
                p.next_token += 1;
                p.by_token.insert(token, held.waits);
                tokens.insert(node.clone(), token);
                out.insert(node, held.writes);
            }
        }
        self.send_now(out, &tokens, self.held_synced);
    }

    /// The starts sent ahead with `waits` are committed here: see
    /// [`Pending::committed_here`].
    pub(super) fn committed_here(&self, waits: &[u64]) {
        crate::locked(&self.pending).committed_here(waits);
    }

    /// The local commit of the starts sent ahead with `waits` failed: see
    /// [`Pending::commit_failed`].
    pub(super) fn commit_failed(&self, waits: &[u64], why: &super::write::CommitFailed) {
        crate::locked(&self.pending).commit_failed(waits, why);
    }

    /// [`Replicator::check`], if it has not run for [`CHECK_EVERY`].
    pub(super) fn check_if_due(&mut self, store: &Store) {
        if self.checked.elapsed() >= CHECK_EVERY {
            self.check(store);
        }
    }

    /// Gives every live job whose replicas changed its whole journal at the new ones,
    /// sends the ends that are due again, and hands the core group the ends not acked
    /// in time.
    pub(super) fn check(&mut self, store: &Store) {
        self.checked = Instant::now();
        self.live = None;
        let live = self.live_nodes();
        let out = self
            .set
            .rehome(live, |job, epoch| store.history(job, epoch));
        self.send(out);
        self.send_ends();
        let late = self.set.unconfirmed(Instant::now());
        if !late.is_empty() {
            tracing::debug!(
                jobs = late.len(),
                "ends not acked by every holder of a copy in time; the core group records them"
            );
            crate::locked(&self.pending).unconfirmed.extend(late);
        }
    }

    /// Sends the ends that are due, each node's batch with an ack token; takes in the
    /// acks that came meanwhile first.
    fn send_ends(&mut self) {
        let (acked, dropped, moved) = {
            let mut p = crate::locked(&self.pending);
            (
                std::mem::take(&mut p.acked_ends),
                std::mem::take(&mut p.dropped_by),
                std::mem::take(&mut p.moved_away),
            )
        };
        for (node, jobs) in acked {
            self.set.acked(&node, &jobs);
        }
        for node in dropped {
            self.set.dropped_by(&node);
        }
        for job in moved {
            self.set.moved_away(&job);
        }
        self.tell_confirmed();
        let (due, mut once) = self.set.settle(Instant::now());
        if due.is_empty() {
            self.send(once);
            return;
        }
        let mut tokens = HashMap::new();
        {
            let mut p = crate::locked(&self.pending);
            p.purge_end_tokens();
            for (node, writes) in &due {
                let token = p.next_token;
                p.next_token += 1;
                p.end_tokens.insert(
                    token,
                    EndToken {
                        node: node.clone(),
                        jobs: writes.iter().map(|w| (w.job.clone(), w.ahead)).collect(),
                        sent: Instant::now(),
                    },
                );
                tokens.insert(node.clone(), token);
            }
        }
        // The unmarked ends ride in the same batches (the token names only the owed).
        let mut due = due;
        for (node, writes) in once.drain() {
            due.entry(node).or_default().extend(writes);
        }
        self.send_with(due, &tokens, false);
    }

    fn send(&mut self, out: ToSend) {
        self.send_with(out, &HashMap::new(), false);
    }

    /// Sends each node its writes, asking those in `tokens` to ack with their token, on
    /// receipt or (`synced`) once committed there; the starts held go first.
    fn send_with(&mut self, out: ToSend, tokens: &HashMap<String, u64>, synced: bool) {
        if out.values().any(|w| !w.is_empty()) {
            self.flush_starts();
        }
        self.send_now(out, tokens, synced);
    }

    /// [`Replicator::send_with`] without the held starts.
    fn send_now(&self, out: ToSend, tokens: &HashMap<String, u64>, synced: bool) {
        for (node, writes) in out {
            if writes.is_empty() {
                continue;
            }
            let n = writes.len() as u64;
            match first_member::<JobManagerMessage>(&job_manager_group(&node)) {
                Some(jm) => {
                    let batch = troupe_runtime::protocol::ReplicaBatch {
                        owner: self.set.me.clone(),
                        writes,
                        ack: tokens.get(&node).copied(),
                        synced,
                    };
                    if jm
                        .cast(JobManagerMessage::Replicate(Wire::new(batch)))
                        .is_ok()
                    {
                        metrics::counter!(troupe_runtime::observe::metric::REPLICA_WRITES, "direction" => "out")
                            .increment(n);
                    }
                }
                None => {
                    tracing::debug!(node = %node, "a replica is not reachable; its copy catches up when it is")
                }
            }
        }
    }
}

/// The writes of `batch` to copy once it is committed: this node's jobs' starts (except
/// those already sent ahead), inputs and ends (a job dropped here ends its
/// copies too).
pub(super) fn writes_to_copy(batch: &[Write]) -> Vec<Outgoing> {
    let outgoing = |job: &String, epoch, what| Outgoing {
        job: job.clone(),
        epoch,
        what,
    };
    batch
        .iter()
        .filter_map(|w| match w {
            Write::StartSent(..) => None,
            Write::Start(id, epoch, b, _) => {
                Some(outgoing(id, Some(*epoch), ReplicaWhat::Start(b.clone())))
            }
            Write::Input(id, seq, b) => {
                Some(outgoing(id, None, ReplicaWhat::Input(*seq, b.clone())))
            }
            Write::End(id, ..) | Write::Drop(id, _) => Some(outgoing(id, None, ReplicaWhat::End)),
            _ => None,
        })
        .collect()
}

/// Tells `owner` that this node holds the copies its batch `token` carried.
pub(super) fn answer_ack(owner: &str, token: u64) {
    if let Some(jm) = first_member::<JobManagerMessage>(&job_manager_group(owner)) {
        let _ = jm.cast(JobManagerMessage::ReplicaAcked(token));
    }
}

/// The owners (and their tokens) that wait for the `synced` copies in `batch` to be
/// committed here.
pub(super) fn acks_after_commit(batch: &[Write]) -> Vec<(String, u64)> {
    batch
        .iter()
        .filter_map(|w| match w {
            Write::Keep(b) => b.ack.map(|token| (b.owner.clone(), token)),
            _ => None,
        })
        .collect()
}

/// The waits of the starts sent ahead in `batch` (see [`Pending::committed_here`]).
pub(super) fn sent_ahead(batch: &[Write]) -> Vec<u64> {
    batch
        .iter()
        .filter_map(|w| match w {
            Write::StartSent(.., ahead) => Some(ahead.wait),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use tokio::sync::oneshot;
    use troupe_runtime::protocol::ReplicaBatch;

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// The replica set of node `a` keeping `copies` copies, with `live` nodes up.
    fn set(copies: usize, live: &[&str]) -> ReplicaSet {
        ReplicaSet {
            me: "a".to_string(),
            copies,
            epochs: HashMap::new(),
            targets: HashMap::new(),
            live: nodes(live),
            owed: HashMap::new(),
            owed_count: 0,
            confirming: HashSet::new(),
            confirmed: Vec::new(),
            dropped: HashSet::new(),
            ahead: HashMap::new(),
            unmarked: HashMap::new(),
        }
    }

    fn outgoing(job: &str, epoch: Option<u64>, what: ReplicaWhat) -> Outgoing {
        Outgoing {
            job: job.to_string(),
            epoch,
            what,
        }
    }

    fn start(job: &str) -> Outgoing {
        outgoing(job, Some(4), ReplicaWhat::Start(Vec::new()))
    }

    fn input(job: &str, seq: u64) -> Outgoing {
        outgoing(job, None, ReplicaWhat::Input(seq, Vec::new()))
    }

    /// A replica write as (job, epoch, what), for comparing.
    type Summary = (String, u64, String);

    fn summary(w: &ReplicaWrite) -> Summary {
        let what = match &w.what {
            ReplicaWhat::Start(_) => "start".to_string(),
            ReplicaWhat::Input(seq, _) => format!("input {seq}"),
            ReplicaWhat::End => "end".to_string(),
        };
        (w.job.clone(), w.epoch, what)
    }

    /// Each node's writes, summarized, by node name.
    fn sent(out: ToSend) -> Vec<(String, Vec<Summary>)> {
        let mut v: Vec<_> = out
            .into_iter()
            .map(|(node, writes)| (node, writes.iter().map(summary).collect()))
            .collect();
        v.sort();
        v
    }

    /// A history that records which jobs were asked for and returns a marker write.
    fn history(
        asked: &RefCell<Vec<(String, u64)>>,
    ) -> impl Fn(&str, u64) -> Vec<ReplicaWrite> + '_ {
        move |job, epoch| {
            asked.borrow_mut().push((job.to_string(), epoch));
            vec![ReplicaWrite {
                job: job.to_string(),
                epoch,
                what: ReplicaWhat::Input(99, Vec::new()),
                ahead: false,
            }]
        }
    }

    /// A job's replicas are live nodes other than its owner, as many as asked for (or as
    /// there are), whatever order the live nodes are listed in.
    #[test]
    fn a_jobs_replicas_are_live_nodes_other_than_its_owner() {
        let two = set(2, &["a", "b", "c", "d"]).targets_for("n1-1-1");
        assert_eq!(two.len(), 2);
        assert!(two.iter().all(|n| ["b", "c", "d"].contains(&n.as_str())));
        assert_eq!(set(2, &["d", "c", "b", "a"]).targets_for("n1-1-1"), two);
        // Rendezvous order: one copy is the first of two.
        assert_eq!(
            set(1, &["a", "b", "c", "d"]).targets_for("n1-1-1"),
            two[..1]
        );
        assert_eq!(set(5, &["a", "b", "c"]).targets_for("n1-1-1").len(), 2);
        assert!(set(1, &["a"]).targets_for("n1-1-1").is_empty());
    }

    /// After a commit each replica gets the job's new write, and a known replica gets
    /// nothing more.
    #[test]
    fn known_replicas_get_each_write_once() {
        let asked = RefCell::new(Vec::new());
        let mut set = set(1, &["a", "b"]);
        let out = set.route(
            vec![start("j"), input("j", 1)],
            history(&asked),
            Instant::now(),
        );
        let out2 = set.route(vec![input("j", 2)], history(&asked), Instant::now());
        let row = |what: &str| ("j".to_string(), 4, what.to_string());
        assert_eq!(
            sent(out),
            vec![("b".to_string(), vec![row("start"), row("input 1")])]
        );
        assert_eq!(sent(out2), vec![("b".to_string(), vec![row("input 2")])]);
        assert!(asked.borrow().is_empty());
    }

    /// A node that becomes a job's replica while it runs gets the job's whole journal
    /// rather than the write alone.
    #[test]
    fn a_node_that_becomes_a_replica_mid_job_gets_the_whole_journal() {
        let asked = RefCell::new(Vec::new());
        let mut set = set(1, &["a", "b"]);
        set.route(vec![start("j")], history(&asked), Instant::now());
        set.live = nodes(&["a", "c"]);
        let out = set.route(vec![input("j", 1)], history(&asked), Instant::now());
        assert_eq!(
            sent(out),
            vec![(
                "c".to_string(),
                vec![
                    ("j".to_string(), 4, "input 99".to_string()),
                    // The write itself: redb's history lacks it (it is in the log only).
                    ("j".to_string(), 4, "input 1".to_string())
                ]
            )]
        );
        assert_eq!(*asked.borrow(), vec![("j".to_string(), 4)]);
    }

    /// A job's end is owed to its replicas: sent at the next settle, again after
    /// `RESEND_AFTER` with no ack, no more once acked; the job leaves the replica set.
    #[test]
    fn an_end_is_sent_to_the_replicas_until_they_ack_it() {
        let asked = RefCell::new(Vec::new());
        let mut set = set(1, &["a", "b"]);
        let t0 = Instant::now();
        set.route(vec![start("j")], history(&asked), t0);
        let out = set.route(
            vec![outgoing("j", None, ReplicaWhat::End)],
            history(&asked),
            t0,
        );
        assert!(sent(out).is_empty());
        let end = || {
            vec![(
                "b".to_string(),
                vec![("j".to_string(), 4, "end".to_string())],
            )]
        };
        assert_eq!(sent(set.settle(t0).0), end());
        assert!(sent(set.settle(t0 + RESEND_AFTER / 2).0).is_empty());
        assert_eq!(sent(set.settle(t0 + RESEND_AFTER).0), end());
        assert!(set.targets.is_empty() && set.epochs.is_empty());
        set.acked("b", &[("j".to_string(), false)]);
        assert!(sent(set.settle(t0 + RESEND_AFTER * 3).0).is_empty());
        assert_eq!(set.owed_count, 0);
        assert!(sent(set.rehome(nodes(&["a", "c"]), history(&asked))).is_empty());
        assert!(asked.borrow().is_empty());
    }

    /// An end is confirmed once every holder of a copy acked it; a holder that drains and
    /// drops its copies is owed nothing, gets no new copy while it is up, and is a
    /// replica again once it came back.
    #[test]
    fn an_end_waits_for_every_holder_but_not_for_one_that_dropped_its_copies() {
        let asked = RefCell::new(Vec::new());
        let mut set = set(2, &["a", "b", "c"]);
        let t0 = Instant::now();
        set.route(vec![start("j")], history(&asked), t0);
        set.route(
            vec![outgoing("j", None, ReplicaWhat::End)],
            history(&asked),
            t0,
        );
        set.acked("b", &[("j".to_string(), false)]);
        assert!(set.confirmed.is_empty(), "c has not acked the end");
        set.dropped_by("c");
        assert_eq!(set.confirmed, vec!["j".to_string()]);
        assert_eq!(set.owed_count, 0);

        // c, still up, gets no copy of a new job; it does after it left and came back.
        let out = sent(set.route(vec![start("k")], history(&asked), t0));
        assert!(out.iter().all(|(n, _)| n != "c"), "{out:?}");
        set.rehome(nodes(&["a", "b"]), history(&asked));
        set.rehome(nodes(&["a", "b", "c"]), history(&asked));
        assert!(set.targets_for("k").contains(&"c".to_string()));
    }

    /// An end some holder has not acked within `CONFIRM_WITHIN` goes to the core group,
    /// once; a former replica's copy of a job that runs on does not.
    #[test]
    fn an_end_not_acked_in_time_is_handed_to_the_core_group_once() {
        let asked = RefCell::new(Vec::new());
        let mut set = set(1, &["a", "b"]);
        let t0 = Instant::now();
        set.route(vec![start("j"), start("k")], history(&asked), t0);
        // b is cut off: k runs on with another replica, b owed a drop; j ends.
        set.rehome(nodes(&["a", "c"]), history(&asked));
        set.route(
            vec![outgoing("j", None, ReplicaWhat::End)],
            history(&asked),
            t0,
        );
        assert!(set.unconfirmed(t0 + CONFIRM_WITHIN / 2).is_empty());
        assert_eq!(
            set.unconfirmed(t0 + CONFIRM_WITHIN),
            vec![("j".to_string(), 4)]
        );
        assert!(set.unconfirmed(t0 + CONFIRM_WITHIN * 2).is_empty());
    }

    /// When the live nodes change, each job's journal goes to its new replicas only; when
    /// nothing changed, nothing is sent.
    #[test]
    fn a_change_of_live_nodes_sends_each_job_to_its_new_replicas_only() {
        let asked = RefCell::new(Vec::new());
        let mut set = set(1, &["a", "b"]);
        set.route(vec![start("j")], history(&asked), Instant::now());
        assert!(sent(set.rehome(nodes(&["a", "b"]), history(&asked))).is_empty());
        let out = set.rehome(nodes(&["a", "c"]), history(&asked));
        assert_eq!(
            sent(out),
            vec![(
                "c".to_string(),
                vec![("j".to_string(), 4, "input 99".to_string())]
            )]
        );
        assert!(sent(set.rehome(nodes(&["a", "c"]), history(&asked))).is_empty());
        assert_eq!(*asked.borrow(), vec![("j".to_string(), 4)]);
    }

    /// A replica thought down is replaced; when it is back it is told to drop its copy
    /// (an end), and so is one that a returning replica displaces. A former replica not
    /// live when the job ends gets the end when it comes back: no stale copy is left.
    #[test]
    fn a_former_replica_is_owed_an_end_until_it_acks_it() {
        let asked = RefCell::new(Vec::new());
        let t0 = Instant::now();
        // With b and c live, j's first replica is one of them: call it r, the other o.
        let mut set = set(1, &["a", "b", "c"]);
        set.route(vec![start("j")], history(&asked), t0);
        let r = set.targets["j"][0].clone();
        let o = if r == "b" { "c" } else { "b" }.to_string();
        let end = |n: &str| (n.to_string(), vec![("j".to_string(), 4, "end".to_string())]);
        // r is thought down: o gets the whole journal, r nothing (it is not live).
        let out = set.rehome(nodes(&["a", &o]), history(&asked));
        assert_eq!(
            sent(out),
            vec![(
                o.clone(),
                vec![("j".to_string(), 4, "input 99".to_string())]
            )]
        );
        assert!(sent(set.settle(t0).0).is_empty());
        // r is back: it is j's replica again (its whole journal), and o is told to drop.
        let out = set.rehome(nodes(&["a", "b", "c"]), history(&asked));
        assert_eq!(
            sent(out),
            vec![(
                r.clone(),
                vec![("j".to_string(), 4, "input 99".to_string())]
            )]
        );
        assert_eq!(sent(set.settle(t0).0), vec![end(&o)]);
        set.acked(&o, &[("j".to_string(), false)]);
        assert_eq!(set.owed_count, 0);
        // r is thought down again and the job ends: only o is live to hear it; r, the
        // former replica, gets the end once it is live, until it acks.
        set.rehome(nodes(&["a", &o]), history(&asked));
        set.route(
            vec![outgoing("j", None, ReplicaWhat::End)],
            history(&asked),
            t0,
        );
        assert_eq!(sent(set.settle(t0).0), vec![end(&o)]);
        set.acked(&o, &[("j".to_string(), false)]);
        set.rehome(nodes(&["a", "b", "c"]), history(&asked));
        assert_eq!(sent(set.settle(t0 + RESEND_AFTER).0), vec![end(&r)]);
        set.acked(&r, &[("j".to_string(), false)]);
        assert_eq!(set.owed_count, 0);
        assert!(set.owed.is_empty() && set.confirming.is_empty());
    }

    /// The jobs a node resumes from its journal get replicas at the first check, even if
    /// the live nodes did not change.
    #[test]
    fn resumed_jobs_are_copied_at_the_first_check() {
        let asked = RefCell::new(Vec::new());
        let mut set = set(1, &["a", "b"]);
        set.epochs.insert("j".to_string(), 2);
        let out = set.rehome(nodes(&["a", "b"]), history(&asked));
        assert_eq!(
            sent(out),
            vec![(
                "b".to_string(),
                vec![("j".to_string(), 2, "input 99".to_string())]
            )]
        );
    }

    /// A pending wait ids `ids`, carried by the batch with ack token `token`.
    fn pending_with(
        token: u64,
        ids: &[u64],
    ) -> (
        Pending,
        Vec<oneshot::Receiver<super::super::write::Durable>>,
    ) {
        let mut p = Pending::default();
        let mut receivers = Vec::new();
        for id in ids {
            let (done, rx) = oneshot::channel();
            p.waits.insert(
                *id,
                Wait {
                    done,
                    local: false,
                    copy: false,
                    since: Instant::now(),
                },
            );
            receivers.push(rx);
        }
        p.by_token.insert(token, ids.to_vec());
        (p, receivers)
    }

    /// A `copied` submission is answered once its start is committed here and a replica
    /// acked it, in either order.
    #[test]
    fn a_copied_submission_is_answered_once_committed_here_and_on_a_replica() {
        let (mut p, mut rx) = pending_with(7, &[1, 2]);
        p.mark(1, true);
        assert!(rx[0].try_recv().is_err());
        p.acked(7);
        assert_eq!(rx[0].try_recv(), Ok(Ok(())));
        assert!(rx[1].try_recv().is_err());
        p.mark(2, true);
        assert_eq!(rx[1].try_recv(), Ok(Ok(())));
        assert!(p.waits.is_empty());
    }

    /// With copies on two replicas, the first ack answers; the second finds nothing.
    #[test]
    fn the_first_replica_to_ack_answers_the_submission() {
        let (mut p, mut rx) = pending_with(7, &[1]);
        p.by_token.insert(8, vec![1]);
        p.mark(1, true);
        p.acked(8);
        assert_eq!(rx[0].try_recv(), Ok(Ok(())));
        p.acked(7);
        p.acked(7);
        assert!(p.waits.is_empty() && p.by_token.is_empty());
    }

    /// A `synced` submission is answered once its start is committed both here and on a
    /// replica, in either order.
    #[test]
    fn a_synced_submission_waits_for_both_commits() {
        let (mut p, mut rx) = pending_with(7, &[1, 2]);
        p.by_token.insert(7, vec![1]);
        p.by_token.insert(8, vec![2]);
        p.acked(7);
        assert!(rx[0].try_recv().is_err(), "answered before the commit here");
        p.committed_here(&[1, 2]);
        assert_eq!(rx[0].try_recv(), Ok(Ok(())));
        assert!(
            rx[1].try_recv().is_err(),
            "answered before a replica's commit"
        );
        p.acked(8);
        assert_eq!(rx[1].try_recv(), Ok(Ok(())));
    }

    /// A start sent ahead whose local commit failed: refused if no replica answered it
    /// yet; one a replica answered stays answered (the replica commits it).
    #[test]
    fn a_failed_local_commit_refuses_only_the_submissions_no_replica_answered() {
        let (mut p, mut rx) = pending_with(7, &[1, 2]);
        for w in p.waits.values_mut() {
            w.local = true; // queued here, as the handle sends them
        }
        p.by_token.insert(8, vec![2]);
        p.acked(8);
        let why = super::super::write::CommitFailed {
            folder: "/data".into(),
            reason: "no space left on device".to_string(),
        };
        p.commit_failed(&[1, 2], &why);
        assert_eq!(rx[0].try_recv(), Ok(Err(why)));
        assert_eq!(rx[1].try_recv(), Ok(Ok(())));
        assert!(p.waits.is_empty());
    }

    /// Waits whose submitter stopped waiting are dropped, with the tokens that carried
    /// only them.
    #[test]
    fn waits_nobody_waits_for_are_purged_with_their_tokens() {
        let (mut p, rx) = pending_with(7, &[1]);
        let (mut p2, _kept) = pending_with(8, &[2]);
        drop(rx);
        p.purge();
        assert!(p.waits.is_empty() && p.by_token.is_empty());
        p2.purge();
        assert_eq!(p2.waits.len(), 1);
        assert_eq!(p2.by_token.len(), 1);
    }

    /// A replicator of node `a` with one copy, `j` copied to `b`, and somebody waiting
    /// for the end of `j`.
    fn ahead_replicator() -> (Replicator, oneshot::Receiver<EndConfirmation>) {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let mut set = set(1, &["a", "b"]);
        set.epochs.insert("j".to_string(), 0);
        set.targets.insert("j".to_string(), nodes(&["b"]));
        let (tx, rx) = oneshot::channel();
        crate::locked(&pending).wait_for_end("j", tx);
        let r = Replicator {
            pending,
            view: Arc::new(crate::ClusterView::new("a")),
            set,
            checked: Instant::now(),
            live: None,
            held: HashMap::new(),
            held_synced: false,
        };
        (r, rx)
    }

    /// Holds the start of `job` for `node`, answering wait `id` (what `start_ahead` does
    /// once it chose the job's replicas), and returns the submission's receiver.
    fn hold_start(
        r: &mut Replicator,
        node: &str,
        job: &str,
        id: u64,
    ) -> oneshot::Receiver<super::super::write::Durable> {
        let (tx, rx) = oneshot::channel();
        crate::locked(&r.pending).waits.insert(
            id,
            Wait {
                done: tx,
                local: true,
                copy: false,
                since: Instant::now(),
            },
        );
        let held = r.held.entry(node.to_string()).or_default();
        held.writes.push(ReplicaWrite {
            job: job.to_string(),
            epoch: 0,
            what: ReplicaWhat::Start(vec![1]),
            ahead: false,
        });
        held.waits.push(id);
        r.set
            .targets
            .insert(job.to_string(), vec![node.to_string()]);
        rx
    }

    /// The starts of a burst go to their replica as one batch: one token, whose ack
    /// answers every submission it carries.
    #[test]
    fn held_starts_go_as_one_batch_per_replica_answered_by_one_ack() {
        let (mut r, _end) = ahead_replicator();
        let mut first = hold_start(&mut r, "b", "x", 1);
        let mut second = hold_start(&mut r, "b", "y", 2);
        r.flush_starts();
        assert!(r.held.is_empty());
        let tokens: Vec<u64> = crate::locked(&r.pending).by_token.keys().copied().collect();
        assert_eq!(tokens.len(), 1, "one batch, one token");
        assert!(first.try_recv().is_err(), "not answered before the ack");
        crate::locked(&r.pending).acked(tokens[0]);
        assert!(first.try_recv().is_ok_and(|d| d.is_ok()));
        assert!(second.try_recv().is_ok_and(|d| d.is_ok()));
    }

    /// Whatever the replicator sends goes after the starts it holds: a job's end never
    /// reaches a replica before its start.
    #[test]
    fn held_starts_are_sent_before_anything_else() {
        let (mut r, _end) = ahead_replicator();
        let _start = hold_start(&mut r, "b", "x", 1);
        r.end_ahead("j");
        assert!(r.held.is_empty(), "the end went out behind the held start");
        let p = crate::locked(&r.pending);
        assert_eq!(p.by_token.len(), 1, "the start's batch");
        assert_eq!(p.end_tokens.len(), 1, "the end's batch");
    }

    /// The token of the end batch sent to `node`.
    fn end_token(r: &Replicator, node: &str) -> u64 {
        let p = crate::locked(&r.pending);
        let tokens: Vec<u64> = p
            .end_tokens
            .iter()
            .filter(|(_, t)| t.node == node)
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(tokens.len(), 1, "one end batch to {node}");
        tokens[0]
    }

    /// An end sent ahead is confirmed once its holder acked it and the writer wrote it
    /// here, acked first; the writer copies none of the job's writes after it.
    #[test]
    fn an_end_sent_ahead_is_confirmed_once_acked_and_written_here() {
        let (mut r, mut rx) = ahead_replicator();
        r.end_ahead("j");
        assert!(r.set.owed["b"].contains_key("j"), "the end is owed to b");
        let token = end_token(&r, "b");
        assert!(crate::locked(&r.pending).acked(token));
        r.ends_acked();
        assert!(
            rx.try_recv().is_err(),
            "confirmed before it is written here"
        );
        // The writer's batch: the job's last input and its end, and another job's input.
        let (left, written) = r.skip_ended_ahead(vec![
            input("j", 3),
            outgoing("j", None, ReplicaWhat::End),
            input("k", 1),
        ]);
        let left: Vec<_> = left.into_iter().map(|o| o.job).collect();
        assert_eq!(left, vec!["k".to_string()]);
        assert!(written);
        assert_eq!(rx.try_recv(), Ok(EndConfirmation::Confirmed));
        assert!(r.set.ahead.is_empty());
        // b kept its copy on the end sent ahead: it gets the end again, unmarked, once
        // and without an ack, and drops the copy on it.
        assert!(r.set.owed.is_empty(), "owed no more");
        assert_eq!(r.set.unmarked["b"], vec![("j".to_string(), 0)]);
        r.send_ends();
        assert!(r.set.unmarked.is_empty(), "sent");
        assert!(crate::locked(&r.pending).end_tokens.is_empty(), "not acked");
    }

    /// An end sent ahead goes marked (the holder keeps its copy), and so does its resend
    /// while it is not written here; once written, it goes unmarked, and an ack of the
    /// marked one does not settle what is owed.
    #[test]
    fn an_end_goes_marked_until_it_is_written_here() {
        let (mut r, mut rx) = ahead_replicator();
        r.end_ahead("j");
        let token = end_token(&r, "b");
        assert_eq!(
            crate::locked(&r.pending).end_tokens[&token].jobs,
            vec![("j".to_string(), true)]
        );
        // No ack yet: the resend is marked too.
        let later = Instant::now() + RESEND_AFTER;
        let (again, _) = r.set.settle(later);
        assert!(
            again["b"].iter().all(|w| w.ahead),
            "resent unwritten, marked"
        );
        // Written before the first ack came: the ack confirms the end, and has the
        // unmarked end sent (once, with no token).
        let (_, written) = r.skip_ended_ahead(vec![outgoing("j", None, ReplicaWhat::End)]);
        assert!(written);
        assert!(!r.set.owed["b"]["j"].unwritten, "owed unmarked now");
        assert!(crate::locked(&r.pending).acked(token));
        r.ends_acked();
        assert_eq!(rx.try_recv(), Ok(EndConfirmation::Confirmed));
        assert!(r.set.owed.is_empty(), "owed no more");
        assert!(r.set.unmarked.is_empty(), "sent with the ack's handling");
        assert!(crate::locked(&r.pending).end_tokens.is_empty(), "not acked");
    }

    /// An end acked ahead and not written here yet is neither resent nor handed to the
    /// core group as late: it waits for the write.
    #[test]
    fn an_end_acked_ahead_waits_for_its_write() {
        let (mut r, mut rx) = ahead_replicator();
        r.end_ahead("j");
        let token = end_token(&r, "b");
        assert!(crate::locked(&r.pending).acked(token));
        r.ends_acked();
        assert!(rx.try_recv().is_err(), "not written here yet");
        let later = Instant::now() + RESEND_AFTER * 3;
        let (again, once) = r.set.settle(later);
        assert!(again.is_empty() && once.is_empty(), "nothing resent");
        assert!(r.set.unconfirmed(later).is_empty(), "not late");
        let (_, written) = r.skip_ended_ahead(vec![outgoing("j", None, ReplicaWhat::End)]);
        assert!(written);
        assert_eq!(rx.try_recv(), Ok(EndConfirmation::Confirmed));
        assert_eq!(r.set.unmarked["b"], vec![("j".to_string(), 0)]);
    }

    /// Written here first, the end sent ahead is confirmed by the ack.
    #[test]
    fn an_end_sent_ahead_and_written_here_is_confirmed_by_the_ack() {
        let (mut r, mut rx) = ahead_replicator();
        r.end_ahead("j");
        let token = end_token(&r, "b");
        let (left, _) = r.skip_ended_ahead(vec![outgoing("j", None, ReplicaWhat::End)]);
        assert!(left.is_empty());
        assert!(rx.try_recv().is_err(), "confirmed before b acked");
        assert!(crate::locked(&r.pending).acked(token));
        r.ends_acked();
        assert_eq!(rx.try_recv(), Ok(EndConfirmation::Confirmed));
    }

    /// The commit of an end sent ahead does not confirm it (it is not a job nobody
    /// holds, whose commit alone would confirm it with a sync), even once acked.
    #[test]
    fn a_commit_does_not_confirm_an_end_sent_ahead() {
        let (mut r, _rx) = ahead_replicator();
        r.end_ahead("j");
        let token = end_token(&r, "b");
        assert!(crate::locked(&r.pending).acked(token));
        r.ends_acked();
        let end = [outgoing("j", None, ReplicaWhat::End)];
        assert!(r.confirmed_by_commit(&end).is_empty());
    }

    /// The core group's record of an end sent ahead does not confirm it before the
    /// writer wrote it here (a full disk): the write does.
    #[test]
    fn a_recorded_end_sent_ahead_is_confirmed_once_written_here() {
        let (mut r, mut rx) = ahead_replicator();
        r.end_ahead("j");
        assert!(r.confirm_once_written("j"), "deferred to the write");
        assert!(rx.try_recv().is_err());
        let (_, written) = r.skip_ended_ahead(vec![outgoing("j", None, ReplicaWhat::End)]);
        assert!(written);
        assert_eq!(rx.try_recv(), Ok(EndConfirmation::Confirmed));
        assert!(!r.confirm_once_written("j"), "written: nothing to defer");
    }

    /// A job no other node holds a copy of is left to the writer's commit.
    #[test]
    fn an_end_nobody_holds_does_not_go_ahead() {
        let (mut r, _rx) = ahead_replicator();
        r.set.targets.clear();
        r.end_ahead("j");
        assert!(r.set.ahead.is_empty() && r.set.owed.is_empty());
        assert!(crate::locked(&r.pending).end_tokens.is_empty());
    }

    /// After a commit, this node's jobs' starts (but those already sent ahead), inputs
    /// and ends are copied; a job dropped here ends its copies; copies and actor saves
    /// are not.
    #[test]
    fn what_a_commit_copies_to_replicas() {
        let batch = vec![
            Write::StartSent(
                "ahead".to_string(),
                0,
                Vec::new(),
                super::super::write::SentAhead {
                    wait: 1,
                    synced: false,
                },
            ),
            Write::Start("j".to_string(), 2, Vec::new(), None),
            Write::Input("j".to_string(), 1, Vec::new()),
            Write::Drop("moved".to_string(), None),
            Write::End("done".to_string(), Vec::new(), 0),
            Write::Forget("copy".to_string()),
            Write::Keep(ReplicaBatch {
                owner: "n2".to_string(),
                writes: Vec::new(),
                ack: None,
                synced: false,
            }),
            Write::ActorFetch("t/k".to_string(), 0, oneshot::channel().0),
        ];
        let copied: Vec<_> = writes_to_copy(&batch)
            .into_iter()
            .map(|o| {
                let w = ReplicaWrite {
                    job: o.job,
                    epoch: o.epoch.unwrap_or(0),
                    what: o.what,
                    ahead: false,
                };
                (summary(&w), o.epoch.is_some())
            })
            .collect();
        let row = |job: &str, epoch, what: &str| (job.to_string(), epoch, what.to_string());
        assert_eq!(
            copied,
            vec![
                (row("j", 2, "start"), true),
                (row("j", 0, "input 1"), false),
                (row("moved", 0, "end"), false),
                (row("done", 0, "end"), false),
            ]
        );
    }
}
