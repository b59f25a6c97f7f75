//! Silent-peer detection by probing (SWIM), as a plain state machine: what is heard and
//! ticks in, probes to send and verdicts out.
//!
//! A node that dies closes its connections, but one that goes silent with its connections
//! open (a partition, a frozen process) would stay up for as long as TCP retransmits. Once,
//! every node told every other that it lived each gossip round: O(N) messages per node a
//! round, O(N²) for the cluster (1.2% of a core per idle node at 32 nodes). Instead, as in
//! SWIM (Das, Gupta and Motivala, 2002), each tick (half a gossip interval) a node probes
//! one peer, the next in a shuffled round-robin order, so each peer is probed by someone
//! about once a tick and by each node once per pass, and the cost per node does not grow
//! with the cluster:
//!
//! - a probe unanswered for one tick is sent again through [`INDIRECT`] other peers, each
//!   of which probes the peer and passes its answer back (a bad link between two nodes is
//!   not a dead node);
//! - a probe unanswered for `failure.suspect_after_ms` less one gossip interval makes the
//!   peer suspect, for `failure.down_after_ms` less one interval down. The thresholds are
//!   one interval shorter than the silences they were with all-to-all gossip, where a
//!   peer was last heard up to an interval before it went quiet: a probe is sent after
//!   it did, so detection takes as long as before;
//! - anything heard straight from the peer (its probe, its answer, its record) or an
//!   answer passed on by a relay settles the probe.
//!
//! A peer that speaks only wire version 1 neither probes nor answers probes: it gossips
//! its record every interval, and is judged as before, by its silence
//! ([`ProbeDetector::set_legacy`]).
//!
//! The membership actor tells every node its verdicts (a suspect peer refutes by
//! announcing itself at once; a down peer's connections are closed everywhere). A node
//! whose own tick ran late by the suspect time (its runtime starved or paused) judges
//! nobody that round and restarts every open probe's clock: the silence was its own.
//!
//! Two rules from Lifeguard (Dadgar, Phillips and Currey, 2018), because a node that is
//! itself overloaded (128 nodes on two cores forming their mesh) cannot tell its own
//! slowness from its peers' silence, and its verdicts made healthy nodes leave everywhere:
//!
//! - Local health: a node counts the signs that it is the slow one, up to [`MAX_HEALTH`]:
//!   its own tick late by more than a tick, a verdict on itself that it had to refute, a
//!   probe of its own not answered within a tick while another is missing too; each
//!   probe answered in time takes one off. Its suspect, down and confirmation times are
//!   multiplied by one plus that count. One dead peer alone does not count, so it is
//!   found down as fast as before; when a small machine is saturated, most probes miss
//!   and the deadlines stretch instead of every node declaring every other down.
//! - A verdict is a question, not an order: a node told by another that a peer is down
//!   (`Verdict`) probes the peer itself at once ([`ProbeDetector::confirm`]) and marks it
//!   down only if that probe goes unanswered for half a tick (times its own health),
//!   unless it heard from the peer within the last tick. Only the node whose own probe
//!   found the peer down tells the others.
//!
//! [`ProbeDetector`] holds each peer's probe and state and nothing else: no sessions, no
//! logging, no clock reads (time comes in with each call). `detector/tests.rs` pins the
//! rules. Hand-written rather than the `foca` crate: the cluster already has a full mesh
//! of authenticated connections, node records and incarnations of its own, so what is
//! left of SWIM is this probe schedule; foca would bring a second identity, transport and
//! member list to keep in step with ractor_cluster's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use troupe_runtime::protocol::NodeState;

/// How many other peers an unanswered probe is sent through.
pub(crate) const INDIRECT: usize = 3;

/// The highest local health count: the suspect and down times grow at most ninefold.
pub(crate) const MAX_HEALTH: u32 = 8;

/// What a tick asks the membership actor to do, or a change of a peer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transition {
    /// Probe this peer (it answers with its record).
    Probe {
        /// The peer.
        node: String,
    },
    /// The probe of `node` is unanswered: ask `through` to probe it and pass its answer
    /// on.
    ProbeThrough {
        /// The peer.
        node: String,
        /// The peers asked.
        through: Vec<String>,
    },
    /// An up peer has not answered a probe for the suspect time: it is suspect now.
    Suspect {
        /// The peer.
        node: String,
        /// How long its probe has waited.
        silent: Duration,
    },
    /// A suspect peer was heard from again: it is up again.
    Recovered {
        /// The peer.
        node: String,
        /// How long it had been silent.
        silent: Duration,
    },
    /// A peer has not answered a probe for the down time: it is down now, and its
    /// connections are to be closed.
    Down {
        /// The peer.
        node: String,
        /// How long its probe has waited.
        silent: Duration,
        /// This node only confirmed another node's verdict (see
        /// [`ProbeDetector::confirm`]): the others were told already.
        confirmed: bool,
    },
}

/// What one tick of the detector found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Round {
    /// This node's own tick ran late by `late_by` (at least the suspect time): nobody is
    /// judged or probed, and every open probe's clock starts again now.
    Stalled {
        /// How long since the previous tick.
        late_by: Duration,
    },
    /// What to do and what changed: first the verdicts in name order, then the indirect
    /// probes in name order, then this tick's probe (empty: nothing).
    Judged(Vec<Transition>),
}

/// A probe waiting for its answer.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// When it was sent (or its clock restarted).
    sent: Instant,
    /// Sent through other peers already.
    through: bool,
    /// Sent to confirm another node's verdict: the peer is down if it stays unanswered
    /// for the confirmation time rather than the down time.
    confirm: bool,
}

/// One peer's state and probe.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// When it was last heard from.
    heard: Instant,
    /// Its state as the membership actor sees it.
    state: NodeState,
    /// Its unanswered probe.
    probe: Option<Pending>,
    /// It speaks only wire version 1: judged by its silence, never probed.
    legacy: bool,
}

/// The silent-peer detector of one node.
#[derive(Debug)]
pub(crate) struct ProbeDetector {
    /// How long an unanswered probe makes its peer suspect.
    suspect_after: Duration,
    /// How long an unanswered probe makes its peer down.
    down_after: Duration,
    /// How long a probe waits before it is sent through others.
    ack_wait: Duration,
    /// The silences that make a legacy peer suspect and down.
    legacy_suspect: Duration,
    legacy_down: Duration,
    /// When the previous tick ran.
    last_tick: Instant,
    /// When a tick last found this node itself stalled.
    last_stall: Option<Instant>,
    /// Local health: how many recent signs say this node is the slow one (0 is healthy,
    /// at most [`MAX_HEALTH`]); the suspect, down and confirmation times are multiplied
    /// by one plus it.
    health: u32,
    /// The peers, by name.
    peers: BTreeMap<String, Clock>,
    /// This pass's probe order (the next is last).
    order: Vec<String>,
    rng: StdRng,
}

impl ProbeDetector {
    /// A detector for a node that gossips every `gossip` (it ticks every half of it),
    /// with the configured silences, whose first tick counts from `now`.
    pub(crate) fn new(
        gossip: Duration,
        suspect_after: Duration,
        down_after: Duration,
        now: Instant,
    ) -> Self {
        Self::seeded(gossip, suspect_after, down_after, now, rand::random())
    }

    /// As [`Self::new`], its choices drawn from `seed` (tests).
    pub(crate) fn seeded(
        gossip: Duration,
        suspect_after: Duration,
        down_after: Duration,
        now: Instant,
        seed: u64,
    ) -> Self {
        let tick = Self::tick_of(gossip);
        ProbeDetector {
            suspect_after: suspect_after.saturating_sub(gossip).max(tick * 2),
            down_after: down_after.saturating_sub(gossip).max(tick * 3),
            ack_wait: tick,
            legacy_suspect: suspect_after,
            legacy_down: down_after,
            last_tick: now,
            last_stall: None,
            health: 0,
            peers: BTreeMap::new(),
            order: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// How often a node with gossip interval `gossip` ticks: twice an interval, so that a
    /// probe's indirect round fits before its peer is suspect.
    pub(crate) fn tick_of(gossip: Duration) -> Duration {
        (gossip / 2).max(Duration::from_millis(5))
    }

    /// `node` was heard from at `now` (its probe, answer or record, or its connection
    /// back), and the membership actor makes it `state`: its probe is settled. A suspect
    /// peer that is up again has [`Transition::Recovered`].
    pub(crate) fn heard(
        &mut self,
        node: &str,
        now: Instant,
        state: NodeState,
    ) -> Option<Transition> {
        let (legacy, answered_in_time) = self.peers.get(node).map_or((false, false), |c| {
            let in_time = c
                .probe
                .is_some_and(|p| !p.confirm && now.duration_since(p.sent) < self.ack_wait);
            (c.legacy, in_time)
        });
        if answered_in_time {
            // A probe answered in time: a sign this node is healthy (Lifeguard).
            self.health = self.health.saturating_sub(1);
        }
        let before = self.peers.insert(
            node.to_string(),
            Clock {
                heard: now,
                state,
                probe: None,
                legacy,
            },
        );
        match before {
            Some(was) if was.state == NodeState::Suspect && state == NodeState::Up => {
                Some(Transition::Recovered {
                    node: node.to_string(),
                    silent: now.duration_since(was.heard),
                })
            }
            _ => None,
        }
    }

    /// A relay passed on `node`'s answer to our probe: it lives, whatever our own link to
    /// it does. Settles the probe; a suspect peer is up again.
    pub(crate) fn answered(&mut self, node: &str, now: Instant) -> Option<Transition> {
        let clock = self.peers.get_mut(node)?;
        if clock.state == NodeState::Down {
            return None;
        }
        clock.probe = None;
        let silent = now.duration_since(clock.heard);
        clock.heard = now;
        (clock.state == NodeState::Suspect).then(|| {
            clock.state = NodeState::Up;
            Transition::Recovered {
                node: node.to_string(),
                silent,
            }
        })
    }

    /// Another node found `node` suspect: shown as such until it is heard from.
    pub(crate) fn suspect(&mut self, node: &str) -> bool {
        match self.peers.get_mut(node) {
            Some(clock) if clock.state == NodeState::Up => {
                clock.state = NodeState::Suspect;
                true
            }
            _ => false,
        }
    }

    /// The membership actor marked `node` down (its connection closed, or a verdict): it
    /// is not judged until heard from again.
    pub(crate) fn down(&mut self, node: &str) {
        if let Some(clock) = self.peers.get_mut(node) {
            clock.state = NodeState::Down;
            clock.probe = None;
        }
    }

    /// Whether `node` speaks only wire version 1 (it gossips every interval and is judged
    /// by its silence, not probed).
    pub(crate) fn set_legacy(&mut self, node: &str, legacy: bool) {
        if let Some(clock) = self.peers.get_mut(node) {
            clock.legacy = legacy;
            clock.probe = None;
        }
    }

    /// The membership actor forgot `node` (down for long enough).
    pub(crate) fn forget(&mut self, node: &str) {
        self.peers.remove(node);
    }

    /// This node's local health count (0: healthy).
    pub(crate) fn health(&self) -> u32 {
        self.health
    }

    /// A sign that this node is the slow one: its health count goes up by one.
    pub(crate) fn unhealthy(&mut self) {
        self.health = (self.health + 1).min(MAX_HEALTH);
    }

    /// `d` stretched by this node's health.
    fn scaled(&self, d: Duration) -> Duration {
        d * (1 + self.health)
    }

    /// How long a probe sent to confirm another node's verdict waits for its answer: half
    /// a tick (a round trip is well under a millisecond on a healthy network), times this
    /// node's health.
    fn confirm_wait(&self) -> Duration {
        self.scaled(self.ack_wait / 2)
    }

    /// Another node found `node` down: probe it now (the membership actor sends the
    /// probe) and mark it down if that goes unanswered for the returned wait (judged by
    /// [`Self::confirm_due`] then, or by a later tick). None when there is nothing to
    /// confirm: it is down here already, or it was heard from within the last tick (it
    /// refutes the verdict itself).
    pub(crate) fn confirm(&mut self, node: &str, now: Instant) -> Option<Duration> {
        let wait = self.confirm_wait();
        let clock = self.peers.get_mut(node)?;
        if clock.state == NodeState::Down
            || clock.legacy
            || now.duration_since(clock.heard) < self.ack_wait
        {
            return None;
        }
        if clock.state == NodeState::Up {
            clock.state = NodeState::Suspect;
        }
        let sent = clock.probe.map_or(now, |p| p.sent.min(now));
        clock.probe = Some(Pending {
            sent,
            through: true,
            confirm: true,
        });
        Some(wait)
    }

    /// The wait of [`Self::confirm`] for `node` is over: down now if its probe is still
    /// unanswered.
    pub(crate) fn confirm_due(&mut self, node: &str, now: Instant) -> Option<Transition> {
        let wait = self.confirm_wait();
        let clock = self.peers.get_mut(node)?;
        let probe = clock.probe.filter(|p| p.confirm)?;
        let silent = now.duration_since(probe.sent);
        if clock.state == NodeState::Down || silent < wait {
            return None;
        }
        clock.state = NodeState::Down;
        clock.probe = None;
        Some(Transition::Down {
            node: node.to_string(),
            silent,
            confirmed: true,
        })
    }

    /// A gap between ticks this long means this node stalled (paused, starved): its
    /// peers may have heard nothing from it for their suspect delay.
    fn stall_gap(&self) -> Duration {
        self.scaled(self.suspect_after).max(self.ack_wait * 4)
    }

    /// Whether this node stalled within `within` before `now`: a tick found it so, or
    /// the tick due now is that late already (it has not run since the node woke). A
    /// peer's connection that closes then was most likely closed by the peer, for this
    /// node's silence.
    pub(crate) fn stalled_lately(&self, now: Instant, within: Duration) -> bool {
        now.saturating_duration_since(self.last_tick) >= self.stall_gap()
            || self
                .last_stall
                .is_some_and(|t| now.saturating_duration_since(t) <= within)
    }

    /// A tick at `now`: judges the open probes and sends the next one, unless this tick
    /// itself ran late.
    pub(crate) fn tick(&mut self, now: Instant) -> Round {
        let gap = now.duration_since(self.last_tick);
        self.last_tick = now;
        if gap >= self.stall_gap() {
            self.last_stall = Some(now);
            self.unhealthy();
            for clock in self.peers.values_mut() {
                clock.heard = now;
                if let Some(p) = &mut clock.probe {
                    p.sent = now;
                    p.through = false;
                }
            }
            return Round::Stalled { late_by: gap };
        }
        if gap >= self.ack_wait * 2 {
            // A tick late by a whole tick: this runtime is starved.
            self.unhealthy();
        }
        let (suspect_after, down_after) = (
            self.scaled(self.suspect_after),
            self.scaled(self.down_after),
        );
        let (ack_wait, confirm_wait) = (self.ack_wait, self.confirm_wait());
        let mut out = Vec::new();
        let mut relays = Vec::new();
        for (node, clock) in self.peers.iter_mut() {
            if clock.legacy {
                if let Some(t) =
                    judge_silence(node, clock, now, self.legacy_suspect, self.legacy_down)
                {
                    out.push(t);
                }
                continue;
            }
            let Some(probe) = &mut clock.probe else {
                continue;
            };
            if clock.state == NodeState::Down {
                continue;
            }
            let silent = now.duration_since(probe.sent);
            if silent >= down_after || (probe.confirm && silent >= confirm_wait) {
                let confirmed = probe.confirm && silent < down_after;
                clock.state = NodeState::Down;
                clock.probe = None;
                out.push(Transition::Down {
                    node: node.clone(),
                    silent,
                    confirmed,
                });
            } else if silent >= suspect_after && clock.state == NodeState::Up {
                clock.state = NodeState::Suspect;
                out.push(Transition::Suspect {
                    node: node.clone(),
                    silent,
                });
            } else if silent >= ack_wait && !probe.through {
                probe.through = true;
                relays.push(node.clone());
            }
        }
        // A probe not answered in time while another is missing too: when the whole
        // cluster is slow (this node included), most probes miss and the deadlines
        // stretch (Lifeguard). One dead peer alone (its one missed probe) does not count,
        // so that it is found down as fast as before, even in a cluster of two.
        // (Counted only on a tick that missed one: it is O(N).)
        if !relays.is_empty() {
            let missing = self
                .peers
                .values()
                .filter(|c| {
                    c.state != NodeState::Down
                        && c.probe
                            .is_some_and(|p| !p.confirm && now.duration_since(p.sent) >= ack_wait)
                })
                .count();
            if missing >= 2 {
                for _ in 0..relays.len() {
                    self.unhealthy();
                }
            }
        }
        if !relays.is_empty() {
            // Who may relay is worked out only when a probe needs relays: it is O(N).
            let live: Vec<&String> = self
                .peers
                .iter()
                .filter(|(_, c)| c.state != NodeState::Down && !c.legacy)
                .map(|(n, _)| n)
                .collect();
            for node in relays {
                let others: Vec<&&String> = live.iter().filter(|n| ***n != node).collect();
                let through: Vec<String> = others
                    .choose_multiple(&mut self.rng, INDIRECT)
                    .map(|n| (**n).clone())
                    .collect();
                if !through.is_empty() {
                    out.push(Transition::ProbeThrough { node, through });
                }
            }
            // Verdicts first, then indirect probes, each in name order.
            out.sort_by_key(|t| matches!(t, Transition::ProbeThrough { .. }));
        }
        if let Some(node) = self.next_target() {
            if let Some(clock) = self.peers.get_mut(&node) {
                clock.probe = Some(Pending {
                    sent: now,
                    through: false,
                    confirm: false,
                });
            }
            out.push(Transition::Probe { node });
        }
        Round::Judged(out)
    }

    /// The next peer to probe: the next of this pass that is not down and has no probe
    /// open; a new shuffled pass once one ends.
    fn next_target(&mut self) -> Option<String> {
        for _ in 0..2 {
            while let Some(node) = self.order.pop() {
                if self
                    .peers
                    .get(&node)
                    .is_some_and(|c| c.state != NodeState::Down && c.probe.is_none() && !c.legacy)
                {
                    return Some(node);
                }
            }
            self.order = self
                .peers
                .iter()
                .filter(|(_, c)| c.state != NodeState::Down && !c.legacy)
                .map(|(n, _)| n.clone())
                .collect();
            self.order.shuffle(&mut self.rng);
        }
        None
    }
}

/// A legacy peer's verdict by its silence (as all peers were judged before probing).
fn judge_silence(
    node: &str,
    clock: &mut Clock,
    now: Instant,
    suspect_after: Duration,
    down_after: Duration,
) -> Option<Transition> {
    let silent = now.duration_since(clock.heard);
    match clock.state {
        NodeState::Down => None,
        _ if silent >= down_after => {
            clock.state = NodeState::Down;
            Some(Transition::Down {
                node: node.to_string(),
                silent,
                confirmed: false,
            })
        }
        NodeState::Up if silent >= suspect_after => {
            clock.state = NodeState::Suspect;
            Some(Transition::Suspect {
                node: node.to_string(),
                silent,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
