//! The keyed actors of one simulated node: leases claimed from the core group
//! (`ClaimActor`, `ReleaseActor` of the real `Ownership`), the newest state gathered from
//! every reachable store with the real fence rule ([`SavedState::admit`]), and saves kept
//! on this node and on one replica before an add is acknowledged.
//!
//! Simplified from `actor_host`: one actor type (counters whose state is the set of adds
//! applied), one save in flight per activation, no idle timeout. What a crash keeps is the
//! [`Store`]; the activations and claims are memory.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use troupe_runtime::merge::ranked;
use troupe_runtime::protocol::SavedState;
use troupe_runtime::vocab::Holder;

use super::wire::{CoreReq, Ms, Msg, Obs, Out, Rules, Timer};
use crate::core::ownership::{CoreCommand, CoreDecision};

/// How long a save waits for its replica (`journal::ACK_WAIT`).
const COPY_WAIT: Ms = 1_000;
/// How long gathering waits for the other hosts (`actor_host::FETCH_WAIT`).
const FETCH_WAIT: Ms = 1_000;
/// How many times an add is forwarded (`MAX_ACTOR_HOPS`).
const MAX_HOPS: u32 = 3;

/// The adds a state holds, as its bytes.
pub(crate) fn adds_of(s: &SavedState) -> BTreeSet<u64> {
    s.state
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

fn bytes_of(adds: &BTreeSet<u64>) -> Vec<u8> {
    adds.iter().flat_map(|a| a.to_le_bytes()).collect()
}

/// The saved states of one node, with their fences (its disk).
#[derive(Debug, Clone, Default)]
pub(crate) struct Store {
    held: BTreeMap<String, (Option<SavedState>, u64)>,
}

impl Store {
    /// Fences `actor` at `epoch` and returns the newest state held.
    fn fetch_and_fence(&mut self, actor: &str, epoch: u64) -> Option<SavedState> {
        let e = self.held.entry(actor.to_string()).or_default();
        e.1 = e.1.max(epoch);
        e.0.clone()
    }

    /// Saves `saved` unless a newer activation's save or fence is held (`false`).
    fn save(&mut self, actor: &str, saved: SavedState) -> bool {
        let e = self.held.entry(actor.to_string()).or_default();
        match saved.admit(e.0.as_ref(), e.1) {
            Ok(write) => {
                if write {
                    e.0 = Some(saved);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Every state held, by actor.
    pub(crate) fn states(&self) -> impl Iterator<Item = (&String, &SavedState)> {
        self.held
            .iter()
            .filter_map(|(a, (s, _))| s.as_ref().map(|s| (a, s)))
    }
}

/// A save waiting for its replica.
#[derive(Debug)]
struct InFlight {
    add: u64,
    seq: u64,
}

/// One activation.
#[derive(Debug)]
struct Act {
    epoch: u64,
    seq: u64,
    adds: BTreeSet<u64>,
    busy: Option<InFlight>,
    queue: VecDeque<u64>,
}

/// A claim under way.
#[derive(Debug)]
enum Claim {
    /// Asking the core group.
    Asking {
        replaces: Option<Holder>,
        queue: Vec<u64>,
    },
    /// Granted: reading the newest state.
    Gathering {
        epoch: u64,
        at_least: Option<(u64, u64)>,
        waiting_for: BTreeSet<String>,
        /// Stores read so far, this node's included.
        read: usize,
        best: Option<SavedState>,
        queue: Vec<u64>,
    },
}

/// What the host needs to know of its node.
pub(crate) struct View<'a> {
    /// The node.
    pub me: &'a str,
    /// The nodes it counts as live, itself included, sorted.
    pub live: &'a [String],
    /// The peers it saw go down.
    pub down: &'a [String],
    /// How many nodes the cluster has.
    pub cluster: usize,
    /// The rules.
    pub rules: Rules,
}

impl View<'_> {
    fn home(&self, actor: &str) -> Option<String> {
        ranked(actor, self.live.iter().map(String::as_str))
            .first()
            .map(|s| s.to_string())
    }

    fn replica(&self, actor: &str) -> Option<String> {
        ranked(actor, self.live.iter().map(String::as_str))
            .into_iter()
            .find(|n| *n != self.me)
            .map(str::to_string)
    }

    fn is_down(&self, node: &str) -> bool {
        self.down.iter().any(|n| n == node)
    }

    /// How many stores a new activation must read before it starts: with each save on
    /// two stores, any `cluster - 1` of them hold at least one copy of every
    /// acknowledged save ([`Rules::gather_quorum`]).
    fn quorum(&self) -> usize {
        if self.rules.gather_quorum {
            self.cluster.saturating_sub(1)
        } else {
            0
        }
    }
}

/// The keyed actors of one node (memory).
#[derive(Debug, Default)]
pub(crate) struct Host {
    acts: BTreeMap<String, Act>,
    claims: BTreeMap<String, Claim>,
}

impl Host {
    /// A client's add `add` for `actor` reached this node (after `hops` forwards).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &mut self,
        v: &View,
        store: &mut Store,
        actor: &str,
        add: u64,
        hops: u32,
        out: &mut Vec<Out>,
        ask: &mut dyn FnMut(&mut Vec<Out>, CoreReq) -> u64,
    ) -> Option<u64> {
        if let Some(a) = self.acts.get_mut(actor) {
            a.queue.push_back(add);
            self.pump(v, store, actor, out);
            return None;
        }
        match self.claims.get_mut(actor) {
            Some(Claim::Asking { queue, .. } | Claim::Gathering { queue, .. }) => {
                queue.push(add);
                return None;
            }
            None => {}
        }
        match v.home(actor) {
            Some(home) if home != v.me && hops < MAX_HOPS => {
                out.push(Out::Send {
                    to: home,
                    msg: Msg::ActorAdd {
                        actor: actor.to_string(),
                        add,
                        hops: hops + 1,
                    },
                });
                None
            }
            _ => {
                self.claims.insert(
                    actor.to_string(),
                    Claim::Asking {
                        replaces: None,
                        queue: vec![add],
                    },
                );
                Some(ask(out, claim(v.me, actor, None)))
            }
        }
    }

    /// The core group answered the claim of `actor` (`None`: no answer in time).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn claimed(
        &mut self,
        v: &View,
        store: &mut Store,
        actor: &str,
        answer: Option<CoreDecision>,
        out: &mut Vec<Out>,
        ask: &mut dyn FnMut(&mut Vec<Out>, CoreReq) -> u64,
    ) -> Option<u64> {
        let Some(Claim::Asking { replaces, queue }) = self.claims.remove(actor) else {
            return None;
        };
        match answer {
            Some(CoreDecision::ActorGranted { epoch, at_least }) => {
                let mine = store.fetch_and_fence(actor, epoch);
                let waiting_for: BTreeSet<String> =
                    v.live.iter().filter(|n| *n != v.me).cloned().collect();
                for n in &waiting_for {
                    out.push(Out::Send {
                        to: n.clone(),
                        msg: Msg::FetchState {
                            actor: actor.to_string(),
                            epoch,
                        },
                    });
                }
                out.push(Out::After {
                    delay: FETCH_WAIT,
                    timer: Timer::GatherWait {
                        actor: actor.to_string(),
                        epoch,
                    },
                });
                self.claims.insert(
                    actor.to_string(),
                    Claim::Gathering {
                        epoch,
                        at_least,
                        waiting_for,
                        read: 1,
                        best: mine,
                        queue,
                    },
                );
                if v.live.len() <= 1 {
                    self.gathered(v, store, actor, epoch, None, None, out);
                }
                None
            }
            Some(CoreDecision::Denied { owner })
                if v.is_down(&owner.node) && replaces.as_ref() != Some(&owner) =>
            {
                self.claims.insert(
                    actor.to_string(),
                    Claim::Asking {
                        replaces: Some(owner.clone()),
                        queue,
                    },
                );
                Some(ask(out, claim(v.me, actor, Some(owner))))
            }
            Some(CoreDecision::Denied { owner }) if owner.node != v.me => {
                for add in queue {
                    out.push(Out::Send {
                        to: owner.node.clone(),
                        msg: Msg::ActorAdd {
                            actor: actor.to_string(),
                            add,
                            hops: MAX_HOPS,
                        },
                    });
                }
                None
            }
            // No lease: the adds are answered "unavailable".
            _ => None,
        }
    }

    /// A host answered the gathering of `actor` at `epoch` with `state` (or, with `from`
    /// `None`, the wait is over or nothing is left to wait for).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gathered(
        &mut self,
        v: &View,
        store: &mut Store,
        actor: &str,
        epoch: u64,
        from: Option<&str>,
        state: Option<SavedState>,
        out: &mut Vec<Out>,
    ) {
        let timed_out = from.is_none();
        let done = match self.claims.get_mut(actor) {
            Some(Claim::Gathering {
                epoch: e,
                waiting_for,
                read,
                best,
                ..
            }) if *e == epoch => {
                if let Some(f) = from {
                    if waiting_for.remove(f) {
                        *read += 1;
                    }
                }
                if let Some(s) = state {
                    if best.as_ref().is_none_or(|b| s.is_newer_than(b)) {
                        *best = Some(s);
                    }
                }
                waiting_for.is_empty() || timed_out
            }
            _ => false,
        };
        if !done {
            return;
        }
        let Some(Claim::Gathering {
            at_least,
            read,
            best,
            queue,
            ..
        }) = self.claims.remove(actor)
        else {
            return;
        };
        let found = best.as_ref().map(|s| (s.epoch, s.seq));
        let too_old = at_least.is_some_and(|need| found < Some(need));
        if too_old || read < v.quorum() {
            out.push(Out::Note(format!(
                "{actor}: newest state {found:?} (need {at_least:?}) from {read} stores \
                 (need {}): lease given back, adds {queue:?} unavailable",
                v.quorum()
            )));
            out.push(Out::Core {
                req: 0,
                cmd: CoreReq::Command(CoreCommand::ReleaseActor {
                    actor: actor.to_string(),
                    node: v.me.to_string(),
                    epoch,
                    saved: None,
                }),
            });
            return;
        }
        let adds = best.as_ref().map(adds_of).unwrap_or_default();
        out.push(Out::Observe(Obs::Activated {
            actor: actor.to_string(),
            epoch,
            adds: adds.iter().copied().collect(),
        }));
        self.acts.insert(
            actor.to_string(),
            Act {
                epoch,
                seq: best.map_or(0, |s| s.seq),
                adds,
                busy: None,
                queue: queue.into(),
            },
        );
        self.pump(v, store, actor, out);
    }

    /// Another host gathers `actor` at `epoch`: fence this store and answer.
    pub(crate) fn fetch(store: &mut Store, actor: &str, epoch: u64) -> Msg {
        Msg::StateIs {
            actor: actor.to_string(),
            epoch,
            saved: store.fetch_and_fence(actor, epoch),
        }
    }

    /// Another host's save of `actor` to keep here.
    pub(crate) fn keep(store: &mut Store, actor: &str, saved: SavedState) -> Msg {
        let (epoch, seq) = (saved.epoch, saved.seq);
        let ok = store.save(actor, saved);
        Msg::CopyKept {
            actor: actor.to_string(),
            epoch,
            seq,
            ok,
        }
    }

    /// Starts the next save of `actor` if none is in flight.
    fn pump(&mut self, v: &View, store: &mut Store, actor: &str, out: &mut Vec<Out>) {
        loop {
            let Some(a) = self.acts.get_mut(actor) else {
                return;
            };
            if a.busy.is_some() {
                return;
            }
            let Some(add) = a.queue.pop_front() else {
                return;
            };
            let seq = a.seq + 1;
            let mut adds = a.adds.clone();
            adds.insert(add);
            let saved = SavedState {
                epoch: a.epoch,
                seq,
                state: bytes_of(&adds),
                hosts: Vec::new(),
                answered: Vec::new(),
            };
            if !store.save(actor, saved.clone()) {
                out.push(Out::Note(format!("{actor}: fenced at its own store")));
                self.acts.remove(actor);
                return;
            }
            a.seq = seq;
            match v.replica(actor) {
                Some(to) => {
                    out.push(Out::Send {
                        to,
                        msg: Msg::KeepCopy {
                            actor: actor.to_string(),
                            saved,
                        },
                    });
                    out.push(Out::After {
                        delay: COPY_WAIT,
                        timer: Timer::CopyWait {
                            actor: actor.to_string(),
                            epoch: a.epoch,
                            seq,
                        },
                    });
                    a.busy = Some(InFlight { add, seq });
                    return;
                }
                None if v.rules.ack_needs_copy => {
                    out.push(Out::Note(format!(
                        "{actor}: add {add} unavailable: no replica"
                    )));
                }
                None => {
                    a.adds.insert(add);
                    out.push(Out::Observe(Obs::AddAcked {
                        actor: actor.to_string(),
                        add,
                        epoch: a.epoch,
                    }));
                }
            }
        }
    }

    /// The replica answered the save `seq` of `actor` at `epoch` (`None`: not in time).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copied(
        &mut self,
        v: &View,
        store: &mut Store,
        actor: &str,
        epoch: u64,
        seq: u64,
        kept: Option<bool>,
        out: &mut Vec<Out>,
    ) {
        let Some(a) = self.acts.get_mut(actor) else {
            return;
        };
        if a.epoch != epoch || a.busy.as_ref().is_none_or(|b| b.seq != seq) {
            return;
        }
        let Some(b) = a.busy.take() else {
            return;
        };
        match kept {
            Some(false) => {
                out.push(Out::Note(format!("{actor}: fenced by its replica")));
                self.acts.remove(actor);
                return;
            }
            None if v.rules.ack_needs_copy => {
                out.push(Out::Note(format!(
                    "{actor}: add {} unavailable: the replica did not answer",
                    b.add
                )));
            }
            _ => {
                a.adds.insert(b.add);
                out.push(Out::Observe(Obs::AddAcked {
                    actor: actor.to_string(),
                    add: b.add,
                    epoch,
                }));
            }
        }
        self.pump(v, store, actor, out);
    }

    /// The sweep: an idle activation whose key belongs to another host now is released.
    pub(crate) fn sweep(&mut self, v: &View, out: &mut Vec<Out>) {
        let moved: Vec<String> = self
            .acts
            .iter()
            .filter(|(actor, a)| {
                a.busy.is_none() && a.queue.is_empty() && v.home(actor).as_deref() != Some(v.me)
            })
            .map(|(actor, _)| actor.clone())
            .collect();
        for actor in moved {
            if let Some(a) = self.acts.remove(&actor) {
                out.push(Out::Core {
                    req: 0,
                    cmd: CoreReq::Command(CoreCommand::ReleaseActor {
                        actor,
                        node: v.me.to_string(),
                        epoch: a.epoch,
                        saved: Some((a.epoch, a.seq)),
                    }),
                });
            }
        }
    }
}

fn claim(me: &str, actor: &str, replaces: Option<Holder>) -> CoreReq {
    CoreReq::Command(CoreCommand::ClaimActor {
        actor: actor.to_string(),
        node: me.to_string(),
        replaces,
    })
}
