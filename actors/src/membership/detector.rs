//! Silent-peer detection, as a plain state machine: gossip heard and ticks in, transitions
//! out.
//!
//! A node that dies closes its connections, but one that goes silent with its connections
//! open (a partition, a frozen process) would stay up for as long as TCP retransmits. The
//! gossip every peer sends each `gossip_interval_ms` doubles as its heartbeat: a peer not
//! heard from for `failure.suspect_after_ms` is suspect, for `failure.down_after_ms` down.
//! A fixed deadline rather than phi-accrual: gossip comes at a fixed pace whatever the
//! load, so the deadline is a number of missed rounds. A node whose own tick ran late by
//! the suspect time (its runtime starved or paused) judges nobody that round and restarts
//! every peer's clock: the silence was its own.
//!
//! [`SilenceDetector`] holds each peer's clock and state and nothing else: no sessions, no
//! logging, no clock reads (time comes in with each call). The membership actor tells it
//! what it hears and every state change it makes itself, and carries out the
//! [`Transition`]s it returns (`detector/tests.rs` pins the rules).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use troupe_runtime::protocol::NodeState;

/// A change of a peer's state found by the detector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transition {
    /// An up peer has been silent for the suspect time: it is suspect now.
    Suspect {
        /// The peer.
        node: String,
        /// How long it has been silent.
        silent: Duration,
    },
    /// A suspect peer was heard from again on a live connection: it is up again.
    Recovered {
        /// The peer.
        node: String,
        /// How long it had been silent.
        silent: Duration,
    },
    /// A peer has been silent for the down time: it is down now, and its connections are
    /// to be closed.
    Down {
        /// The peer.
        node: String,
        /// How long it has been silent.
        silent: Duration,
    },
}

/// What one tick of the detector found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Round {
    /// This node's own tick ran late by `late_by` (at least the suspect time): nobody is
    /// judged, and every peer's clock starts again now.
    Stalled {
        /// How long since the previous tick.
        late_by: Duration,
    },
    /// The peers judged, in name order (empty: nothing changed).
    Judged(Vec<Transition>),
}

/// One peer's clock and state.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// When its gossip last arrived (or its clock was restarted).
    heard: Instant,
    /// Its state as the membership actor sees it.
    state: NodeState,
}

/// The silent-peer detector of one node.
#[derive(Debug)]
pub(crate) struct SilenceDetector {
    /// Silence after which an up peer is suspect.
    suspect_after: Duration,
    /// Silence after which a peer is down.
    down_after: Duration,
    /// When the previous tick ran.
    last_tick: Instant,
    /// The peers, by name (in name order, so a round judges them in a fixed order).
    peers: BTreeMap<String, Clock>,
}

impl SilenceDetector {
    /// A detector with these deadlines, whose first tick counts from `now`.
    pub(crate) fn new(suspect_after: Duration, down_after: Duration, now: Instant) -> Self {
        SilenceDetector {
            suspect_after,
            down_after,
            last_tick: now,
            peers: BTreeMap::new(),
        }
    }

    /// `node` was heard from at `now` (its gossip, or its connection back), and the
    /// membership actor makes it `state` (from its connection and what it said): its
    /// clock restarts. A suspect peer that is up again has [`Transition::Recovered`].
    pub(crate) fn heard(
        &mut self,
        node: &str,
        now: Instant,
        state: NodeState,
    ) -> Option<Transition> {
        let before = self
            .peers
            .insert(node.to_string(), Clock { heard: now, state });
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

    /// The membership actor marked `node` down (its connection closed, or the detector
    /// said so): it is not judged until heard from again.
    pub(crate) fn down(&mut self, node: &str) {
        if let Some(clock) = self.peers.get_mut(node) {
            clock.state = NodeState::Down;
        }
    }

    /// The membership actor forgot `node` (down for long enough).
    pub(crate) fn forget(&mut self, node: &str) {
        self.peers.remove(node);
    }

    /// A tick at `now`: judges every peer that is not down by how long it has been silent,
    /// unless this tick itself ran late.
    pub(crate) fn tick(&mut self, now: Instant) -> Round {
        let gap = now.duration_since(self.last_tick);
        self.last_tick = now;
        if gap >= self.suspect_after {
            for clock in self.peers.values_mut() {
                clock.heard = now;
            }
            return Round::Stalled { late_by: gap };
        }
        let mut transitions = Vec::new();
        for (node, clock) in self.peers.iter_mut() {
            let silent = now.duration_since(clock.heard);
            match clock.state {
                NodeState::Down => {}
                _ if silent >= self.down_after => {
                    clock.state = NodeState::Down;
                    transitions.push(Transition::Down {
                        node: node.clone(),
                        silent,
                    });
                }
                NodeState::Up if silent >= self.suspect_after => {
                    clock.state = NodeState::Suspect;
                    transitions.push(Transition::Suspect {
                        node: node.clone(),
                        silent,
                    });
                }
                _ => {}
            }
        }
        Round::Judged(transitions)
    }
}

#[cfg(test)]
mod tests;
