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
//! Within a stage the classes share the slots by weight (`scheduling.weights`, 8:4:1 by
//! default) instead of strictly: stride scheduling, each class a pass that advances by
//! `1/weight` each time it is served, the waiting class whose pass after this service
//! would be lowest served next (the higher class on a tie). A class that had nothing
//! waiting comes back at the pass of the last one served, never earlier: no credit is
//! banked while idle. So a high
//! attempt arriving behind any backlog runs at the next free slot (its pass is the
//! lowest), a sustained flood of high work still leaves low work 1/(8+1) of the slots (or
//! 1/13 with normal work waiting too), and no class starves, however old the others'
//! work is. (Promotion by age, which this replaced, turned a backlog of a few seconds
//! into arrival order: everything older than the high job had aged to high ahead of it.)
//!
//! New work never goes ahead of continuing work, and is not starved for ever by it
//! either: continuing work exists only for jobs already started, and jobs start only by
//! their new work. (Were new work to share with continuing work, a sustained flood would
//! crowd out the jobs under way, which is the starvation this module is for.) The `fifo`
//! policy ignores lanes (arrival order only), for comparison.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use troupe_runtime::config::LanePolicy;
use troupe_runtime::job::spec::Priority;
use troupe_runtime::vocab::Stage;

use super::standing::StandingDelay;

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
    seq: u64,
    /// When it was queued.
    at: Instant,
}

/// Waiting items in lanes.
#[derive(Debug)]
pub struct Lanes<T> {
    lanes: [VecDeque<Entry<T>>; LANES],
    seq: u64,
    policy: LanePolicy,
    /// How far each class's pass moves when it is served: [`STRIDE`] over its weight.
    stride: [u64; 3],
    /// Each lane's pass: the virtual time of its next service.
    pass: [u64; LANES],
    /// For each stage, the pass the lane served last reached.
    now_pass: [u64; 2],
    /// Which classes' new work waits past its target (admission by waiting time).
    standing: StandingDelay,
}

/// An entry's place in the order: stage, the pass its class reaches by serving it, class,
/// arrival (see [`Lanes::rank`]).
type Rank = (u64, u64, usize, u64);

/// The pass a class of weight 1 moves by each service (weights divide it).
const STRIDE: u64 = 1 << 20;

impl<T> Lanes<T> {
    /// Empty lanes ordered by `policy`, the classes (high, normal, low) sharing the slots
    /// of a stage by `weights` (each at least 1).
    pub fn new(policy: LanePolicy, weights: [u32; 3]) -> Self {
        Self {
            lanes: Default::default(),
            seq: 0,
            policy,
            stride: strides(weights),
            pass: [0; LANES],
            now_pass: [0; 2],
            standing: StandingDelay::new([0; 3], 0),
        }
    }

    /// Watches waits of new work against `target_ms` (high, normal, low) over
    /// `interval_ms` (see [`StandingDelay`]).
    pub fn with_wait_targets(mut self, target_ms: [u64; 3], interval_ms: u64) -> Self {
        self.standing = StandingDelay::new(target_ms, interval_ms);
        self
    }

    /// The classes whose new work has waited past its target long enough that new jobs
    /// of theirs are refused (bit `c` for class `c`: 0 high, 1 normal, 2 low).
    pub fn over_target(&mut self, now: Instant) -> u8 {
        let oldest = std::array::from_fn(|c| self.lanes[3 + c].front().map(|e| e.at));
        let waiting = std::array::from_fn(|c| self.lanes[3 + c].len());
        self.standing.over(now, oldest, waiting)
    }

    /// [`Lanes::over_target`], and when the classes over target that refuse class
    /// `class` should have drained back to their targets ([`StandingDelay::drained_in`]).
    pub fn refusal(&mut self, now: Instant, class: usize) -> (u8, Option<Duration>) {
        let over = self.over_target(now);
        (over, self.standing.drained_in(over, class))
    }

    /// Changes the order of what waits and of what comes.
    pub fn set_policy(&mut self, policy: LanePolicy, weights: [u32; 3]) {
        self.policy = policy;
        self.stride = strides(weights);
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

    /// Adds `item` to lane `lane` (clamped to the last lane). (The order does not depend
    /// on time; `now` is its arrival, for admission by waiting time.)
    pub fn push(&mut self, item: T, lane: usize, now: Instant) {
        self.seq += 1;
        let lane = lane.min(LANES - 1);
        if self.lanes[lane].is_empty() {
            // A class coming back from idle joins no earlier than the pass of the last
            // one served: it banked no credit while it had nothing waiting.
            self.pass[lane] = self.pass[lane].max(self.now_pass[lane / 3]);
        }
        self.lanes[lane].push_back(Entry {
            item,
            seq: self.seq,
            at: now,
        });
    }

    /// Rank of an entry of lane `lane` (lower runs first): its stage, then the pass its
    /// class reaches by serving it (its virtual finish: a heavier class arriving beside
    /// lighter ones goes first), its class, its arrival.
    fn rank(&self, lane: usize, e: &Entry<T>) -> Rank {
        match self.policy {
            LanePolicy::Fifo => (0, 0, 0, e.seq),
            LanePolicy::Priority => {
                let (stage, class) = (lane / 3, lane % 3);
                (
                    stage as u64,
                    self.pass[lane] + self.stride[class],
                    class,
                    e.seq,
                )
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
        let mut best: Option<(Rank, usize, usize)> = None;
        for lane in 0..LANES {
            // Within a lane the first acceptable entry is the best one (oldest).
            if let Some((i, e)) = self.lanes[lane]
                .iter()
                .enumerate()
                .find(|(_, e)| ok(&e.item))
            {
                let r = self.rank(lane, e);
                if best.as_ref().is_none_or(|(b, _, _)| r < *b) {
                    best = Some((r, lane, i));
                }
            }
        }
        let ((_, finish, _, _), lane, i) = best?;
        if self.policy == LanePolicy::Priority {
            self.pass[lane] = finish;
            self.now_pass[lane / 3] = finish;
        }
        let e = self.lanes[lane].remove(i)?;
        if lane >= 3 {
            let drained = self.lanes[lane].is_empty();
            self.standing
                .served(lane - 3, now.saturating_duration_since(e.at), now, drained);
        }
        Some(e.item)
    }

    /// Every waiting item, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.lanes.iter().flat_map(|l| l.iter().map(|e| &e.item))
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

/// The stride of each class for `weights` (a weight of 0 counts as 1).
fn strides(weights: [u32; 3]) -> [u64; 3] {
    weights.map(|w| STRIDE / u64::from(w.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: [u32; 3] = [8, 4, 1];

    #[test]
    fn continuing_work_goes_before_new_work_then_by_class() {
        let mut l = Lanes::new(LanePolicy::Priority, W);
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

    /// The backlog of the issue that replaced aging: 40 normal and 30 low waiting, then
    /// one high: it is next, however long the others have waited.
    #[test]
    fn a_high_attempt_behind_any_backlog_runs_next() {
        let mut l = Lanes::new(LanePolicy::Priority, W);
        let t0 = Instant::now();
        for i in 0..40 {
            l.push(
                format!("normal-{i}"),
                lane_of(Priority::Normal, Stage::New),
                t0,
            );
        }
        for i in 0..30 {
            l.push(format!("low-{i}"), lane_of(Priority::Low, Stage::New), t0);
        }
        let later = t0 + std::time::Duration::from_secs(60);
        for _ in 0..10 {
            l.pop(later);
        }
        l.push(
            "high".to_string(),
            lane_of(Priority::High, Stage::New),
            later,
        );
        assert_eq!(l.pop(later).as_deref(), Some("high"));
    }

    /// A high attempt that arrives after another high one just ran still goes before
    /// the normal and low work that arrived with it.
    #[test]
    fn a_high_attempt_arriving_after_a_high_one_ran_goes_first() {
        let mut l = Lanes::new(LanePolicy::Priority, W);
        let t = Instant::now();
        let lane = |p| lane_of(p, Stage::New);
        l.push("first-high", lane(Priority::High), t);
        assert_eq!(l.pop(t), Some("first-high"));
        l.push("low", lane(Priority::Low), t);
        l.push("normal", lane(Priority::Normal), t);
        l.push("high", lane(Priority::High), t);
        let order: Vec<_> = std::iter::from_fn(|| l.pop(t)).collect();
        assert_eq!(order, ["high", "normal", "low"]);
    }

    /// Under sustained floods of every class, each gets its weight's share of the slots.
    #[test]
    fn classes_share_by_weight_and_none_starves() {
        let mut l = Lanes::new(LanePolicy::Priority, W);
        let t = Instant::now();
        let lanes =
            [Priority::High, Priority::Normal, Priority::Low].map(|p| lane_of(p, Stage::New));
        for (c, &lane) in lanes.iter().enumerate() {
            for _ in 0..2 {
                l.push(c, lane, t);
            }
        }
        let mut served = [0usize; 3];
        for _ in 0..1300 {
            let c = l.pop(t).expect("work waits");
            served[c] += 1;
            l.push(c, lanes[c], t); // each class stays flooded
        }
        assert_eq!(served, [800, 400, 100]);
        // Only high and low: low still gets 1/9.
        let mut l = Lanes::new(LanePolicy::Priority, W);
        l.push(0, lanes[0], t);
        l.push(2, lanes[2], t);
        let mut low = 0;
        for _ in 0..900 {
            let c = l.pop(t).expect("work waits");
            low += usize::from(c == 2);
            l.push(c, lanes[c], t);
        }
        assert_eq!(low, 100);
    }

    /// A class with nothing waiting banks no credit: coming back after a long idle time,
    /// it shares from then on, not in a burst.
    #[test]
    fn an_idle_class_comes_back_without_a_burst() {
        let mut l = Lanes::new(LanePolicy::Priority, [1, 1, 1]);
        let t = Instant::now();
        let normal = lane_of(Priority::Normal, Stage::New);
        let low = lane_of(Priority::Low, Stage::New);
        l.push("normal", normal, t);
        for _ in 0..100 {
            assert_eq!(l.pop(t), Some("normal"));
            l.push("normal", normal, t);
        }
        l.push("low", low, t);
        l.push("low", low, t);
        let next: Vec<_> = (0..4)
            .map(|_| {
                let x = l.pop(t).expect("waits");
                l.push(x, if x == "low" { low } else { normal }, t);
                x
            })
            .collect();
        assert_eq!(
            next,
            ["normal", "low", "normal", "low"],
            "turns, not a burst of low"
        );
    }

    #[test]
    fn new_work_yields_to_continuing_work_however_old() {
        let mut l = Lanes::new(LanePolicy::Priority, W);
        let t0 = Instant::now();
        l.push("old-high-new", lane_of(Priority::High, Stage::New), t0);
        let later = t0 + std::time::Duration::from_secs(1000);
        l.push(
            "fresh-low-continuing",
            lane_of(Priority::Low, Stage::Continuing),
            later,
        );
        assert_eq!(l.pop(later), Some("fresh-low-continuing"));
        assert_eq!(l.pop(later), Some("old-high-new"));
    }

    #[test]
    fn fifo_ignores_lanes() {
        let mut l = Lanes::new(LanePolicy::Fifo, W);
        let t = Instant::now();
        l.push("a", 5, t);
        l.push("b", 0, t);
        assert_eq!(l.pop(t), Some("a"));
        assert_eq!(l.pop(t), Some("b"));
        assert_eq!(l.pop(t), None);
    }

    #[test]
    fn pop_where_skips_items_at_a_limit_without_blocking_the_lane() {
        let mut l = Lanes::new(LanePolicy::Priority, W);
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
