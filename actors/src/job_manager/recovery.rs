//! Recovery: what a node learns from its own journal when it starts.
//!
//! The journal holds the statuses of jobs that ended (answered as finished), copies of
//! other nodes' jobs (handed to the takeover rules), and this node's jobs that had not
//! ended. Those resume, rebuilt from their inputs, once the core group says which of them
//! another node took over while this one was down (`moved_while_away`): a job taken over
//! is dropped from the journal and not resumed, so it does not run twice. A successor's
//! `JobMoved` (it tells a node that comes up, ended jobs included) drops a job at once
//! (`not_resuming`), whether or not the core group answered.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::core::{CoreCommand, CoreDecision};
use ractor::ActorRef;
use troupe_runtime::protocol::{JobManagerMessage, JobMoved};
use troupe_runtime::vocab::Holder;
use troupe_runtime::wire::Wire;

use super::takeover::taken_from;
use super::JobManagerState;

/// How long a restarted node waits for the core group to say which of its journaled jobs
/// were taken over, once a core group is visible.
const ASK_CORE_FOR: Duration = Duration::from_secs(5);
/// Without a visible core group, how long a restarted node looks for one.
const LOOK_FOR_CORE: Duration = Duration::from_millis(1500);

/// The journaled jobs of this node that another node took over while it was down.
///
/// Waits for the core group's answer for a while only: a node restarted in a cluster
/// whose core group is electing (or lost its majority) must not hold its jobs for ever.
/// What it resumes without the answer is corrected when a successor says it holds the job
/// (`JobMoved`: it tells a node that comes up of the jobs it took from it, ended ones
/// included), which drops a job still waiting to resume (`not_resuming`) or stops its run.
async fn moved_while_away(me: &str, jobs: Vec<String>) -> Vec<JobMoved> {
    let start = Instant::now();
    loop {
        let core_visible =
            !ractor::pg::get_members(&troupe_runtime::protocol::CORE_VOTERS_GROUP.to_string())
                .is_empty();
        if core_visible {
            match crate::core::decide(me, CoreCommand::Owners { jobs: jobs.clone() }).await {
                Ok(CoreDecision::Owners(owners)) => return taken_from(me, jobs, owners),
                Ok(other) => {
                    tracing::warn!(answer = ?other, "unexpected answer from the core group")
                }
                Err(r) => tracing::debug!(reason = %r, "the core group has not answered yet"),
            }
        }
        let limit = if core_visible {
            ASK_CORE_FOR
        } else {
            LOOK_FOR_CORE
        };
        if start.elapsed() >= limit {
            tracing::warn!(jobs = jobs.len(), core_visible, "resuming journaled jobs without word from the core group (none reachable): a job another node took over meanwhile is stopped when its holder says so");
            return Vec::new();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl JobManagerState {
    /// Learns what the journal held: statuses of ended jobs and copies of other nodes'
    /// jobs now; the jobs that had not ended resume once the core group says which of
    /// them are still this node's ([`JobManagerMessage::Resume`] is for users; this comes
    /// back as `ResumeJournaled`).
    pub(super) fn recover_journal(&mut self, myself: &ActorRef<JobManagerMessage>) {
        let Some(rec) = crate::locked(&self.ctx.view.recovered).take() else {
            return;
        };
        let unconfirmed: HashSet<&str> = rec.unconfirmed.iter().map(|(j, _)| j.as_str()).collect();
        for mut st in rec.ended {
            let epoch = rec.ended_epochs.get(&st.id).copied().unwrap_or(0);
            self.takeovers.ended_before_restart(&st.id, epoch);
            self.finished_order.push_back(st.id.clone());
            if unconfirmed.contains(st.id.as_str()) {
                // Not published before the stop: it still runs, for all anyone knows,
                // until the core group records the end (below).
                self.held_ends.insert(st.id.clone(), st.clone());
                st.state = troupe_runtime::JobState::Running;
            }
            self.finished.insert(st.id.clone(), st);
        }
        if let (Some(j), false) = (&self.ctx.journal, rec.unconfirmed.is_empty()) {
            tracing::info!(jobs = rec.unconfirmed.len(), "ends journaled before the restart were not confirmed; the core group records them before they are published");
            super::copies::record_ends_later(
                &self.ctx.config.name,
                rec.unconfirmed,
                j.clone(),
                myself,
            );
        }
        // Jobs of this node's that another node took over before the restart: questions
        // about them go to their holders (a status of this node's own run of such a job,
        // journaled after the move, is not the job's).
        for (job, h) in rec.moved {
            self.takeovers.taken_while_away(JobMoved::new(job, h));
        }
        for c in rec.copies {
            self.takeovers.copy_recovered(
                c.job,
                Holder {
                    node: c.owner,
                    epoch: c.epoch,
                },
            );
        }
        if rec.jobs.is_empty() {
            return;
        }
        let ids: Vec<String> = rec.jobs.iter().map(|(r, _)| r.id.clone()).collect();
        *crate::locked(&self.ctx.view.recovered) = Some(crate::journal::Recovered {
            jobs: rec.jobs,
            ..Default::default()
        });
        let me = self.ctx.config.name.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let moved = moved_while_away(&me, ids).await;
            let _ = myself.cast(JobManagerMessage::ResumeJournaled(Wire::new(moved)));
        });
    }

    /// Starts again the jobs the journal held that had not ended, but those that another
    /// node took over meanwhile (`moved`), which are dropped.
    pub(super) async fn resume_journaled(
        &mut self,
        myself: &ActorRef<JobManagerMessage>,
        moved: Vec<JobMoved>,
    ) {
        let Some(rec) = crate::locked(&self.ctx.view.recovered).take() else {
            return;
        };
        let mut n = 0;
        for (record, inputs) in rec.jobs {
            // Named by the core group, or by a successor since (a `JobMoved`).
            let heard = self
                .takeovers
                .moved_to(&record.id)
                .filter(|h| h.epoch > record.epoch)
                .map(|h| JobMoved {
                    job: record.id.clone(),
                    owner: h.node.clone(),
                    epoch: h.epoch,
                });
            if let Some(m) = moved.iter().find(|m| m.job == record.id).or(heard.as_ref()) {
                tracing::warn!(job = %record.id, owner = %m.owner, epoch = m.epoch, "a journaled job was taken over by another node while this one was down; not resuming it");
                if let Some(j) = &self.ctx.journal {
                    j.drop_job(&record.id, &m.holder());
                }
                self.takeovers.taken_while_away(m.clone());
                continue;
            }
            let seq = inputs.len() as u64;
            let epoch = record.epoch;
            let run = match crate::job_supervisor::replay::replay(
                record,
                inputs,
                Instant::now(),
                troupe_runtime::observe::now_ms(),
            ) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "a journaled job cannot resume");
                    continue;
                }
            };
            let reason = format!(
                "node {} restarted; attempts it had in flight run again",
                self.ctx.view.node
            );
            if self
                .start_supervisor(myself, run, epoch, Some((seq, reason)))
                .await
            {
                n += 1;
            }
        }
        self.count_owned();
        if n > 0 {
            tracing::info!(jobs = n, "resumed jobs from the journal");
        }
    }

    /// A successor says it holds `m.job` (it came up and told this node): a journaled job
    /// still waiting to resume is dropped now, without waiting for the core group.
    pub(super) fn not_resuming(&mut self, m: &JobMoved) {
        let mut recovered = crate::locked(&self.ctx.view.recovered);
        let Some(rec) = recovered.as_mut() else {
            return;
        };
        let before = rec.jobs.len();
        rec.jobs
            .retain(|(record, _)| !(record.id == m.job && record.epoch < m.epoch));
        if rec.jobs.len() == before {
            return;
        }
        drop(recovered);
        tracing::warn!(job = %m.job, owner = %m.owner, epoch = m.epoch, "a journaled job was taken over by another node while this one was down; not resuming it");
        if let Some(j) = &self.ctx.journal {
            j.drop_job(&m.job, &m.holder());
        }
    }
}
