//! The fuzzing corpus (`runtime/fuzz/corpus`) replayed in the ordinary test run: every
//! input the fuzzers kept must still parse, evaluate or decode to Ok or an error, never a
//! panic. A crash the fuzzer finds is added to the corpus and so becomes a test here.

use std::path::PathBuf;

use ractor::BytesConvertable;
use serde_json::json;
use troupe_runtime::job::expr;
use troupe_runtime::job::validate::validate;
use troupe_runtime::protocol::{NodeInfo, StepRequest, StepResult, SubmitRequest};
use troupe_runtime::wire::Wire;
use troupe_runtime::JobSpec;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let files: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
}

#[test]
fn job_file_corpus() {
    let mut parsed = 0;
    for data in corpus("job_file") {
        let text = String::from_utf8_lossy(&data);
        for name in ["c.toml", "c.json"] {
            if let Ok(spec) = JobSpec::parse(&text, name) {
                parsed += 1;
                let _ = validate(&spec);
            }
        }
    }
    assert!(parsed > 0, "no corpus entry parses: the seeds are gone");
}

#[test]
fn cel_corpus() {
    let input = json!({"accounts": {"facebook": "fb-1"}, "n": 3, "list": [1, 2, "x", null]});
    let steps = json!({"a": {"output": {"value": 2, "items": [1, 2, 3]}}});
    let mut compiled = 0;
    for data in corpus("cel") {
        let Ok(source) = std::str::from_utf8(&data) else {
            continue;
        };
        if source.len() > 4096 || expr::compile(source).is_err() {
            continue;
        }
        compiled += 1;
        let _ = expr::eval_bool(source, &input, &steps);
        let _ = expr::eval_list(source, &input, &steps);
    }
    assert!(compiled > 0, "no corpus entry compiles: the seeds are gone");
}

#[test]
fn wire_corpus() {
    for data in corpus("wire") {
        let _ = Wire::<SubmitRequest>::from_bytes(data.clone()).into_inner();
        let _ = Wire::<StepRequest>::from_bytes(data.clone()).into_inner();
        let _ = Wire::<StepResult>::from_bytes(data.clone()).into_inner();
        let _ = Wire::<NodeInfo>::from_bytes(data.clone()).into_inner();
        let _ = Wire::<troupe_runtime::JobEvent>::from_bytes(data).into_inner();
    }
}
