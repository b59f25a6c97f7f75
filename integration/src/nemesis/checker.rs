//! The checker: pure functions from a recorded [`History`] to the figures of the nemesis
//! line. Each figure is a count of broken promises (except `jobs_acknowledged`), so a run
//! passes when every one is 0. The definitions, also in the bench's module doc:
//!
//! - `jobs_lost`: acknowledged jobs that no one ever saw end (not the submitting client,
//!   not any node asked after the heal and the grace period).
//! - `jobs_ended_twice`: acknowledged jobs with two ends that differ (state or output),
//!   or whose ledger shows a step attempt started after the job was seen ended and
//!   numbered above that end's attempts for the step (a step run again after the end).
//! - `status_disagreements`: jobs that two nodes, asked after the heal, describe with a
//!   different state or output (overlaps `jobs_ended_twice` when one of them is the end
//!   the client saw).
//! - `effects_over_bound`: ledger effects of a step beyond the at-least-once bound
//!   (`max_attempts + limits.max_lost_attempts` per step), summed over steps.
//! - `acked_adds_missing`: per counter key, the larger of (acknowledged adds - final
//!   total) and (acknowledged replies that repeat a total another acknowledged reply
//!   carried: with `n = 1` every add must see its own total, so a repeat is an add that a
//!   second writer or a rollback erased); a key whose total cannot be read after the heal
//!   counts all its acknowledged adds.
//! - `money_delta`: the accounts' sum after the heal minus before (null if unreadable).
//! - `double_owners`: (job or actor key, epoch) pairs that two different nodes claimed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::history::History;

/// The figures of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    /// Jobs whose submission answered an id.
    pub jobs_acknowledged: usize,
    /// Acknowledged jobs never seen ended.
    pub jobs_lost: usize,
    /// Acknowledged jobs with two different ends, or steps run after the end.
    pub jobs_ended_twice: usize,
    /// Jobs two nodes describe differently after the heal.
    pub status_disagreements: usize,
    /// Effects beyond the at-least-once bound.
    pub effects_over_bound: usize,
    /// Acknowledged counter adds not in the final totals.
    pub acked_adds_missing: usize,
    /// Final money minus initial money (`None` if it could not be read).
    pub money_delta: Option<i64>,
    /// (job or key, epoch) claimed by two nodes.
    pub double_owners: usize,
}

impl Figures {
    /// True if every figure but the count of acknowledged jobs is 0.
    pub fn clean(&self) -> bool {
        self.jobs_lost == 0
            && self.jobs_ended_twice == 0
            && self.status_disagreements == 0
            && self.effects_over_bound == 0
            && self.acked_adds_missing == 0
            && self.money_delta == Some(0)
            && self.double_owners == 0
    }
}

/// Computes every figure.
pub fn check(h: &History) -> Figures {
    Figures {
        jobs_acknowledged: h.jobs.iter().filter(|j| j.acked).count(),
        jobs_lost: jobs_lost(h),
        jobs_ended_twice: jobs_ended_twice(h),
        status_disagreements: status_disagreements(h),
        effects_over_bound: effects_over_bound(h),
        acked_adds_missing: acked_adds_missing(h),
        money_delta: match (h.money_before, h.money_after) {
            (Some(b), Some(a)) => Some(a - b),
            _ => None,
        },
        double_owners: double_owners(h),
    }
}

/// Acknowledged jobs with no end seen.
pub fn jobs_lost(h: &History) -> usize {
    h.jobs
        .iter()
        .filter(|j| j.acked && !j.seen.iter().any(|s| s.is_end()))
        .count()
}

/// Acknowledged jobs with two different ends, or a step attempt started after the end.
pub fn jobs_ended_twice(h: &History) -> usize {
    let mut effects: BTreeMap<&str, Vec<&super::history::Effect>> = BTreeMap::new();
    for e in &h.effects {
        effects.entry(e.job.as_str()).or_default().push(e);
    }
    h.jobs
        .iter()
        .filter(|j| j.acked)
        .filter(|j| {
            let ends: Vec<_> = j.seen.iter().filter(|s| s.is_end()).collect();
            let Some(first) = ends.first() else {
                return false;
            };
            let differ = ends
                .iter()
                .any(|e| e.state != first.state || e.output != first.output);
            let ran_after = effects.get(j.id.as_str()).is_some_and(|es| {
                es.iter().any(|e| {
                    e.ts_ms > first.seen_ms
                        && e.attempt > first.attempts.get(&e.step).copied().unwrap_or(0)
                })
            });
            differ || ran_after
        })
        .count()
}

/// Jobs two nodes describe with a different state or output after the heal.
pub fn status_disagreements(h: &History) -> usize {
    h.jobs
        .iter()
        .filter(|j| {
            let views: BTreeSet<(String, String)> = j
                .seen
                .iter()
                .filter(|s| s.via.starts_with("node "))
                .map(|s| (s.state.clone(), format!("{:?}", s.output)))
                .collect();
            views.len() > 1
        })
        .count()
}

/// Effects beyond `h.effect_bound` per (job, step).
pub fn effects_over_bound(h: &History) -> usize {
    let mut per: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for e in &h.effects {
        *per.entry((&e.job, &e.step)).or_default() += 1;
    }
    per.values()
        .map(|&n| n.saturating_sub(h.effect_bound))
        .sum()
}

/// Acknowledged counter adds missing from the final totals (see the module doc).
pub fn acked_adds_missing(h: &History) -> usize {
    let mut keys: BTreeSet<&str> = h.counter_finals.keys().map(String::as_str).collect();
    keys.extend(h.adds.iter().map(|a| a.key.as_str()));
    keys.into_iter()
        .map(|k| {
            let acked: Vec<_> = h.adds.iter().filter(|a| a.key == k && a.acked).collect();
            let Some(Some(fin)) = h.counter_finals.get(k) else {
                return acked.len();
            };
            let short = (acked.len() as i64 - fin).max(0) as usize;
            let totals: Vec<i64> = acked.iter().filter_map(|a| a.total).collect();
            let distinct: BTreeSet<i64> = totals.iter().copied().collect();
            short.max(totals.len() - distinct.len())
        })
        .sum()
}

/// (kind, id, epoch) claimed by more than one node.
pub fn double_owners(h: &History) -> usize {
    let mut by: BTreeMap<(&str, &str, u64), BTreeSet<&str>> = BTreeMap::new();
    for c in &h.claims {
        by.entry((&c.kind, &c.id, c.epoch))
            .or_default()
            .insert(&c.node);
    }
    by.values().filter(|nodes| nodes.len() > 1).count()
}

#[cfg(test)]
mod tests {
    use super::super::history::{Add, Claim, Effect, EndSeen, JobRec};
    use super::*;
    use serde_json::json;

    fn end(via: &str, state: &str, output: i64, attempts: u32, seen_ms: u64) -> EndSeen {
        EndSeen {
            via: via.into(),
            state: state.into(),
            output: Some(json!(output)),
            attempts: [("a".to_string(), attempts)].into(),
            seen_ms,
        }
    }

    fn job(id: &str, seen: Vec<EndSeen>) -> JobRec {
        JobRec {
            id: id.into(),
            acked: true,
            seen,
        }
    }

    fn effect(job: &str, attempt: u32, node: &str, ts_ms: u64) -> Effect {
        Effect {
            job: job.into(),
            step: "a".into(),
            attempt,
            node: node.into(),
            ts_ms,
        }
    }

    fn clean_history() -> History {
        History {
            jobs: vec![job(
                "n1-1-1",
                vec![
                    end("wait", "succeeded", 1, 1, 100),
                    end("node n1", "succeeded", 1, 1, 200),
                    end("node n2", "succeeded", 1, 1, 200),
                ],
            )],
            effects: vec![effect("n1-1-1", 1, "n2", 50)],
            effect_bound: 2,
            adds: vec![
                Add {
                    key: "k".into(),
                    acked: true,
                    total: Some(1),
                },
                Add {
                    key: "k".into(),
                    acked: false,
                    total: None,
                },
                Add {
                    key: "k".into(),
                    acked: true,
                    total: Some(3),
                },
            ],
            counter_finals: [("k".to_string(), Some(3))].into(),
            money_before: Some(8000),
            money_after: Some(8000),
            claims: vec![
                Claim {
                    kind: "actor".into(),
                    id: "t/k".into(),
                    epoch: 4,
                    node: "n1".into(),
                },
                Claim {
                    kind: "actor".into(),
                    id: "t/k".into(),
                    epoch: 9,
                    node: "n2".into(),
                },
            ],
            ..History::default()
        }
    }

    #[test]
    fn a_clean_history_has_every_figure_zero() {
        let f = check(&clean_history());
        assert_eq!(f.jobs_acknowledged, 1);
        assert!(f.clean(), "{f:?}");
    }

    #[test]
    fn a_job_never_seen_ended_is_lost_and_an_unacknowledged_one_is_not() {
        let mut h = clean_history();
        h.jobs
            .push(job("n2-1-1", vec![end("node n1", "running", 0, 1, 300)]));
        h.jobs.push(JobRec {
            id: String::new(),
            acked: false,
            seen: vec![],
        });
        let f = check(&h);
        assert_eq!((f.jobs_acknowledged, f.jobs_lost), (2, 1));
        assert!(!f.clean());
    }

    #[test]
    fn two_different_ends_or_a_step_run_after_the_end_count_as_ended_twice() {
        let mut h = clean_history();
        // The client saw output 1; later a node answers output 2.
        h.jobs.push(job(
            "n2-1-1",
            vec![
                end("wait", "succeeded", 1, 1, 100),
                end("node n3", "succeeded", 2, 2, 900),
            ],
        ));
        // Same ends, but attempt 2 of step a started after the end was seen.
        h.jobs
            .push(job("n2-1-2", vec![end("wait", "succeeded", 1, 1, 100)]));
        h.effects.push(effect("n2-1-2", 2, "n4", 5000));
        // A late start of the attempt the end counted (a paused node) is not a re-run.
        h.jobs
            .push(job("n2-1-3", vec![end("wait", "succeeded", 1, 2, 100)]));
        h.effects.push(effect("n2-1-3", 1, "n4", 5000));
        let f = check(&h);
        assert_eq!(f.jobs_ended_twice, 2, "{f:?}");
    }

    #[test]
    fn nodes_that_answer_differently_are_a_status_disagreement() {
        let mut h = clean_history();
        h.jobs.push(job(
            "n2-1-1",
            vec![
                end("node n1", "succeeded", 1, 1, 100),
                end("node n2", "running", 1, 1, 100),
            ],
        ));
        assert_eq!(check(&h).status_disagreements, 1);
    }

    #[test]
    fn effects_beyond_the_bound_are_counted() {
        let mut h = clean_history();
        for i in 2..=4 {
            h.effects.push(effect("n1-1-1", i, "n3", 60));
        }
        assert_eq!(check(&h).effects_over_bound, 2);
    }

    #[test]
    fn missing_adds_count_by_short_total_or_by_repeated_totals() {
        let mut h = clean_history();
        // Final total 1 after two acknowledged adds: one missing.
        h.counter_finals.insert("k".into(), Some(1));
        assert_eq!(check(&h).acked_adds_missing, 1);
        // Final total fine, but two acknowledged adds saw total 3: one was erased and
        // made up for by an unacknowledged retry.
        let mut h = clean_history();
        h.adds.push(Add {
            key: "k".into(),
            acked: true,
            total: Some(3),
        });
        h.counter_finals.insert("k".into(), Some(4));
        assert_eq!(check(&h).acked_adds_missing, 1);
        // A key that cannot be read counts all its acknowledged adds.
        let mut h = clean_history();
        h.counter_finals.insert("k".into(), None);
        assert_eq!(check(&h).acked_adds_missing, 2);
    }

    #[test]
    fn money_made_or_unreadable_is_not_clean() {
        let mut h = clean_history();
        h.money_after = Some(8100);
        assert_eq!(check(&h).money_delta, Some(100));
        h.money_after = None;
        let f = check(&h);
        assert_eq!(f.money_delta, None);
        assert!(!f.clean());
    }

    #[test]
    fn two_nodes_claiming_one_key_at_one_epoch_are_double_owners() {
        let mut h = clean_history();
        h.claims.push(Claim {
            kind: "actor".into(),
            id: "t/k".into(),
            epoch: 9,
            node: "n3".into(),
        });
        // The same node claiming again (a restart) is not a second owner.
        h.claims.push(Claim {
            kind: "actor".into(),
            id: "t/k".into(),
            epoch: 4,
            node: "n1".into(),
        });
        assert_eq!(check(&h).double_owners, 1);
    }
}
