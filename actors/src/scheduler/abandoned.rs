//! Runs of jobs that a newer run replaced: another node took the job over at a newer
//! epoch (its `JobMoved` reaches every node, and the old owner gives its run up when it
//! learns it, see `JobManagerState::stop_run`). An attempt of such a run that still waits
//! here, or arrives late (a `Run` in flight, a dispatch queued behind the stop), must not
//! start: the job may have ended under its new owner, and a step started after the end
//! is work nobody asked for.
//!
//! Kept per job, bounded (the newest [`KEPT`]): an abandoned run matters only while its
//! attempts can still be in flight, seconds after the partition that caused it healed.

use std::collections::{HashMap, VecDeque};

use troupe_runtime::protocol::{AbandonedRun, StepRequest};

/// How many jobs' abandoned runs are remembered.
pub(super) const KEPT: usize = 1024;

/// The abandoned runs this node knows of: by job, the epoch below which they are void.
#[derive(Debug, Default)]
pub(super) struct AbandonedRuns {
    by_job: HashMap<String, u64>,
    /// Jobs in the order they were first recorded, for the bound.
    order: VecDeque<String>,
}

impl AbandonedRuns {
    /// Records `run`; forgets the oldest job's runs past [`KEPT`].
    pub(super) fn record(&mut self, run: AbandonedRun) {
        match self.by_job.get_mut(&run.job) {
            Some(below) => *below = (*below).max(run.below_epoch),
            None => {
                self.order.push_back(run.job.clone());
                self.by_job.insert(run.job, run.below_epoch);
            }
        }
        while self.order.len() > KEPT {
            if let Some(old) = self.order.pop_front() {
                self.by_job.remove(&old);
            }
        }
    }

    /// Whether `req` is an attempt of a run a newer one replaced.
    pub(super) fn voids(&self, req: &StepRequest) -> bool {
        // Most nodes never see a job move: no hash on the attempt path then.
        !self.by_job.is_empty()
            && self
                .by_job
                .get(&req.job)
                .is_some_and(|below| req.epoch < *below)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(job: &str, epoch: u64) -> StepRequest {
        serde_json::from_value(serde_json::json!({
            "job": job, "step": "s", "attempt": 1, "task": "t", "input": null,
            "deps": {}, "owner": "n1", "epoch": epoch,
        }))
        .expect("a valid step request")
    }

    fn run(job: &str, below_epoch: u64) -> AbandonedRun {
        AbandonedRun {
            job: job.into(),
            below_epoch,
        }
    }

    /// Only attempts of the job's older runs are void: the new run's still start.
    #[test]
    fn only_the_replaced_runs_attempts_are_void() {
        let mut a = AbandonedRuns::default();
        assert!(!a.voids(&req("j", 0)));
        a.record(run("j", 5));
        assert!(a.voids(&req("j", 0)));
        assert!(a.voids(&req("j", 4)));
        assert!(!a.voids(&req("j", 5)), "the new run's attempts");
        assert!(!a.voids(&req("k", 0)), "another job");
        a.record(run("j", 3));
        assert!(a.voids(&req("j", 4)), "an older record does not lower it");
    }

    #[test]
    fn the_oldest_jobs_are_forgotten_past_the_bound() {
        let mut a = AbandonedRuns::default();
        for i in 0..=KEPT {
            a.record(run(&format!("j{i}"), 1));
        }
        assert!(!a.voids(&req("j0", 0)));
        assert!(a.voids(&req("j1", 0)));
        assert!(a.voids(&req(&format!("j{KEPT}"), 0)));
        assert_eq!(a.by_job.len(), KEPT);
    }
}
