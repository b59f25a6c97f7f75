//! The takeover and fencing rules, one behaviour per test, with no actors and a clock
//! that only moves when a test says so.

use super::*;

const GRACE: Duration = Duration::from_millis(3000);

/// A job id as `owner` names its jobs (`NODE-BOOT-SEQ`).
fn job_of(owner: &str) -> String {
    format!("{owner}-18c0ffee-1")
}

fn holder(node: &str, epoch: u64) -> Holder {
    Holder {
        node: node.into(),
        epoch,
    }
}

fn moved(job: &str, owner: &str, epoch: u64) -> JobMoved {
    JobMoved {
        job: job.into(),
        owner: owner.into(),
        epoch,
    }
}

fn live(nodes: &[&str]) -> HashSet<String> {
    nodes.iter().map(|n| n.to_string()).collect()
}

/// Node `me` keeping a copy of a job of `owner`, sent at epoch 0.
fn keeping_copy(me: &str, owner: &str) -> (Takeovers, String) {
    let mut t = Takeovers::new(me, GRACE, 100);
    let job = job_of(owner);
    assert_eq!(
        t.replica_write(owner, &job, 0, WriteKind::Start),
        WriteVerdict::Keep
    );
    (t, job)
}

fn asks(effects: &[Effect]) -> Vec<&str> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::AskCore { job, .. } => Some(job.as_str()),
            _ => None,
        })
        .collect()
}

/// No ask before the owner has been gone for `takeover_after_ms`; one ask when it has.
#[test]
fn the_core_group_is_asked_once_the_owner_was_gone_for_the_grace_period() {
    let (mut t, job) = keeping_copy("n2", "n1");
    let t0 = Instant::now();
    assert!(t.tick(t0, &live(&["n1", "n2"])).is_empty());
    // The owner is gone from here on: its grace period starts at the first tick that sees it.
    assert!(t
        .tick(t0 + Duration::from_millis(250), &live(&["n2"]))
        .is_empty());
    let just_before = t0 + Duration::from_millis(250) + GRACE - Duration::from_millis(1);
    assert!(t.tick(just_before, &live(&["n2"])).is_empty());
    let at_grace = t0 + Duration::from_millis(250) + GRACE;
    assert_eq!(
        t.tick(at_grace, &live(&["n2"])),
        vec![Effect::AskCore {
            job,
            from: holder("n1", 0)
        }]
    );
}

/// n2 keeps a copy of an n1 job and, n1 gone past the grace, asks for its takeover:
/// the takeovers, the job and when n1 was first missed.
fn asking_for_takeover() -> (Takeovers, String, Instant) {
    let (mut t, job) = keeping_copy("n2", "n1");
    let t0 = Instant::now();
    assert!(t.tick(t0, &live(&["n2"])).is_empty());
    assert_eq!(
        asks(&t.tick(t0 + GRACE, &live(&["n2"]))),
        vec![job.as_str()]
    );
    (t, job, t0)
}

/// While this node's takeover of a job is asked for, the owner's end is neither kept nor
/// acked (the grant may be on its way: the simulation found an end counted by acks while
/// the core group granted the job to the acking node); once denied, it is kept.
#[test]
fn an_end_waits_while_a_takeover_of_the_job_is_asked_for() {
    let (mut t, job, _) = asking_for_takeover();
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::End),
        WriteVerdict::Later
    );
    t.decided(&job, Ok(holder("n1", 0)));
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::End),
        WriteVerdict::Keep
    );
}

/// While an ask is in flight the job is not asked for again.
#[test]
fn a_job_is_not_asked_for_twice_while_an_answer_is_awaited() {
    let (mut t, _, t0) = asking_for_takeover();
    for ms in [250, 500, 10_000] {
        let later = t0 + GRACE + Duration::from_millis(ms);
        assert!(t.tick(later, &live(&["n2"])).is_empty());
    }
}

/// A failed decision (no answer, a refusal) is reported, and the next tick asks again.
#[test]
fn a_failed_decision_is_asked_again_at_the_next_tick() {
    let (mut t, job) = keeping_copy("n2", "n1");
    let t0 = Instant::now();
    t.tick(t0, &live(&["n2"]));
    assert_eq!(
        asks(&t.tick(t0 + GRACE, &live(&["n2"]))),
        vec![job.as_str()]
    );
    assert_eq!(
        t.decided(&job, Err("no leader".into())),
        vec![Effect::Undecided {
            job: job.clone(),
            reason: "no leader".into()
        }]
    );
    let next = t0 + GRACE + Duration::from_millis(250);
    assert_eq!(asks(&t.tick(next, &live(&["n2"]))), vec![job.as_str()]);
}

/// An owner seen live again restarts the grace period: a flapping owner is not taken from.
#[test]
fn an_owner_seen_live_again_restarts_the_grace_period() {
    let (mut t, job) = keeping_copy("n2", "n1");
    let t0 = Instant::now();
    t.tick(t0, &live(&["n2"]));
    t.tick(t0 + GRACE / 2, &live(&["n1", "n2"]));
    let back_gone = t0 + GRACE;
    assert!(t.tick(back_gone, &live(&["n2"])).is_empty());
    assert!(t.tick(back_gone + GRACE / 2, &live(&["n2"])).is_empty());
    assert_eq!(
        asks(&t.tick(back_gone + GRACE, &live(&["n2"]))),
        vec![job.as_str()]
    );
}

/// A live owner is never asked about, however long the copy is kept.
#[test]
fn a_live_owner_keeps_its_job() {
    let (mut t, _job) = keeping_copy("n2", "n1");
    let t0 = Instant::now();
    for s in 0..100 {
        let now = t0 + Duration::from_secs(s);
        assert!(t.tick(now, &live(&["n1", "n2"])).is_empty());
    }
}

/// A copy dropped (the job ended at its owner) is not asked for.
#[test]
fn an_ended_job_is_not_asked_for() {
    let (mut t, job) = keeping_copy("n2", "n1");
    let t0 = Instant::now();
    t.tick(t0, &live(&["n2"]));
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::End),
        WriteVerdict::Keep
    );
    assert!(t.tick(t0 + GRACE, &live(&["n2"])).is_empty());
    assert!(!t.has_copy(&job));
}

/// A grant is adopted: the job runs here at the granted epoch, and its copy is gone.
#[test]
fn a_grant_adopts_the_job_at_the_granted_epoch() {
    let (mut t, job) = keeping_copy("n2", "n1");
    let t0 = Instant::now();
    t.tick(t0, &live(&["n2"]));
    t.tick(t0 + GRACE, &live(&["n2"]));
    assert_eq!(
        t.decided(&job, Ok(holder("n2", 7))),
        vec![Effect::Adopt {
            job: job.clone(),
            epoch: 7
        }]
    );
    // The job manager reads the copy, then starts the run.
    assert_eq!(t.take_copy(&job), Some(holder("n1", 0)));
    t.run_started(&job, 7);
    assert!(t.runs(&job));
    assert!(!t.has_copy(&job));
    // Running it here, the job is not asked for again.
    assert!(t.tick(t0 + GRACE * 3, &live(&["n2"])).is_empty());
}

/// A denial means another node holds the job: the copy is dropped and the move is
/// remembered for routing; nothing runs here.
#[test]
fn a_denial_records_the_move_and_drops_the_older_copy() {
    let (mut t, job) = keeping_copy("n3", "n1");
    let t0 = Instant::now();
    t.tick(t0, &live(&["n3"]));
    t.tick(t0 + GRACE, &live(&["n3"]));
    assert_eq!(
        t.decided(&job, Ok(holder("n2", 7))),
        vec![
            Effect::Denied {
                job: job.clone(),
                holder: holder("n2", 7)
            },
            Effect::ForgetCopy { job: job.clone() },
        ]
    );
    assert_eq!(t.moved_to(&job), Some(&holder("n2", 7)));
    assert!(!t.runs(&job));
    assert!(t.tick(t0 + GRACE * 3, &live(&["n3"])).is_empty());
}

/// A denial that names this node is a grant whose answer was lost: the job is adopted,
/// once; a second such answer while it runs changes nothing.
#[test]
fn a_denial_naming_this_node_adopts_the_job_once() {
    let (mut t, job) = keeping_copy("n2", "n1");
    let t0 = Instant::now();
    t.tick(t0, &live(&["n2"]));
    t.tick(t0 + GRACE, &live(&["n2"]));
    assert_eq!(t.decided(&job, Err("timed out".into())).len(), 1);
    assert_eq!(
        asks(&t.tick(t0 + GRACE * 2, &live(&["n2"]))),
        vec![job.as_str()]
    );
    // The first ask was granted at epoch 7; the retry is told n2 holds it at 7.
    assert_eq!(
        t.decided(&job, Ok(holder("n2", 7))),
        vec![Effect::Adopt {
            job: job.clone(),
            epoch: 7
        }]
    );
    t.take_copy(&job);
    t.run_started(&job, 7);
    assert!(t.decided(&job, Ok(holder("n2", 7))).is_empty());
}

/// A replica write from an epoch older than one this node knows is refused, naming the
/// newer holder; writes at the current epoch are kept.
#[test]
fn a_write_from_an_older_epoch_is_fenced() {
    let (mut t, job) = keeping_copy("n3", "n1");
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::Input),
        WriteVerdict::Keep
    );
    // n2 took the job over at epoch 7 and said so.
    assert_eq!(
        t.job_moved(moved(&job, "n2", 7)),
        vec![Effect::ForgetCopy { job: job.clone() }]
    );
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::Input),
        WriteVerdict::Fenced(holder("n2", 7))
    );
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::End),
        WriteVerdict::Fenced(holder("n2", 7))
    );
    // The new owner's copy (n3 is its replica too) is kept, at the new epoch.
    assert_eq!(
        t.replica_write("n2", &job, 7, WriteKind::Start),
        WriteVerdict::Keep
    );
    assert!(t.has_copy(&job));
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::Start),
        WriteVerdict::Fenced(holder("n2", 7))
    );
}

/// The holder of a job fences writes about it from an older epoch with its own run.
#[test]
fn a_node_running_a_job_it_took_over_fences_the_former_owner() {
    let mut t = Takeovers::new("n2", GRACE, 100);
    let job = job_of("n1");
    t.run_started(&job, 7);
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::Input),
        WriteVerdict::Fenced(holder("n2", 7))
    );
}

/// Once the run of a job taken over has ended here, the former owner's end (it was cut
/// off as its own run ended) is fenced, not acked: two ends must not both count. A
/// repeated end of the copy this node held is kept (acked again).
#[test]
fn the_former_owners_end_is_fenced_after_the_taken_over_run_ended() {
    let (mut t, job) = keeping_copy("n2", "n1");
    t.take_copy(&job);
    t.run_started(&job, 7);
    t.run_ended(&job);
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::End),
        WriteVerdict::Fenced(holder("n2", 7))
    );
    let (mut r, other) = keeping_copy("n3", "n1");
    assert_eq!(
        r.replica_write("n1", &other, 0, WriteKind::End),
        WriteVerdict::Keep
    );
    assert_eq!(
        r.replica_write("n1", &other, 0, WriteKind::End),
        WriteVerdict::Keep
    );
}

/// A move heard with an epoch no newer than this node's run leaves the run alone.
#[test]
fn a_stale_move_does_not_stop_a_newer_run() {
    let mut t = Takeovers::new("n2", GRACE, 100);
    let job = job_of("n1");
    t.run_started(&job, 9);
    assert!(t.job_moved(moved(&job, "n3", 7)).is_empty());
    assert!(t.job_moved(moved(&job, "n3", 9)).is_empty());
    assert!(t.runs(&job));
    // A move naming this node is no news.
    assert!(t.job_moved(moved(&job, "n2", 11)).is_empty());
    assert!(t.runs(&job));
}

/// Remembered moves are bounded: the oldest is forgotten first.
#[test]
fn only_the_newest_moves_are_remembered() {
    let mut t = Takeovers::new("n9", GRACE, 2);
    for seq in 1..=3 {
        t.job_moved(moved(&format!("n1-ab-{seq}"), "n2", 5));
    }
    assert_eq!(t.moved_to("n1-ab-1"), None);
    assert_eq!(t.moved_to("n1-ab-2"), Some(&holder("n2", 5)));
    assert_eq!(t.moved_to("n1-ab-3"), Some(&holder("n2", 5)));
    // An older move does not replace a newer one.
    t.job_moved(moved("n1-ab-3", "n4", 4));
    assert_eq!(t.moved_to("n1-ab-3"), Some(&holder("n2", 5)));
}

/// An old owner that was cut off, not dead, comes back after its job was taken over: the
/// new holder tells it when it comes up, it stops its run and learns the holder, and its
/// journal writes for the job are refused meanwhile.
#[test]
fn an_old_owner_that_comes_back_stops_its_run_and_learns_the_new_holder() {
    let job = job_of("n1");
    // n1 accepted the job and runs it; n2 keeps the copy.
    let mut old = Takeovers::new("n1", GRACE, 100);
    old.run_started(&job, 0);
    let (mut new, copied) = keeping_copy("n2", "n1");
    assert_eq!(copied, job);

    // n1 is cut off; n2 takes the job over at epoch 7.
    let t0 = Instant::now();
    new.tick(t0, &live(&["n2"]));
    new.tick(t0 + GRACE, &live(&["n2"]));
    assert_eq!(
        new.decided(&job, Ok(holder("n2", 7))),
        vec![Effect::Adopt {
            job: job.clone(),
            epoch: 7
        }]
    );
    new.take_copy(&job);
    new.run_started(&job, 7);

    // n1's journal keeps copying to n2: refused, naming n2.
    assert_eq!(
        new.replica_write("n1", &job, 0, WriteKind::Input),
        WriteVerdict::Fenced(holder("n2", 7))
    );
    // n1 comes back: n2 tells it (and only of the jobs taken from it).
    let other = job_of("n3");
    new.run_started(&other, 9);
    new.run_started("n2-18c0ffee-4", 0);
    assert_eq!(
        new.node_up("n1"),
        vec![Effect::TellMoved {
            to: "n1".into(),
            job: job.clone(),
            holder: holder("n2", 7)
        }]
    );
    let expected = moved(&job, "n2", 7);

    // n1 hears it: it stops its run, once, and routes questions to n2.
    assert_eq!(
        old.job_moved(expected.clone()),
        vec![Effect::StopRun {
            job: job.clone(),
            holder: holder("n2", 7)
        }]
    );
    assert!(!old.runs(&job));
    assert_eq!(old.moved_to(&job), Some(&holder("n2", 7)));
    assert!(old.job_moved(expected).is_empty());
    // n1 never asks for the job back: it keeps no copy of it.
    assert!(old.tick(t0 + GRACE * 10, &live(&["n1"])).is_empty());
}

/// An old owner that restarts after its job was taken over does not resume it: the core
/// group's owners name another node, and questions go there.
#[test]
fn an_old_owner_that_restarts_does_not_resume_a_job_taken_over() {
    let taken = job_of("n1");
    let mine = "n1-18c0ffee-2".to_string();
    let granted_back = "n1-18c0ffee-3".to_string();
    let owners = vec![Some(holder("n2", 7)), None, Some(holder("n1", 12))];
    let away = taken_from(
        "n1",
        vec![taken.clone(), mine.clone(), granted_back.clone()],
        owners,
    );
    let away_to: Vec<(&str, &str, u64)> = away
        .iter()
        .map(|m| (m.job.as_str(), m.owner.as_str(), m.epoch))
        .collect();
    assert_eq!(away_to, vec![(taken.as_str(), "n2", 7)]);
    let mut restarted = Takeovers::new("n1", GRACE, 100);
    for m in away {
        restarted.taken_while_away(m);
    }
    assert_eq!(restarted.moved_to(&taken), Some(&holder("n2", 7)));
    assert_eq!(restarted.moved_to(&mine), None);
}

/// A node that took a job over, then was cut off while a third node took it over again,
/// stops its run when it hears of the newer epoch.
#[test]
fn a_run_at_an_older_takeover_epoch_is_stopped_by_a_newer_one() {
    let mut t = Takeovers::new("n2", GRACE, 100);
    let job = job_of("n1");
    t.run_started(&job, 7);
    assert_eq!(
        t.job_moved(moved(&job, "n3", 9)),
        vec![Effect::StopRun {
            job: job.clone(),
            holder: holder("n3", 9)
        }]
    );
    assert!(t.node_up("n1").is_empty());
}

/// Once a job taken over has ended at its new holder, the holder still tells the old
/// owner when it comes back (so a restarted old owner does not resume it), and still
/// fences the old owner's writes, not only a third replica that remembers the move.
#[test]
fn an_old_owner_is_told_of_a_taken_over_job_that_already_ended() {
    let job = job_of("n1");
    let mut new = Takeovers::new("n2", GRACE, 100);
    new.run_started(&job, 7);
    new.run_ended(&job);
    assert_eq!(
        new.node_up("n1"),
        vec![Effect::TellMoved {
            to: "n1".into(),
            job: job.clone(),
            holder: holder("n2", 7)
        }]
    );
    assert_eq!(
        new.replica_write("n1", &job, 0, WriteKind::Input),
        WriteVerdict::Fenced(holder("n2", 7))
    );
    let mut third = Takeovers::new("n3", GRACE, 100);
    third.job_moved(moved(&job, "n2", 7));
    assert_eq!(
        third.replica_write("n1", &job, 0, WriteKind::Input),
        WriteVerdict::Fenced(holder("n2", 7))
    );
    // A job this node accepted itself (epoch 0) is not remembered when it ends.
    let own = "n2-18c0ffee-9";
    new.run_started(own, 0);
    new.run_ended(own);
    assert_eq!(
        new.replica_write("n1", own, 0, WriteKind::Input),
        WriteVerdict::Keep
    );
}

/// Ended takeovers are remembered up to the bound, the oldest forgotten first.
#[test]
fn only_the_newest_ended_takeovers_are_remembered() {
    let mut t = Takeovers::new("n2", GRACE, 2);
    for seq in 1..=3 {
        let job = format!("n1-18c0ffee-{seq}");
        t.run_started(&job, 10 + seq);
        t.run_ended(&job);
    }
    let told: Vec<String> = t
        .node_up("n1")
        .into_iter()
        .filter_map(|e| match e {
            Effect::TellMoved { job, .. } => Some(job),
            _ => None,
        })
        .collect();
    let mut told = told;
    told.sort();
    assert_eq!(told, vec!["n1-18c0ffee-2", "n1-18c0ffee-3"]);
}

/// Copies found in the journal at start are watched like copies sent since: their owner
/// gone for the grace period, they are asked for.
#[test]
fn copies_recovered_from_the_journal_are_asked_for() {
    let mut t = Takeovers::new("n2", GRACE, 100);
    let job = job_of("n1");
    t.copy_recovered(job.clone(), holder("n1", 4));
    let t0 = Instant::now();
    assert!(t.tick(t0, &live(&["n2"])).is_empty());
    assert_eq!(
        t.tick(t0 + GRACE, &live(&["n2"])),
        vec![Effect::AskCore {
            job,
            from: holder("n1", 4)
        }]
    );
}

/// Finding C of the simulation: once a copy's job ended (at the new holder's epoch), a
/// late Start from the old owner's epoch, or a repeated one, does not bring the copy back.
#[test]
fn a_late_start_does_not_bring_back_the_copy_of_an_ended_job() {
    let (mut t, job) = keeping_copy("n3", "n1");
    // n2 took the job over at epoch 57, copied it here, and ended it.
    assert_eq!(
        t.replica_write("n2", &job, 57, WriteKind::Start),
        WriteVerdict::Keep
    );
    assert_eq!(
        t.replica_write("n2", &job, 57, WriteKind::End),
        WriteVerdict::Keep
    );
    assert!(!t.has_copy(&job));
    // The old owner, restarted, writes its epoch-0 Start again; a repeat of n2's arrives.
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::Start),
        WriteVerdict::Fenced(holder("n2", 57))
    );
    assert_eq!(
        t.replica_write("n2", &job, 57, WriteKind::Start),
        WriteVerdict::Fenced(holder("n2", 57))
    );
    assert!(!t.has_copy(&job));
    // An older end does not lower the remembered one.
    t.replica_write("n1", &job, 0, WriteKind::End);
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::Start),
        WriteVerdict::Fenced(holder("n2", 57))
    );
    let t0 = Instant::now();
    t.tick(t0, &live(&["n3"]));
    assert!(t.tick(t0 + GRACE, &live(&["n3"])).is_empty());
}

/// Finding C, at the holder: after this node ran the job at epoch 57 and it ended, the
/// old owner's epoch-0 Start is refused and keeps no copy.
#[test]
fn a_start_from_the_old_owner_after_the_run_here_ended_keeps_no_copy() {
    let job = job_of("n1");
    let mut t = Takeovers::new("n2", GRACE, 100);
    t.run_started(&job, 57);
    t.run_ended(&job);
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::Start),
        WriteVerdict::Fenced(holder("n2", 57))
    );
    assert!(!t.has_copy(&job));
}

/// Ended copies are remembered up to the bound, the oldest forgotten first.
#[test]
fn only_the_newest_ended_copies_are_remembered() {
    let mut t = Takeovers::new("n3", GRACE, 2);
    let jobs: Vec<String> = (1..=3).map(|s| format!("n1-18c0ffee-{s}")).collect();
    for job in &jobs {
        t.replica_write("n2", job, 9, WriteKind::Start);
        t.replica_write("n2", job, 9, WriteKind::End);
    }
    assert_eq!(
        t.replica_write("n1", &jobs[0], 0, WriteKind::Start),
        WriteVerdict::Keep
    );
    for job in &jobs[1..] {
        assert_eq!(
            t.replica_write("n1", job, 0, WriteKind::Start),
            WriteVerdict::Fenced(holder("n2", 9))
        );
    }
}

/// Finding B of the simulation: a takeover granted with its answer lost, then the old
/// owner back: the holder of the copy asks the core group (read-only) until it answers,
/// and adopts the job the answer says it holds.
#[test]
fn a_lost_grant_is_asked_about_again_once_the_owner_is_back() {
    let (mut t, job) = keeping_copy("n2", "n1");
    let t0 = Instant::now();
    t.tick(t0, &live(&["n2"]));
    assert_eq!(
        asks(&t.tick(t0 + GRACE, &live(&["n2"]))),
        vec![job.as_str()]
    );
    assert_eq!(t.decided(&job, Err("timed out".into())).len(), 1);
    // The old owner is back before the next ask: no takeover, but a question.
    let back = live(&["n1", "n2"]);
    let ask = vec![Effect::AskOwner {
        job: job.clone(),
        from: holder("n1", 0),
    }];
    assert_eq!(t.tick(t0 + GRACE * 2, &back), ask);
    // Not asked twice while the question is open; asked again if it gets no answer.
    assert!(t.tick(t0 + GRACE * 3, &back).is_empty());
    assert_eq!(t.decided(&job, Err("timed out".into())).len(), 1);
    assert_eq!(t.tick(t0 + GRACE * 4, &back), ask);
    // The first ask was granted at epoch 7.
    assert_eq!(
        t.decided(&job, Ok(holder("n2", 7))),
        vec![Effect::Adopt {
            job: job.clone(),
            epoch: 7
        }]
    );
    t.take_copy(&job);
    t.run_started(&job, 7);
    assert!(t.tick(t0 + GRACE * 5, &back).is_empty());
}

/// An owner query that finds the job never handed over (the copy's owner named) ends
/// the questions; nothing is adopted or recorded as moved.
#[test]
fn an_answer_naming_the_copys_owner_ends_the_questions() {
    let (mut t, job) = keeping_copy("n2", "n1");
    let t0 = Instant::now();
    t.tick(t0, &live(&["n2"]));
    t.tick(t0 + GRACE, &live(&["n2"]));
    t.decided(&job, Err("timed out".into()));
    let back = live(&["n1", "n2"]);
    assert_eq!(t.tick(t0 + GRACE * 2, &back).len(), 1);
    assert!(t.decided(&job, Ok(holder("n1", 0))).is_empty());
    assert!(t.tick(t0 + GRACE * 3, &back).is_empty());
    assert_eq!(t.moved_to(&job), None);
    assert!(t.has_copy(&job));
}

/// A holder of a copy told that the job moved to itself (a grant whose answer it lost)
/// adopts it, once.
#[test]
fn a_copy_holder_told_it_holds_the_job_adopts_it() {
    let (mut t, job) = keeping_copy("n2", "n1");
    assert_eq!(
        t.job_moved(moved(&job, "n2", 7)),
        vec![Effect::Adopt {
            job: job.clone(),
            epoch: 7
        }]
    );
    t.take_copy(&job);
    t.run_started(&job, 7);
    assert!(t.job_moved(moved(&job, "n2", 7)).is_empty());
}

/// Copies found in the journal at start may have had a takeover asked for before the
/// restart: with their owner live, the core group is asked who holds them.
#[test]
fn copies_recovered_with_their_owner_live_are_asked_about() {
    let mut t = Takeovers::new("n2", GRACE, 100);
    let job = job_of("n1");
    t.copy_recovered(job.clone(), holder("n1", 4));
    let back = live(&["n1", "n2"]);
    let t0 = Instant::now();
    assert_eq!(
        t.tick(t0, &back),
        vec![Effect::AskOwner {
            job: job.clone(),
            from: holder("n1", 4)
        }]
    );
    assert!(t.decided(&job, Ok(holder("n1", 4))).is_empty());
    assert!(t.tick(t0 + GRACE, &back).is_empty());
}

/// A node that ran a job it took over, ended it, and restarted knows only that it ended
/// (the journal keeps the status, not the epoch). A stale copy of it, told or answered
/// that the job is this node's, is dropped, never adopted: that would run it again.
#[test]
fn a_job_that_ended_here_before_a_restart_is_never_adopted_from_a_stale_copy() {
    let job = job_of("n1");
    let mut t = Takeovers::new("n2", GRACE, 100);
    t.ended_before_restart(&job, 0);
    // A late epoch-0 Start from the old owner made a copy after the restart.
    t.copy_recovered(job.clone(), holder("n1", 0));
    assert_eq!(
        t.job_moved(moved(&job, "n2", 57)),
        vec![Effect::ForgetCopy { job: job.clone() }]
    );
    assert!(!t.has_copy(&job));
    t.copy_recovered(job.clone(), holder("n1", 0));
    let back = live(&["n1", "n2"]);
    assert_eq!(asks(&t.tick(Instant::now(), &back)), Vec::<&str>::new());
    assert_eq!(
        t.decided(&job, Ok(holder("n2", 57))),
        vec![Effect::ForgetCopy { job: job.clone() }]
    );
    assert!(!t.has_copy(&job));
    assert!(t.tick(Instant::now(), &back).is_empty());
}

/// An owner that came back knowing nothing of a job (it restarted before its own commit)
/// has the job asked for at once, without the grace period; jobs of other owners, and
/// those asked for already, are not.
#[test]
fn a_job_its_restarted_owner_knows_nothing_of_is_asked_for_at_once() {
    let (mut t, job) = keeping_copy("n2", "n1");
    let other = "n3-18c0ffee-1".to_string();
    assert_eq!(
        t.replica_write("n3", &other, 0, WriteKind::Start),
        WriteVerdict::Keep
    );
    assert_eq!(t.copies_of("n1"), vec![job.clone()]);
    let effects = t.forsaken("n1", &[job.clone(), other.clone()]);
    assert_eq!(
        effects,
        vec![Effect::AskCore {
            job: job.clone(),
            from: holder("n1", 0),
        }]
    );
    assert!(t.forsaken("n1", &[job]).is_empty(), "asked twice");
}

/// A copy whose owner is live is named for a second look at the owner only once it was
/// kept at the look before (a fresh copy's job is still being committed by its owner),
/// grouped by owner; a gone owner's copies are left to the grace period, and a job being
/// asked for is not named.
#[test]
fn copies_held_since_the_last_look_are_named_for_their_live_owners() {
    let (mut t, job) = keeping_copy("n2", "n1");
    assert!(t.long_held(&live(&["n1", "n2"])).is_empty(), "first look");
    let other = "n3-18c0ffee-7".to_string();
    assert_eq!(
        t.replica_write("n3", &other, 0, WriteKind::Start),
        WriteVerdict::Keep
    );
    let named = t.long_held(&live(&["n1", "n2", "n3"]));
    assert_eq!(
        named.into_iter().collect::<Vec<_>>(),
        [("n1".to_string(), vec![job.clone()])],
        "n3's copy is new at this look"
    );
    // n3 gone: its copy waits for the grace period, not for n3's answer.
    let named = t.long_held(&live(&["n1", "n2"]));
    assert_eq!(named.keys().collect::<Vec<_>>(), ["n1"]);
    // Once asked for, a job is not named again.
    assert_eq!(
        asks(&t.forsaken("n1", std::slice::from_ref(&job))),
        [job.as_str()]
    );
    assert!(t.long_held(&live(&["n1", "n2", "n3"])).is_empty());
}

/// An end that came ahead of its owner's write keeps the copy: an owner killed before
/// the write comes back without the job, and forsaken, the copy is taken over. The end
/// sent again once written drops it, and is then refused to a start of the same epoch.
#[test]
fn an_end_ahead_of_the_owners_write_keeps_the_copy_until_the_written_end() {
    let (mut t, job) = keeping_copy("n2", "n1");
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::EndAhead),
        WriteVerdict::Keep
    );
    assert!(t.has_copy(&job), "an end ahead of the write keeps the copy");
    assert_eq!(
        asks(&t.forsaken("n1", std::slice::from_ref(&job))),
        [job.as_str()],
        "an owner back without the job has it taken over from the copy"
    );

    let (mut t, job) = keeping_copy("n2", "n1");
    t.replica_write("n1", &job, 0, WriteKind::EndAhead);
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::End),
        WriteVerdict::Keep
    );
    assert!(!t.has_copy(&job), "the written end drops the copy");
    assert_eq!(
        t.replica_write("n1", &job, 0, WriteKind::EndAhead),
        WriteVerdict::Keep,
        "a late end sent ahead is acked again"
    );
    assert!(!t.has_copy(&job));
    assert!(matches!(
        t.replica_write("n1", &job, 0, WriteKind::Start),
        WriteVerdict::Fenced(_)
    ));
}

/// An owner that says its journal holds a job's end has the stale copy dropped here
/// (only its own copies, and none this node asks for or runs).
#[test]
fn copies_whose_owner_holds_their_end_are_dropped() {
    let (mut t, job) = keeping_copy("n2", "n1");
    t.replica_write("n1", &job, 0, WriteKind::EndAhead);
    assert!(t
        .ended_at_owner("n3", std::slice::from_ref(&job))
        .is_empty());
    assert!(t.has_copy(&job), "n3 is not the copy's owner");
    assert_eq!(
        t.ended_at_owner("n1", std::slice::from_ref(&job)),
        [Effect::ForgetCopy { job: job.clone() }]
    );
    assert!(!t.has_copy(&job));
    assert!(t.copies_of("n1").is_empty());

    let (mut t, job) = keeping_copy("n2", "n1");
    assert_eq!(asks(&t.forsaken("n1", std::slice::from_ref(&job))).len(), 1);
    assert!(
        t.ended_at_owner("n1", std::slice::from_ref(&job))
            .is_empty(),
        "asked for already: the core group decides"
    );
    assert!(t.has_copy(&job));
}
