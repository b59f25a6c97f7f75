//! The status JSON of DESIGN.md and the events a job handle follows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// State of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, no step started yet.
    Queued,
    /// At least one step started.
    Running,
    /// Every step ended and none failed.
    Succeeded,
    /// A step failed for good.
    Failed,
    /// Cancelled by a user.
    Cancelled,
    /// A step waits for a user's action.
    WaitingForUser,
}

impl JobState {
    /// The name in the status JSON (`running`, `waiting_for_user`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::WaitingForUser => "waiting_for_user",
        }
    }

    /// True once the job can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl std::str::FromStr for JobState {
    type Err = String;

    /// A state by its name in the status JSON; the error lists the names.
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(Value::String(s.to_string())).map_err(|_| {
            format!(
                "unknown state {s:?}; use queued, running, succeeded, failed, cancelled or \
                 waiting_for_user"
            )
        })
    }
}

/// State of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Waiting for its dependencies or for a worker.
    Pending,
    /// An attempt is running.
    Running,
    /// Finished with an output.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Not run (its condition was false, or a required dependency was skipped).
    Skipped,
    /// Cancelled with its job.
    Cancelled,
    /// Stopped for a user's action.
    WaitingForUser,
}

impl StepState {
    /// The name in the status JSON (`pending`, `skipped`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::Cancelled => "cancelled",
            StepState::WaitingForUser => "waiting_for_user",
        }
    }

    /// True once the step can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Failed | StepState::Skipped | StepState::Cancelled
        )
    }
}

/// True for a step that is not in the job file but grew from one: a fan-out child
/// (`STEP[i]`) or a step of a sub-job or call (`STEP/CHILD`).
pub fn is_child_step(id: &str) -> bool {
    id.contains('[') || id.contains('/')
}

/// One step in the status JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStatus {
    /// Its state.
    pub state: StepState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The node that ran (or runs) the latest attempt.
    pub node: Option<String>,
    /// The latest error, if any.
    pub error: Option<String>,
    /// Why it waits for a user, or why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The task it runs.
    pub task: String,
    /// The steps it waits for (required and optional).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Its result came from the cache.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cache_hit: bool,
    /// Its result came from an identical request in flight.
    #[serde(default, skip_serializing_if = "is_false")]
    pub merged: bool,
    /// How far the running attempt says it is: `[numerator, denominator]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<[u64; 2]>,
    /// What it gave, once it succeeded.
    #[serde(default)]
    pub output: Option<Value>,
    /// When its latest attempt started, in Unix milliseconds.
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    /// When it ended, in Unix milliseconds.
    #[serde(default)]
    pub ended_at_ms: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Counters over a job's executions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStats {
    /// Task executions started (every attempt counts).
    pub executions: u64,
    /// Requests that joined an identical one in flight.
    pub merged: u64,
    /// Requests answered from the result cache.
    pub cache_hits: u64,
    /// Attempts run again because their node died, left or went silent (or their
    /// external worker disconnected); these use no retries.
    #[serde(default)]
    pub lost_attempts: u64,
    /// Results that came for attempts already given up (a node back from a partition)
    /// and were discarded: each step keeps exactly one recorded result.
    #[serde(default)]
    pub late_results: u64,
}

/// The status JSON of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job id; it names the node that owns the job.
    pub id: String,
    /// The job's name from its file.
    pub name: String,
    /// Its state.
    pub state: JobState,
    /// Every step, by id.
    pub steps: BTreeMap<String, StepStatus>,
    /// The job's output once it succeeded.
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// Counters.
    pub stats: JobStats,
    /// Milliseconds from acceptance to the end, once ended.
    pub elapsed_ms: Option<u64>,
    /// When the job was accepted, in Unix milliseconds.
    #[serde(default)]
    pub submitted_at_ms: u64,
}

/// Something that happened to a job, as a handle sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job was accepted and waits for its first step to start.
    Queued {
        /// The job.
        job: String,
        /// The job's name from its file.
        #[serde(default)]
        name: String,
        /// Steps in its file.
        #[serde(default)]
        steps: u32,
    },
    /// An attempt of a step was handed to a worker.
    StepStarted {
        /// The job.
        job: String,
        /// The step.
        step: String,
        /// The step's task.
        #[serde(default)]
        task: String,
        /// Attempt number, from 1.
        attempt: u32,
        /// The node running it.
        node: String,
    },
    /// An attempt failed and the step will be retried.
    StepRetrying {
        /// The job.
        job: String,
        /// The step.
        step: String,
        /// The step's task.
        #[serde(default)]
        task: String,
        /// The attempt that failed.
        attempt: u32,
        /// Why it failed.
        error: String,
        /// Delay before the next attempt.
        delay_ms: u64,
    },
    /// A step stopped for a user's action; `troupe-node resume` continues it.
    StepNeedsAction {
        /// The job.
        job: String,
        /// The step.
        step: String,
        /// What the user must do.
        message: String,
    },
    /// A running attempt said how far it is (Gearman `WORK_STATUS`).
    StepProgress {
        /// The job.
        job: String,
        /// The step.
        step: String,
        /// Done so far.
        numerator: u64,
        /// Out of.
        denominator: u64,
    },
    /// A running attempt sent partial data or a warning for the job's watchers (Gearman
    /// `WORK_DATA`, `WORK_WARNING`).
    StepData {
        /// The job.
        job: String,
        /// The step.
        step: String,
        /// The bytes.
        data: Vec<u8>,
        /// True for a warning.
        warning: bool,
    },
    /// A step ended.
    StepFinished {
        /// The job.
        job: String,
        /// The step.
        step: String,
        /// The step's task.
        #[serde(default)]
        task: String,
        /// How it ended.
        state: StepState,
        /// The node that ran the last attempt.
        node: Option<String>,
        /// The error, if it failed.
        error: Option<String>,
    },
    /// The job ended; the status is final.
    JobFinished {
        /// The final status.
        status: Box<JobStatus>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_match_the_json() {
        for s in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
            JobState::WaitingForUser,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in [
            StepState::Pending,
            StepState::Running,
            StepState::Succeeded,
            StepState::Failed,
            StepState::Skipped,
            StepState::Cancelled,
            StepState::WaitingForUser,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
