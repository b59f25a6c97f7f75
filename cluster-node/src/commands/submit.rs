//! `troupe-node submit FILE`: submit a job file, optionally wait for its end.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use troupe_runtime::job::validate::validate;
use troupe_runtime::{JobEvent, JobSpec, JobState, StepState};

use crate::cli::SubmitArgs;
use crate::commands::{connect, fail};
use crate::exit;

/// One line describing an event, for progress output.
pub fn describe(ev: &JobEvent) -> String {
    match ev {
        JobEvent::Queued { job, .. } => format!("job {job} queued"),
        JobEvent::StepStarted {
            step,
            attempt,
            node,
            ..
        } => {
            if *attempt > 1 {
                format!("step {step} started on {node} (attempt {attempt})")
            } else {
                format!("step {step} started on {node}")
            }
        }
        JobEvent::StepNeedsAction {
            job, step, message, ..
        } => {
            format!("step {step} needs action: {message} (then: troupe-node resume {job} {step})")
        }
        JobEvent::StepRetrying {
            step,
            attempt,
            error,
            delay_ms,
            ..
        } => {
            format!("step {step} attempt {attempt} failed ({error}); retrying in {delay_ms} ms")
        }
        JobEvent::StepProgress {
            step,
            numerator,
            denominator,
            ..
        } => format!("step {step} at {numerator}/{denominator}"),
        JobEvent::StepData {
            step,
            data,
            warning,
            ..
        } => format!(
            "step {step} {}: {}",
            if *warning { "warning" } else { "data" },
            String::from_utf8_lossy(data)
        ),
        JobEvent::StepFinished {
            step,
            state,
            node,
            error,
            ..
        } => {
            let on = node
                .as_deref()
                .map(|n| format!(" on {n}"))
                .unwrap_or_default();
            match (state, error) {
                (StepState::Succeeded, _) => format!("step {step} succeeded{on}"),
                (s, Some(e)) => format!("step {step} {}{on}: {e}", s.as_str()),
                (s, None) => format!("step {step} {}{on}", s.as_str()),
            }
        }
        JobEvent::JobFinished { status } => format!(
            "job {} {}{}",
            status.id,
            status.state.as_str(),
            status
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
    }
}

/// Reads the job file, applies `--input`, and checks it before connecting.
pub fn load_job(file: &str, input: Option<&str>) -> Result<JobSpec, String> {
    let mut spec = JobSpec::read(file).map_err(|e| e.to_string())?;
    if let Some(i) = input {
        spec.input = serde_json::from_str(i)
            .map_err(|e| troupe_runtime::JobFileError::Input(e.to_string()).to_string())?;
    }
    validate(&spec).map_err(|e| format!("invalid job: {e}"))?;
    Ok(spec)
}

/// The longest `--timeout`: a year (a larger one would overflow the clock's arithmetic).
const MAX_TIMEOUT_S: f64 = 365.0 * 86_400.0;

/// Refuses a `--timeout` that is not a positive number of seconds up to a year (exit 2).
pub fn check_timeout(timeout: Option<f64>) -> Result<(), u8> {
    match timeout {
        Some(t) if !(t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_S) => {
            eprintln!("troupe-node: --timeout must be a positive number of seconds, at most {MAX_TIMEOUT_S} (a year)");
            Err(exit::BAD_INPUT)
        }
        _ => Ok(()),
    }
}

/// Submits the job; with `--wait`, follows it to the end.
pub async fn run(a: SubmitArgs) -> u8 {
    let spec = match load_job(&a.file, a.input.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("troupe-node: {e}");
            return exit::BAD_INPUT;
        }
    };
    if let Err(e) = check_timeout(a.timeout) {
        return e;
    }
    let client = match connect(&a.cluster).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let handle = match client.submit(spec).await {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    if !a.wait {
        println!("{}", handle.id());
        return exit::OK;
    }
    follow(handle, a.timeout).await
}

/// Follows a job to its end (`submit --wait`, `watch`): progress on stderr, the final
/// status JSON on stdout; exits 0 if it succeeded, 1 if it failed or was cancelled, 3 if
/// `timeout` seconds passed first (the job keeps running).
pub async fn follow(mut handle: troupe_runtime::JobHandle, timeout: Option<f64>) -> u8 {
    let start = Instant::now();
    // A bar on a terminal; on a pipe or file the bar hides itself and plain lines remain.
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if !bar.is_hidden() {
        bar.enable_steady_tick(Duration::from_millis(100));
    }
    let progress = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let mut children = std::collections::HashSet::new();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + Duration::from_secs_f64(t));
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, handle.next_event()).await {
                Ok(ev) => ev,
                Err(_) => {
                    bar.finish_and_clear();
                    eprintln!(
                        "troupe-node: timed out after {:.1} s waiting for job {}; it keeps running (troupe-node status {})",
                        timeout.unwrap_or_default(),
                        handle.id(),
                        handle.id()
                    );
                    return exit::UNREACHABLE;
                }
            },
            None => handle.next_event().await,
        };
        let status = match next {
            Some(JobEvent::JobFinished { status }) => *status,
            Some(ev) => {
                match &ev {
                    JobEvent::Queued { steps, .. } => bar.set_length(u64::from(*steps)),
                    JobEvent::StepStarted { step, .. } | JobEvent::StepFinished { step, .. }
                        if troupe_runtime::job::status::is_child_step(step)
                            && children.insert(step.clone()) =>
                    {
                        bar.inc_length(1)
                    }
                    _ => {}
                }
                if matches!(ev, JobEvent::StepFinished { .. }) {
                    bar.inc(1);
                }
                bar.set_message(describe(&ev));
                progress(format!(
                    "[{:>7.3}s] {}",
                    start.elapsed().as_secs_f64(),
                    describe(&ev)
                ));
                continue;
            }
            None => match handle.status().await {
                Ok(s) => s,
                Err(e) => {
                    bar.finish_and_clear();
                    return fail(e);
                }
            },
        };
        bar.finish_and_clear();
        eprintln!(
            "[{:>7.3}s] {}",
            start.elapsed().as_secs_f64(),
            describe(&JobEvent::JobFinished {
                status: Box::new(status.clone())
            })
        );
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
        return if status.state == JobState::Succeeded {
            exit::OK
        } else {
            exit::JOB_FAILED
        };
    }
}
