//! Copies of this node's journal on other nodes (`journal_replicas`), so that a job whose
//! owner stays down can be taken over by a node that holds its inputs.
//!
//! The replica set of a job is the next `journal_replicas` live nodes in the job's
//! rendezvous order, the owner left out ([`ReplicaSet`]). After each commit the writer
//! thread sends what it committed to each job's replicas; a node that becomes a job's
//! replica (a replica left, a node joined) first gets the job's whole journal, and every
//! [`CHECK_EVERY`] the writer looks whether the live nodes changed. Copies are
//! asynchronous: they trail the owner by one commit window and a message.
//!
//! Acks. A submission with `journal_ack = "copied"` is answered once its job's start is
//! committed here and on one replica. Its start goes to the replicas ahead of the local
//! commit, in a batch with an ack token ([`Replicator::send_ahead`]); the replica commits
//! it at once and answers the token ([`answer_acks`], on the replica's writer thread);
//! [`Pending`] matches the tokens to the submissions.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use troupe_runtime::protocol::{
    first_member, job_manager_group, JobManagerMessage, ReplicaWhat, ReplicaWrite,
};
use troupe_runtime::wire::Wire;

use super::store::{Recovered, Store};
use super::writer::{Waiter, Write};
use crate::ClusterView;

/// Where the writer sends copies of what it commits.
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
    done: tokio::sync::oneshot::Sender<()>,
    local: bool,
    copy: bool,
    since: Instant,
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
                let _ = w.done.send(());
            }
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

    /// A replica committed the batch that carried `token`: its submissions are copied.
    pub(super) fn acked(&mut self, token: u64) {
        if let Some(ids) = self.by_token.remove(&token) {
            for id in ids {
                self.mark(id, false);
            }
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
                .filter(|n| *n != self.me),
        )
        .into_iter()
        .take(self.copies)
        .map(str::to_string)
        .collect()
    }

    /// Who gets which of `writes`: each job's replicas its write, a job's new replica its
    /// whole journal (`history`, this write included, it is committed).
    fn route(
        &mut self,
        writes: Vec<Outgoing>,
        history: impl Fn(&str, u64) -> Vec<ReplicaWrite>,
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
            for node in &now {
                let had = before.is_some_and(|b| b.contains(node));
                if had || is_start || is_end {
                    out.entry(node.clone()).or_default().push(ReplicaWrite {
                        job: job.clone(),
                        epoch,
                        what: what.clone(),
                    });
                } else {
                    out.entry(node.clone())
                        .or_default()
                        .extend(history(&job, epoch));
                }
            }
            if is_end {
                self.targets.remove(&job);
                self.epochs.remove(&job);
            } else {
                self.targets.insert(job, now);
            }
        }
        out
    }

    /// With the live nodes now `live`: the whole journal (`history`) of every job for
    /// each of its replicas that is new. Nothing if neither the nodes nor the jobs changed.
    fn rehome(
        &mut self,
        live: Vec<String>,
        history: impl Fn(&str, u64) -> Vec<ReplicaWrite>,
    ) -> ToSend {
        let mut out = ToSend::new();
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
}

impl Replicator {
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
            },
            view: r.view,
            checked: Instant::now(),
        })
    }

    /// Sends `writes` to their jobs' replicas (a job's new replica gets its whole journal).
    pub(super) fn after_commit(&mut self, store: &Store, writes: Vec<Outgoing>) {
        if writes.is_empty() {
            return;
        }
        self.set.live = crate::live_nodes(&self.view);
        let out = self
            .set
            .route(writes, |job, epoch| store.history(job, epoch));
        self.send(out);
    }

    /// Sends the starts of the submissions in `waiting` that want a copy to their jobs'
    /// replicas before the local commit, each batch with an ack token. Those with a
    /// replica to wait for leave `waiting`; returns their wait ids and jobs.
    pub(super) fn send_ahead(
        &mut self,
        batch: &[Write],
        waiting: &mut Vec<(String, Waiter)>,
    ) -> (Vec<u64>, HashSet<String>) {
        let mut ids = Vec::new();
        let mut jobs = HashSet::new();
        if !waiting.iter().any(|(_, w)| w.copied) {
            return (ids, jobs);
        }
        self.set.live = crate::live_nodes(&self.view);
        let mut p = crate::locked(&self.pending);
        p.purge();
        let mut carried: HashMap<String, Vec<u64>> = HashMap::new();
        for (job, w) in std::mem::take(waiting) {
            let targets = if w.copied {
                self.set.targets_for(&job)
            } else {
                Vec::new()
            };
            if targets.is_empty() {
                waiting.push((job, w));
                continue;
            }
            p.next_wait += 1;
            let id = p.next_wait;
            p.waits.insert(
                id,
                Wait {
                    done: w.done,
                    local: false,
                    copy: false,
                    since: Instant::now(),
                },
            );
            for node in &targets {
                carried.entry(node.clone()).or_default().push(id);
            }
            ids.push(id);
            self.set.epochs.insert(job.clone(), 0);
            self.set.targets.insert(job.clone(), targets);
            jobs.insert(job);
        }
        let mut out = ToSend::new();
        for w in batch {
            if let Write::Start(job, epoch, b, _) = w {
                if !jobs.contains(job) {
                    continue;
                }
                for node in self.set.targets.get(job).into_iter().flatten() {
                    out.entry(node.clone()).or_default().push(ReplicaWrite {
                        job: job.clone(),
                        epoch: *epoch,
                        what: ReplicaWhat::Start(b.clone()),
                    });
                }
            }
        }
        let mut tokens = HashMap::new();
        for (node, carried) in carried {
            let token = p.next_token;
            p.next_token += 1;
            p.by_token.insert(token, carried);
            tokens.insert(node, token);
        }
        drop(p);
        self.send_with(out, &tokens);
        (ids, jobs)
    }

    /// The starts sent ahead as `ids` are committed here: those also copied are answered.
    pub(super) fn committed_here(&self, ids: &[u64]) {
        let mut p = crate::locked(&self.pending);
        for id in ids {
            p.mark(*id, true);
        }
    }

    /// The commit of the starts sent ahead as `ids` failed: nobody is answered for them.
    pub(super) fn commit_failed(&self, ids: &[u64]) {
        let mut p = crate::locked(&self.pending);
        for id in ids {
            p.waits.remove(id);
        }
    }

    /// [`Replicator::check`], if it has not run for [`CHECK_EVERY`].
    pub(super) fn check_if_due(&mut self, store: &Store) {
        if self.checked.elapsed() >= CHECK_EVERY {
            self.check(store);
        }
    }

    /// Gives every live job whose replicas changed its whole journal at the new ones.
    pub(super) fn check(&mut self, store: &Store) {
        self.checked = Instant::now();
        let live = crate::live_nodes(&self.view);
        let out = self
            .set
            .rehome(live, |job, epoch| store.history(job, epoch));
        self.send(out);
    }

    fn send(&self, out: ToSend) {
        self.send_with(out, &HashMap::new());
    }

    /// Sends each node its writes, asking those in `tokens` to ack with their token.
    fn send_with(&self, out: ToSend, tokens: &HashMap<String, u64>) {
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
/// those of `sent_ahead`, already sent), inputs and ends (a job dropped here ends its
/// copies too).
pub(super) fn writes_to_copy(batch: &[Write], sent_ahead: &HashSet<String>) -> Vec<Outgoing> {
    let outgoing = |job: &String, epoch, what| Outgoing {
        job: job.clone(),
        epoch,
        what,
    };
    batch
        .iter()
        .filter_map(|w| match w {
            Write::Start(id, _, _, _) if sent_ahead.contains(id) => None,
            Write::Start(id, epoch, b, _) => {
                Some(outgoing(id, Some(*epoch), ReplicaWhat::Start(b.clone())))
            }
            Write::Input(id, seq, b) => {
                Some(outgoing(id, None, ReplicaWhat::Input(*seq, b.clone())))
            }
            Write::End(id, _) | Write::Drop(id) => Some(outgoing(id, None, ReplicaWhat::End)),
            _ => None,
        })
        .collect()
}

/// The owners (and their tokens) that wait for the copies in `batch` to be committed here.
pub(super) fn acks_asked(batch: &[Write]) -> Vec<(String, u64)> {
    batch
        .iter()
        .filter_map(|w| match w {
            Write::Keep(b) => b.ack.map(|token| (b.owner.clone(), token)),
            _ => None,
        })
        .collect()
}

/// Tells each owner in `acks` that the copies it waits for are committed here.
pub(super) fn answer_acks(acks: Vec<(String, u64)>) {
    for (owner, token) in acks {
        if let Some(jm) = first_member::<JobManagerMessage>(&job_manager_group(&owner)) {
            let _ = jm.cast(JobManagerMessage::ReplicaAcked(token));
        }
    }
}
