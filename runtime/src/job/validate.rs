//! Checks a job before anything runs: every error names the step at fault.
//!
//! Whether each task is served somewhere is a question for the cluster, asked by the job
//! manager on submission; everything else is checked here.

use std::collections::HashMap;

use super::expr;
use super::spec::{JobSpec, StepSpec};
use crate::error::ValidationError;

/// Bounds on what one job may grow to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Steps in one job, counting fan-out items, sub-job steps and calls.
    pub max_steps: usize,
    /// Items of one `for_each`.
    pub max_for_each_items: usize,
    /// Nesting of sub-jobs and re-entrant calls.
    pub max_depth: usize,
    /// Jobs one client (or the HTTP API) may have in flight on one node.
    pub max_jobs_per_client: usize,
    /// Attempts of one step that may be lost (their node died or left, their external
    /// worker disconnected) before the step fails: work that kills every node it lands
    /// on stops instead of running for ever. Such losses do not use the retry budget.
    pub max_lost_attempts: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_steps: 100_000,
            max_for_each_items: 10_000,
            max_depth: 32,
            max_jobs_per_client: 10_000,
            max_lost_attempts: 5,
        }
    }
}

/// The dependency structure of a valid job, by step index.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Step index by id.
    pub index: HashMap<String, usize>,
    /// For each step, the steps that must succeed first (`after`).
    pub required: Vec<Vec<usize>>,
    /// For each step, the steps it waits for but may run without (`optional`).
    pub optional: Vec<Vec<usize>>,
    /// For each step, the steps that wait for it.
    pub dependents: Vec<Vec<usize>>,
    /// Steps nothing depends on.
    pub finals: Vec<usize>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Validates `spec` with the default [`Limits`] and returns its dependency graph.
pub fn validate(spec: &JobSpec) -> Result<Graph, ValidationError> {
    validate_with(spec, &Limits::default())
}

/// Validates `spec` and returns its dependency graph. A `for_each` that does not depend on
/// other steps is evaluated here, so a list that is not a list or is over the limit is
/// refused before anything runs.
pub fn validate_with(spec: &JobSpec, limits: &Limits) -> Result<Graph, ValidationError> {
    if spec.steps.is_empty() {
        return Err(ValidationError::NoSteps);
    }
    if spec.steps.len() > limits.max_steps {
        return Err(ValidationError::TooManySteps {
            count: spec.steps.len(),
            limit: limits.max_steps,
        });
    }
    let mut index = HashMap::with_capacity(spec.steps.len());
    for (i, s) in spec.steps.iter().enumerate() {
        if !valid_id(&s.id) {
            return Err(ValidationError::BadStepId(s.id.clone()));
        }
        if index.insert(s.id.clone(), i).is_some() {
            return Err(ValidationError::DuplicateStep(s.id.clone()));
        }
        match (&s.actor, &s.key) {
            (Some(_), _) if !s.task.trim().is_empty() => {
                return Err(ValidationError::ActorAndTask(s.id.clone()));
            }
            (Some(a), Some(k)) if !a.trim().is_empty() && !k.is_empty() => {}
            (Some(_), _) => return Err(ValidationError::ActorWithoutKey(s.id.clone())),
            (None, Some(_)) => return Err(ValidationError::KeyWithoutActor(s.id.clone())),
            (None, None) if s.task.trim().is_empty() => {
                return Err(ValidationError::NoTask(s.id.clone()));
            }
            (None, None) => {}
        }
        if spec.retry_for(s).max_attempts == 0 {
            return Err(ValidationError::NoAttempts(s.id.clone()));
        }
        check_expressions(spec, s, limits)?;
    }
    let n = spec.steps.len();
    let mut required = vec![Vec::new(); n];
    let mut optional = vec![Vec::new(); n];
    let mut dependents = vec![Vec::new(); n];
    for (i, s) in spec.steps.iter().enumerate() {
        let edges = s
            .after
            .iter()
            .map(|d| (d, true))
            .chain(s.optional.iter().map(|d| (d, false)));
        for (d, is_required) in edges {
            let j = *index
                .get(d)
                .ok_or_else(|| ValidationError::UnknownDependency {
                    step: s.id.clone(),
                    missing: d.clone(),
                })?;
            if required[i].contains(&j) || optional[i].contains(&j) {
                continue;
            }
            if is_required {
                required[i].push(j);
            } else {
                optional[i].push(j);
            }
            dependents[j].push(i);
        }
    }
    let all: Vec<Vec<usize>> = (0..n)
        .map(|i| required[i].iter().chain(&optional[i]).copied().collect())
        .collect();
    if let Some(cycle) = find_cycle(&all) {
        return Err(ValidationError::Cycle(
            cycle
                .into_iter()
                .map(|i| spec.steps[i].id.clone())
                .collect(),
        ));
    }
    if let Some(out) = &spec.output {
        if !index.contains_key(out) {
            return Err(ValidationError::UnknownOutput(out.clone()));
        }
    }
    let finals = (0..n).filter(|&i| dependents[i].is_empty()).collect();
    Ok(Graph {
        index,
        required,
        optional,
        dependents,
        finals,
    })
}

fn check_expressions(spec: &JobSpec, s: &StepSpec, limits: &Limits) -> Result<(), ValidationError> {
    let bad = |field: &'static str, expr: &str, message: String| ValidationError::BadExpression {
        step: s.id.clone(),
        field,
        expr: expr.to_string(),
        message,
    };
    if let Some(w) = &s.when {
        expr::compile(w).map_err(|m| bad("when", w, format!("does not parse: {m}")))?;
    }
    if let Some(f) = &s.for_each {
        let p = expr::compile(f).map_err(|m| bad("for_each", f, format!("does not parse: {m}")))?;
        if !expr::uses_steps(&p) {
            let items = expr::eval_list(f, &spec.input, &serde_json::json!({}))
                .map_err(|m| bad("for_each", f, m))?;
            if items.len() > limits.max_for_each_items {
                return Err(ValidationError::TooManyItems {
                    step: s.id.clone(),
                    count: items.len(),
                    limit: limits.max_for_each_items,
                });
            }
        }
    }
    Ok(())
}

/// A cycle in the graph as a closed path (first node repeated at the end), if any.
/// Iterative three-colour DFS: job files come from outside, so no recursion depth to blow.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let n = deps.len();
    let mut colour = vec![Colour::White; n];
    for root in 0..n {
        if colour[root] != Colour::White {
            continue;
        }
        // Stack of (node, next edge to look at); the grey nodes on it are the current path.
        let mut stack = vec![(root, 0usize)];
        colour[root] = Colour::Grey;
        while let Some(&mut (node, ref mut edge)) = stack.last_mut() {
            if let Some(&next) = deps[node].get(*edge) {
                *edge += 1;
                match colour[next] {
                    Colour::White => {
                        colour[next] = Colour::Grey;
                        stack.push((next, 0));
                    }
                    Colour::Grey => {
                        // `node` waits for `next`, which is on the path: report the cycle in
                        // the order the work flows (dependency first).
                        let start = stack.iter().position(|&(s, _)| s == next)?;
                        let mut cycle: Vec<usize> =
                            stack[start..].iter().map(|&(s, _)| s).collect();
                        cycle.reverse();
                        cycle.push(cycle[0]);
                        return Some(cycle);
                    }
                    Colour::Black => {}
                }
            } else {
                colour[node] = Colour::Black;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::spec::StepSpec;

    fn job(steps: Vec<StepSpec>) -> JobSpec {
        steps.into_iter().fold(JobSpec::new("t"), JobSpec::step)
    }

    #[test]
    fn accepts_a_dag() {
        let g = validate(&job(vec![
            StepSpec::new("a", "x"),
            StepSpec::new("b", "x"),
            StepSpec::new("c", "x").after(["a", "b"]),
        ]))
        .unwrap();
        assert_eq!(g.required[2], vec![0, 1]);
        assert_eq!(g.finals, vec![2]);
    }

    #[test]
    fn names_duplicate_unknown_and_empty() {
        assert_eq!(
            validate(&job(vec![StepSpec::new("a", "x"), StepSpec::new("a", "y")])),
            Err(ValidationError::DuplicateStep("a".into()))
        );
        assert_eq!(
            validate(&job(vec![StepSpec::new("a", "x").after(["zz"])])),
            Err(ValidationError::UnknownDependency {
                step: "a".into(),
                missing: "zz".into()
            })
        );
        assert_eq!(validate(&job(vec![])), Err(ValidationError::NoSteps));
        assert_eq!(
            validate(&job(vec![StepSpec::new("a/b", "x")])),
            Err(ValidationError::BadStepId("a/b".into()))
        );
        assert_eq!(
            validate(&job(vec![StepSpec::new("a", " ")])),
            Err(ValidationError::NoTask("a".into()))
        );
        let mut j = job(vec![StepSpec::new("a", "x")]);
        j.output = Some("b".into());
        assert_eq!(
            validate(&j),
            Err(ValidationError::UnknownOutput("b".into()))
        );
    }

    #[test]
    fn names_the_steps_of_a_cycle() {
        let e = validate(&job(vec![
            StepSpec::new("start", "x"),
            StepSpec::new("a", "x").after(["start", "c"]),
            StepSpec::new("b", "x").after(["a"]),
            StepSpec::new("c", "x").after(["b"]),
        ]))
        .unwrap_err();
        match e {
            ValidationError::Cycle(c) => {
                assert_eq!(c.len(), 4, "{c:?}");
                assert_eq!(c.first(), c.last());
                for s in ["a", "b", "c"] {
                    assert!(c.contains(&s.to_string()), "{c:?}");
                }
                assert!(!c.contains(&"start".to_string()));
            }
            other => panic!("expected a cycle, got {other}"),
        }
        let e = validate(&job(vec![StepSpec::new("self", "x").after(["self"])])).unwrap_err();
        assert_eq!(
            e,
            ValidationError::Cycle(vec!["self".into(), "self".into()])
        );
    }

    #[test]
    fn checks_conditions_lists_and_optional_edges() {
        let e = validate(&job(vec![StepSpec::new("a", "x").when("has(input.")])).unwrap_err();
        assert!(
            matches!(&e, ValidationError::BadExpression { step, field: "when", .. } if step == "a"),
            "{e}"
        );
        let e = validate(&job(vec![StepSpec::new("f", "x").for_each("{'a': 1}")])).unwrap_err();
        assert!(
            e.to_string().contains("not a list") && e.to_string().contains("\"f\""),
            "{e}"
        );
        let e = validate(
            &job(vec![StepSpec::new("f", "x").for_each("[1,2,3]")]).step(StepSpec::new("g", "x")),
        );
        assert!(e.is_ok());
        let mut big = job(vec![StepSpec::new("f", "x").for_each("input")]);
        big.input = serde_json::Value::Array(vec![serde_json::json!(1); 20]);
        let limits = Limits {
            max_for_each_items: 10,
            ..Limits::default()
        };
        assert!(matches!(
            validate_with(&big, &limits),
            Err(ValidationError::TooManyItems { count: 20, .. })
        ));
        // A list from another step's output is only known at run time.
        assert!(validate(&job(vec![
            StepSpec::new("a", "x"),
            StepSpec::new("f", "x")
                .for_each("steps.a.output")
                .after(["a"])
        ]))
        .is_ok());
        let g = validate(&job(vec![
            StepSpec::new("t", "x"),
            StepSpec::new("c", "x").optional(["t"]),
        ]))
        .unwrap();
        assert_eq!((g.required[1].len(), g.optional[1].clone()), (0, vec![0]));
        assert!(matches!(
            validate(&job(vec![StepSpec::new("c", "x").optional(["nope"])])),
            Err(ValidationError::UnknownDependency { .. })
        ));
        let e = validate(&job(vec![
            StepSpec::new("a", "x").optional(["b"]),
            StepSpec::new("b", "x").after(["a"]),
        ]))
        .unwrap_err();
        assert!(matches!(e, ValidationError::Cycle(_)));
    }

    #[test]
    fn deep_chain_does_not_overflow() {
        let mut steps = vec![StepSpec::new("s0", "x")];
        for i in 1..50_000 {
            steps.push(StepSpec::new(format!("s{i}"), "x").after([format!("s{}", i - 1)]));
        }
        assert!(validate(&job(steps)).is_ok());
    }
}
