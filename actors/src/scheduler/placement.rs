//! Where an attempt runs: the pull-based placement policy of a node's dispatcher.
//!
//! Seed 001: idle workers volunteer, and busy ones are not pushed more work. A node's
//! dispatcher places the attempts of the jobs it owns; it sends an attempt to a node only
//! while that node has *room*: fewer attempts running and queued there than its slots plus
//! a small `prefetch` (so a worker does not sit idle for the round trip between finishing
//! one attempt and receiving the next). Everything else waits in the owner's own priority
//! lanes, and is handed on as room appears: when a result comes back from a node (room
//! freed there), when gossip shows a node with room (a node that just joined), or when an
//! idle node steals it. Work made by a running attempt (a re-entrant call, a sub-job)
//! runs on that attempt's node when it has room: its inputs are there, and so is the
//! waiting caller. A quick one (its task's mean slot time there fits the prefetch budget,
//! below) even waits there for a slot, while what runs there is as quick: the caller gave
//! its slot back, and a round trip to a peer and back would take longer than the call
//! (`Placement::wait_here`).
//!
//! The prefetch follows what a node's attempts take. A round trip on loopback costs a few
//! hundred microseconds under load, while a small task runs in a few: with one attempt
//! prefetched, a one-slot node that runs such tasks sits idle most of the time, waiting
//! for its next attempt (measured: 10-12k echo steps/s through three one-slot nodes with
//! a prefetch of 1, 16-17k with 16). So a node's prefetch is as many attempts as its
//! slots run in `prefetch_us` (default 1 ms) at the mean slot time of its recent attempts
//! (`StepResult::ran_us`), between `prefetch` and `prefetch_max`: small tasks fill the
//! round trip, and a node running long ones is sent `prefetch` beyond its slots as before,
//! so work does not queue behind them while other nodes could take it. The mean is kept per
//! node and task: a node that ran a quick task is not sent a long one's attempts sixteen
//! at a time, and a task whose results carry no slot time (a Gearman function, done by
//! external workers whose own queues `Board::has_room` keeps short) keeps the minimum.
//!
//! The dispatcher's knowledge of a peer's load is an estimate: its own attempts there are
//! counted exactly (placed until their result comes back), the other owners' attempts
//! there come from the peer's last gossip. An estimate that is too low costs at most
//! `prefetch` extra attempts queued on that node (which stealing evens out); one that is
//! too high keeps work at home a little longer.
//!
//! This module is plain data, so the policy is unit-tested without a cluster.

use std::collections::HashMap;
use std::time::Instant;

use troupe_runtime::protocol::AttemptRef;

/// A node's load as the dispatcher counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PeerLoad {
    /// Worker slots of the node.
    slots: u32,
    /// Attempts running or queued there for other owners, at its last gossip.
    others: u32,
}

/// This node's attempts on other nodes, and what it knows of their load.
#[derive(Debug, Default)]
pub struct Placement {
    /// Attempts placed on peers and not finished: job -> (step, attempt) -> where.
    placed: HashMap<String, HashMap<(String, u32), Placed>>,
    /// Count of those by node.
    own: HashMap<String, u32>,
    /// Peers' load by node, from gossip.
    peers: HashMap<String, PeerLoad>,
    /// How many attempts a node may hold beyond its slots.
    prefetch: Prefetch,
    /// Mean slot time of the attempts each node ran of each task for this node, in
    /// microseconds (exponentially weighted, see [`RUN_TIME_WEIGHT`]): node -> task -> mean.
    run_us: HashMap<String, HashMap<String, f64>>,
}

/// Where an attempt was placed, and of what task.
#[derive(Debug, Clone)]
struct Placed {
    node: String,
    task: String,
    /// When it was sent there.
    at: Instant,
}

/// A node's room as [`Placement::rooms`] saw it, for handing it several attempts in a row.
#[derive(Debug, Clone, Default)]
pub struct Rooms {
    /// The room for a task not measured there.
    base: u32,
    /// The room for each task measured there.
    by_task: HashMap<String, u32>,
}

impl Rooms {
    /// Room for an attempt of `task`.
    pub fn for_task(&self, task: &str) -> u32 {
        self.by_task.get(task).copied().unwrap_or(self.base)
    }

    /// Room for an attempt of some task.
    pub fn any(&self) -> bool {
        self.base > 0 || self.by_task.values().any(|&r| r > 0)
    }

    /// One more attempt went there: one less room for every task.
    pub fn took_one(&mut self) {
        self.base = self.base.saturating_sub(1);
        for r in self.by_task.values_mut() {
            *r = r.saturating_sub(1);
        }
    }
}

/// The weight of the newest attempt in a node's mean slot time: the prefetch follows a
/// change of workload within a few dozen results.
const RUN_TIME_WEIGHT: f64 = 0.1;

/// Attempts of a task a node may hold beyond its slots: `min`, or as many as its slots
/// run in `budget_us` at the task's measured slot time there, up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    /// At least this many (`scheduling.prefetch`), and exactly this many for a task not
    /// measured on the node yet.
    pub min: u32,
    /// At most this many (`scheduling.prefetch_max`).
    pub max: u32,
    /// The time of work a node may be sent beyond its slots, in microseconds
    /// (`scheduling.prefetch_us`; 0 keeps every node at `min`).
    pub budget_us: u64,
}

impl Prefetch {
    /// Always `n` beyond the slots, whatever the attempts take.
    pub fn fixed(n: u32) -> Self {
        Self {
            min: n,
            max: n,
            budget_us: 0,
        }
    }
}

impl Default for Prefetch {
    fn default() -> Self {
        Self::fixed(1)
    }
}

impl Placement {
    /// A placement allowing `prefetch` attempts queued per node beyond its slots.
    pub fn new(prefetch: u32) -> Self {
        Self::with_prefetch(Prefetch::fixed(prefetch))
    }

    /// A placement whose prefetch follows the attempts' slot times as `prefetch` says.
    pub fn with_prefetch(prefetch: Prefetch) -> Self {
        Self {
            prefetch,
            ..Self::default()
        }
    }

    /// Attempts of a task whose mean slot time on a node with `slots` slots is `run_us`
    /// (`None`: not measured) the node may hold beyond its slots.
    fn prefetch_of(&self, run_us: Option<f64>, slots: u32) -> u32 {
        let Prefetch {
            min,
            max,
            budget_us,
        } = self.prefetch;
        match run_us {
            Some(run_us) if budget_us > 0 => {
                let fits = budget_us as f64 * f64::from(slots.max(1)) / run_us.max(1.0);
                // `as` saturates: a huge quotient is u32::MAX, clamped below.
                (fits as u32).clamp(min, max.max(min))
            }
            _ => min,
        }
    }

    /// `node`'s gossiped load; a node not heard from yet counts as one free slot.
    fn peer(&self, node: &str) -> PeerLoad {
        self.peers.get(node).copied().unwrap_or(PeerLoad {
            slots: 1,
            others: 0,
        })
    }

    /// Attempts running or queued on `node`: this node's, counted, and the others'.
    fn load(&self, node: &str) -> u32 {
        // Saturating: `others` comes from the peer's gossip.
        self.peer(node)
            .others
            .saturating_add(self.own.get(node).copied().unwrap_or(0))
    }

    /// Records a peer's gossiped load: `slots`, and `busy + queued` attempts of every owner.
    pub fn gossip(&mut self, node: &str, slots: u32, busy: u32, queued: u32) {
        let mine = self.own.get(node).copied().unwrap_or(0);
        let others = busy.saturating_add(queued).saturating_sub(mine);
        self.peers
            .insert(node.to_string(), PeerLoad { slots, others });
    }

    /// Attempts of a task not measured on `node` it can take now before it has no room
    /// (0 when full). A node not heard from yet counts as one slot.
    pub fn room(&self, node: &str) -> u32 {
        self.room_at(node, None)
    }

    /// Attempts of `task` `node` can take now before it has no room (0 when full).
    pub fn room_for(&self, node: &str, task: &str) -> u32 {
        let run_us = self
            .run_us
            .get(node)
            .and_then(|tasks| tasks.get(task))
            .copied();
        self.room_at(node, run_us)
    }

    /// `node`'s room for a task whose mean slot time there is `run_us` (`None`: not
    /// measured).
    fn room_at(&self, node: &str, run_us: Option<f64>) -> u32 {
        let slots = self.peer(node).slots;
        slots
            .saturating_add(self.prefetch_of(run_us, slots))
            .saturating_sub(self.load(node))
    }

    /// `node`'s room now, for each task measured there and for any other.
    pub fn rooms(&self, node: &str) -> Rooms {
        let by_task = self
            .run_us
            .get(node)
            .map(|tasks| {
                tasks
                    .keys()
                    .map(|t| (t.clone(), self.room_for(node, t)))
                    .collect()
            })
            .unwrap_or_default();
        Rooms {
            base: self.room(node),
            by_task,
        }
    }

    /// Attempts of this node's jobs on `node` now.
    pub fn placed_on(&self, node: &str) -> u32 {
        self.own.get(node).copied().unwrap_or(0)
    }

    /// The nodes that run attempts of this node's jobs now.
    pub fn nodes_with_attempts(&self) -> Vec<String> {
        self.own.keys().cloned().collect()
    }

    /// This node's attempts on `node` that were sent there at or before `by`.
    pub fn placed_on_by(&self, node: &str, by: Instant) -> Vec<AttemptRef> {
        let mut out = Vec::new();
        for (job, steps) in &self.placed {
            for ((step, attempt), p) in steps {
                if p.node == node && p.at <= by {
                    out.push(AttemptRef {
                        job: job.clone(),
                        step: step.clone(),
                        attempt: *attempt,
                    });
                }
            }
        }
        out
    }

    /// Forgets attempt `a` if it is still counted on `node` (lost there); true if it was.
    pub fn lost_on(&mut self, a: &AttemptRef, node: &str) -> bool {
        let on_node = self
            .placed
            .get(&a.job)
            .and_then(|steps| steps.get(&(a.step.clone(), a.attempt)))
            .is_some_and(|p| p.node == node);
        on_node && self.finished(&a.job, &a.step, a.attempt, None).is_some()
    }

    /// Records that attempt `(job, step, attempt)` of `task` went to `node` (`None`: of
    /// the task it was placed with before, when another node took it).
    pub fn placed(&mut self, job: &str, step: &str, attempt: u32, node: &str, task: Option<&str>) {
        let steps = self.placed.entry(job.to_string()).or_default();
        let key = (step.to_string(), attempt);
        let prev = steps.remove(&key);
        let task = match (task, &prev) {
            (Some(t), _) => t.to_string(),
            (None, Some(p)) => p.task.clone(),
            (None, None) => String::new(),
        };
        steps.insert(
            key,
            Placed {
                node: node.to_string(),
                task,
                at: Instant::now(),
            },
        );
        if let Some(p) = prev {
            self.release(&p.node);
        }
        *self.own.entry(node.to_string()).or_insert(0) += 1;
    }

    /// Records that the attempt ended (its result came back, or it was given up), having
    /// held its slot `ran_us` if it ran; returns the node it was on, if it was placed on a
    /// peer.
    pub fn finished(
        &mut self,
        job: &str,
        step: &str,
        attempt: u32,
        ran_us: Option<u64>,
    ) -> Option<String> {
        let steps = self.placed.get_mut(job)?;
        let Placed { node, task, .. } = steps.remove(&(step.to_string(), attempt))?;
        if steps.is_empty() {
            self.placed.remove(job);
        }
        self.release(&node);
        if let Some(us) = ran_us.filter(|_| !task.is_empty()) {
            self.ran(&node, &task, us);
        }
        Some(node)
    }

    /// Records that an attempt of `task` held a slot of `node` for `us` microseconds (a
    /// result from a peer, or an attempt that ran on this node: [`Placement::wait_here`]).
    pub fn ran(&mut self, node: &str, task: &str, us: u64) {
        let us = us as f64;
        let tasks = match self.run_us.get_mut(node) {
            Some(tasks) => tasks,
            None => self.run_us.entry(node.to_string()).or_default(),
        };
        match tasks.get_mut(task) {
            Some(mean) => *mean += RUN_TIME_WEIGHT * (us - *mean),
            None => {
                tasks.insert(task.to_string(), us);
            }
        }
    }

    /// Attempts of `task` that may wait on `node` (this node, with `slots` slots) for a
    /// slot to free up rather than go to a peer: as many as its slots run within the
    /// prefetch budget at the task's mean slot time here. Sending an attempt to a peer
    /// costs about that budget (the round trip the prefetch fills), so a task quicker
    /// than that finishes sooner queued here. None while the task is not measured here,
    /// or when one attempt takes longer than the budget: such work goes where there is
    /// room.
    pub fn wait_here(&self, node: &str, task: &str, slots: u32) -> u32 {
        let budget_us = self.prefetch.budget_us;
        match self.run_us.get(node).and_then(|tasks| tasks.get(task)) {
            Some(&run_us) if budget_us > 0 && run_us <= budget_us as f64 => {
                let fits = budget_us as f64 * f64::from(slots.max(1)) / run_us.max(1.0);
                // `as` saturates: a huge quotient is u32::MAX, clamped below.
                (fits as u32).min(self.prefetch.max)
            }
            _ => 0,
        }
    }

    /// Forgets every attempt of an ended job (cancelled attempts send no result).
    /// Answers the nodes they were on, each once.
    pub fn job_ended(&mut self, job: &str) -> Vec<String> {
        let mut nodes = Vec::new();
        for (_, Placed { node, .. }) in self.placed.remove(job).unwrap_or_default() {
            self.release(&node);
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
        nodes
    }

    fn release(&mut self, node: &str) {
        if let Some(n) = self.own.get_mut(node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.own.remove(node);
            }
        }
    }

    /// Forgets a node that left: its attempts and its load.
    pub fn node_down(&mut self, node: &str) {
        self.placed.retain(|_, steps| {
            steps.retain(|_, p| p.node != node);
            !steps.is_empty()
        });
        self.own.remove(node);
        self.peers.remove(node);
        self.run_us.remove(node);
    }

    /// Of `candidates`, where the next attempt goes: `home` if it has room, else the
    /// one with the most room (ties taken in turn by `turn`); `None` if none has room.
    /// `local` and `local_room` give this node's own room, known exactly.
    pub fn choose<'a>(
        &self,
        task: &str,
        candidates: &'a [String],
        home: &str,
        local: &str,
        local_room: u32,
        turn: &mut usize,
    ) -> Option<&'a str> {
        let room = |n: &str| {
            if n == local {
                local_room
            } else {
                self.room_for(n, task)
            }
        };
        if let Some(h) = candidates.iter().find(|c| *c == home) {
            if room(h) > 0 {
                return Some(h);
            }
        }
        let best = candidates
            .iter()
            .map(|c| room(c))
            .max()
            .filter(|&r| r > 0)?;
        let tied: Vec<&String> = candidates.iter().filter(|c| room(c) == best).collect();
        let pick = tied[*turn % tied.len()];
        *turn = turn.wrapping_add(1);
        Some(pick)
    }

    /// Of `candidates`, the one with the least load per slot (when none has room, the
    /// attempt queues there; ties taken in turn).
    pub fn least_loaded<'a>(&self, candidates: &'a [String], turn: &mut usize) -> Option<&'a str> {
        let load = |n: &str| {
            // Load per slot, in thousandths, to compare without floats.
            u64::from(self.load(n)) * 1000 / u64::from(self.peer(n).slots.max(1))
        };
        let min = candidates.iter().map(|c| load(c)).min()?;
        let tied: Vec<&String> = candidates.iter().filter(|c| load(c) == min).collect();
        let pick = tied[*turn % tied.len()];
        *turn = turn.wrapping_add(1);
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A placement with the default timed prefetch: 1 ms of work, 1 to 16 attempts.
    fn timed() -> Placement {
        Placement::with_prefetch(Prefetch {
            min: 1,
            max: 16,
            budget_us: 1_000,
        })
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn room_counts_own_attempts_exactly_and_others_from_gossip() {
        let mut p = Placement::new(1);
        p.gossip("b", 2, 1, 0);
        assert_eq!(p.room("b"), 2, "2 slots + 1 prefetch - 1 busy");
        p.placed("j", "s1", 1, "b", Some("t"));
        p.placed("j", "s2", 1, "b", Some("t"));
        assert_eq!(p.room("b"), 0);
        // Gossip that counts our two attempts does not count them twice.
        p.gossip("b", 2, 2, 1);
        assert_eq!(p.room("b"), 0);
        assert_eq!(p.finished("j", "s1", 1, None).as_deref(), Some("b"));
        assert_eq!(p.room("b"), 1);
        assert_eq!(
            p.finished("j", "s1", 1, None),
            None,
            "a second result counts once"
        );
        assert_eq!(p.room("b"), 1);
    }

    /// The attempts on a node sent by a given time: those sent later, on other nodes, or
    /// finished are left out.
    #[test]
    fn the_attempts_sent_to_a_node_by_a_time_are_listed() {
        let mut p = Placement::new(0);
        p.placed("j", "a", 1, "b", Some("t"));
        p.placed("j", "b", 2, "c", Some("t"));
        p.placed("k", "a", 1, "b", Some("t"));
        p.finished("k", "a", 1, None);
        let by = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        p.placed("m", "a", 1, "b", Some("t"));
        let listed = p.placed_on_by("b", by);
        assert_eq!(
            listed,
            vec![AttemptRef {
                job: "j".into(),
                step: "a".into(),
                attempt: 1
            }]
        );
        assert_eq!(p.placed_on_by("b", Instant::now()).len(), 2);
        // Lost on b: forgotten there; not on c, where it is not.
        let on_c = AttemptRef {
            job: "j".into(),
            step: "b".into(),
            attempt: 2,
        };
        assert!(!p.lost_on(&on_c, "b"));
        assert!(p.lost_on(&listed[0], "b"));
        assert!(!p.lost_on(&listed[0], "b"));
        assert_eq!(p.placed_on("b"), 1);
        assert_eq!(p.placed_on("c"), 1);
    }

    #[test]
    fn ended_jobs_and_departed_nodes_free_their_count() {
        let mut p = Placement::new(0);
        p.gossip("b", 4, 0, 0);
        p.placed("j", "a", 1, "b", Some("t"));
        p.placed("j", "b", 1, "b", Some("t"));
        p.placed("k", "a", 1, "c", Some("t"));
        p.job_ended("j");
        assert_eq!(p.placed_on("b"), 0);
        assert_eq!(p.room("b"), 4);
        p.node_down("c");
        assert_eq!(p.placed_on("c"), 0);
        assert_eq!(p.finished("k", "a", 1, None), None);
    }

    #[test]
    fn a_move_counts_on_the_new_node_only() {
        let mut p = Placement::new(0);
        p.placed("j", "a", 1, "b", Some("t"));
        p.placed("j", "a", 1, "c", Some("t"));
        assert_eq!((p.placed_on("b"), p.placed_on("c")), (0, 1));
    }

    #[test]
    fn home_first_then_most_room_then_none() {
        let mut p = Placement::new(0);
        let c = names(&["a", "b", "c"]);
        p.gossip("b", 4, 1, 0);
        p.gossip("c", 4, 3, 0);
        let mut turn = 0;
        // Home has room: stays home.
        assert_eq!(p.choose("t", &c, "a", "a", 1, &mut turn), Some("a"));
        // A re-entrant call made on c stays on c while c has room.
        assert_eq!(p.choose("t", &c, "c", "a", 1, &mut turn), Some("c"));
        // Home full: the node with the most room.
        assert_eq!(p.choose("t", &c, "a", "a", 0, &mut turn), Some("b"));
        for s in 0..3 {
            p.placed("j", &s.to_string(), 1, "b", Some("t"));
        }
        p.placed("j", "x", 1, "c", Some("t"));
        // Everyone full: nothing is pushed.
        assert_eq!(p.choose("t", &c, "a", "a", 0, &mut turn), None);
        // a (no gossip yet: one free slot) has the least load per slot.
        assert_eq!(p.least_loaded(&c, &mut turn), Some("a"));
    }

    #[test]
    fn ties_are_taken_in_turn() {
        let p = Placement::new(0);
        let c = names(&["b", "c"]);
        let mut turn = 0;
        let picks: Vec<&str> = (0..4)
            .map(|_| p.choose("t", &c, "a", "a", 0, &mut turn).unwrap_or("none"))
            .collect();
        assert_eq!(picks, ["b", "c", "b", "c"]);
    }

    #[test]
    fn the_prefetch_fills_its_time_budget_at_the_measured_slot_time() {
        let mut p = timed();
        p.gossip("b", 2, 0, 0);
        p.gossip("c", 1, 0, 0);
        assert_eq!(
            p.room_for("b", "t"),
            3,
            "not measured yet: 2 slots + the minimum"
        );
        // Attempts of 10 us on b: 2 slots run 200 of them in 1 ms; the cap holds.
        p.placed("j", "a", 1, "b", Some("t"));
        p.finished("j", "a", 1, Some(10));
        assert_eq!(p.room_for("b", "t"), 2 + 16);
        // Another task on b is not measured: the minimum.
        assert_eq!(p.room_for("b", "slow"), 2 + 1);
        assert_eq!(p.room("b"), 2 + 1);
        // Attempts of 250 us on c: 4 fit in 1 ms on its one slot.
        p.placed("j", "c", 1, "c", Some("t"));
        p.finished("j", "c", 1, Some(250));
        assert_eq!(p.room_for("c", "t"), 1 + 4);
        // Slow attempts of t on b bring it back towards the minimum as they come in.
        for i in 0..60 {
            p.placed("j", &format!("s{i}"), 1, "b", Some("t"));
            p.finished("j", &format!("s{i}"), 1, Some(1_000_000));
        }
        assert_eq!(p.room_for("b", "t"), 2 + 1);
        // A result that did not run (a cancel) says nothing of the slot time.
        p.placed("j", "x", 1, "c", Some("t"));
        p.finished("j", "x", 1, None);
        assert_eq!(p.room_for("c", "t"), 1 + 4);
        // An attempt another node took keeps its task.
        p.placed("j", "y", 1, "b", Some("t"));
        p.placed("j", "y", 1, "c", None);
        p.finished("j", "y", 1, Some(250));
        assert_eq!(p.room_for("c", "t"), 1 + 4);
        // A node that left is measured afresh when it comes back.
        p.node_down("c");
        p.gossip("c", 1, 0, 0);
        assert_eq!(p.room_for("c", "t"), 1 + 1);
    }

    #[test]
    fn rooms_follow_each_task_and_shrink_together() {
        let mut p = timed();
        p.gossip("b", 1, 0, 0);
        p.placed("j", "a", 1, "b", Some("quick"));
        p.finished("j", "a", 1, Some(100));
        let mut rooms = p.rooms("b");
        assert_eq!((rooms.for_task("quick"), rooms.for_task("other")), (11, 2));
        rooms.took_one();
        rooms.took_one();
        assert_eq!((rooms.for_task("quick"), rooms.for_task("other")), (9, 0));
        assert!(rooms.any());
        for _ in 0..9 {
            rooms.took_one();
        }
        assert!(!rooms.any());
    }

    #[test]
    fn quick_work_may_wait_here_and_slow_or_unmeasured_work_may_not() {
        let mut p = timed();
        assert_eq!(p.wait_here("a", "t", 1), 0, "not measured here yet");
        // 100 us attempts: one slot runs 10 in the 1 ms budget, two slots 20 (capped).
        p.ran("a", "t", 100);
        assert_eq!(p.wait_here("a", "t", 1), 10);
        assert_eq!(p.wait_here("a", "t", 2), 16);
        assert_eq!(p.wait_here("a", "other", 1), 0);
        // Attempts longer than the budget: none waits here, however many slots run them.
        for _ in 0..60 {
            p.ran("a", "t", 50_000);
        }
        assert_eq!(p.wait_here("a", "t", 1), 0);
        p.ran("b", "t", 1_500);
        assert_eq!(
            p.wait_here("b", "t", 8),
            0,
            "8 slots run 5 in 1 ms, but one takes longer"
        );
        // A prefetch without a time budget keeps nothing waiting here.
        let mut fixed = Placement::new(1);
        fixed.ran("a", "t", 1);
        assert_eq!(fixed.wait_here("a", "t", 1), 0);
    }

    #[test]
    fn a_fixed_prefetch_ignores_slot_times() {
        let mut p = Placement::new(1);
        p.gossip("b", 1, 0, 0);
        p.placed("j", "a", 1, "b", Some("t"));
        p.finished("j", "a", 1, Some(1));
        assert_eq!(p.room_for("b", "t"), 2);
    }

    #[test]
    fn least_loaded_is_per_slot() {
        let mut p = Placement::new(0);
        p.gossip("b", 8, 4, 0);
        p.gossip("c", 1, 1, 0);
        let c = names(&["b", "c"]);
        assert_eq!(p.least_loaded(&c, &mut 0), Some("b"));
    }
}
