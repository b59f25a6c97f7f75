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
}

impl StandingDelay {
    /// Targets for high, normal and low work, and the interval, in milliseconds.
    pub fn new(target_ms: [u64; 3], interval_ms: u64) -> Self {
        Self {
            target: target_ms.map(Duration::from_millis),
            interval: Duration::from_millis(interval_ms),
            above_since: [None; 3],
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
        if drained {
            if let Some(s) = self.above_since.get_mut(class) {
                *s = None;
            }
        }
    }

    /// The classes over target at `now` (bit `c` for class `c`), given when each class's
    /// oldest waiting attempt arrived (`None`: nothing waits).
    pub fn over(&mut self, now: Instant, oldest: [Option<Instant>; 3]) -> u8 {
        let mut bits = 0;
        for (class, arrived) in oldest.into_iter().enumerate() {
            match arrived {
                Some(at) => self.saw(class, now.saturating_duration_since(at), now),
                None => self.above_since[class] = None,
            }
            if self.above_since[class].is_some_and(|s| now.saturating_duration_since(s) >= self.interval)
            {
                bits |= 1 << class;
            }
        }
        bits
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

    #[test]
    fn a_queue_that_drains_is_not_over_and_a_standing_one_is() {
        let mut s = StandingDelay::new([500, 100, 50], 100);
        let t0 = Instant::now();
        // Normal work waits 150 ms, above target, but only for 50 ms: not yet.
        s.served(1, 150 * MS, t0, false);
        assert_eq!(s.over(t0 + 50 * MS, [None, Some(t0 - 100 * MS), None]), 0);
        // Still above a full interval later: over.
        assert_eq!(
            s.over(t0 + 100 * MS, [None, Some(t0 - 100 * MS), None]),
            0b010
        );
        // One wait below target ends it.
        s.served(1, 20 * MS, t0 + 120 * MS, false);
        assert_eq!(s.over(t0 + 120 * MS, [None, Some(t0 + 110 * MS), None]), 0);
        // So does an empty lane.
        s.served(1, 300 * MS, t0 + 200 * MS, false);
        assert_eq!(s.over(t0 + 400 * MS, [None, None, None]), 0);
    }

    #[test]
    fn work_stuck_behind_busy_slots_counts_without_any_service() {
        let mut s = StandingDelay::new([500, 100, 50], 100);
        let t0 = Instant::now();
        let oldest = [None, None, Some(t0)];
        assert_eq!(s.over(t0 + 60 * MS, oldest), 0, "above target just now");
        assert_eq!(s.over(t0 + 160 * MS, oldest), 0b100);
    }

    #[test]
    fn a_zero_target_turns_the_rule_off_for_its_class() {
        let mut s = StandingDelay::new([0, 0, 0], 100);
        let t0 = Instant::now();
        let oldest = [Some(t0); 3];
        s.over(t0, oldest);
        assert_eq!(s.over(t0 + 10_000 * MS, oldest), 0);
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
