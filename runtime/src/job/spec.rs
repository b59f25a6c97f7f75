//! The job file, as DESIGN.md fixes it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::JobFileError;

/// Scheduling class of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Ahead of normal work.
    High,
    /// The default.
    #[default]
    Normal,
    /// Behind normal work.
    Low,
}

/// How often and how fast a failing step is retried after a transient error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles with each further retry, with jitter.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

fn default_max_attempts() -> u32 {
    3
}
fn default_backoff_ms() -> u64 {
    100
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            backoff_ms: default_backoff_ms(),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next` (2, 3, ...): `backoff_ms * 2^(next-2)`, capped at
    /// one minute, with +-25% jitter so that retries of many steps do not move in lockstep.
    /// `jitter` is a uniform draw in [0, 1), passed in so that a job's replay computes the
    /// same delays (the job supervisor draws it from the job id, the step and the attempt).
    pub fn delay_before(&self, next: u32, jitter: f64) -> std::time::Duration {
        let exp = next.saturating_sub(2).min(16);
        let base = self.backoff_ms.saturating_mul(1u64 << exp).min(60_000) as f64;
        let factor = 0.75 + jitter.clamp(0.0, 1.0) * 0.5;
        std::time::Duration::from_millis((base * factor) as u64)
    }
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique within the job.
    pub id: String,
    /// The task to run, by registered name (empty for a step that targets an actor).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task: String,
    /// The actor type this step sends its input to, as a message (instead of a task);
    /// its output is the actor's reply. Needs `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The key of the actor (with `actor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The step's own input; without it the step gets the job's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Steps that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Overrides the job's retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// An attempt that runs longer fails with a transient error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// CEL condition over `input` and `steps.ID.output`; false: the step is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// CEL list; the step runs once per item (`ID[i]`, the item as input) and its output
    /// is the list of the items' outputs, in item order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// Steps this one waits for but runs without if they are skipped or fail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional: Vec<String>,
}

impl StepSpec {
    /// A step running `task`, with no input of its own and no dependencies.
    pub fn new(id: impl Into<String>, task: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            task: task.into(),
            actor: None,
            key: None,
            input: None,
            after: Vec::new(),
            retry: None,
            timeout_ms: None,
            when: None,
            for_each: None,
            optional: Vec::new(),
        }
    }
    /// A step that sends `message` to actor `key` of type `actor_type`.
    pub fn actor(
        id: impl Into<String>,
        actor_type: impl Into<String>,
        key: impl Into<String>,
        message: Value,
    ) -> Self {
        let mut s = Self::new(id, "");
        s.actor = Some(actor_type.into());
        s.key = Some(key.into());
        s.input = Some(message);
        s
    }

    /// The task that runs the step: its own, or [`crate::vocab::ACTOR_STEP_TASK`] for a
    /// step that targets an actor.
    pub fn task_name(&self) -> &str {
        if self.actor.is_some() {
            crate::vocab::ACTOR_STEP_TASK
        } else {
            &self.task
        }
    }

    /// Sets the step's own input.
    pub fn input(mut self, input: Value) -> Self {
        self.input = Some(input);
        self
    }
    /// Adds dependencies.
    pub fn after<I: IntoIterator<Item = S>, S: Into<String>>(mut self, deps: I) -> Self {
        self.after.extend(deps.into_iter().map(Into::into));
        self
    }
    /// Adds optional dependencies: waited for, not required to succeed.
    pub fn optional<I: IntoIterator<Item = S>, S: Into<String>>(mut self, deps: I) -> Self {
        self.optional.extend(deps.into_iter().map(Into::into));
        self
    }
    /// Guards the step with a CEL condition.
    pub fn when(mut self, condition: impl Into<String>) -> Self {
        self.when = Some(condition.into());
        self
    }
    /// Runs the step once per item of a CEL list.
    pub fn for_each(mut self, list: impl Into<String>) -> Self {
        self.for_each = Some(list.into());
        self
    }
    /// Sets the retry policy of this step.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
    /// Sets the per-attempt time limit.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }
}

/// Largest job file (and job submitted over HTTP) accepted: 8 MiB, half the default
/// `max_message_bytes`, so that a job with its input always fits in one message.
pub const MAX_JOB_BYTES: u64 = 8 * 1024 * 1024;

/// A job: a DAG of steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A name for people; not unique.
    #[serde(default)]
    pub name: String,
    /// Scheduling class.
    #[serde(default)]
    pub priority: Priority,
    /// The job's input, seen by steps without an input of their own.
    #[serde(default)]
    pub input: Value,
    /// Default retry policy for every step.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// The step whose output is the job's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The steps.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    /// `use` (default) or `bypass`: whether cached results and identical requests in
    /// flight may serve this job's steps of pure or mergeable tasks.
    #[serde(default)]
    pub cache: crate::merge::CacheMode,
}

impl JobSpec {
    /// An empty job called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            priority: Priority::Normal,
            input: Value::Null,
            retry: RetryPolicy::default(),
            output: None,
            steps: Vec::new(),
            cache: crate::merge::CacheMode::Use,
        }
    }

    /// Adds a step.
    pub fn step(mut self, step: StepSpec) -> Self {
        self.steps.push(step);
        self
    }

    /// Sets the job's priority class.
    pub fn with_priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// Sets the job's input.
    pub fn with_input(mut self, input: Value) -> Self {
        self.input = input;
        self
    }

    /// Parses a job from text. `path` names the source in errors and picks the format:
    /// `.json` is JSON, `.toml` TOML, anything else JSON if it starts with `{`, else TOML.
    pub fn parse(text: &str, path: &str) -> Result<Self, JobFileError> {
        let json = if path.ends_with(".json") {
            true
        } else if path.ends_with(".toml") {
            false
        } else {
            text.trim_start().starts_with('{')
        };
        if json {
            serde_json::from_str(text).map_err(|e| JobFileError::Json {
                path: path.into(),
                message: e.to_string(),
            })
        } else {
            toml::from_str(text).map_err(|e| JobFileError::Toml {
                path: path.into(),
                message: e.to_string().trim_end().replace('\n', "\n  "),
            })
        }
    }

    /// Reads and parses a job file; `-` reads standard input. A file over
    /// [`MAX_JOB_BYTES`] is refused before it is read whole.
    pub fn read(path: &str) -> Result<Self, JobFileError> {
        Self::read_limited(path, MAX_JOB_BYTES)
    }

    /// [`JobSpec::read`] with a size limit of `max` bytes.
    pub fn read_limited(path: &str, max: u64) -> Result<Self, JobFileError> {
        use std::io::Read;
        let name = if path == "-" { "standard input" } else { path };
        let read_err = |e| JobFileError::Read {
            path: name.into(),
            source: e,
        };
        let source: Box<dyn Read> = if path == "-" {
            Box::new(std::io::stdin())
        } else {
            let f = std::fs::File::open(path).map_err(read_err)?;
            let size = f.metadata().map_err(read_err)?.len();
            if size > max {
                return Err(JobFileError::TooLarge {
                    path: name.into(),
                    size,
                    max,
                });
            }
            Box::new(f)
        };
        // Read at most one byte past the limit: enough to know it is too large.
        let mut bytes = Vec::new();
        source
            .take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > max {
            return Err(JobFileError::TooLarge {
                path: name.into(),
                size: bytes.len() as u64,
                max,
            });
        }
        let text = String::from_utf8(bytes).map_err(|e| JobFileError::Read {
            path: name.into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        Self::parse(&text, name)
    }

    /// The retry policy that applies to `step`.
    pub fn retry_for(&self, step: &StepSpec) -> RetryPolicy {
        step.retry.unwrap_or(self.retry)
    }
}

/// Sub-work asked for by a running attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SpawnKind {
    /// Run `task` once per input (re-entrant calls); the result is the list of outputs.
    Calls {
        /// The task.
        task: String,
        /// One call per input.
        inputs: Vec<Value>,
    },
    /// Run a sub-job; the result is its output.
    Job(JobSpec),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_and_json() {
        let t = r#"
name = "example"
priority = "high"
input = { accounts = { facebook = "fb-1" } }
[retry]
max_attempts = 4
backoff_ms = 10
[[steps]]
id = "a"
task = "troupe.echo"
input = { value = 1 }
[[steps]]
id = "twitter"
task = "troupe.echo"
when = "has(input.accounts.twitter)"
[[steps]]
id = "each"
task = "troupe.echo"
for_each = "[1, 2, 3]"
[[steps]]
id = "c"
task = "troupe.sum"
after = ["a", "each"]
optional = ["twitter"]
timeout_ms = 5000
"#;
        let j = JobSpec::parse(t, "x.toml").unwrap();
        assert_eq!(j.priority, Priority::High);
        assert_eq!(j.retry.max_attempts, 4);
        assert_eq!(j.steps[3].after, vec!["a".to_string(), "each".to_string()]);
        assert_eq!(j.steps[3].optional, vec!["twitter".to_string()]);
        assert_eq!(j.steps[2].for_each.as_deref(), Some("[1, 2, 3]"));
        assert_eq!(j.steps[0].input, Some(serde_json::json!({"value": 1})));
        let back = JobSpec::parse(&serde_json::to_string(&j).unwrap(), "-").unwrap();
        assert_eq!(back, j);
    }

    #[test]
    fn malformed_files_name_the_problem() {
        let e = JobSpec::parse("[[steps]]\nid = \"a\"\ntask = ", "bad.toml").unwrap_err();
        assert!(e.to_string().contains("bad.toml"), "{e}");
        let e = JobSpec::parse("[[steps]]\nid = \"a\"\ntaks = \"x\"", "t.toml").unwrap_err();
        assert!(e.to_string().contains("taks"), "{e}");
        let e = JobSpec::parse("{\"steps\": [}", "j.json").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn backoff_grows() {
        let p = RetryPolicy {
            max_attempts: 5,
            backoff_ms: 100,
        };
        assert_eq!(p.delay_before(2, 0.5).as_millis(), 100);
        assert_eq!(p.delay_before(2, 0.0).as_millis(), 75);
        assert_eq!(p.delay_before(4, 0.5).as_millis(), 400);
        let d4 = p.delay_before(4, 0.999).as_millis();
        assert!((300..=500).contains(&d4), "{d4}");
    }
}
