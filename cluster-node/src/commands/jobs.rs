//! `troupe-node jobs|watch|rerun`: the cluster's jobs, following one to its end, and
//! submitting one again.

use serde_json::json;
use troupe_runtime::observe::JobSummary;
use troupe_runtime::JobState;

use crate::cli::{JobsArgs, StatusArgs, WatchArgs};
use crate::commands::{connect, fail, submit};
use crate::exit;

/// The most jobs one `jobs` prints (the cluster's page limit).
const MAX_LIMIT: usize = 1000;

/// Lists the cluster's jobs, newest first, as a table or as `{"jobs": [...]}`.
pub async fn list(a: JobsArgs) -> u8 {
    let state = match a.state.as_deref().map(str::parse::<JobState>).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("troupe-node: {e}");
            return exit::BAD_INPUT;
        }
    };
    if !(1..=MAX_LIMIT).contains(&a.limit) {
        eprintln!(
            "troupe-node: --limit must be 1 to {MAX_LIMIT}, not {}",
            a.limit
        );
        return exit::BAD_INPUT;
    }
    let client = match connect(&a.cluster).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // A name filter looks through the newest page the cluster gives, then keeps `limit`.
    let ask = if a.name.is_some() { MAX_LIMIT } else { a.limit };
    let page = match client.jobs(state, 0, ask).await {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let jobs: Vec<&JobSummary> = page
        .jobs
        .iter()
        .filter(|j| a.name.as_ref().is_none_or(|n| &j.name == n))
        .take(a.limit)
        .collect();
    if a.json {
        let list: Vec<_> = jobs.iter().map(|j| summary_json(j)).collect();
        println!(
            "{}",
            json!({"jobs": list, "total": page.total, "unanswered": page.unanswered})
        );
    } else {
        println!(
            "{:<24} {:<16} {:<16} {:<8} {:>7} {:>10}  SUBMITTED",
            "ID", "NAME", "STATE", "OWNER", "STEPS", "ELAPSED"
        );
        for j in &jobs {
            println!(
                "{:<24} {:<16} {:<16} {:<8} {:>7} {:>10}  {}",
                j.id,
                if j.name.is_empty() { "-" } else { &j.name },
                j.state.as_str(),
                j.owner,
                format!("{}/{}", j.finished_steps, j.steps),
                j.elapsed_ms.map(human_ms).unwrap_or_else(|| "-".into()),
                utc_time(j.submitted_ms)
            );
        }
        let shown = jobs.len() as u64;
        if page.total > shown && a.name.is_none() {
            eprintln!(
                "{shown} of {} {}; --limit shows more",
                page.total,
                plural(page.total, "job")
            );
        }
    }
    if !page.unanswered.is_empty() {
        eprintln!(
            "troupe-node: no answer from {} in time; their jobs are missing",
            page.unanswered.join(", ")
        );
    }
    exit::OK
}

/// One job as `jobs --json` shows it (DESIGN.md's fields, and a few more).
fn summary_json(j: &JobSummary) -> serde_json::Value {
    json!({"id": j.id, "name": j.name, "state": j.state, "submitted_at_ms": j.submitted_ms,
           "owner": j.owner, "elapsed_ms": j.elapsed_ms, "steps": j.steps,
           "finished_steps": j.finished_steps, "error": j.error})
}

/// `n` and the word, plural unless 1.
pub fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// A duration for people: `850 ms`, `12.3 s`, `4m05s`, `2h03m`.
pub fn human_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
fn utc_time(ms: u64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64) else {
        return "-".into();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Follows a job (submitted earlier, by anyone) to its end, as `submit --wait` does.
pub async fn watch(a: WatchArgs) -> u8 {
    if let Err(code) = submit::check_timeout(a.timeout) {
        return code;
    }
    let client = match connect(&a.cluster).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match client.watch(&a.job_id).await {
        Ok(handle) => submit::follow(handle, a.timeout).await,
        Err(e) => fail(e),
    }
}

/// Submits a job again with its job file; prints the new id.
pub async fn rerun(a: StatusArgs) -> u8 {
    let client = match connect(&a.cluster).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let spec = match client.spec(&a.job_id).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match client.submit(spec).await {
        Ok(h) => {
            println!("{}", h.id());
            exit::OK
        }
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_people_write_them() {
        assert_eq!(human_ms(850), "850 ms");
        assert_eq!(human_ms(12_345), "12.3 s");
        assert_eq!(human_ms(245_000), "4m05s");
        assert_eq!(human_ms(7_380_000), "2h03m");
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(1_796_428_800_000), "2026-12-05 00:00:00");
        assert_eq!(utc_time(951_827_696_000), "2000-02-29 12:34:56");
        assert_eq!(plural(1, "job"), "job");
        assert_eq!(plural(2, "job"), "jobs");
    }
}
