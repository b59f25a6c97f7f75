//! Runs of jobs that their owner gave up because another node took the job over at a
//! newer epoch (see `JobManagerState::stop_run`). An attempt of such a run that still
//! waits here, or arrives late (a `Run` in flight, a dispatch queued behind the stop),
//! must not start: the job may have ended under its new owner, and a step started after
//! the end is work nobody asked for.
//!
//! Kept per job, bounded (the newest [`KEPT`]): an abandoned run matters only while its
//! attempts can still be in flight, seconds after the partition that caused it healed.

use std::collections::{HashMap, VecDeque};

use troupe_runtime::protocol::{AbandonedRun, StepRequest};

/// How many abandoned runs are remembered.
pub(super) const KEPT: usize = 1024;

/// The abandoned runs this node knows of, by job.
#[derive(Debug, Default)]
pub(super) struct AbandonedRuns {
    by_job: HashMap<String, Vec<AbandonedRun>>,
    /// Jobs in the order their first run here was recorded, for the bound.
    order: VecDeque<String>,
}

impl AbandonedRuns {
    /// Records `run`; forgets the oldest job's runs past [`KEPT`].
    pub(super) fn record(&mut self, run: AbandonedRun) {
        let runs = self.by_job.entry(run.job.clone()).or_default();
        if runs.is_empty() {
            self.order.push_back(run.job.clone());
        }
        match runs.iter_mut().find(|r| r.owner == run.owner) {
            Some(r) => r.below_epoch = r.below_epoch.max(run.below_epoch),
            None => runs.push(run),
        }
        while self.order.len() > KEPT {
            if let Some(old) = self.order.pop_front() {
                self.by_job.remove(&old);
            }
        }
    }

    /// Whether `req` is an attempt of a run its owner gave up.
    pub(super) fn voids(&self, req: &StepRequest) -> bool {
        // Most nodes never abandon a run: no hash on the attempt path then.
        !self.by_job.is_empty()
            && self
                .by_job
                .get(&req.job)
                .is_some_and(|runs| runs.iter().any(|r| r.voids(req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(job: &str, owner: &str, epoch: u64) -> StepRequest {
        serde_json::from_value(serde_json::json!({
            "job": job, "step": "s", "attempt": 1, "task": "t", "input": null,
            "deps": {}, "owner": owner, "epoch": epoch,
        }))
        .expect("a valid step request")
    }

    fn run(job: &str, owner: &str, below_epoch: u64) -> AbandonedRun {
        AbandonedRun {
            job: job.into(),
            owner: owner.into(),
            below_epoch,
        }
    }

    /// Only the old owner's attempts at an older epoch are void: the new owner's, and the
    /// same node's at the new epoch, still run.
    #[test]
    fn only_the_given_up_runs_attempts_are_void() {
        let mut a = AbandonedRuns::default();
        assert!(!a.voids(&req("j", "n1", 0)));
        a.record(run("j", "n1", 5));
        assert!(a.voids(&req("j", "n1", 0)));
        assert!(a.voids(&req("j", "n1", 4)));
        assert!(!a.voids(&req("j", "n1", 5)), "the node's own newer run");
        assert!(!a.voids(&req("j", "n2", 0)), "the new owner's attempts");
        assert!(!a.voids(&req("k", "n1", 0)), "another job");
        a.record(run("j", "n1", 3));
        assert!(
            a.voids(&req("j", "n1", 4)),
            "an older record does not lower it"
        );
    }

    #[test]
    fn the_oldest_jobs_are_forgotten_past_the_bound() {
        let mut a = AbandonedRuns::default();
        for i in 0..=KEPT {
            a.record(run(&format!("j{i}"), "n1", 1));
        }
        assert!(!a.voids(&req("j0", "n1", 0)));
        assert!(a.voids(&req("j1", "n1", 0)));
        assert!(a.voids(&req(&format!("j{KEPT}"), "n1", 0)));
        assert_eq!(a.by_job.len(), KEPT);
    }
}
