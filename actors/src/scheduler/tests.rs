//! The scheduler on its own: a node with no peers, attempts started by a launcher that
//! records them (and holds their slots until a test ends them).

use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use troupe_runtime::config::{NodeConfig, TaskLimit};
use troupe_runtime::protocol::{AttemptRef, StepRequest};
use troupe_runtime::TaskRegistry;

use super::{attempt_of, Scheduler};
use crate::ClusterView;

/// What the test launcher saw: each started attempt's step, its slot, its cancel token.
type Started = Arc<Mutex<Vec<(String, Option<OwnedSemaphorePermit>, CancellationToken)>>>;

fn scheduler(node: &str, slots: usize, limits: Vec<TaskLimit>) -> (Arc<Scheduler>, Started) {
    let config = NodeConfig {
        name: node.to_string(),
        slots,
        task_limits: limits,
        ..NodeConfig::default()
    };
    let started: Started = Arc::default();
    let seen = started.clone();
    let launch = Box::new(
        move |_: &Arc<Scheduler>, req: StepRequest, slot: OwnedSemaphorePermit, cancel| {
            seen.lock()
                .expect("test lock")
                .push((req.step, Some(slot), cancel));
        },
    );
    let view = Arc::new(ClusterView::new(node));
    let s = Scheduler::new(view, Arc::new(config), TaskRegistry::new(), launch);
    (s, started)
}

/// An attempt of `task` for step `step` of job `j`, owned by node `a`, new or continuing.
fn request(step: &str, task: &str, continuing: bool) -> StepRequest {
    serde_json::from_value(json!({
        "job": "j", "step": step, "attempt": 1, "task": task, "input": null,
        "deps": {}, "owner": "a",
        "stage": if continuing { "continuing" } else { "new" },
    }))
    .expect("a valid step request")
}

fn steps(started: &Started) -> Vec<String> {
    let s = started.lock().expect("test lock");
    s.iter().map(|(step, _, _)| step.clone()).collect()
}

/// Ends the attempt of `step` as the worker pool does: gives its slot back.
fn end(s: &Arc<Scheduler>, started: &Started, step: &str, task: &str) {
    let slot = {
        let mut v = started.lock().expect("test lock");
        let e = v.iter_mut().find(|(st, _, _)| st == step).expect("started");
        e.1.take()
    };
    let a = attempt_of(&request(step, task, false));
    s.attempt_ended(&a, task, slot, None);
}

/// Attempts start while slots are free; the others wait, and the next slot goes to
/// continuing work before new work.
#[test]
fn attempts_start_while_slots_are_free_and_the_rest_wait_in_lane_order() {
    let (s, started) = scheduler("a", 1, Vec::new());
    s.enqueue(request("first", "t", false));
    s.enqueue(request("new", "t", false));
    s.enqueue(request("continuing", "t", true));
    assert_eq!(steps(&started), ["first"]);
    assert_eq!((s.busy(), s.waiting(), s.running()), (1, 2, 1));
    assert_eq!(s.depths().iter().sum::<usize>(), 2);
    end(&s, &started, "first", "t");
    assert_eq!(steps(&started), ["first", "continuing"]);
    assert_eq!((s.busy(), s.waiting(), s.running()), (1, 1, 1));
}

/// A cancel drops a waiting attempt from the lanes, fires a running one's token, and
/// says when the attempt is neither.
#[test]
fn cancel_drops_a_waiting_attempt_and_stops_a_running_one() {
    let (s, started) = scheduler("a", 1, Vec::new());
    s.enqueue(request("running", "t", false));
    s.enqueue(request("waiting", "t", false));
    assert!(s.cancel(&attempt_of(&request("waiting", "t", false))));
    assert_eq!(s.waiting(), 0);
    assert!(s.cancel(&attempt_of(&request("running", "t", false))));
    assert!(started.lock().expect("test lock")[0].2.is_cancelled());
    let unknown = AttemptRef {
        job: "j".into(),
        step: "other".into(),
        attempt: 1,
    };
    assert!(!s.cancel(&unknown));
}

/// A run the job's new owner replaced (the job was taken over): its waiting attempt is
/// dropped, its running one stopped, a late one refused; the new run's attempts still run.
#[test]
fn an_abandoned_runs_attempts_stop_and_late_ones_are_refused() {
    let (s, started) = scheduler("a", 1, Vec::new());
    s.enqueue(request("running", "t", false));
    s.enqueue(request("waiting", "t", false));
    s.abandon(troupe_runtime::protocol::AbandonedRun {
        job: "j".into(),
        below_epoch: 1,
    });
    assert!(started.lock().expect("test lock")[0].2.is_cancelled());
    end(&s, &started, "running", "t");
    assert_eq!(s.waiting(), 0, "the waiting attempt left the lanes");
    s.enqueue(request("late", "t", false));
    assert_eq!(
        steps(&started),
        ["running"],
        "neither the waiting nor the late attempt started"
    );
    let mut successor = request("again", "t", false);
    successor.owner = "b".into();
    successor.epoch = 1;
    s.enqueue(successor);
    assert_eq!(steps(&started), ["running", "again"]);
}

/// A leaving node takes every waiting attempt out (to hand back) and stops what runs,
/// knowing each attempt's owner.
#[test]
fn a_leaving_node_empties_its_lanes_and_stops_what_runs() {
    let (s, started) = scheduler("a", 1, Vec::new());
    s.enqueue(request("running", "t", false));
    s.enqueue(request("waiting", "t", false));
    let waiting: Vec<String> = s.take_waiting().into_iter().map(|r| r.step).collect();
    assert_eq!(waiting, ["waiting"]);
    assert_eq!(s.waiting(), 0);
    let stopped = s.stop_running();
    assert_eq!(stopped.len(), 1);
    assert_eq!(
        (stopped[0].0.step.as_str(), stopped[0].1.as_str()),
        ("running", "a")
    );
    assert!(started.lock().expect("test lock")[0].2.is_cancelled());
}

/// A task at its concurrency limit waits without holding back other tasks behind it,
/// and the node says it is saturated for that task.
#[test]
fn a_task_at_its_limit_does_not_hold_back_other_tasks() {
    let limit = TaskLimit {
        task: "slow".into(),
        max_per_node: Some(1),
        max_in_cluster: None,
        rate_per_s: None,
    };
    let (s, started) = scheduler("limits-node", 3, vec![limit]);
    s.enqueue(request("slow-1", "slow", false));
    s.enqueue(request("slow-2", "slow", false));
    s.enqueue(request("fast", "fast", false));
    assert_eq!(steps(&started), ["slow-1", "fast"]);
    assert_eq!(s.waiting(), 1);
    assert_eq!(s.saturated_tasks(), ["slow"]);
    end(&s, &started, "slow-1", "slow");
    assert_eq!(steps(&started), ["slow-1", "fast", "slow-2"]);
}

/// Admission counts this node's waiting attempts and its live peers' as gossiped, not
/// those of a peer that went down.
#[test]
fn waiting_in_cluster_counts_this_node_and_its_live_peers() {
    let (s, _started) = scheduler("a", 1, Vec::new());
    s.enqueue(request("running", "t", false));
    s.enqueue(request("waiting", "t", false));
    s.view.set_peer_waiting("b", 3);
    s.view.set_peer_waiting("c", 4);
    s.view.set_down("c", true);
    assert_eq!(s.waiting_in_cluster(), 1 + 3);
}

/// Asked which attempts it holds, a node answers those neither running nor waiting
/// here, and refuses them if they arrive later; the ones it holds are not fenced.
#[test]
fn attempts_a_node_says_it_does_not_hold_are_refused_when_they_arrive() {
    let (s, started) = scheduler("a", 1, Vec::new());
    s.enqueue(request("running", "t", false));
    s.enqueue(request("waiting", "t", false));
    let asked: Vec<AttemptRef> = ["running", "waiting", "lost", "late"]
        .iter()
        .map(|step| attempt_of(&request(step, "t", false)))
        .collect();
    let unheld = s.unheld(asked.clone());
    assert_eq!(unheld, asked[2..].to_vec());
    // The message that was thought lost arrives after all: it does not start or wait.
    s.enqueue(request("late", "t", false));
    assert_eq!(s.waiting(), 1);
    end(&s, &started, "running", "t");
    assert_eq!(steps(&started), ["running", "waiting"]);
    assert_eq!(s.waiting(), 0);
    // Asked again: the one that finished is not held either.
    assert_eq!(s.unheld(asked[..1].to_vec()), asked[..1].to_vec());
}

/// An attempt that finished while its owner was unreachable, its result held here to be
/// offered again, is held: the owner asking must not run it a second time.
#[test]
fn an_attempt_whose_result_waits_for_its_owner_is_held() {
    let (s, _started) = scheduler("a", 1, Vec::new());
    let done = attempt_of(&request("done", "t", false));
    let gone = attempt_of(&request("gone", "t", false));
    crate::locked(&s.view.held_results).insert(done.clone());
    assert_eq!(s.unheld(vec![done.clone(), gone.clone()]), vec![gone]);
    // Delivered: no longer held.
    crate::locked(&s.view.held_results).remove(&done);
    assert_eq!(s.unheld(vec![done.clone()]), vec![done]);
}

/// A quick call made by an attempt running here may wait here for a slot (its round trip
/// to a peer would take longer than running it); slow or unmeasured work, other work, and
/// any work while a slow attempt holds a slot here take only the free slots.
#[test]
fn quick_calls_made_here_may_wait_here_while_what_runs_here_is_quick() {
    let (s, started) = scheduler("a", 2, Vec::new());
    let called_here = |step: &str, task: &str| {
        let mut r = request(step, task, true);
        r.near = Some("a".into());
        r
    };
    s.enqueue(request("caller", "quick", false));
    assert_eq!(steps(&started), ["caller"]);
    assert_eq!(
        s.local_room(&called_here("c1", "quick")),
        1,
        "not measured yet: the free slot"
    );
    // 100 us attempts: two slots run 16 (the cap) in the 1 ms budget.
    s.attempt_ended(
        &attempt_of(&request("m1", "quick", false)),
        "quick",
        None,
        Some(100),
    );
    assert_eq!(s.local_room(&called_here("c1", "quick")), 1 + 16);
    assert_eq!(
        s.local_room(&request("c1", "quick", true)),
        1,
        "not made by an attempt here"
    );
    let mut elsewhere = called_here("c1", "quick");
    elsewhere.near = Some("b".into());
    assert_eq!(
        s.local_room(&elsewhere),
        1,
        "made by an attempt on another node"
    );
    // A slow attempt takes the other slot: nothing waits here any more.
    s.attempt_ended(
        &attempt_of(&request("m2", "slow", false)),
        "slow",
        None,
        Some(50_000),
    );
    s.enqueue(request("long", "slow", false));
    assert_eq!(steps(&started), ["caller", "long"]);
    assert_eq!(s.local_room(&called_here("c1", "quick")), 0);
    end(&s, &started, "long", "slow");
    assert_eq!(s.local_room(&called_here("c1", "quick")), 1 + 16);
}
