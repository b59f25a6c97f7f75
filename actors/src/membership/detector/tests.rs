//! The probing rules, one behaviour per test, with a tick every half gossip interval and
//! a clock that only moves when a test says so.

use super::*;

const SUSPECT: Duration = Duration::from_millis(1000);
const DOWN: Duration = Duration::from_millis(2000);
const GOSSIP: Duration = Duration::from_millis(500);
const TICK: Duration = Duration::from_millis(250);

/// A detector at `t0` that has heard from the `up` peers just now.
fn detector(t0: Instant, up: &[&str]) -> ProbeDetector {
    let mut d = ProbeDetector::seeded(GOSSIP, SUSPECT, DOWN, t0, 7);
    for node in up {
        assert_eq!(d.heard(node, t0, NodeState::Up), None);
    }
    d
}

/// One regular tick at `now`.
fn tick(d: &mut ProbeDetector, now: Instant) -> Vec<Transition> {
    match d.tick(now) {
        Round::Judged(t) => t,
        Round::Stalled { late_by } => panic!("a regular tick stalled by {late_by:?}"),
    }
}

/// The peer this round probes, if any.
fn probed(found: &[Transition]) -> Option<String> {
    found.iter().find_map(|t| match t {
        Transition::Probe { node } => Some(node.clone()),
        _ => None,
    })
}

/// Ticks from `from` (excluded) to `until` (included), answering every probe except
/// those of `silent` at once; returns everything but the probes, and when each came.
fn run(
    d: &mut ProbeDetector,
    from: Instant,
    until: Instant,
    silent: &str,
) -> Vec<(Duration, Transition)> {
    let mut found = Vec::new();
    let mut now = from;
    while now + TICK <= until {
        now += TICK;
        for t in tick(d, now) {
            match t {
                Transition::Probe { node } if node != silent => {
                    d.heard(&node, now, NodeState::Up);
                }
                Transition::Probe { .. } => {}
                other => found.push((now - from, other)),
            }
        }
    }
    found
}

/// Peers that answer are never judged, and each is probed once per pass, one a tick.
#[test]
fn peers_that_answer_stay_up_and_each_is_probed_once_per_pass() {
    let t0 = Instant::now();
    let peers = ["n2", "n3", "n4", "n5"];
    let mut d = detector(t0, &peers);
    let mut now = t0;
    for _pass in 0..5 {
        let mut seen = Vec::new();
        for _ in 0..peers.len() {
            now += TICK;
            let found = tick(&mut d, now);
            let node = probed(&found).expect("a probe each tick");
            assert_eq!(found, vec![Transition::Probe { node: node.clone() }]);
            d.heard(&node, now, NodeState::Up);
            seen.push(node);
        }
        seen.sort();
        assert_eq!(seen, peers, "a pass probes every peer once");
    }
}

/// A probe unanswered for a tick goes through others (not the peer itself); unanswered
/// for the suspect time less an interval the peer is suspect, for the down time less an
/// interval down, each once; a down peer is not probed again.
#[test]
fn an_unanswered_probe_goes_through_others_then_suspect_then_down() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2", "n3", "n4", "n5", "n6"]);
    let first = probed(&tick(&mut d, t0 + TICK)).expect("a probe");
    let found = run(&mut d, t0 + TICK, t0 + Duration::from_secs(10), &first);
    let through: Vec<&Transition> = found
        .iter()
        .map(|(_, t)| t)
        .filter(|t| matches!(t, Transition::ProbeThrough { .. }))
        .collect();
    match through.as_slice() {
        [Transition::ProbeThrough { node, through }] => {
            assert_eq!(node, &first);
            assert_eq!(through.len(), INDIRECT);
            assert!(!through.contains(&first), "{through:?}");
        }
        other => panic!("expected one indirect probe, got {other:?}"),
    }
    let verdicts: Vec<(Duration, Transition)> = found
        .into_iter()
        .filter(|(_, t)| !matches!(t, Transition::ProbeThrough { .. }))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (
                SUSPECT - GOSSIP,
                Transition::Suspect {
                    node: first.clone(),
                    silent: SUSPECT - GOSSIP
                }
            ),
            (
                DOWN - GOSSIP,
                Transition::Down {
                    node: first,
                    silent: DOWN - GOSSIP,
                    confirmed: false
                }
            ),
        ]
    );
}

/// A relay's answer settles the probe: a suspect peer is up again and is not judged.
#[test]
fn an_answer_passed_on_by_a_relay_recovers_a_suspect_peer() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2", "n3"]);
    let first = probed(&tick(&mut d, t0 + TICK)).expect("a probe");
    let at = t0 + TICK + SUSPECT - GOSSIP;
    let found = run(&mut d, t0 + TICK, at, &first);
    assert!(
        found
            .iter()
            .any(|(_, t)| matches!(t, Transition::Suspect { node, .. } if *node == first)),
        "{found:?}"
    );
    assert!(matches!(
        d.answered(&first, at),
        Some(Transition::Recovered { node, .. }) if node == first
    ));
    let later = run(&mut d, at, at + Duration::from_secs(5), "nobody");
    assert_eq!(later, Vec::new());
}

/// A suspect peer heard again straight from it has recovered; heard while its
/// connection is gone (the membership actor makes it down) it has not.
#[test]
fn a_suspect_peer_heard_again_has_recovered() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2"]);
    assert!(d.suspect("n2"), "an up peer becomes suspect when told");
    assert_eq!(
        d.heard("n2", t0 + GOSSIP, NodeState::Up),
        Some(Transition::Recovered {
            node: "n2".into(),
            silent: GOSSIP
        })
    );
    assert!(d.suspect("n2"));
    assert_eq!(d.heard("n2", t0 + GOSSIP, NodeState::Down), None);
}

/// A peer marked down (its connection closed, a verdict) is neither probed nor judged
/// until heard from again, and coming back from down is not a recovery.
#[test]
fn a_down_peer_is_not_probed_until_heard_again() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2", "n3"]);
    d.down("n2");
    let mut now = t0;
    for _ in 0..12 {
        now += TICK;
        let found = tick(&mut d, now);
        assert_eq!(probed(&found).as_deref(), Some("n3"), "{found:?}");
        d.heard("n3", now, NodeState::Up);
    }
    assert_eq!(d.heard("n2", now, NodeState::Up), None);
    let mut targets = Vec::new();
    for _ in 0..2 {
        now += TICK;
        let node = probed(&tick(&mut d, now)).expect("a probe");
        d.heard(&node, now, NodeState::Up);
        targets.push(node);
    }
    targets.sort();
    assert_eq!(targets, ["n2", "n3"]);
}

/// A late own tick (this node starved or paused) probes and accuses nobody and restarts
/// the open probes' clocks: their peers get the full deadlines again from then, stretched
/// by the stall counted against its health.
#[test]
fn a_late_own_tick_accuses_nobody_and_restarts_the_clocks() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2"]);
    assert_eq!(probed(&tick(&mut d, t0 + TICK)).as_deref(), Some("n2"));
    let late = t0 + TICK + Duration::from_secs(3);
    assert_eq!(
        d.tick(late),
        Round::Stalled {
            late_by: Duration::from_secs(3)
        }
    );
    // Unanswered from `late` on: down a whole down time less an interval later, doubled
    // by the stall's count against this node's health (nothing answered in time since).
    assert_eq!(d.health(), 1);
    let found = run(&mut d, late, late + Duration::from_secs(5), "n2");
    let down = found
        .iter()
        .find(|(_, t)| matches!(t, Transition::Down { .. }))
        .map(|(at, _)| *at);
    assert_eq!(down, Some((DOWN - GOSSIP) * 2));
}

/// A node knows it stalled: while the tick due is late past the suspect time (it has not
/// run since the node woke), and for the given time after a tick found it so; not after
/// regular ticks.
#[test]
fn a_node_knows_it_stalled_lately() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2"]);
    tick(&mut d, t0 + TICK);
    assert!(!d.stalled_lately(t0 + TICK * 2, DOWN));
    let woke = t0 + TICK + Duration::from_secs(3);
    assert!(
        d.stalled_lately(woke, DOWN),
        "the late tick has not run yet"
    );
    assert!(matches!(d.tick(woke), Round::Stalled { .. }));
    let mut now = woke;
    while now < woke + DOWN {
        now += TICK;
        let _ = d.tick(now);
        assert_eq!(d.stalled_lately(now, DOWN), now <= woke + DOWN, "{now:?}");
    }
    assert!(!d.stalled_lately(now + TICK / 2, DOWN));
}

/// A forgotten peer is no longer probed.
#[test]
fn a_forgotten_peer_is_not_probed() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2"]);
    d.forget("n2");
    assert_eq!(tick(&mut d, t0 + TICK), Vec::new());
}

/// A peer that speaks only wire version 1 is never probed nor asked to relay: it is
/// judged by its silence, with the configured times, as before probing.
#[test]
fn a_legacy_peer_is_judged_by_its_silence() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2", "n3"]);
    d.set_legacy("n2", true);
    let mut found = Vec::new();
    let mut now = t0;
    while now < t0 + Duration::from_secs(3) {
        now += TICK;
        for t in tick(&mut d, now) {
            match t {
                Transition::Probe { node } => {
                    assert_eq!(node, "n3", "a legacy peer was probed");
                    d.heard(&node, now, NodeState::Up);
                }
                other => found.push((now - t0, other)),
            }
        }
    }
    assert_eq!(
        found,
        vec![
            (
                SUSPECT,
                Transition::Suspect {
                    node: "n2".into(),
                    silent: SUSPECT
                }
            ),
            (
                DOWN,
                Transition::Down {
                    node: "n2".into(),
                    silent: DOWN,
                    confirmed: false
                }
            ),
        ]
    );
}

/// Another node's verdict of down is confirmed by this node's own probe: down half a tick
/// later if that goes unanswered (and counted as confirmed, so not told again), up if it
/// is answered; not even probed if the peer was heard within the last tick.
#[test]
fn a_verdict_from_another_node_is_confirmed_by_a_probe_of_our_own() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2", "n3", "n4"]);
    assert_eq!(
        d.confirm("n2", t0 + TICK / 2),
        None,
        "heard within the last tick: nothing to confirm"
    );
    let at = t0 + TICK;
    if let Some(node) = probed(&tick(&mut d, at)) {
        if node != "n2" {
            d.heard(&node, at, NodeState::Up);
        }
    }
    assert_eq!(d.confirm("n2", at), Some(TICK / 2));
    assert_eq!(d.confirm("nobody", at), None, "an unknown peer");
    assert_eq!(d.confirm_due("n2", at + TICK / 4), None, "not yet");
    assert_eq!(
        d.confirm_due("n2", at + TICK / 2),
        Some(Transition::Down {
            node: "n2".into(),
            silent: TICK / 2,
            confirmed: true
        })
    );
    let found = run(&mut d, at, at + Duration::from_secs(2), "n2");
    assert_eq!(found, Vec::new(), "judged once");
    assert_eq!(
        d.confirm("n2", at + Duration::from_secs(2)),
        None,
        "down here already"
    );

    // A tick later without news from n3 (no tick ran meanwhile), it is probed to confirm.
    let at = at + Duration::from_secs(2) + TICK;
    assert!(d.confirm("n3", at).is_some());
    assert!(matches!(
        d.heard("n3", at + TICK / 2, NodeState::Up),
        Some(Transition::Recovered { node, .. }) if node == "n3"
    ));
    let later = run(&mut d, at + TICK / 2, at + Duration::from_secs(3), "n2");
    assert_eq!(later, Vec::new(), "an answered confirmation judges nobody");
}

/// Local health: each tick late by a whole tick raises the count (to at most
/// MAX_HEALTH), which stretches the suspect and down times; each probe answered in time
/// takes one off.
#[test]
fn local_health_stretches_the_deadlines_while_this_node_is_the_slow_one() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2", "n3", "n4"]);
    let mut now = t0;
    for i in 1..=3 {
        now += TICK * 2;
        let found = tick(&mut d, now);
        assert_eq!(d.health(), i, "a late tick: {found:?}");
        if let Some(node) = probed(&found) {
            // Answered, but a tick late: no credit.
            d.heard(&node, now + TICK, NodeState::Up);
        }
    }
    // n2 goes silent now: with health 3 it is suspect later than SUSPECT - GOSSIP, as the
    // count comes down one answered probe at a time.
    let start = now + TICK;
    let found = run(&mut d, start, start + Duration::from_secs(10), "n2");
    let suspect_at = found
        .iter()
        .find(|(_, t)| matches!(t, Transition::Suspect { node, .. } if node == "n2"))
        .map(|(at, _)| *at)
        .expect("n2 suspect at last");
    assert!(
        suspect_at > SUSPECT,
        "health stretched the suspect time: {suspect_at:?}"
    );
    assert_eq!(d.health(), 0, "answered probes brought the count down");
    for _ in 0..20 {
        d.unhealthy();
    }
    assert_eq!(d.health(), MAX_HEALTH);
}

/// When most probes go unanswered (a saturated machine, not one dead peer), the count
/// climbs and nobody is found down at the plain deadline.
#[test]
fn probes_missed_everywhere_stretch_the_deadlines() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2", "n3", "n4", "n5"]);
    let mut now = t0;
    let mut downs = Vec::new();
    while now < t0 + DOWN * 2 {
        now += TICK;
        for t in tick(&mut d, now) {
            if let Transition::Down { node, .. } = t {
                downs.push((now - t0, node));
            }
        }
    }
    assert!(
        d.health() >= 3,
        "missed probes raised the count: {}",
        d.health()
    );
    assert_eq!(downs, Vec::new(), "nobody down within twice the down time");
}

/// A confirmation the timer missed is judged by the next tick instead.
#[test]
fn a_confirmation_is_judged_by_a_tick_too() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2", "n3"]);
    let at = t0 + TICK;
    assert!(d.confirm("n2", at).is_some());
    let found = run(&mut d, at, at + TICK, "n2");
    assert_eq!(
        found,
        vec![(
            TICK,
            Transition::Down {
                node: "n2".into(),
                silent: TICK,
                confirmed: true
            }
        )]
    );
    assert_eq!(d.confirm_due("n2", at + TICK), None, "judged once");
}
