//! Word count on a Troupe cluster: the example of a user crate with its own tasks.
//!
//! - `wordcount.split` cuts a text into `parts` chunks of whole words;
//! - `wordcount.count` counts the words of one chunk (`part`), read from the split step's
//!   output through the task context's `deps`;
//! - `wordcount.merge` adds up the counts of all its dependencies.
//!
//! [`register`] adds them to a registry; the `wordcount` binary is a full `troupe-node`
//! with these tasks, and `wordcount-submit` builds the job in Rust and sends it through a
//! supervisor handle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use troupe_runtime::{JobSpec, StepSpec, Task, TaskContext, TaskError, TaskRegistry};

/// Input of `wordcount.split`.
#[derive(Debug, Deserialize)]
pub struct SplitInput {
    /// The text.
    pub text: String,
    /// How many chunks.
    pub parts: usize,
}

/// `wordcount.split`.
pub struct Split;
impl Task for Split {
    type Input = SplitInput;
    type Output = Vec<String>;
    async fn run(&self, _ctx: TaskContext, i: SplitInput) -> Result<Vec<String>, TaskError> {
        if i.parts == 0 {
            return Err(TaskError::permanent("parts must be at least 1"));
        }
        let words: Vec<&str> = i.text.split_whitespace().collect();
        let per = words.len().div_ceil(i.parts).max(1);
        let mut chunks: Vec<String> = words.chunks(per).map(|c| c.join(" ")).collect();
        chunks.resize(i.parts, String::new());
        Ok(chunks)
    }
}

/// Input of `wordcount.count`.
#[derive(Debug, Deserialize)]
pub struct CountInput {
    /// Which chunk of the split step's output to count.
    pub part: usize,
}

/// Word counts.
pub type Counts = BTreeMap<String, u64>;

/// `wordcount.count`.
pub struct Count;
impl Task for Count {
    type Input = CountInput;
    type Output = Counts;
    async fn run(&self, ctx: TaskContext, i: CountInput) -> Result<Counts, TaskError> {
        let chunks: Vec<String> = ctx
            .deps
            .get("split")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| TaskError::permanent(format!("split output is not a list of texts: {e}")))?
            .ok_or_else(|| {
                TaskError::permanent("wordcount.count needs a dependency named \"split\"")
            })?;
        let chunk = chunks.get(i.part).ok_or_else(|| {
            TaskError::permanent(format!("no part {} in {} chunks", i.part, chunks.len()))
        })?;
        let mut counts = Counts::new();
        for w in chunk.split_whitespace() {
            let w = w
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase();
            if !w.is_empty() {
                *counts.entry(w).or_default() += 1;
            }
        }
        Ok(counts)
    }
}

/// Output of `wordcount.merge`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Merged {
    /// Count per word.
    pub counts: Counts,
    /// All words.
    pub total: u64,
}

/// `wordcount.merge`.
pub struct Merge;
impl Task for Merge {
    type Input = serde_json::Value;
    type Output = Merged;
    async fn run(&self, ctx: TaskContext, _: serde_json::Value) -> Result<Merged, TaskError> {
        let mut counts = Counts::new();
        for out in ctx.deps.values() {
            let c: Counts = serde_json::from_value(out.clone()).map_err(|e| {
                TaskError::permanent(format!("a dependency's output is not word counts: {e}"))
            })?;
            for (w, n) in c {
                *counts.entry(w).or_default() += n;
            }
        }
        let total = counts.values().sum();
        Ok(Merged { counts, total })
    }
}

/// Adds the word-count tasks to `r`.
pub fn register(r: &mut TaskRegistry) {
    r.register("wordcount.split", Split)
        .register("wordcount.count", Count)
        .register("wordcount.merge", Merge);
}

/// The job: split into `parts`, count each part in parallel, merge.
pub fn job(text: &str, parts: usize) -> JobSpec {
    let mut j = JobSpec::new("wordcount").step(
        StepSpec::new("split", "wordcount.split").input(json!({"text": text, "parts": parts})),
    );
    for p in 0..parts {
        j = j.step(
            StepSpec::new(format!("count-{p}"), "wordcount.count")
                .input(json!({"part": p}))
                .after(["split"]),
        );
    }
    j.step(
        StepSpec::new("merge", "wordcount.merge").after((0..parts).map(|p| format!("count-{p}"))),
    )
}
