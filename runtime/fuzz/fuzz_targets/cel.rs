//! CEL conditions and lists (`when`, `for_each`): compiling and evaluating any text against
//! a job's input and step outputs must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use troupe_runtime::job::expr;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if source.len() > 4096 {
        return;
    }
    let input = json!({"accounts": {"facebook": "fb-1"}, "n": 3, "list": [1, 2, "x", null]});
    let steps = json!({"a": {"output": {"value": 2, "items": [1, 2, 3]}}});
    if expr::compile(source).is_ok() {
        let _ = expr::eval_bool(source, &input, &steps);
        let _ = expr::eval_list(source, &input, &steps);
    }
});
