//! Which client connections wait on which job, and the events that arrived before their
//! connection knew the job's id.
//!
//! A foreground submission learns its job id from the job manager's answer, but the job's
//! first events (or, for a fast job, its end) can reach this node's
//! [`super::clients::GearmanClients`] before that answer reaches the connection. Such
//! events wait here, bounded in number and age, until [`Routes::add`] hands them over.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use troupe_runtime::client::event_job;
use troupe_runtime::JobEvent;

use super::board::ConnId;

/// How long events of a job nobody here waits on are kept.
const KEEP: Duration = Duration::from_secs(10);
/// Jobs with kept events at most (the oldest go first beyond it).
const MAX_KEPT: usize = 10_000;

/// The routes (see the module docs).
#[derive(Debug, Default)]
pub struct Routes {
    by_job: HashMap<String, Vec<ConnId>>,
    kept: HashMap<String, (Instant, Vec<JobEvent>)>,
    /// Jobs of `kept` oldest first, with the time they were kept (an entry whose job was
    /// taken out, or kept again later, is skipped when it comes up).
    kept_order: VecDeque<(Instant, String)>,
}

impl Routes {
    /// A submission on connection `conn` waits on `job`: returns the events it missed. If they hold the
    /// job's end, the job is over for this connection and no route is kept.
    pub fn add(&mut self, job: &str, conn: ConnId) -> Vec<JobEvent> {
        let missed = self
            .kept
            .get(job)
            .map(|(_, e)| e.clone())
            .unwrap_or_default();
        if !missed
            .iter()
            .any(|e| matches!(e, JobEvent::JobFinished { .. }))
        {
            self.kept.remove(job);
            // Once per submission: a connection that submitted the same unique id twice
            // gets each packet twice, as from gearmand (a library waits on both).
            self.by_job.entry(job.to_string()).or_default().push(conn);
        }
        missed
    }

    /// The connections an event goes to; an event nobody waits for yet is kept a while.
    /// The end of a job removes its route. (A submission that coalesced into a job just
    /// as it ended asks the job's status once itself: keeping every end here would cost
    /// a copy of every job's final status.)
    pub fn deliver(&mut self, ev: &JobEvent, now: Instant) -> Vec<ConnId> {
        let job = event_job(ev);
        let conns = if matches!(ev, JobEvent::JobFinished { .. }) {
            self.by_job.remove(job).unwrap_or_default()
        } else {
            self.by_job.get(job).cloned().unwrap_or_default()
        };
        if conns.is_empty() {
            self.keep(job, ev, now);
        }
        conns
    }

    fn keep(&mut self, job: &str, ev: &JobEvent, now: Instant) {
        while let Some((t, j)) = self.kept_order.front() {
            if self.kept.len() < MAX_KEPT
                && self.kept_order.len() <= 2 * MAX_KEPT
                && now.duration_since(*t) < KEEP
            {
                break;
            }
            if self.kept.get(j).is_some_and(|(kt, _)| kt == t) {
                self.kept.remove(j);
            }
            self.kept_order.pop_front();
        }
        let e = self.kept.entry(job.to_string()).or_insert_with(|| {
            self.kept_order.push_back((now, job.to_string()));
            (now, Vec::new())
        });
        e.1.push(ev.clone());
    }

    /// A connection closed.
    pub fn drop_conn(&mut self, conn: ConnId) {
        self.by_job.retain(|_, c| {
            c.retain(|&x| x != conn);
            !c.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_runtime::{JobState, JobStatus};

    fn progress(job: &str) -> JobEvent {
        JobEvent::StepProgress {
            job: job.into(),
            step: "gearman".into(),
            numerator: 1,
            denominator: 2,
        }
    }

    fn end(job: &str) -> JobEvent {
        JobEvent::JobFinished {
            status: Box::new(JobStatus {
                id: job.into(),
                name: String::new(),
                state: JobState::Succeeded,
                steps: Default::default(),
                output: None,
                error: None,
                stats: Default::default(),
                elapsed_ms: None,
                submitted_at_ms: 0,
            }),
        }
    }

    #[test]
    fn events_before_the_route_are_handed_over_in_order() {
        let mut r = Routes::default();
        let now = Instant::now();
        assert!(r.deliver(&progress("j"), now).is_empty());
        assert_eq!(r.add("j", 7), vec![progress("j")]);
        assert_eq!(r.deliver(&progress("j"), now), vec![7]);
        assert_eq!(r.deliver(&end("j"), now), vec![7]);
        assert!(r.deliver(&progress("j"), now).is_empty(), "route gone");
    }

    #[test]
    fn an_end_nobody_waited_for_is_handed_to_a_late_joiner_without_a_route() {
        let mut r = Routes::default();
        let now = Instant::now();
        assert!(r.deliver(&end("j"), now).is_empty());
        let missed = r.add("j", 2);
        assert!(matches!(missed.last(), Some(JobEvent::JobFinished { .. })));
        assert!(r.by_job.is_empty());
    }

    #[test]
    fn kept_events_are_bounded() {
        let mut r = Routes::default();
        let now = Instant::now();
        for i in 0..MAX_KEPT + 10 {
            r.deliver(&progress(&format!("j{i}")), now);
        }
        assert!(r.kept.len() <= MAX_KEPT);
        assert!(r.kept_order.len() <= 2 * MAX_KEPT + 1);
        r.add("j0", 1);
        r.drop_conn(1);
        assert!(r.by_job.is_empty());
    }
}
