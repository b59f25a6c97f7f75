//! The invariants, judged on what the simulated cluster does as it does it.
//!
//! The checker sees every decision of the core group and every report of a node
//! ([`Obs`]), and after every step of the world the runs each live node holds. It keeps
//! only what a rule needs, so checking after every step stays cheap.

use std::collections::{BTreeMap, BTreeSet};

use troupe_runtime::vocab::JobId;

use super::wire::Obs;

/// What one job went through, as far as the rules care.
#[derive(Debug, Default)]
struct JobHistory {
    /// Epochs the core group granted, in order, with the node each went to.
    grants: Vec<(u64, String)>,
    /// The end that counts: node, epoch, status in short.
    end: Option<(String, u64, String)>,
    /// Steps whose end the watchers were told of, per epoch.
    steps: BTreeSet<(u64, String)>,
}

/// What one keyed actor went through.
#[derive(Debug, Default)]
struct ActorHistory {
    /// Adds acknowledged, with the epoch of the activation that did.
    acked: BTreeMap<u64, u64>,
    /// The newest activation: its epoch and the adds it started from.
    newest: Option<(u64, BTreeSet<u64>)>,
}

/// The invariant checker of one run.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    jobs: BTreeMap<String, JobHistory>,
    actors: BTreeMap<String, ActorHistory>,
    /// Leases the core group granted: actor -> the newest epoch.
    leases: BTreeMap<String, u64>,
}

impl Checker {
    /// A node reported `obs`.
    pub(crate) fn observe(&mut self, obs: &Obs) -> Result<(), String> {
        match obs {
            Obs::Accepted { job } => {
                self.jobs.entry(job.clone()).or_default();
                Ok(())
            }
            Obs::StepEnded { job, epoch, step } => {
                let h = self.jobs.entry(job.clone()).or_default();
                if !h.steps.insert((*epoch, step.clone())) {
                    return Err(format!(
                        "{job}: step {step} ended twice in the run at epoch {epoch}"
                    ));
                }
                Ok(())
            }
            Obs::Published {
                job,
                node,
                epoch,
                summary,
            } => self.ended(job, node, *epoch, summary),
            Obs::Activated { actor, epoch, adds } => {
                let h = self.actors.entry(actor.clone()).or_default();
                let adds: BTreeSet<u64> = adds.iter().copied().collect();
                if let Some((add, e)) = h.acked.iter().find(|(a, _)| !adds.contains(a)) {
                    return Err(format!(
                        "{actor}: the activation at epoch {epoch} started without add {add}, \
                         acknowledged at epoch {e}: an acknowledged update is lost"
                    ));
                }
                if h.newest.as_ref().is_none_or(|(n, _)| *n < *epoch) {
                    h.newest = Some((*epoch, adds));
                }
                Ok(())
            }
            Obs::AddAcked { actor, add, epoch } => {
                let h = self.actors.entry(actor.clone()).or_default();
                if let Some((newer, adds)) = &h.newest {
                    if newer > epoch && !adds.contains(add) {
                        return Err(format!(
                            "{actor}: add {add} acknowledged at epoch {epoch} after the \
                             activation at epoch {newer} started without it: it is lost"
                        ));
                    }
                }
                h.acked.insert(*add, *epoch);
                Ok(())
            }
        }
    }

    /// At the end of a run: the newest state of each actor anywhere holds every add it
    /// acknowledged (`newest`: the adds of the newest saved state of each actor).
    pub(crate) fn nothing_lost(
        &self,
        newest: &BTreeMap<String, BTreeSet<u64>>,
    ) -> Result<(), String> {
        for (actor, h) in &self.actors {
            let empty = BTreeSet::new();
            let held = newest.get(actor).unwrap_or(&empty);
            if let Some((add, e)) = h.acked.iter().find(|(a, _)| !held.contains(a)) {
                return Err(format!(
                    "{actor}: add {add}, acknowledged at epoch {e}, is in no newest state"
                ));
            }
        }
        Ok(())
    }

    /// How many adds were acknowledged.
    pub(crate) fn acked(&self) -> usize {
        self.actors.values().map(|h| h.acked.len()).sum()
    }

    /// The end of `job` by `node` at `epoch` counts now.
    pub(crate) fn ended(
        &mut self,
        job: &str,
        node: &str,
        epoch: u64,
        summary: &str,
    ) -> Result<(), String> {
        let h = self.jobs.entry(job.to_string()).or_default();
        if let Some((n, e, s)) = &h.end {
            if n != node || *e != epoch {
                return Err(format!(
                    "{job} ended twice: by {n} at epoch {e} ({s}), then by {node} at epoch \
                     {epoch} ({summary})"
                ));
            }
            return Ok(());
        }
        if let Some((newer, holder)) = h.grants.iter().rev().find(|(g, _)| *g > epoch) {
            return Err(format!(
                "{job} ended by {node} at epoch {epoch}, after {holder} took it over at \
                 epoch {newer}"
            ));
        }
        h.end = Some((node.to_string(), epoch, summary.to_string()));
        Ok(())
    }

    /// The core group handed `job` to `node` at `epoch`.
    pub(crate) fn granted(&mut self, job: &str, node: &str, epoch: u64) -> Result<(), String> {
        let h = self.jobs.entry(job.to_string()).or_default();
        if let Some((n, e, s)) = &h.end {
            return Err(format!(
                "{job} taken over by {node} at epoch {epoch} after it ended (by {n} at \
                 epoch {e}: {s})"
            ));
        }
        if let Some((last, _)) = h.grants.last() {
            if *last >= epoch {
                return Err(format!(
                    "{job}: epoch {epoch} granted after epoch {last}: epochs must grow"
                ));
            }
        }
        h.grants.push((epoch, node.to_string()));
        Ok(())
    }

    /// The core group granted the lease of `actor` at `epoch`.
    pub(crate) fn leased(&mut self, actor: &str, epoch: u64) -> Result<(), String> {
        let last = self.leases.entry(actor.to_string()).or_default();
        if *last >= epoch {
            return Err(format!(
                "{actor}: lease epoch {epoch} granted after epoch {last}"
            ));
        }
        *last = epoch;
        Ok(())
    }

    /// Node `node` runs `job` at `epoch`: that epoch must be its own (one owner per epoch).
    pub(crate) fn runs(&self, node: &str, job: &str, epoch: u64) -> Result<(), String> {
        let owner = if epoch == 0 {
            JobId::owner_of(job).map(str::to_string)
        } else {
            self.jobs.get(job).and_then(|h| {
                h.grants
                    .iter()
                    .find(|(e, _)| *e == epoch)
                    .map(|(_, n)| n.clone())
            })
        };
        if owner.as_deref() != Some(node) {
            return Err(format!(
                "{node} runs {job} at epoch {epoch}, which the core group gave to {owner:?}"
            ));
        }
        Ok(())
    }

    /// At the end of a run (faults healed, time to settle): every accepted job ended.
    pub(crate) fn all_ended(&self) -> Result<(), String> {
        let open: Vec<&String> = self
            .jobs
            .iter()
            .filter(|(_, h)| h.end.is_none())
            .map(|(j, _)| j)
            .collect();
        if open.is_empty() {
            Ok(())
        } else {
            Err(format!("accepted jobs that never ended: {open:?}"))
        }
    }

    /// How many jobs were accepted.
    pub(crate) fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// How many takeovers were granted.
    pub(crate) fn takeovers(&self) -> usize {
        self.jobs.values().map(|h| h.grants.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_end_or_a_takeover_after_the_end_is_caught() {
        let mut c = Checker::default();
        c.observe(&Obs::Accepted {
            job: "n1-1-1".into(),
        })
        .unwrap();
        c.granted("n1-1-1", "n2", 5).unwrap();
        assert!(c.runs("n2", "n1-1-1", 5).is_ok());
        assert!(c.runs("n3", "n1-1-1", 5).is_err());
        assert!(c.runs("n1", "n1-1-1", 0).is_ok());
        assert!(c.granted("n1-1-1", "n3", 4).is_err(), "epochs grow");
        assert!(c.ended("n1-1-1", "n1", 0, "x").is_err(), "a fenced owner");
        c.ended("n1-1-1", "n2", 5, "ok").unwrap();
        c.ended("n1-1-1", "n2", 5, "ok").unwrap();
        assert!(c.granted("n1-1-1", "n3", 9).is_err());
        assert!(c.all_ended().is_ok());
        assert!(c.leased("a/k", 3).is_ok());
        assert!(c.leased("a/k", 3).is_err());
    }
}
