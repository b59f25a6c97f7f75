//! Priority lanes: the order in which a node's waiting attempts get a worker slot.
//!
//! Seed 000's starvation: at peak, new jobs spawn stage-1 work so fast that nodes spend
//! all their time on it and jobs already under way never finish. So work waits in lanes,
//! not in one FIFO. *Continuing* work (a step with dependencies, a fan-out child, a
//! re-entrant call or sub-job, a retry) goes ahead of *new* work (a job's first steps);
//! within each, the job's priority class (high, normal, low) orders the lanes:
//!
//! | lane | stage | class |
//! |---|---|---|
//! | 0 | continuing | high |
//! | 1 | continuing | normal |
//! | 2 | continuing | low |
//! | 3 | new | high |
//! | 4 | new | normal |
//! | 5 | new | low |
//!
//! Classes age, so no class waits for ever behind another: for every `aging_ms` an
//! attempt has waited, its class moves up one (low to normal to high); its stage stays.
//! The next attempt to run is the one in the best lane after aging, the oldest first
//! among equals; within a lane the order is FIFO. So an attempt of class c competes as
//! high after `c × aging_ms` at most. New work never goes ahead of continuing work, and
//! is not starved for ever by it either: continuing work exists only for jobs already
//! started, and jobs start only by their new work. (Were new work to age past continuing
//! work, a sustained flood would make the order FIFO again, which is the starvation this
//! module is for.) The `fifo` policy ignores lanes (arrival order only), for comparison.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use troupe_runtime::config::LanePolicy;
use troupe_runtime::job::spec::Priority;
use troupe_runtime::vocab::Stage;

/// Number of lanes.
pub const LANES: usize = 6;

/// The lane of an attempt of class `priority` at stage `stage`.
pub fn lane_of(priority: Priority, stage: Stage) -> usize {
    let class = match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    };
    usize::from(stage == Stage::New) * 3 + class
}

/// The label of lane `lane` in metrics (`high_continuing`, ..., `low_new`).
pub fn lane_name(lane: usize) -> &'static str {
    [
        "high_continuing",
        "normal_continuing",
        "low_continuing",
        "high_new",
        "normal_new",
        "low_new",
    ]
    .get(lane)
    .copied()
    .unwrap_or("unknown")
}

#[derive(Debug)]
struct Entry<T> {
    item: T,
    at: Instant,
    seq: u64,
}

/// Waiting items in lanes.
#[derive(Debug)]
pub struct Lanes<T> {
    lanes: [VecDeque<Entry<T>>; LANES],
    seq: u64,
    policy: LanePolicy,
    aging: Duration,
}

impl<T> Lanes<T> {
    /// Empty lanes ordered by `policy`, aging one lane per `aging`.
    pub fn new(policy: LanePolicy, aging: Duration) -> Self {
        Self {
            lanes: Default::default(),
            seq: 0,
            policy,
            aging: aging.max(Duration::from_millis(1)),
        }
    }

    /// Changes the order of what waits and of what comes.
    pub fn set_policy(&mut self, policy: LanePolicy, aging: Duration) {
        self.policy = policy;
        self.aging = aging.max(Duration::from_millis(1));
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(VecDeque::is_empty)
    }

    /// Items waiting in each lane.
    pub fn depths(&self) -> [usize; LANES] {
        std::array::from_fn(|i| self.lanes[i].len())
    }

    /// Adds `item` to lane `lane` (clamped to the last lane).
    pub fn push(&mut self, item: T, lane: usize, now: Instant) {
        self.seq += 1;
        self.lanes[lane.min(LANES - 1)].push_back(Entry {
            item,
            at: now,
            seq: self.seq,
        });
    }

    /// Rank of an entry of lane `lane` at `now` (lower runs first), then its arrival.
    fn rank(&self, lane: usize, e: &Entry<T>, now: Instant) -> (i64, u64) {
        match self.policy {
            LanePolicy::Fifo => (0, e.seq),
            LanePolicy::Priority => {
                let aged = now.saturating_duration_since(e.at).as_millis() / self.aging.as_millis();
                let class = (lane % 3).saturating_sub(aged.min(LANES as u128) as usize);
                (((lane / 3) * 3 + class) as i64, e.seq)
            }
        }
    }

    /// Takes the item that runs next.
    pub fn pop(&mut self, now: Instant) -> Option<T> {
        self.pop_where(now, |_| true)
    }

    /// Takes the item that runs next among those `ok` accepts (the others keep their
    /// place: a task at its concurrency limit does not block the lane).
    pub fn pop_where(&mut self, now: Instant, mut ok: impl FnMut(&T) -> bool) -> Option<T> {
        let mut best: Option<((i64, u64), usize, usize)> = None;
        for lane in 0..LANES {
            // Within a lane the first acceptable entry is the best one (oldest).
            if let Some((i, e)) = self.lanes[lane]
                .iter()
                .enumerate()
                .find(|(_, e)| ok(&e.item))
            {
                let r = self.rank(lane, e, now);
                if best.as_ref().is_none_or(|(b, _, _)| r < *b) {
                    best = Some((r, lane, i));
                }
            }
        }
        let (_, lane, i) = best?;
        self.lanes[lane].remove(i).map(|e| e.item)
    }

    /// Removes and returns every item `f` selects.
    pub fn take_where(&mut self, mut f: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        for lane in self.lanes.iter_mut() {
            let mut keep = VecDeque::with_capacity(lane.len());
            for e in lane.drain(..) {
                if f(&e.item) {
                    out.push(e.item);
                } else {
                    keep.push_back(e);
                }
            }
            *lane = keep;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn continuing_work_goes_before_new_work_then_by_class() {
        let mut l = Lanes::new(LanePolicy::Priority, ms(1000));
        let t = Instant::now();
        l.push("normal-new", lane_of(Priority::Normal, Stage::New), t);
        l.push(
            "low-continuing",
            lane_of(Priority::Low, Stage::Continuing),
            t,
        );
        l.push(
            "normal-continuing",
            lane_of(Priority::Normal, Stage::Continuing),
            t,
        );
        l.push("high-new", lane_of(Priority::High, Stage::New), t);
        l.push(
            "normal-continuing-2",
            lane_of(Priority::Normal, Stage::Continuing),
            t,
        );
        let order: Vec<_> = std::iter::from_fn(|| l.pop(t)).collect();
        assert_eq!(
            order,
            [
                "normal-continuing",
                "normal-continuing-2",
                "low-continuing",
                "high-new",
                "normal-new"
            ]
        );
    }

    #[test]
    fn aging_bounds_the_wait_of_the_lowest_class() {
        let mut l = Lanes::new(LanePolicy::Priority, ms(100));
        let t0 = Instant::now();
        l.push("old-low-new", lane_of(Priority::Low, Stage::New), t0);
        // A steady stream of new high work arrives afterwards.
        let mut served_at = None;
        for step in 0..20u64 {
            let now = t0 + ms(step * 50);
            l.push("fresh-high-new", lane_of(Priority::High, Stage::New), now);
            if l.pop(now) == Some("old-low-new") {
                served_at = Some(step * 50);
                break;
            }
        }
        let at = served_at.expect("the low item was served");
        assert!(at <= 2 * 100, "served after {at} ms, bound 200 ms");
        assert!(at >= 100, "not before it aged: {at} ms");
    }

    #[test]
    fn aged_new_work_still_yields_to_continuing_work() {
        let mut l = Lanes::new(LanePolicy::Priority, ms(10));
        let t0 = Instant::now();
        l.push("old-normal-new", lane_of(Priority::Normal, Stage::New), t0);
        let later = t0 + ms(1000);
        l.push(
            "fresh-normal-continuing",
            lane_of(Priority::Normal, Stage::Continuing),
            later,
        );
        assert_eq!(l.pop(later), Some("fresh-normal-continuing"));
        assert_eq!(l.pop(later), Some("old-normal-new"));
    }

    #[test]
    fn fifo_ignores_lanes() {
        let mut l = Lanes::new(LanePolicy::Fifo, ms(1000));
        let t = Instant::now();
        l.push("a", 5, t);
        l.push("b", 0, t);
        assert_eq!(l.pop(t), Some("a"));
        assert_eq!(l.pop(t), Some("b"));
        assert_eq!(l.pop(t), None);
    }

    #[test]
    fn fairness_between_classes_under_equal_age() {
        // With all three classes always waiting, high is served first, but a low item
        // waiting long enough is served before newer normal items.
        let mut l = Lanes::new(LanePolicy::Priority, ms(10));
        let t = Instant::now();
        l.push("low", lane_of(Priority::Low, Stage::New), t);
        l.push("normal", lane_of(Priority::Normal, Stage::New), t + ms(25));
        assert_eq!(
            l.pop(t + ms(25)),
            Some("low"),
            "low aged past the fresher normal"
        );
    }

    #[test]
    fn pop_where_skips_items_at_a_limit_without_blocking_the_lane() {
        let mut l = Lanes::new(LanePolicy::Priority, ms(1000));
        let t = Instant::now();
        l.push(("limited", 1), 0, t);
        l.push(("free", 2), 0, t);
        assert_eq!(l.pop_where(t, |x| x.0 != "limited"), Some(("free", 2)));
        assert_eq!(l.len(), 1);
        assert_eq!(l.depths()[0], 1);
        assert_eq!(l.take_where(|x| x.1 == 1), vec![("limited", 1)]);
        assert!(l.is_empty());
    }
}
