//! Word count as MapReduce on a Troupe cluster, after seed 002 (a DRb master that splits
//! input into chunks, maps with `emit(key, value)`, reduces and writes, and makes sure
//! every chunk is processed).
//!
//! The job: `chunk` cuts the text into chunks; `map` runs once per chunk (`for_each` over
//! the chunk step's output, spread over the cluster) and emits `(word, 1)`; `reduce` sums
//! by key; `write` stores the counts as JSON. Each chunk's map output is recorded exactly
//! once: a map attempt that fails (a chunk containing the word `flaky` fails on its first
//! attempt, on purpose) is retried, and only the successful attempt's emits count.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use troupe_runtime::{JobSpec, RetryPolicy, StepSpec, Task, TaskContext, TaskError, TaskRegistry};

/// Input of `wordcount.chunk`.
#[derive(Debug, Deserialize)]
pub struct ChunkInput {
    /// The text.
    pub text: String,
    /// How many chunks.
    pub chunks: usize,
}

/// `wordcount.chunk`: the text cut into `chunks` pieces of whole words.
pub struct Chunk;
impl Task for Chunk {
    type Input = ChunkInput;
    type Output = Vec<String>;
    async fn run(&self, _ctx: TaskContext, i: ChunkInput) -> Result<Vec<String>, TaskError> {
        if i.chunks == 0 {
            return Err(TaskError::permanent("chunks must be at least 1"));
        }
        let words: Vec<&str> = i.text.split_whitespace().collect();
        let per = words.len().div_ceil(i.chunks).max(1);
        Ok(words.chunks(per).map(|c| c.join(" ")).collect())
    }
}

/// Collects what a map function emits.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Emitter {
    pairs: Vec<(String, u64)>,
}

impl Emitter {
    /// Emits one key/value pair.
    pub fn emit(&mut self, key: impl Into<String>, value: u64) {
        self.pairs.push((key.into(), value));
    }
    /// The pairs emitted so far.
    pub fn into_pairs(self) -> Vec<(String, u64)> {
        self.pairs
    }
}

/// The map function: `(word, 1)` for every word of the chunk.
pub fn map_words(chunk: &str, emit: &mut Emitter) {
    for w in chunk.split_whitespace() {
        let w = w
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        if !w.is_empty() {
            emit.emit(w, 1);
        }
    }
}

/// `wordcount.map`: runs [`map_words`] on one chunk.
pub struct Map;
impl Task for Map {
    type Input = String;
    type Output = Vec<(String, u64)>;
    async fn run(&self, ctx: TaskContext, chunk: String) -> Result<Vec<(String, u64)>, TaskError> {
        let mut e = Emitter::default();
        map_words(&chunk, &mut e);
        if ctx.attempt == 1 && e.pairs.iter().any(|(w, _)| w == "flaky") {
            // Half the chunk was emitted when the worker "lost its database connection":
            // this attempt's output is never recorded, the retry's is.
            return Err(TaskError::transient(format!(
                "{}: lost the connection half-way",
                ctx.step_id
            )));
        }
        Ok(e.into_pairs())
    }
}

/// Word counts.
pub type Counts = BTreeMap<String, u64>;

/// `wordcount.reduce`: sums the emitted values by key, over all map outputs.
pub struct Reduce;
impl Task for Reduce {
    type Input = Value;
    type Output = Counts;
    async fn run(&self, ctx: TaskContext, _: Value) -> Result<Counts, TaskError> {
        let maps: Vec<Vec<(String, u64)>> = ctx
            .deps
            .get("map")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| TaskError::permanent(format!("map outputs are not key/value lists: {e}")))?
            .ok_or_else(|| {
                TaskError::permanent("wordcount.reduce needs a dependency named \"map\"")
            })?;
        let mut counts = Counts::new();
        for (k, v) in maps.into_iter().flatten() {
            *counts.entry(k).or_default() += v;
        }
        Ok(counts)
    }
}

/// Input of `wordcount.write`.
#[derive(Debug, Deserialize)]
pub struct WriteInput {
    /// Where to write the counts (JSON); none: only return the summary.
    pub path: Option<String>,
}

/// `wordcount.write`: writes the reduced counts and returns a summary.
pub struct Write;
impl Task for Write {
    type Input = WriteInput;
    type Output = Value;
    async fn run(&self, ctx: TaskContext, i: WriteInput) -> Result<Value, TaskError> {
        let counts = ctx.deps.get("reduce").cloned().unwrap_or(Value::Null);
        if let Some(p) = &i.path {
            let text = serde_json::to_string_pretty(&counts).unwrap_or_default();
            tokio::fs::write(p, text)
                .await
                .map_err(|e| TaskError::transient(format!("cannot write {p}: {e}")))?;
        }
        let total: u64 = counts
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        Ok(json!({"path": i.path, "total": total, "counts": counts}))
    }
}

/// Adds the word-count tasks to `r`.
pub fn register(r: &mut TaskRegistry) {
    r.register("wordcount.chunk", Chunk)
        .register("wordcount.map", Map)
        .register("wordcount.reduce", Reduce)
        .register("wordcount.write", Write);
}

/// The MapReduce job over `text` in `chunks` chunks, writing to `path` if given.
pub fn job(text: &str, chunks: usize, path: Option<&str>) -> JobSpec {
    let mut j = JobSpec::new("wordcount");
    j.retry = RetryPolicy {
        max_attempts: 3,
        backoff_ms: 20,
    };
    j.step(StepSpec::new("chunk", "wordcount.chunk").input(json!({"text": text, "chunks": chunks})))
        .step(
            StepSpec::new("map", "wordcount.map")
                .after(["chunk"])
                .for_each("steps.chunk.output"),
        )
        .step(StepSpec::new("reduce", "wordcount.reduce").after(["map"]))
        .step(
            StepSpec::new("write", "wordcount.write")
                .input(json!({"path": path}))
                .after(["reduce"]),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_emits_words() {
        let mut e = Emitter::default();
        map_words("The cat, the HAT.", &mut e);
        assert_eq!(
            e.into_pairs(),
            vec![
                ("the".into(), 1),
                ("cat".into(), 1),
                ("the".into(), 1),
                ("hat".into(), 1)
            ]
        );
    }
}
