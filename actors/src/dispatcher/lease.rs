//! The owner's lease: whether this node may start new attempts of the jobs it owns, as a
//! plain state machine (time passed in, no actors, no clock reads).
//!
//! A node that has copies of this node's journal takes a job over once it has seen this
//! node gone for `failure.takeover_after_ms` and the core group granted it the job. A
//! node cut off from the others (a partition, a long pause) cannot see that happen: it
//! would go on running the job and, when the cut heals, start attempts of a job that has
//! ended under its new owner (the nemesis found one, seed 2204). So this node starts an
//! attempt of its job only while it *holds its lease*: the core group answered a renewal
//! (a linearizable read, `CoreCommand::Owners`) sent less than `takeover_after_ms` ago.
//! A taker needs the core group too, and it waits at least that long after it stopped
//! hearing from this node before it asks; so while the lease holds, no takeover is
//! decided. Renewals go every quarter of the lease while this node owns jobs; a node
//! that owns none asks nothing and counts its lease held (it has nothing to take over),
//! as does a node of a cluster without a core group (nobody can take a job over there).
//!
//! Once the lease has lapsed, a renewal's answer does not renew it at once: the peers
//! may still be counting this node gone, and one of them may be asking for a job right
//! now. The first answer after a lapse starts a settling time ([`SETTLE`]: longer than a
//! copy holder's sweep and a reconnection); only an answer to a renewal sent after it
//! renews the lease, and that answer names the jobs taken over meanwhile, whose held
//! attempts are dropped (the job manager stops their runs).
//!
//! What the lease does not cover: a cut that is not symmetric, where this node reaches
//! the core group but a copy holder does not hear it (SWIM's indirect probes make that
//! rare: the holder asks others to probe this node).

use std::time::{Duration, Instant};

/// How long after the first answer that follows a lapse a renewal must be sent to renew
/// the lease again: a copy holder sweeps every 250 ms and a reconnection takes some
/// more, so by then a holder that was about to ask for a job has asked (and the answer
/// shows the move) or has seen this node back (and asks no more).
pub(crate) const SETTLE: Duration = Duration::from_secs(1);

/// How often a lapsed lease is asked for again (at most; the renewal period if shorter):
/// attempts wait on it, and the cut may have healed or the node may just have restarted.
pub(crate) const RETRY_LAPSED: Duration = Duration::from_millis(100);

/// The owner's lease of one node (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct OwnerLease {
    /// How long an answered renewal holds the lease, from when it was sent.
    length: Duration,
    /// How often renewals go while this node dispatches.
    renew_every: Duration,
    /// When the renewal that holds the lease now was sent (None: lapsed).
    held_from: Option<Instant>,
    /// The first answer after a lapse: renewals sent [`SETTLE`] after it renew the lease.
    back_at: Option<Instant>,
    /// When the renewal in flight was sent.
    in_flight: Option<Instant>,
    /// When the last renewal was sent.
    last_sent: Option<Instant>,
    /// The lease lapsed at start (a node that restarts may have lost jobs while it was
    /// down): it is not counted held for owning no job until the core group answered,
    /// and that first answer renews it without a settling time.
    must_ask: bool,
}

/// What an answered renewal means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// The lease holds: attempts asked about in it may go on (unless moved).
    Holds,
    /// The lease holds again after a lapse: attempts asked about in it may go on (unless
    /// moved), but any other job may have moved too, so each job's next attempt is to be
    /// asked about before it starts.
    HoldsAgain,
    /// The lease had lapsed; this answer only starts (or is within) the settling time.
    Settling,
}

impl OwnerLease {
    /// A lease of `length` for a node that starts at `now`. A node new to its cluster
    /// holds it (nobody took over a job it accepted before it started); one that
    /// `restarted` (its data folder names a cluster) starts with it lapsed: its journaled
    /// jobs may have moved while it was down, and it may still be cut off.
    pub(crate) fn new(length: Duration, now: Instant, restarted: bool) -> Self {
        let length = length.max(Duration::from_millis(4));
        OwnerLease {
            length,
            renew_every: length / 4,
            held_from: (!restarted).then_some(now),
            back_at: None,
            in_flight: None,
            last_sent: None,
            must_ask: restarted,
        }
    }

    /// How long an answered renewal holds the lease.
    pub(crate) fn length(&self) -> Duration {
        self.length
    }

    /// Whether a renewal is in flight.
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Nobody can take a job of this node over at `now` (the cluster has no core group,
    /// or this node owns no job): the lease holds.
    pub(crate) fn assume_held(&mut self, now: Instant) {
        if self.must_ask {
            return;
        }
        self.held_from = Some(now);
        self.back_at = None;
    }

    /// Whether the lease holds at `now`.
    pub(crate) fn holds(&self, now: Instant) -> bool {
        self.held_from
            .is_some_and(|t| now.saturating_duration_since(t) < self.length)
    }

    /// Whether a renewal should be sent at `now`: none is in flight, and the last was
    /// sent a quarter of the lease ago (or, while settling, the settling time is over).
    pub(crate) fn renewal_due(&self, now: Instant) -> bool {
        if self.in_flight.is_some() {
            return false;
        }
        if let Some(back) = self.back_at {
            return now >= back + SETTLE;
        }
        let every = self.every(now);
        self.last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= every)
    }

    /// The renewal period at `now`: shorter while the lease has lapsed.
    fn every(&self, now: Instant) -> Duration {
        if self.holds(now) {
            self.renew_every
        } else {
            self.renew_every.min(RETRY_LAPSED)
        }
    }

    /// How often renewals go.
    pub(crate) fn renew_every(&self) -> Duration {
        self.renew_every
    }

    /// How long after `now` the next renewal is due (for a timer).
    pub(crate) fn next_due(&self, now: Instant) -> Duration {
        if self.in_flight.is_some() {
            return (self.renew_every / 4).max(Duration::from_millis(10));
        }
        let at = match (self.back_at, self.last_sent) {
            (Some(back), _) => back + SETTLE,
            (None, Some(sent)) => sent + self.every(now),
            (None, None) => now,
        };
        at.saturating_duration_since(now)
            .max(Duration::from_millis(10))
    }

    /// A renewal was sent at `now`.
    pub(crate) fn sent(&mut self, now: Instant) {
        self.in_flight = Some(now);
        self.last_sent = Some(now);
    }

    /// The renewal sent at `sent_at` got no answer (or a refusal). While the lease has
    /// lapsed, a failure also ends any settling time: the cut may be back, and the next
    /// answer starts it again.
    pub(crate) fn failed(&mut self, sent_at: Instant) {
        if self.in_flight == Some(sent_at) {
            self.in_flight = None;
        }
        if !self.holds(sent_at) {
            self.back_at = None;
        }
    }

    /// The core group answered the renewal sent at `sent_at`; the answer came at `now`.
    pub(crate) fn answered(&mut self, sent_at: Instant, now: Instant) -> Renewal {
        if self.in_flight == Some(sent_at) {
            self.in_flight = None;
        }
        if self.holds(sent_at) {
            // No lapse between the last renewal and this one.
            self.held_from = self.held_from.max(Some(sent_at));
            return Renewal::Holds;
        }
        if self.must_ask {
            // The first answer after a restart: the node was down rather than cut off
            // while it ran (its recovery asked the core group about its journaled jobs
            // too), so no settling time, which would delay every restart by a second.
            self.must_ask = false;
            self.back_at = None;
            self.held_from = Some(sent_at);
            return Renewal::HoldsAgain;
        }
        self.held_from = None;
        match self.back_at {
            Some(back) if sent_at >= back + SETTLE => {
                self.back_at = None;
                self.held_from = Some(sent_at);
                Renewal::HoldsAgain
            }
            Some(_) => Renewal::Settling,
            None => {
                self.back_at = Some(now);
                Renewal::Settling
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(4);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn renewals_every_quarter_keep_the_lease_and_a_silence_lapses_it() {
        let t0 = Instant::now();
        let mut l = OwnerLease::new(LEASE, t0, false);
        assert!(l.holds(t0 + ms(3_999)));
        assert!(l.renewal_due(t0));
        l.sent(t0 + ms(100));
        assert!(!l.renewal_due(t0 + ms(2_000)), "one in flight at a time");
        assert_eq!(l.next_due(t0 + ms(2_000)), ms(250));
        assert_eq!(l.answered(t0 + ms(100), t0 + ms(102)), Renewal::Holds);
        assert!(!l.renewal_due(t0 + ms(1_000)));
        assert!(l.renewal_due(t0 + ms(1_100)));
        // Held from the renewal's send time, not its answer's.
        assert!(l.holds(t0 + ms(4_099)));
        assert!(!l.holds(t0 + ms(4_100)));
    }

    #[test]
    fn after_a_lapse_only_a_renewal_sent_after_the_settling_time_renews() {
        let t0 = Instant::now();
        let mut l = OwnerLease::new(LEASE, t0, false);
        // Cut off: renewals fail for 6 s.
        l.sent(t0 + ms(1_000));
        l.failed(t0 + ms(1_000));
        assert!(!l.holds(t0 + ms(6_000)));
        // The cut heals: the first answer does not renew.
        let back = t0 + ms(6_200);
        l.sent(back);
        assert_eq!(l.answered(back, back + ms(2)), Renewal::Settling);
        assert!(!l.holds(back + ms(2)));
        assert!(!l.renewal_due(back + ms(500)));
        assert_eq!(l.next_due(back + ms(500)), ms(502));
        // A renewal sent within the settling time does not count either.
        l.sent(back + ms(500));
        assert_eq!(
            l.answered(back + ms(500), back + ms(501)),
            Renewal::Settling
        );
        // One sent after it renews.
        let due = back + ms(2) + SETTLE;
        assert!(l.renewal_due(due));
        l.sent(due);
        assert_eq!(l.answered(due, due + ms(3)), Renewal::HoldsAgain);
        assert!(l.holds(due + ms(3)));
        // And the next ones renew as before.
        l.sent(due + ms(1_000));
        assert_eq!(l.answered(due + ms(1_000), due + ms(1_001)), Renewal::Holds);
        assert!(l.holds(due + ms(4_999)));
    }

    #[test]
    fn an_answer_to_a_renewal_sent_after_the_lapse_does_not_bridge_it() {
        let t0 = Instant::now();
        let mut l = OwnerLease::new(LEASE, t0, false);
        // Sent while the lease still held, answered late (after it lapsed): it renews
        // from its send time, so the lease holds again only if that is recent.
        l.sent(t0 + ms(3_900));
        assert_eq!(l.answered(t0 + ms(3_900), t0 + ms(4_500)), Renewal::Holds);
        assert!(l.holds(t0 + ms(4_500)));
        // Sent after the lapse: settling, whatever its answer says.
        let later = t0 + ms(9_000);
        l.sent(later);
        assert_eq!(l.answered(later, later + ms(1)), Renewal::Settling);
    }

    #[test]
    fn a_stale_answer_does_not_clear_the_renewal_in_flight() {
        let t0 = Instant::now();
        let mut l = OwnerLease::new(LEASE, t0, false);
        l.sent(t0 + ms(10));
        l.failed(t0 + ms(10));
        l.sent(t0 + ms(2_000));
        l.failed(t0 + ms(10));
        assert!(!l.renewal_due(t0 + ms(3_000)));
    }

    #[test]
    fn a_failure_while_settling_starts_the_settling_time_again() {
        let t0 = Instant::now();
        let mut l = OwnerLease::new(LEASE, t0, false);
        // Lapsed; a brief heal lets one answer through, then the cut is back.
        let back = t0 + ms(5_000);
        l.sent(back);
        assert_eq!(l.answered(back, back + ms(1)), Renewal::Settling);
        l.sent(back + ms(1_001));
        l.failed(back + ms(1_001));
        // At the real heal, long after, the first answer settles again.
        let heal = t0 + ms(9_000);
        assert!(l.renewal_due(heal));
        l.sent(heal);
        assert_eq!(l.answered(heal, heal + ms(1)), Renewal::Settling);
    }

    #[test]
    fn a_restarted_node_asks_before_its_lease_holds_even_owning_no_job() {
        let t0 = Instant::now();
        let mut l = OwnerLease::new(LEASE, t0, true);
        assert!(!l.holds(t0));
        l.assume_held(t0 + ms(10));
        assert!(!l.holds(t0 + ms(10)), "it must ask the core group first");
        // A renewal that fails (still cut off) does not help.
        l.sent(t0 + ms(20));
        l.failed(t0 + ms(20));
        assert!(!l.holds(t0 + ms(30)));
        // The first answer holds it, with no settling time (see `answered`).
        l.sent(t0 + ms(1_020));
        assert_eq!(
            l.answered(t0 + ms(1_020), t0 + ms(1_021)),
            Renewal::HoldsAgain
        );
        assert!(l.holds(t0 + ms(1_021)));
        // From then on, owning no job holds it, and a lapse settles as for any node.
        l.assume_held(t0 + ms(60_000));
        assert!(l.holds(t0 + ms(60_001)));
        let later = t0 + ms(70_000);
        l.sent(later);
        assert_eq!(l.answered(later, later + ms(1)), Renewal::Settling);
    }

    #[test]
    fn a_lapsed_lease_is_asked_for_again_soon() {
        let t0 = Instant::now();
        let mut l = OwnerLease::new(LEASE, t0, true);
        l.sent(t0);
        l.failed(t0);
        assert!(!l.renewal_due(t0 + ms(99)));
        assert!(l.renewal_due(t0 + ms(100)));
        assert_eq!(l.next_due(t0 + ms(50)), ms(50));
    }

    #[test]
    fn a_node_that_owns_no_job_holds_the_lease_without_asking() {
        let t0 = Instant::now();
        let mut l = OwnerLease::new(LEASE, t0, false);
        l.assume_held(t0 + ms(60_000));
        assert!(l.holds(t0 + ms(63_999)));
        assert!(!l.holds(t0 + ms(64_000)));
    }
}
