//! CEL expressions of job files (`when`, `for_each`), with the `cel` crate.
//!
//! Expressions see two variables: `input` (the job's input, or a sub-job's) and `steps`
//! (`steps.ID.output` for every step of the same job that has succeeded; use
//! `steps["id-with-dashes"].output` for ids that are not CEL identifiers).

use serde_json::Value;

/// How deep brackets may nest in an expression. The `cel` crate's parser recurses through
/// many frames per level: thirty levels (a fuzzer's input), and already twelve, overflowed
/// a 2 MiB thread stack in a debug build (ten did not), and a stack overflow aborts the
/// process, which `catch_unwind` cannot stop. Eight leaves room for the caller's frames.
pub const MAX_NESTING: usize = 8;

/// The deepest nesting of `(`, `[` and `{` in `source`, outside string literals.
fn nesting(source: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '(' | '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    deepest
}

/// Compiles `source`, or says why it does not parse.
pub fn compile(source: &str) -> Result<cel::Program, String> {
    let deep = nesting(source);
    if deep > MAX_NESTING {
        return Err(format!(
            "brackets nest {deep} deep; at most {MAX_NESTING} are allowed (split the expression, or compute the value in a step)"
        ));
    }
    // The parser is hand-written and fed input from outside; a panic in it must not take
    // the node down.
    std::panic::catch_unwind(|| cel::Program::compile(source))
        .map_err(|_| "the CEL parser failed on it".to_string())?
        .map_err(|e| e.to_string().trim().replace('\n', " "))
}

/// True if the expression uses the `steps` variable (so it can only be evaluated once the
/// step's dependencies are done).
pub fn uses_steps(p: &cel::Program) -> bool {
    p.references().has_variable("steps")
}

fn run(p: &cel::Program, input: &Value, steps: &Value) -> Result<Value, String> {
    let mut ctx = cel::Context::default();
    ctx.add_variable("input", input)
        .map_err(|e| e.to_string())?;
    ctx.add_variable("steps", steps)
        .map_err(|e| e.to_string())?;
    let v = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.execute(&ctx)))
        .map_err(|_| "the CEL interpreter failed".to_string())?
        .map_err(|e| e.to_string())?;
    v.json().map_err(|e| format!("result is not JSON: {e:?}"))
}

/// Evaluates a condition; it must give a boolean.
pub fn eval_bool(source: &str, input: &Value, steps: &Value) -> Result<bool, String> {
    let p = compile(source)?;
    match run(&p, input, steps)? {
        Value::Bool(b) => Ok(b),
        other => Err(format!("gives {other}, not a boolean")),
    }
}

/// Evaluates a list expression; it must give a list.
pub fn eval_list(source: &str, input: &Value, steps: &Value) -> Result<Vec<Value>, String> {
    let p = compile(source)?;
    match run(&p, input, steps)? {
        Value::Array(items) => Ok(items),
        other => Err(format!("gives {other}, not a list")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deep nesting is refused with a reason before the parser recurses into it; as deep
    /// as allowed compiles and evaluates on a 2 MiB thread (a test thread's, a debug build).
    #[test]
    fn deep_nesting_is_refused_before_it_can_overflow_the_stack() {
        let ok = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                let at_limit = format!(
                    "{}1{} == 1",
                    "(".repeat(MAX_NESTING),
                    ")".repeat(MAX_NESTING)
                );
                eval_bool(&at_limit, &Value::Null, &Value::Null)
            })
            .expect("a thread")
            .join()
            .expect("no overflow");
        assert_eq!(ok, Ok(true));
        let fuzzed = format!("{};m", "(".repeat(30));
        let err = compile(&fuzzed).map(|_| ()).unwrap_err();
        assert!(err.contains("nest 30 deep"), "{err}");
        // Brackets inside strings do not count.
        assert_eq!(nesting("'((((((((((((((((' == \"[\\\"\""), 0);
        assert_eq!(nesting("[[1], {'a': (2)}]"), 3);
    }
    use serde_json::json;

    #[test]
    fn conditions_and_lists() {
        let input = json!({"accounts": {"facebook": "fb-1"}, "n": [1, 2]});
        let steps = json!({"a": {"output": 3}});
        assert!(!eval_bool("has(input.accounts.twitter)", &input, &steps).unwrap());
        assert!(eval_bool("has(input.accounts.facebook)", &input, &steps).unwrap());
        assert!(eval_bool("steps.a.output > 2", &input, &steps).unwrap());
        assert_eq!(
            eval_list("[1, 2, 3].map(x, x * 2)", &input, &steps).unwrap(),
            vec![json!(2), json!(4), json!(6)]
        );
        assert_eq!(eval_list("input.n", &input, &steps).unwrap().len(), 2);
        assert!(eval_list("input.accounts", &input, &steps)
            .unwrap_err()
            .contains("not a list"));
        assert!(eval_bool("1 +", &input, &steps).is_err());
        assert!(compile("has(input.x").is_err());
        assert!(uses_steps(&compile("steps.a.output").unwrap()));
        assert!(!uses_steps(&compile("input.n").unwrap()));
    }
}
