//! The core group's vocabulary: what the Raft group of core nodes decides, and the state
//! machine its log drives.
//!
//! A job belongs to the node that accepted it (its id says which). When that node has been
//! down for `failure.takeover_after_ms`, a node holding a copy of the job's journal asks
//! the core to hand the job to it. Two nodes may ask at once, or a node may ask about an
//! owner that another node already replaced: the state machine grants a takeover only to
//! the first asker that names the current owner and epoch (compare-and-set), so exactly one
//! node wins. The winner's epoch is the Raft log index of the decision: unique and
//! increasing across the whole group, so it fences every earlier owner (the Raft term alone
//! would not: one leader's term sees many decisions). Nothing here does I/O; the Raft node,
//! its redb store and its network are its siblings in [`crate::core`].
//!
//! Decided entries are pruned so the state does not grow without end: a job whose run
//! ended (its holder says so, [`CoreCommand::JobEnded`] for a moved job,
//! [`CoreCommand::JobsEnded`] for one whose end a copy may have missed) and the last save of a released
//! lease are forgotten [`KEEP_DECIDED`] log entries later. Until then an ended job is never
//! handed over again; after that, no copy of it is left to ask (copies end with the job).

use std::collections::{BTreeMap, VecDeque};
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use troupe_runtime::vocab::Holder;

openraft::declare_raft_types!(
    /// The core group's Raft types: commands in, decisions out, node ids from names.
    pub CoreTypes:
        D = CoreCommand,
        R = CoreDecision,
);

/// How many log entries a decided entry (an ended move, a released lease's last save)
/// outlives its decision before it is pruned. Counted in log indexes, so every member
/// prunes the same entries at the same point of the log.
pub(crate) const KEEP_DECIDED: u64 = 100_000;

/// The Raft node id of a node name (FNV-1a, stable across builds and versions).
pub(crate) fn node_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What a node asks the core group.
// `pub`, not `pub(crate)`: openraft's `declare_raft_types!` names it in a public type.
#[allow(unreachable_pub)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoreCommand {
    /// Hand `job` to `to`, if `from` at `epoch` still owns it.
    Takeover {
        /// The job.
        job: String,
        /// The owner the asker saw go down.
        from: String,
        /// That owner's epoch.
        epoch: u64,
        /// The asker.
        to: String,
    },
    /// Who owns these jobs now (read through the log, so the answer is current).
    Owners {
        /// The jobs.
        jobs: Vec<String>,
    },
    /// Let `node` run actor `actor` (`TYPE/KEY`): granted if nobody holds its lease, if
    /// `node` does (it restarted: a new epoch fences its old activation), or if the holder
    /// is `replaces` (the asker saw that holder go down).
    ClaimActor {
        /// `TYPE/KEY`.
        actor: String,
        /// The asker.
        node: String,
        /// The holder the asker saw go down.
        replaces: Option<Holder>,
    },
    /// `node` stopped running `actor` at `epoch` (idle, or moved to its new owner), its
    /// last save being `saved` (epoch, seq): the next activation must start from that
    /// save or a later one.
    ReleaseActor {
        /// `TYPE/KEY`.
        actor: String,
        /// The holder.
        node: String,
        /// Its epoch.
        epoch: u64,
        /// Its last save, if the type saves its state.
        saved: Option<(u64, u64)>,
    },
    /// Name the cluster `id`, unless it has a name already (see `crate::cluster_identity`).
    NameCluster {
        /// The proposed id.
        id: String,
    },
    /// The run of `job` that `node` took over at `epoch` ended: the job is never handed
    /// over again (and its entry is pruned later). Nodes now send [`CoreCommand::JobsEnded`];
    /// this stays so that logs written before still apply.
    JobEnded {
        /// The job.
        job: String,
        /// Its holder.
        node: String,
        /// The holder's epoch.
        epoch: u64,
    },
    /// The runs of `jobs` (each with `node`'s epoch for it) ended at `node`, and some
    /// holder of a copy has not acked the end: the jobs are never handed over again (a
    /// job that never moved gets a new epoch, the end's log index, which makes every copy
    /// stale). Answers [`CoreDecision::Owners`]: `None` for each job recorded, its holder
    /// for one another node holds now (the asker's end is stale).
    JobsEnded {
        /// The node whose runs ended.
        node: String,
        /// Each job and the node's epoch for it.
        jobs: Vec<(String, u64)>,
    },
}

/// The core group's answer.
// `pub` for the same reason as `CoreCommand`.
#[allow(unreachable_pub)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoreDecision {
    /// The job is the asker's, at this epoch.
    Granted {
        /// The new epoch.
        epoch: u64,
    },
    /// Someone else owns the job.
    Denied {
        /// Its owner now.
        owner: Holder,
    },
    /// The owner of each job asked about; `None`: still the node that accepted it.
    Owners(Vec<Option<Holder>>),
    /// The actor is the asker's at `epoch`; it must start from the save `at_least`
    /// (epoch, seq) or a later one (the last save of the activation that released it).
    ActorGranted {
        /// The new epoch.
        epoch: u64,
        /// The oldest save the new activation may start from.
        at_least: Option<(u64, u64)>,
    },
    /// The cluster's id (the first one proposed).
    Cluster {
        /// The id.
        id: String,
    },
    /// A log entry with no command (a leader's blank entry, a membership change).
    Nothing,
}

/// The owner of `job` when no takeover was ever decided: the node its id names.
pub(crate) fn first_owner(job: &str) -> Holder {
    Holder {
        node: troupe_runtime::vocab::JobId::owner_of(job)
            .unwrap_or_default()
            .to_string(),
        epoch: 0,
    }
}

/// The state machine: jobs that changed owner, and the leases of running actors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ownership {
    moved: BTreeMap<String, Holder>,
    /// Actor (`TYPE/KEY`) -> the node running it and its epoch.
    #[serde(default)]
    actors: BTreeMap<String, Holder>,
    /// Actor -> the last save (epoch, seq) of its last released activation.
    #[serde(default)]
    released: BTreeMap<String, (u64, u64)>,
    /// The cluster's id, named once after the group formed.
    #[serde(default)]
    pub(crate) cluster: Option<String>,
    /// Actor -> the log index of its last release (which `decided` prunes).
    #[serde(default)]
    released_at: BTreeMap<String, u64>,
    /// Jobs whose run ended (-> the log index of the end): never handed over again.
    #[serde(default)]
    ended: BTreeMap<String, u64>,
    /// Decided entries to prune, oldest first: (log index of the decision, what).
    #[serde(default)]
    decided: VecDeque<(u64, Decided)>,
}

/// An entry of the state machine that is pruned [`KEEP_DECIDED`] entries after it was
/// decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Decided {
    /// A moved job ended.
    Ended(String),
    /// An actor's lease was released.
    Released(String),
}

impl Ownership {
    /// The owner of `job` now.
    pub(crate) fn owner(&self, job: &str) -> Holder {
        self.moved
            .get(job)
            .cloned()
            .unwrap_or_else(|| first_owner(job))
    }

    /// The owner of each of `jobs` that changed owner (`None`: still the node that
    /// accepted it). A read: the core answers it without a log entry.
    pub(crate) fn owners(&self, jobs: &[String]) -> Vec<Option<Holder>> {
        jobs.iter().map(|j| self.moved.get(j).cloned()).collect()
    }

    /// Applies the command at log `index`.
    pub(crate) fn apply(&mut self, index: u64, cmd: &CoreCommand) -> CoreDecision {
        let decision = self.decide(index, cmd);
        self.prune(index);
        decision
    }

    /// Forgets the decided entries older than [`KEEP_DECIDED`] entries before `index`.
    fn prune(&mut self, index: u64) {
        while let Some((at, _)) = self.decided.front() {
            if at.saturating_add(KEEP_DECIDED) > index {
                break;
            }
            let Some((at, what)) = self.decided.pop_front() else {
                break;
            };
            match what {
                Decided::Ended(job) => {
                    if self.ended.get(&job) == Some(&at) {
                        self.ended.remove(&job);
                        self.moved.remove(&job);
                    }
                }
                // Unless released again since, or held now (its next release decides).
                Decided::Released(actor) => {
                    if self.released_at.get(&actor) == Some(&at) {
                        self.released_at.remove(&actor);
                        if !self.actors.contains_key(&actor) {
                            self.released.remove(&actor);
                        }
                    }
                }
            }
        }
    }

    fn decide(&mut self, index: u64, cmd: &CoreCommand) -> CoreDecision {
        match cmd {
            CoreCommand::Takeover {
                job,
                from,
                epoch,
                to,
            } => {
                let now = self.owner(job);
                if self.ended.contains_key(job) {
                    return CoreDecision::Denied { owner: now };
                }
                if now.node == *from && now.epoch == *epoch {
                    self.moved.insert(
                        job.clone(),
                        Holder {
                            node: to.clone(),
                            epoch: index,
                        },
                    );
                    CoreDecision::Granted { epoch: index }
                } else {
                    CoreDecision::Denied { owner: now }
                }
            }
            CoreCommand::Owners { jobs } => CoreDecision::Owners(self.owners(jobs)),
            CoreCommand::ClaimActor {
                actor,
                node,
                replaces,
            } => match self.actors.get(actor) {
                Some(holder) if holder.node != *node && Some(holder) != replaces.as_ref() => {
                    CoreDecision::Denied {
                        owner: holder.clone(),
                    }
                }
                _ => {
                    self.actors.insert(
                        actor.clone(),
                        Holder {
                            node: node.clone(),
                            epoch: index,
                        },
                    );
                    CoreDecision::ActorGranted {
                        epoch: index,
                        at_least: self.released.get(actor).copied(),
                    }
                }
            },
            CoreCommand::ReleaseActor {
                actor,
                node,
                epoch,
                saved,
            } => {
                if self
                    .actors
                    .get(actor)
                    .is_some_and(|h| h.node == *node && h.epoch == *epoch)
                {
                    self.actors.remove(actor);
                    if let Some(saved) = saved {
                        self.released.insert(actor.clone(), *saved);
                        self.released_at.insert(actor.clone(), index);
                        self.decided
                            .push_back((index, Decided::Released(actor.clone())));
                    }
                }
                CoreDecision::Nothing
            }
            CoreCommand::NameCluster { id } => CoreDecision::Cluster {
                id: self.cluster.get_or_insert_with(|| id.clone()).clone(),
            },
            CoreCommand::JobEnded { job, node, epoch } => {
                let holder = Holder {
                    node: node.clone(),
                    epoch: *epoch,
                };
                if self.moved.get(job) == Some(&holder) && !self.ended.contains_key(job) {
                    self.ended.insert(job.clone(), index);
                    self.decided.push_back((index, Decided::Ended(job.clone())));
                }
                CoreDecision::Nothing
            }
            CoreCommand::JobsEnded { node, jobs } => CoreDecision::Owners(
                jobs.iter()
                    .map(|(job, epoch)| self.record_end(index, job, node, *epoch))
                    .collect(),
            ),
        }
    }

    /// Records that `node`'s run of `job` at `epoch` ended; `None` if it did (or had),
    /// else the holder that owns the job now.
    fn record_end(&mut self, index: u64, job: &str, node: &str, epoch: u64) -> Option<Holder> {
        let now = self.owner(job);
        if self.ended.contains_key(job) {
            return (now.node != node).then_some(now);
        }
        if now.node != node || now.epoch != epoch {
            return Some(now);
        }
        self.ended.insert(job.to_string(), index);
        self.decided
            .push_back((index, Decided::Ended(job.to_string())));
        if epoch == 0 {
            // Never moved: the end is a new epoch, so a copy naming epoch 0 is stale.
            self.moved.insert(
                job.to_string(),
                Holder {
                    node: node.to_string(),
                    epoch: index,
                },
            );
        }
        None
    }

    /// The lease of `actor`, if one is held.
    #[cfg(test)]
    pub(crate) fn actor_lease(&self, actor: &str) -> Option<&Holder> {
        self.actors.get(actor)
    }

    /// How many jobs changed owner.
    pub(crate) fn len(&self) -> usize {
        self.moved.len()
    }
}

/// A Raft message between core nodes (carried in a [`troupe_runtime::wire::Wire`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RaftRpc {
    /// Log replication and heartbeats.
    AppendEntries(openraft::raft::AppendEntriesRequest<CoreTypes>),
    /// An election.
    Vote(openraft::raft::VoteRequest<u64>),
    /// A chunk of a snapshot.
    InstallSnapshot(openraft::raft::InstallSnapshotRequest<CoreTypes>),
}

/// The answer to a [`RaftRpc`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RaftRpcReply {
    /// To `AppendEntries`.
    AppendEntries(
        Result<openraft::raft::AppendEntriesResponse<u64>, openraft::error::RaftError<u64>>,
    ),
    /// To `Vote`.
    Vote(Result<openraft::raft::VoteResponse<u64>, openraft::error::RaftError<u64>>),
    /// To `InstallSnapshot`.
    InstallSnapshot(
        Result<
            openraft::raft::InstallSnapshotResponse<u64>,
            openraft::error::RaftError<u64, openraft::error::InstallSnapshotError>,
        >,
    ),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn takeover(job: &str, from: &str, epoch: u64, to: &str) -> CoreCommand {
        CoreCommand::Takeover {
            job: job.into(),
            from: from.into(),
            epoch,
            to: to.into(),
        }
    }

    #[test]
    fn only_the_first_of_two_takeovers_wins() {
        let mut o = Ownership::default();
        assert_eq!(o.owner("n1-a-1").node, "n1");
        assert_eq!(
            o.apply(7, &takeover("n1-a-1", "n1", 0, "n2")),
            CoreDecision::Granted { epoch: 7 }
        );
        // n3 saw the same owner go down, but n2 got there first.
        let lost = o.apply(8, &takeover("n1-a-1", "n1", 0, "n3"));
        assert_eq!(
            lost,
            CoreDecision::Denied {
                owner: Holder {
                    node: "n2".into(),
                    epoch: 7
                }
            }
        );
        // n2 going down in turn: its epoch must be named.
        assert_eq!(
            o.apply(9, &takeover("n1-a-1", "n2", 7, "n3")),
            CoreDecision::Granted { epoch: 9 }
        );
        assert_eq!(
            o.apply(
                10,
                &CoreCommand::Owners {
                    jobs: vec!["n1-a-1".into(), "n1-a-2".into()]
                }
            ),
            CoreDecision::Owners(vec![
                Some(Holder {
                    node: "n3".into(),
                    epoch: 9
                }),
                None
            ])
        );
    }

    #[test]
    fn an_actor_lease_goes_to_one_node_until_its_holder_is_replaced_or_releases() {
        let mut o = Ownership::default();
        let claim = |node: &str, replaces: Option<(&str, u64)>| CoreCommand::ClaimActor {
            actor: "t/k".into(),
            node: node.into(),
            replaces: replaces.map(|(n, e)| Holder {
                node: n.into(),
                epoch: e,
            }),
        };
        let granted = |epoch, at_least| CoreDecision::ActorGranted { epoch, at_least };
        assert_eq!(o.apply(3, &claim("n1", None)), granted(3, None));
        // n2 races for the same key (a node joining sees itself as the owner): denied,
        // told who holds it.
        assert!(matches!(
            o.apply(4, &claim("n2", None)),
            CoreDecision::Denied { owner } if owner.node == "n1" && owner.epoch == 3
        ));
        // n1 claims again (it restarted): a new epoch fences its old activation.
        assert_eq!(o.apply(5, &claim("n1", None)), granted(5, None));
        // n2 saw n1 go down, but names an epoch that is no longer current: denied.
        assert!(matches!(
            o.apply(6, &claim("n2", Some(("n1", 3)))),
            CoreDecision::Denied { .. }
        ));
        assert_eq!(o.apply(7, &claim("n2", Some(("n1", 5)))), granted(7, None));
        // A stale release (n1 at 5) changes nothing; n2's own release frees the key and
        // records its last save, which the next activation must start from.
        let release = |node: &str, epoch, saved| CoreCommand::ReleaseActor {
            actor: "t/k".into(),
            node: node.into(),
            epoch,
            saved,
        };
        o.apply(8, &release("n1", 5, Some((5, 1))));
        assert_eq!(o.actor_lease("t/k").map(|l| l.node.as_str()), Some("n2"));
        o.apply(9, &release("n2", 7, Some((7, 40))));
        assert_eq!(o.actor_lease("t/k"), None);
        assert_eq!(o.apply(10, &claim("n3", None)), granted(10, Some((7, 40))));
    }

    #[test]
    fn the_cluster_keeps_its_first_name() {
        let mut o = Ownership::default();
        let name = |id: &str| CoreCommand::NameCluster { id: id.into() };
        let named = |id: &str| CoreDecision::Cluster { id: id.into() };
        assert_eq!(o.apply(1, &name("a")), named("a"));
        assert_eq!(o.apply(2, &name("b")), named("a"));
        assert_eq!(o.cluster.as_deref(), Some("a"));
    }

    #[test]
    fn an_ended_job_is_not_handed_over_and_is_pruned_later() {
        let mut o = Ownership::default();
        assert_eq!(
            o.apply(7, &takeover("n1-a-1", "n1", 0, "n2")),
            CoreDecision::Granted { epoch: 7 }
        );
        // A stale end (another holder) changes nothing.
        let ended = |node: &str, epoch| CoreCommand::JobEnded {
            job: "n1-a-1".into(),
            node: node.into(),
            epoch,
        };
        o.apply(8, &ended("n3", 7));
        assert_eq!(
            o.apply(9, &takeover("n1-a-1", "n2", 7, "n3")),
            CoreDecision::Granted { epoch: 9 }
        );
        o.apply(10, &ended("n3", 9));
        // Ended: nobody gets it, even naming its holder and epoch.
        let n2_denied = o.apply(11, &takeover("n1-a-1", "n3", 9, "n2"));
        assert!(matches!(n2_denied, CoreDecision::Denied { owner } if owner.node == "n3"));
        assert_eq!(o.len(), 1);
        // Still there just before the pruning point, gone after it.
        o.apply(10 + KEEP_DECIDED - 1, &CoreCommand::Owners { jobs: vec![] });
        assert_eq!(o.len(), 1);
        o.apply(10 + KEEP_DECIDED, &CoreCommand::Owners { jobs: vec![] });
        assert_eq!(o.len(), 0);
        assert!(o.ended.is_empty() && o.decided.is_empty());
    }

    /// An end the owner records for a job that never moved fences every copy: a takeover
    /// naming the owner at epoch 0 is denied with a newer epoch; a stale end is told the
    /// holder; both are pruned later.
    #[test]
    fn a_recorded_end_refuses_every_takeover_of_a_job_that_never_moved() {
        let mut o = Ownership::default();
        let ended = |node: &str, jobs: &[(&str, u64)]| CoreCommand::JobsEnded {
            node: node.into(),
            jobs: jobs.iter().map(|(j, e)| (j.to_string(), *e)).collect(),
        };
        assert_eq!(
            o.apply(7, &takeover("n1-a-2", "n1", 0, "n2")),
            CoreDecision::Granted { epoch: 7 }
        );
        let n2 = Holder {
            node: "n2".into(),
            epoch: 7,
        };
        assert_eq!(
            o.apply(8, &ended("n1", &[("n1-a-1", 0), ("n1-a-2", 0)])),
            CoreDecision::Owners(vec![None, Some(n2)])
        );
        // Recorded twice: still recorded.
        assert_eq!(
            o.apply(9, &ended("n1", &[("n1-a-1", 0)])),
            CoreDecision::Owners(vec![None])
        );
        let denied = o.apply(10, &takeover("n1-a-1", "n1", 0, "n3"));
        assert!(
            matches!(&denied, CoreDecision::Denied { owner } if owner.node == "n1" && owner.epoch == 8),
            "{denied:?}"
        );
        o.apply(8 + KEEP_DECIDED, &CoreCommand::Owners { jobs: vec![] });
        assert_eq!(o.owner("n1-a-1").epoch, 0);
        assert!(o.ended.is_empty());
    }

    #[test]
    fn released_leases_are_pruned_long_after_unless_released_again_or_held() {
        let mut o = Ownership::default();
        let claim = |actor: &str, node: &str| CoreCommand::ClaimActor {
            actor: actor.into(),
            node: node.into(),
            replaces: None,
        };
        let release = |actor: &str, node: &str, epoch| CoreCommand::ReleaseActor {
            actor: actor.into(),
            node: node.into(),
            epoch,
            saved: Some((epoch, 3)),
        };
        // 1000 keys, each claimed and released once: 1000 released entries.
        for k in 0..1000u64 {
            let actor = format!("t/{k}");
            o.apply(10 + 2 * k, &claim(&actor, "n1"));
            o.apply(11 + 2 * k, &release(&actor, "n1", 10 + 2 * k));
        }
        assert_eq!(o.released.len(), 1000);
        // t/0 is claimed and released again later; t/1 is held when its entry expires.
        o.apply(5000, &claim("t/0", "n2"));
        o.apply(5001, &release("t/0", "n2", 5000));
        o.apply(5002, &claim("t/1", "n2"));
        o.apply(
            11 + 2 * 999 + KEEP_DECIDED,
            &CoreCommand::Owners { jobs: vec![] },
        );
        let left: Vec<&String> = o.released.keys().collect();
        assert_eq!(left, vec!["t/0", "t/1"]);
        // The new release of t/0 gives the next claim its save.
        assert_eq!(
            o.apply(11 + 2 * 999 + KEEP_DECIDED + 1, &claim("t/0", "n3")),
            CoreDecision::ActorGranted {
                epoch: 11 + 2 * 999 + KEEP_DECIDED + 1,
                at_least: Some((5000, 3))
            }
        );
        o.apply(5001 + KEEP_DECIDED, &CoreCommand::Owners { jobs: vec![] });
        assert!(o.decided.is_empty());
    }

    #[test]
    fn node_ids_are_stable() {
        assert_eq!(node_id(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(node_id("n1"), node_id("n2"));
        assert_eq!(node_id("n1"), node_id("n1"));
    }
}
