//! The takeover and fencing rules, as a plain state machine: events in, effects out.
//!
//! A node keeps copies of other nodes' journals (`journal_replicas`). When a copy's owner
//! stays gone for `failure.takeover_after_ms`, this node asks the core group for the job;
//! the core group hands each job over at most once per epoch (compare-and-set), and its
//! answer names who holds the job now. Every node remembers the newest holder it heard of,
//! so it can refuse journal writes from an owner whose epoch is over (fencing), stop its own
//! run of a job another node took over, and route questions to the holder.
//!
//! [`Takeovers`] holds those rules and nothing else: no actor references, no journal, no
//! clock (time comes in with [`Takeovers::tick`]). The job manager feeds it what happens
//! and carries out the [`Effect`]s it returns, so each rule is a unit test
//! (`takeover/tests.rs`). The shape follows raft-rs's `RawNode`: one owner of the state,
//! time passed in, effects handed back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use troupe_runtime::protocol::JobMoved;
use troupe_runtime::vocab::Holder;
use troupe_runtime::vocab::JobId;

/// What the job manager must do for the takeover rules. Effects about different jobs come
/// in no particular order; those about one job come in the order they are to be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Ask the core group to hand `job` to this node from `from`, its owner gone past the
    /// grace period; answer with [`Takeovers::decided`].
    AskCore {
        /// The job.
        job: String,
        /// The holder the copy names, which the core group compares with its own.
        from: Holder,
    },
    /// The core group named this node: rebuild `job` from its copy, run it at `epoch`, and
    /// tell every node (then [`Takeovers::take_copy`] and [`Takeovers::run_started`]).
    Adopt {
        /// The job.
        job: String,
        /// The epoch the core group granted.
        epoch: u64,
    },
    /// The core group named another node (counted and logged; the effects that follow
    /// act on it).
    Denied {
        /// The job.
        job: String,
        /// Who holds it.
        holder: Holder,
    },
    /// Ask the core group (read-only) who holds `job` now: an earlier ask got no answer,
    /// and its owner is back, so a grant may have been made and lost. Answer with
    /// [`Takeovers::decided`]: the holder, or `from` if the job was never handed over.
    AskOwner {
        /// The job.
        job: String,
        /// The holder the copy names (the answer when nothing moved).
        from: Holder,
    },
    /// No decision came (the core group did not answer, or refused): the next tick asks
    /// again, until an answer comes (counted and logged).
    Undecided {
        /// The job.
        job: String,
        /// Why there was no decision.
        reason: String,
    },
    /// Stop this node's run of `job` and drop it from the journal: `holder` owns it at a
    /// newer epoch. The run is already forgotten here.
    StopRun {
        /// The job.
        job: String,
        /// Who owns it now.
        holder: Holder,
    },
    /// Drop the journal's copy of `job`: its owner now is newer than the copy's.
    ForgetCopy {
        /// The job.
        job: String,
    },
    /// Tell node `to` that a job it owned belongs to another node now (a `JobMoved`).
    TellMoved {
        /// The node to tell (the job's former owner).
        to: String,
        /// The job.
        job: String,
        /// Who holds it now, at which epoch.
        holder: Holder,
    },
}

/// What a journal write of another node's job contains, as far as fencing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteKind {
    /// The job's record: the copy starts (or starts again at a new epoch).
    Start,
    /// One of the job's inputs.
    Input,
    /// The job ended: the copy is dropped.
    End,
    /// The job ended, but its owner's journal does not hold the end yet (it came
    /// ahead of the owner's write): fenced like an `End`, but the copy stays until the
    /// `End` follows. An owner killed before its write comes back without the job.
    EndAhead,
}

/// The answer to one journal write from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteVerdict {
    /// Keep it in the journal's copy.
    Keep,
    /// Refuse it: its epoch is over. The writer is to be told this holder.
    Fenced(Holder),
    /// Not now: this node asked the core group for the job and has no answer yet (an
    /// end is neither kept nor acked; its owner sends it again).
    Later,
}

/// The takeover and fencing state of one node's job manager.
#[derive(Debug)]
pub(crate) struct Takeovers {
    /// This node's name.
    me: String,
    /// How long a copy's owner must stay gone before this node asks for the job.
    takeover_after: Duration,
    /// How many moves are remembered (the newest).
    retain_moves: usize,
    /// This node's runs of jobs, by the epoch each runs at (0: accepted here).
    runs: HashMap<String, u64>,
    /// Copies of other nodes' jobs kept here: the owner and its epoch.
    copies: HashMap<String, Holder>,
    /// Jobs known to have moved to another node, and in which order they were learnt.
    moved: HashMap<String, Holder>,
    moved_order: VecDeque<String>,
    /// Jobs this node took over (epoch > 0) whose run here ended, by epoch, oldest first:
    /// their former owner is still told of the move, and its writes are still fenced.
    ended_here: HashMap<String, u64>,
    ended_order: VecDeque<String>,
    /// Copies dropped because the job ended, by the epoch it ended at, oldest first:
    /// a late or repeated write from that epoch or an older one is refused.
    ended_copies: HashMap<String, Holder>,
    ended_copies_order: VecDeque<String>,
    /// Jobs whose takeover was asked for with no answer yet: asked again (read-only once
    /// the owner is back) until the core group answers, so a lost grant is not lost.
    undecided: HashSet<String>,
    /// Jobs whose takeover the core group is being asked for.
    asking: HashSet<String>,
    /// Since when each copy's owner has been seen gone.
    absent_since: HashMap<String, Instant>,
    /// Copies of live owners' jobs at the last [`Takeovers::long_held`].
    held_at_last_look: HashSet<String>,
}

impl Takeovers {
    /// The rules for node `me`, asking for a job after its owner was gone for
    /// `takeover_after`, remembering the newest `retain_moves` moves (at least one).
    pub(crate) fn new(
        me: impl Into<String>,
        takeover_after: Duration,
        retain_moves: usize,
    ) -> Self {
        Takeovers {
            me: me.into(),
            takeover_after,
            retain_moves: retain_moves.max(1),
            runs: HashMap::new(),
            copies: HashMap::new(),
            moved: HashMap::new(),
            moved_order: VecDeque::new(),
            ended_here: HashMap::new(),
            ended_order: VecDeque::new(),
            ended_copies: HashMap::new(),
            ended_copies_order: VecDeque::new(),
            undecided: HashSet::new(),
            asking: HashSet::new(),
            absent_since: HashMap::new(),
            held_at_last_look: HashSet::new(),
        }
    }

    /// This node started running `job` at `epoch` (0 for a job it accepted).
    pub(crate) fn run_started(&mut self, job: &str, epoch: u64) {
        self.runs.insert(job.to_string(), epoch);
    }

    /// This node's run of `job` ended (the job finished, or its supervisor crashed). A
    /// job it took over is remembered (the newest `retain_moves`), so that its former
    /// owner, coming back, learns of the move even though the run is over.
    pub(crate) fn run_ended(&mut self, job: &str) {
        let Some(epoch) = self.runs.remove(job) else {
            return;
        };
        if epoch == 0 {
            return;
        }
        if self.ended_here.insert(job.to_string(), epoch).is_none() {
            self.ended_order.push_back(job.to_string());
        }
        while self.ended_order.len() > self.retain_moves {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended_here.remove(&old);
            }
        }
    }

    /// The journal held `job`'s end, run here at `epoch`, when this node started: a copy
    /// of it is stale and never adopted, whatever the core group says, and a former
    /// owner's writes (from an older epoch) are fenced.
    pub(crate) fn ended_before_restart(&mut self, job: &str, epoch: u64) {
        if self.ended_here.insert(job.to_string(), epoch).is_none() {
            self.ended_order.push_back(job.to_string());
        }
        while self.ended_order.len() > self.retain_moves {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended_here.remove(&old);
            }
        }
    }

    /// The epoch of this node's run of `job`, if it runs it (0: accepted here).
    pub(crate) fn run_epoch(&self, job: &str) -> Option<u64> {
        self.runs.get(job).copied()
    }

    /// The journal held a copy of `job` when this node started. A takeover of it may
    /// have been asked for before the restart, its answer lost: its holder is asked for
    /// (read-only) at the first tick that sees its owner live.
    pub(crate) fn copy_recovered(&mut self, job: String, owner: Holder) {
        self.undecided.insert(job.clone());
        self.copies.insert(job, owner);
    }

    /// The holder of `job` if it moved to another node at an epoch newer than this node's
    /// run of it (running or ended here; epoch 0 for a job accepted here): that holder
    /// answers for the job.
    pub(crate) fn newer_holder(&self, job: &str) -> Option<&Holder> {
        let mine = self
            .runs
            .get(job)
            .or_else(|| self.ended_here.get(job))
            .copied()
            .unwrap_or(0);
        self.moved
            .get(job)
            .filter(|h| h.node != self.me && h.epoch > mine)
    }

    /// The holder `job` moved to, if this node heard of a move.
    pub(crate) fn moved_to(&self, job: &str) -> Option<&Holder> {
        self.moved.get(job)
    }

    /// Whether this node keeps copies of other nodes' jobs (if not, a tick has nothing to
    /// look at and needs no live set).
    pub(crate) fn keeps_copies(&self) -> bool {
        !self.copies.is_empty()
    }

    /// The jobs of `owner` whose copies this node keeps, in job order.
    pub(crate) fn copies_of(&self, owner: &str) -> Vec<String> {
        let mut jobs: Vec<String> = self
            .copies
            .iter()
            .filter(|(_, h)| h.node == owner)
            .map(|(job, _)| job.clone())
            .collect();
        jobs.sort();
        jobs
    }

    /// `owner` is up and knows nothing of `jobs` (it restarted before its own journal
    /// held them; their copies here are all that is left): ask the core group for those
    /// this node still keeps a copy of from that owner, at once, without a grace period.
    /// The core group's compare-and-set still decides, so a job that moved or ended
    /// meanwhile is not taken.
    pub(crate) fn forsaken(&mut self, owner: &str, jobs: &[String]) -> Vec<Effect> {
        let mut effects = Vec::new();
        for job in jobs {
            let Some(from) = self.copies.get(job).filter(|h| h.node == owner) else {
                continue;
            };
            if self.runs.contains_key(job) || !self.asking.insert(job.clone()) {
                continue;
            }
            effects.push(Effect::AskCore {
                job: job.clone(),
                from: from.clone(),
            });
        }
        effects
    }

    /// `owner` says its journal holds the ends of `jobs`: the copies of them it named are
    /// stale (the owner came back, or the connection broke, before this node got the
    /// written end), and are dropped, as an `End` would.
    pub(crate) fn ended_at_owner(&mut self, owner: &str, jobs: &[String]) -> Vec<Effect> {
        let mut effects = Vec::new();
        for job in jobs {
            let Some(from) = self.copies.get(job).filter(|h| h.node == owner).cloned() else {
                continue;
            };
            if self.runs.contains_key(job) || self.asking.contains(job) {
                continue;
            }
            self.note_ended_copy(job, &from.node, from.epoch);
            effects.extend(self.drop_stale_copy(job));
        }
        effects
    }

    /// The copies whose owner is live (in `live_nodes`) and that were kept here already at
    /// the last call, by owner, in job order: each owner is asked which of them it knows
    /// nothing of, as at its coming up ([`Takeovers::forsaken`] then acts on the answer).
    /// That first question can be missed: the owner died again while asked, or this node
    /// restarted and read its copies after its peers were up. A copy whose owner lives
    /// on without the job is never taken over by [`Takeovers::tick`] (its owner is live),
    /// so without this second look the job would wait forever.
    pub(crate) fn long_held(
        &mut self,
        live_nodes: &HashSet<String>,
    ) -> std::collections::BTreeMap<String, Vec<String>> {
        let held: HashSet<String> = self
            .copies
            .iter()
            .filter(|(job, owner)| {
                live_nodes.contains(&owner.node)
                    && !self.runs.contains_key(*job)
                    && !self.asking.contains(*job)
            })
            .map(|(job, _)| job.clone())
            .collect();
        let mut by_owner = std::collections::BTreeMap::<String, Vec<String>>::new();
        for job in held.intersection(&self.held_at_last_look) {
            if let Some(owner) = self.copies.get(job) {
                by_owner
                    .entry(owner.node.clone())
                    .or_default()
                    .push(job.clone());
            }
        }
        for jobs in by_owner.values_mut() {
            jobs.sort();
        }
        self.held_at_last_look = held;
        by_owner
    }

    /// This node leaves and dropped every copy it kept: it asks for none of those jobs.
    pub(crate) fn drop_copies(&mut self) {
        for job in std::mem::take(&mut self.copies).into_keys() {
            self.undecided.remove(&job);
            self.asking.remove(&job);
            self.absent_since.remove(&job);
        }
    }

    /// Whether this node keeps a copy of `job` for another node.
    #[cfg(test)]
    pub(crate) fn has_copy(&self, job: &str) -> bool {
        self.copies.contains_key(job)
    }

    /// Whether this node runs `job`.
    #[cfg(test)]
    pub(crate) fn runs(&self, job: &str) -> bool {
        self.runs.contains_key(job)
    }

    /// Time passed: asks for each copied job whose owner (not in `live_nodes`) has been
    /// gone for the grace period and is not asked for already. A job this node runs, or
    /// whose owner is live, restarts its grace period; one whose earlier ask got no
    /// answer is asked about again (read-only) while its owner is live.
    /// True if an earlier question about `job` got no decision (its next one is not
    /// the first after its owner went).
    pub(crate) fn was_undecided(&self, job: &str) -> bool {
        self.undecided.contains(job)
    }

    pub(crate) fn tick(&mut self, now: Instant, live_nodes: &HashSet<String>) -> Vec<Effect> {
        if self.copies.is_empty() {
            self.absent_since.clear();
            self.undecided.clear();
            return Vec::new();
        }
        let mut effects = Vec::new();
        for (job, owner) in &self.copies {
            if self.runs.contains_key(job) {
                self.absent_since.remove(job);
                continue;
            }
            if live_nodes.contains(&owner.node) {
                self.absent_since.remove(job);
                if self.undecided.contains(job) && self.asking.insert(job.clone()) {
                    effects.push(Effect::AskOwner {
                        job: job.clone(),
                        from: owner.clone(),
                    });
                }
                continue;
            }
            let since = *self.absent_since.entry(job.clone()).or_insert(now);
            if now.duration_since(since) < self.takeover_after || self.asking.contains(job) {
                continue;
            }
            self.asking.insert(job.clone());
            effects.push(Effect::AskCore {
                job: job.clone(),
                from: owner.clone(),
            });
        }
        let copies = &self.copies;
        self.absent_since.retain(|job, _| copies.contains_key(job));
        self.undecided.retain(|job| copies.contains_key(job));
        // In job order, not the map's, so that one run replays the same (the simulation).
        effects.sort_by(|a, b| effect_job(a).cmp(effect_job(b)));
        effects
    }

    /// The core group answered the takeover of `job`: the job's holder now, or why there
    /// is no decision.
    pub(crate) fn decided(&mut self, job: &str, decision: Result<Holder, String>) -> Vec<Effect> {
        self.asking.remove(job);
        if decision.is_ok() {
            self.undecided.remove(job);
        }
        match decision {
            // The copy's owner holds it still: nothing moved.
            Ok(holder) if self.copies.get(job) == Some(&holder) => Vec::new(),
            // Granted now, or before with the answer lost (a retry after a timeout).
            Ok(holder) if holder.node == self.me => {
                if self.runs.contains_key(job) {
                    Vec::new()
                } else if self.ended_here.contains_key(job) {
                    self.drop_stale_copy(job)
                } else {
                    vec![Effect::Adopt {
                        job: job.to_string(),
                        epoch: holder.epoch,
                    }]
                }
            }
            Ok(holder) => {
                let mut effects = vec![Effect::Denied {
                    job: job.to_string(),
                    holder: holder.clone(),
                }];
                effects.extend(self.job_moved(JobMoved {
                    job: job.to_string(),
                    owner: holder.node,
                    epoch: holder.epoch,
                }));
                effects
            }
            Err(reason) => {
                if self.copies.contains_key(job) {
                    self.undecided.insert(job.to_string());
                }
                vec![Effect::Undecided {
                    job: job.to_string(),
                    reason,
                }]
            }
        }
    }

    /// Drops the copy of `job`, which ended (here, or at its owner): adopting it would run
    /// it again.
    fn drop_stale_copy(&mut self, job: &str) -> Vec<Effect> {
        self.asking.remove(job);
        self.undecided.remove(job);
        match self.copies.remove(job) {
            Some(_) => vec![Effect::ForgetCopy {
                job: job.to_string(),
            }],
            None => Vec::new(),
        }
    }

    /// The copy of `job` is being turned into this node's run (an [`Effect::Adopt`] whose
    /// copy could be read): it is no longer a copy. Returns the owner it named.
    pub(crate) fn take_copy(&mut self, job: &str) -> Option<Holder> {
        self.copies.remove(job)
    }

    /// Another node holds `m.job` now (it said so, or the core group did): stop this
    /// node's run of it if that run's epoch is older, drop an older copy, and remember the
    /// move. A move naming this node is a grant whose answer was lost: the job is adopted
    /// from the copy kept here, if it does not run here already.
    pub(crate) fn job_moved(&mut self, m: JobMoved) -> Vec<Effect> {
        if m.owner == self.me {
            let adopt = !self.runs.contains_key(&m.job)
                && self.copies.get(&m.job).is_some_and(|c| c.epoch < m.epoch);
            if !adopt {
                return Vec::new();
            }
            if self.ended_here.contains_key(&m.job) {
                return self.drop_stale_copy(&m.job);
            }
            self.asking.remove(&m.job);
            self.undecided.remove(&m.job);
            return vec![Effect::Adopt {
                job: m.job,
                epoch: m.epoch,
            }];
        }
        let holder = Holder {
            node: m.owner.clone(),
            epoch: m.epoch,
        };
        let mut effects = Vec::new();
        if self.runs.get(&m.job).is_some_and(|mine| *mine < m.epoch) {
            self.runs.remove(&m.job);
            effects.push(Effect::StopRun {
                job: m.job.clone(),
                holder,
            });
        }
        if self.copies.get(&m.job).is_some_and(|c| c.epoch < m.epoch) {
            self.copies.remove(&m.job);
            effects.push(Effect::ForgetCopy { job: m.job.clone() });
        }
        self.note_moved(m);
        effects
    }

    /// A journaled job of this node was taken over while this node was down (the core
    /// group said so at start): it is not resumed, and questions about it go to `m.owner`.
    pub(crate) fn taken_while_away(&mut self, m: JobMoved) {
        self.note_moved(m);
    }

    /// Node `node` came (back) up: tell it of the jobs this node took over from it, those
    /// it still runs and those that ended here (it may hold them in its journal still).
    pub(crate) fn node_up(&self, node: &str) -> Vec<Effect> {
        self.runs
            .iter()
            .chain(self.ended_here.iter())
            .filter(|(job, epoch)| **epoch > 0 && JobId::owner_of(job) == Some(node))
            .map(|(job, epoch)| Effect::TellMoved {
                to: node.to_string(),
                job: job.clone(),
                holder: Holder {
                    node: self.me.clone(),
                    epoch: *epoch,
                },
            })
            .collect()
    }

    /// A journal write from `writer` about `job` at `epoch`: refused if this node knows a
    /// newer epoch for the job (its own run, a copy, a move); else kept, and a `Start`
    /// makes (or renews) the copy, an `End` drops it (an `EndAhead` does not).
    pub(crate) fn replica_write(
        &mut self,
        writer: &str,
        job: &str,
        epoch: u64,
        kind: WriteKind,
    ) -> WriteVerdict {
        if let Some(newest) = self.known_holder(job) {
            if newest.epoch > epoch {
                return WriteVerdict::Fenced(newest);
            }
        }
        // A job that ended here, or whose copy ended, at this epoch: a late or repeated
        // write (a Start would bring back a copy of an ended job); a repeated End is
        // kept (acked again). An End from an older epoch is a former owner's, whose run
        // lost the job: it is fenced, so that owner does not count its end as the job's.
        let ended = self
            .ended_here
            .get(job)
            .map(|e| Holder {
                node: self.me.clone(),
                epoch: *e,
            })
            .or_else(|| self.ended_copies.get(job).cloned());
        // An end while this node's takeover of the job is asked for: acked now, it could
        // count while the core group grants the job here (the grant's answer on its way).
        let is_end = matches!(kind, WriteKind::End | WriteKind::EndAhead);
        if is_end && (self.asking.contains(job) || self.undecided.contains(job)) {
            return WriteVerdict::Later;
        }
        if let Some(end) = ended.filter(|e| e.epoch > epoch || (e.epoch == epoch && !is_end)) {
            return WriteVerdict::Fenced(end);
        }
        match kind {
            WriteKind::Start => {
                self.copies.insert(
                    job.to_string(),
                    Holder {
                        node: writer.to_string(),
                        epoch,
                    },
                );
            }
            WriteKind::End => {
                self.copies.remove(job);
                self.note_ended_copy(job, writer, epoch);
            }
            WriteKind::Input | WriteKind::EndAhead => {}
        }
        WriteVerdict::Keep
    }

    /// Remembers that the copy of `job` ended at `epoch` (its writer `writer`), keeping
    /// the newest `retain_moves` such ends.
    fn note_ended_copy(&mut self, job: &str, writer: &str, epoch: u64) {
        if self.ended_copies.get(job).is_some_and(|e| e.epoch > epoch) {
            return;
        }
        let holder = Holder {
            node: writer.to_string(),
            epoch,
        };
        if self.ended_copies.insert(job.to_string(), holder).is_none() {
            self.ended_copies_order.push_back(job.to_string());
        }
        while self.ended_copies_order.len() > self.retain_moves {
            if let Some(old) = self.ended_copies_order.pop_front() {
                self.ended_copies.remove(&old);
            }
        }
    }

    /// The holder with the newest epoch this node knows for `job`: its own run's, a
    /// copy's, a move's, or an ended copy's (the first of those on a tie).
    fn known_holder(&self, job: &str) -> Option<Holder> {
        let mine = self
            .runs
            .get(job)
            .or_else(|| self.ended_here.get(job))
            .map(|epoch| Holder {
                node: self.me.clone(),
                epoch: *epoch,
            });
        [
            mine,
            self.copies.get(job).cloned(),
            self.moved.get(job).cloned(),
            self.ended_copies.get(job).cloned(),
        ]
        .into_iter()
        .flatten()
        .fold(None, |best: Option<Holder>, h| match best {
            Some(b) if h.epoch <= b.epoch => Some(b),
            _ => Some(h),
        })
    }

    /// Remembers that `m.job` belongs to another node now, unless a move at an epoch as
    /// new is known; keeps the newest `retain_moves`.
    fn note_moved(&mut self, m: JobMoved) {
        if self.moved.get(&m.job).is_some_and(|o| o.epoch >= m.epoch) {
            return;
        }
        let holder = Holder {
            node: m.owner,
            epoch: m.epoch,
        };
        if self.moved.insert(m.job.clone(), holder).is_none() {
            self.moved_order.push_back(m.job);
        }
        while self.moved_order.len() > self.retain_moves {
            if let Some(old) = self.moved_order.pop_front() {
                self.moved.remove(&old);
            }
        }
    }
}

/// The job an ask is about.
fn effect_job(e: &Effect) -> &str {
    match e {
        Effect::AskCore { job, .. } | Effect::AskOwner { job, .. } => job,
        _ => "",
    }
}

/// The jobs among `jobs` (journaled here) that the core group says another node holds,
/// given its answer `owners` (one per job, in order; `None`: never handed over).
pub(crate) fn taken_from(
    me: &str,
    jobs: Vec<String>,
    owners: Vec<Option<Holder>>,
) -> Vec<JobMoved> {
    jobs.into_iter()
        .zip(owners)
        .filter_map(|(job, o)| {
            o.filter(|o| o.node != me).map(|o| JobMoved {
                job,
                owner: o.node,
                epoch: o.epoch,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
