//! The silent-peer rules, one behaviour per test, with ticks every gossip interval and a
//! clock that only moves when a test says so.

use super::*;

const SUSPECT: Duration = Duration::from_millis(1000);
const DOWN: Duration = Duration::from_millis(2000);
const GOSSIP: Duration = Duration::from_millis(500);

/// A detector at `t0` that has heard from the `up` peers just now.
fn detector(t0: Instant, up: &[&str]) -> SilenceDetector {
    let mut d = SilenceDetector::new(SUSPECT, DOWN, t0);
    for node in up {
        assert_eq!(d.heard(node, t0, NodeState::Up), None);
    }
    d
}

/// Ticks every gossip interval after `from` up to `until` (included), gathering what the
/// rounds found.
fn ticks(d: &mut SilenceDetector, from: Instant, until: Instant) -> Vec<Transition> {
    let mut found = Vec::new();
    let mut now = from;
    while now + GOSSIP <= until {
        now += GOSSIP;
        match d.tick(now) {
            Round::Judged(t) => found.extend(t),
            Round::Stalled { late_by } => panic!("a regular tick stalled by {late_by:?}"),
        }
    }
    found
}

fn suspect(node: &str, silent: Duration) -> Transition {
    Transition::Suspect {
        node: node.into(),
        silent,
    }
}

fn down(node: &str, silent: Duration) -> Transition {
    Transition::Down {
        node: node.into(),
        silent,
    }
}

/// A peer that keeps gossiping is never judged.
#[test]
fn a_peer_heard_every_round_stays_up() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2"]);
    for round in 1..=20 {
        let now = t0 + GOSSIP * round;
        assert_eq!(d.heard("n2", now, NodeState::Up), None);
        assert_eq!(d.tick(now), Round::Judged(Vec::new()));
    }
}

/// Silent for `suspect_after_ms`, a peer is suspect; once.
#[test]
fn a_peer_silent_for_the_suspect_time_is_suspect() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2", "n3"]);
    for round in 1..=3 {
        let now = t0 + GOSSIP * round;
        d.heard("n3", now, NodeState::Up);
        let expected = if round == 2 {
            vec![suspect("n2", SUSPECT)]
        } else {
            Vec::new()
        };
        assert_eq!(d.tick(now), Round::Judged(expected), "round {round}");
    }
}

/// Silent for `down_after_ms`, a peer is down; then it is not judged again.
#[test]
fn a_peer_silent_for_the_down_time_is_down() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2"]);
    assert_eq!(
        ticks(&mut d, t0, t0 + DOWN * 3),
        vec![suspect("n2", SUSPECT), down("n2", DOWN)]
    );
}

/// A draining peer is never suspect (it says it is leaving), but silent for the down
/// time it is down.
#[test]
fn a_silent_draining_peer_goes_down_without_being_suspect() {
    let t0 = Instant::now();
    let mut d = detector(t0, &[]);
    d.heard("n2", t0, NodeState::Draining);
    assert_eq!(ticks(&mut d, t0, t0 + DOWN), vec![down("n2", DOWN)]);
}

/// A suspect peer heard again on a live connection has recovered, with how long it was
/// silent; its clock starts again.
#[test]
fn a_suspect_peer_heard_again_has_recovered() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2"]);
    assert_eq!(
        ticks(&mut d, t0, t0 + SUSPECT),
        vec![suspect("n2", SUSPECT)]
    );
    let back = t0 + SUSPECT + Duration::from_millis(300);
    assert_eq!(
        d.heard("n2", back, NodeState::Up),
        Some(Transition::Recovered {
            node: "n2".into(),
            silent: SUSPECT + Duration::from_millis(300)
        })
    );
    assert_eq!(d.heard("n2", back, NodeState::Up), None);
    assert_eq!(d.tick(t0 + SUSPECT + GOSSIP), Round::Judged(Vec::new()));
}

/// A suspect peer heard while its connection is gone, or while it drains, has not
/// recovered (the membership actor makes it down or draining).
#[test]
fn a_suspect_peer_heard_without_a_connection_has_not_recovered() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2", "n3"]);
    ticks(&mut d, t0, t0 + SUSPECT);
    let later = t0 + SUSPECT + Duration::from_millis(100);
    assert_eq!(d.heard("n2", later, NodeState::Down), None);
    assert_eq!(d.heard("n3", later, NodeState::Draining), None);
}

/// A peer marked down by its connection closing is not judged until heard from again,
/// and coming back from down is not a recovery.
#[test]
fn a_peer_down_by_its_connection_is_not_judged() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2"]);
    d.down("n2");
    assert_eq!(ticks(&mut d, t0, t0 + DOWN * 2), Vec::new());
    let back = t0 + DOWN * 2 + Duration::from_millis(100);
    assert_eq!(d.heard("n2", back, NodeState::Up), None);
    // Judged again from then: suspect at the first tick 1 s after it was heard.
    assert_eq!(
        ticks(
            &mut d,
            t0 + DOWN * 2,
            t0 + DOWN * 2 + Duration::from_millis(1500)
        ),
        vec![suspect("n2", Duration::from_millis(1400))]
    );
}

/// A late own tick (this node starved or paused) accuses nobody and restarts every
/// peer's clock: the peers get the full deadlines again from then.
#[test]
fn a_late_own_tick_accuses_nobody_and_restarts_the_clocks() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2", "n3"]);
    // This node freezes for five seconds: far past both deadlines.
    let thawed = t0 + Duration::from_secs(5);
    assert_eq!(
        d.tick(thawed),
        Round::Stalled {
            late_by: Duration::from_secs(5)
        }
    );
    // n3 gossips again; n2 stays silent and is judged from the thaw, not from t0.
    let mut found = Vec::new();
    for round in 1..=4 {
        let now = thawed + GOSSIP * round;
        d.heard("n3", now, NodeState::Up);
        if let Round::Judged(t) = d.tick(now) {
            found.extend(t);
        }
    }
    assert_eq!(found, vec![suspect("n2", SUSPECT), down("n2", DOWN)]);
}

/// A tick late by less than the suspect time is an ordinary round.
#[test]
fn a_tick_late_by_less_than_the_suspect_time_judges_as_usual() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2"]);
    let now = t0 + SUSPECT - Duration::from_millis(1);
    assert_eq!(d.tick(now), Round::Judged(Vec::new()));
    let now = now + SUSPECT - Duration::from_millis(1);
    assert_eq!(
        d.tick(now),
        Round::Judged(vec![suspect("n2", SUSPECT * 2 - Duration::from_millis(2))])
    );
}

/// A forgotten peer is no longer judged.
#[test]
fn a_forgotten_peer_is_not_judged() {
    let t0 = Instant::now();
    let mut d = detector(t0, &["n2"]);
    d.forget("n2");
    assert_eq!(ticks(&mut d, t0, t0 + DOWN * 2), Vec::new());
}
