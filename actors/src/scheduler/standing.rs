//! Standing queues: which priority classes' new work has waited for a slot past its
//! target for long enough that new jobs of the class should be refused (admission by
//! waiting time, `admission.wait_target_ms`).
//!
//! A queue that grows and drains again is normal; one that never drains below the target
//! is a backlog that only adds latency. CoDel's rule (Nichols and Jacobson, "Controlling
//! Queue Delay", 2012) tells them apart: a class is over target once every wait seen
//! for `wait_interval_ms`, both the waits of the attempts that got a slot and the age of
//! the oldest one still waiting, stayed at or above its target. One wait below it, or an
//! empty lane, ends the period. Only new work (a job's first steps) counts: continuing
//! work of accepted jobs runs first and is never refused, so a backlog of it shows up as
//! new work waiting.
//!
//! CoDel alone reacts an interval late: offered five times what the slots run, a node
//! would queue four intervals' worth of work before the first refusal, and every job
//! admitted meanwhile would wait that long. So a forecast joins it: each class's time
//! per item served while it had a queue (an average of the gaps between its services),
//! times the items it has waiting now, is the wait a job admitted now would see; at or
//! past the target, the class is over at once. The forecast needs services to learn
//! from; the standing rule catches a queue that nothing drains (every slot held by long
//! tasks). A refusal by the forecast says when to come back: when the forecast would
//! be back at the target ([`StandingDelay::drained_in`]).
//!
//! Written by hand: CoDel implementations in crates (for packets) drop from the queue,
//! while here the queue keeps what it holds and the answer is a refusal at the door.

use std::time::{Duration, Instant};

/// Per-class standing-queue detection (high, normal, low).
#[derive(Debug, Clone)]
pub struct StandingDelay {
    /// Each class's target wait; zero: never over.
    target: [Duration; 3],
    /// How long waits stay above target before the class is over.
    interval: Duration,
    /// Since when each class's waits have all been above target.
    above_since: [Option<Instant>; 3],
    /// Each class's last service, if it still had work waiting after it.
    backlogged_at: [Option<Instant>; 3],
    /// Each class's average time between services while it had a queue.
    per_item: [Option<Duration>; 3],
    /// At the last [`StandingDelay::over`], by how much each class's forecast passed
    /// its target (`None`: not over by the forecast).
    excess: [Option<Duration>; 3],
}

impl StandingDelay {
    /// Targets for high, normal and low work, and the interval, in milliseconds.
    pub fn new(target_ms: [u64; 3], interval_ms: u64) -> Self {
        Self {
            target: target_ms.map(Duration::from_millis),
            interval: Duration::from_millis(interval_ms),
            above_since: [None; 3],
            backlogged_at: [None; 3],
            per_item: [None; 3],
            excess: [None; 3],
        }
    }

    /// Records one wait of class `class` seen at `now`.
    fn saw(&mut self, class: usize, waited: Duration, now: Instant) {
        let (Some(target), Some(since)) = (self.target.get(class), self.above_since.get_mut(class))
        else {
            return;
        };
        if target.is_zero() || waited < *target {
            *since = None;
        } else if since.is_none() {
            *since = Some(now);
        }
    }

    /// An attempt of class `class` that waited `waited` got a slot at `now`; `drained`
    /// if none of its class waits any more.
    pub fn served(&mut self, class: usize, waited: Duration, now: Instant, drained: bool) {
        self.saw(class, waited, now);
        let (Some(since), Some(last), Some(per)) = (
            self.above_since.get_mut(class),
            self.backlogged_at.get_mut(class),
            self.per_item.get_mut(class),
        ) else {
            return;
        };
        if drained {
            *since = None;
        }
        // A gap counts only if the class had work waiting all along (else it measures
        // idle time, not service).
        if let Some(prev) = *last {
            let gap = now.saturating_duration_since(prev);
            *per = Some(match *per {
                // An average over about the last eight services.
                Some(p) => (p * 7 + gap) / 8,
                None => gap,
            });
        }
        *last = (!drained).then_some(now);
    }

    /// The classes over target at `now` (bit `c` for class `c`), given when each class's
    /// oldest waiting attempt arrived (`None`: nothing waits) and how many wait.
    pub fn over(&mut self, now: Instant, oldest: [Option<Instant>; 3], waiting: [usize; 3]) -> u8 {
        let mut bits = 0;
        for (class, arrived) in oldest.into_iter().enumerate() {
            let target = self.target[class];
            let forecast = self.per_item[class].map(|p| p * waiting[class].min(1 << 20) as u32);
            self.excess[class] = forecast
                .filter(|f| !target.is_zero() && *f >= target)
                .map(|f| f - target);
            if self.excess[class].is_some() {
                bits |= 1 << class;
            }
            match arrived {
                Some(at) => self.saw(class, now.saturating_duration_since(at), now),
                None => self.above_since[class] = None,
            }
            if self.above_since[class]
                .is_some_and(|s| now.saturating_duration_since(s) >= self.interval)
            {
                bits |= 1 << class;
            }
        }
        bits
    }

    /// When the classes that make `over` (as [`StandingDelay::over`] last answered)
    /// refuse class `class` should, at the pace they are served, have drained to their
    /// targets: the largest excess of their forecasts. `None` when one of them is over
    /// by the standing rule alone (nothing measured says when it drains).
    pub fn drained_in(&self, over: u8, class: usize) -> Option<Duration> {
        (0..=class.min(2))
            .filter(|c| over & (1 << c) != 0)
            .map(|c| self.excess[c])
            .try_fold(Duration::ZERO, |most, e| e.map(|e| most.max(e)))
    }
}

/// True if new jobs of class `class` (0 high, 1 normal, 2 low) are refused when the
/// classes in `over` are over target: its own or any higher class's (lower classes are
/// shed first, so high jobs are refused last).
pub fn refuses(over: u8, class: usize) -> bool {
    let upto = (1u16 << (class.min(2) + 1)) - 1;
    u16::from(over) & upto != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Targets [500, 100, 50] ms; normal work served every 10 ms for 200 ms while it had a
    /// queue. Answers the delay, its start and its end.
    fn normal_work_served_every_10_ms() -> (StandingDelay, Instant, Instant) {
        let mut s = StandingDelay::new([500, 100, 50], 100);
        let t0 = Instant::now();
        for i in 0..20 {
            s.served(1, MS, t0 + i * 10 * MS, false);
        }
        (s, t0, t0 + 200 * MS)
    }

    #[test]
    fn a_queue_that_drains_is_not_over_and_a_standing_one_is() {
        let mut s = StandingDelay::new([500, 100, 50], 100);
        let t0 = Instant::now();
        let one_normal = [0, 1, 0];
        // Normal work has waited 150 ms, above target, but only for 50 ms: not yet.
        let oldest = [None, Some(t0 - 150 * MS), None];
        assert_eq!(s.over(t0, oldest, one_normal), 0);
        assert_eq!(s.over(t0 + 50 * MS, oldest, one_normal), 0);
        // Still above a full interval later: over.
        assert_eq!(s.over(t0 + 100 * MS, oldest, one_normal), 0b010);
        // One wait below target ends it.
        s.served(1, 20 * MS, t0 + 120 * MS, false);
        let oldest = [None, Some(t0 + 110 * MS), None];
        assert_eq!(s.over(t0 + 120 * MS, oldest, one_normal), 0);
        // So does an empty lane.
        s.served(1, 300 * MS, t0 + 200 * MS, true);
        assert_eq!(s.over(t0 + 400 * MS, [None; 3], [0; 3]), 0);
    }

    /// A refused client should come back when the queue has drained to the target at
    /// the pace it is served, no sooner (it would be refused again) and no later (the
    /// slots would idle): 15 waiting at 10 ms each is 50 ms past a 100 ms target.
    #[test]
    fn the_forecast_says_when_the_queue_is_back_at_its_target() {
        let (mut s, t0, now) = normal_work_served_every_10_ms();
        let over = s.over(now, [None, Some(now), None], [0, 15, 0]);
        assert_eq!(over, 0b010);
        assert_eq!(s.drained_in(over, 1), Some(50 * MS));
        assert_eq!(
            s.drained_in(over, 2),
            Some(50 * MS),
            "low is refused as long"
        );
        assert_eq!(
            s.drained_in(over, 0),
            Some(Duration::ZERO),
            "high is not refused"
        );
        // Over by the standing rule alone (stuck behind long tasks): no forecast.
        let mut stuck = StandingDelay::new([500, 100, 50], 100);
        let oldest = [None, None, Some(t0)];
        stuck.over(t0 + 60 * MS, oldest, [0, 0, 1]);
        let over = stuck.over(t0 + 160 * MS, oldest, [0, 0, 1]);
        assert_eq!(over, 0b100);
        assert_eq!(stuck.drained_in(over, 2), None);
    }

    #[test]
    fn work_stuck_behind_busy_slots_counts_without_any_service() {
        let mut s = StandingDelay::new([500, 100, 50], 100);
        let t0 = Instant::now();
        let oldest = [None, None, Some(t0)];
        assert_eq!(
            s.over(t0 + 60 * MS, oldest, [0, 0, 1]),
            0,
            "above target just now"
        );
        assert_eq!(s.over(t0 + 160 * MS, oldest, [0, 0, 1]), 0b100);
    }

    /// Served every 10 ms while backlogged, normal work forecasts 10 ms per waiting
    /// item: ten waiting reach the 100 ms target at once, nine do not; gaps while the
    /// class had nothing waiting teach nothing.
    #[test]
    fn the_forecast_refuses_as_soon_as_the_queue_would_wait_past_target() {
        let (mut s, _, now) = normal_work_served_every_10_ms();
        let oldest = [None, Some(now), None];
        assert_eq!(s.over(now, oldest, [0, 9, 0]), 0);
        assert_eq!(s.over(now, oldest, [0, 10, 0]), 0b010);
        // Drained, then one service a second later: the idle gap is not learnt.
        s.served(1, MS, now, true);
        s.served(1, MS, now + 1000 * MS, false);
        assert_eq!(s.over(now + 1000 * MS, oldest, [0, 9, 0]), 0);
    }

    #[test]
    fn a_zero_target_turns_the_rule_off_for_its_class() {
        let mut s = StandingDelay::new([0, 0, 0], 100);
        let t0 = Instant::now();
        for i in 0..5 {
            s.served(1, 1000 * MS, t0 + i * 100 * MS, false);
        }
        let oldest = [Some(t0); 3];
        s.over(t0, oldest, [1000; 3]);
        assert_eq!(s.over(t0 + 10_000 * MS, oldest, [1000; 3]), 0);
    }

    #[test]
    fn lower_classes_are_refused_first() {
        // Low over: only low refused.
        assert!(!refuses(0b100, 0) && !refuses(0b100, 1) && refuses(0b100, 2));
        // Normal over: normal and low.
        assert!(!refuses(0b010, 0) && refuses(0b010, 1) && refuses(0b010, 2));
        // High over: all.
        assert!(refuses(0b001, 0) && refuses(0b001, 1) && refuses(0b001, 2));
        assert!(!refuses(0, 0) && !refuses(0, 2));
    }
}
