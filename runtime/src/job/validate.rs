//! Checks a job before anything runs: every error names the step at fault.
//!
//! Whether each task is served somewhere is a question for the cluster, asked by the job
//! manager on submission; everything else is checked here.

use std::collections::HashMap;

use super::spec::JobSpec;
use crate::error::ValidationError;

/// The dependency structure of a valid job, by step index.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Step index by id.
    pub index: HashMap<String, usize>,
    /// For each step, the indices of the steps it waits for.
    pub deps: Vec<Vec<usize>>,
    /// For each step, the indices of the steps that wait for it.
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

/// Validates `spec` and returns its dependency graph.
pub fn validate(spec: &JobSpec) -> Result<Graph, ValidationError> {
    if spec.steps.is_empty() {
        return Err(ValidationError::NoSteps);
    }
    let mut index = HashMap::with_capacity(spec.steps.len());
    for (i, s) in spec.steps.iter().enumerate() {
        if !valid_id(&s.id) {
            return Err(ValidationError::BadStepId(s.id.clone()));
        }
        if index.insert(s.id.clone(), i).is_some() {
            return Err(ValidationError::DuplicateStep(s.id.clone()));
        }
        if s.task.trim().is_empty() {
            return Err(ValidationError::NoTask(s.id.clone()));
        }
        if spec.retry_for(s).max_attempts == 0 {
            return Err(ValidationError::NoAttempts(s.id.clone()));
        }
    }
    let n = spec.steps.len();
    let mut deps = vec![Vec::new(); n];
    let mut dependents = vec![Vec::new(); n];
    for (i, s) in spec.steps.iter().enumerate() {
        for d in &s.after {
            let j = *index
                .get(d)
                .ok_or_else(|| ValidationError::UnknownDependency {
                    step: s.id.clone(),
                    missing: d.clone(),
                })?;
            if !deps[i].contains(&j) {
                deps[i].push(j);
                dependents[j].push(i);
            }
        }
    }
    if let Some(cycle) = find_cycle(&deps) {
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
        deps,
        dependents,
        finals,
    })
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
        assert_eq!(g.deps[2], vec![0, 1]);
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
    fn deep_chain_does_not_overflow() {
        let mut steps = vec![StepSpec::new("s0", "x")];
        for i in 1..50_000 {
            steps.push(StepSpec::new(format!("s{i}"), "x").after([format!("s{}", i - 1)]));
        }
        assert!(validate(&job(steps)).is_ok());
    }
}
