//! Gearman's text admin protocol, as `gearadmin` and monitoring scripts speak it, and
//! [`GearmanAdmin`], the actor through which other nodes read this node's front door.
//!
//! A Troupe cluster has no single queue: each node's board holds the external workers
//! connected to it and the attempts waiting for them or held by them. `status`,
//! `prioritystatus` and `workers` answer for the whole cluster, as one gearmand would:
//! the node asked gathers every node's [`GearmanReport`] (its own board's, and each other
//! node's through its `GearmanAdmin`, in `troupe.gearman_admin`) and sums them. A node
//! that does not answer within [`REPORT_TIMEOUT`] is left out of that answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use troupe_runtime::protocol::{
    first_member, job_manager_group, FunctionLine, GearmanAdminMessage, GearmanReport, JobLine,
    JobManagerMessage, JobQueryError, WorkerLine, GEARMAN_ADMIN_GROUP,
};
use troupe_runtime::wire::Wire;
use troupe_runtime::JobState;

use super::board::Board;
use super::{lock, GearmanShared};
use crate::NodeContext;

/// How long an admin answer waits for another node's report.
pub(crate) const REPORT_TIMEOUT: Duration = Duration::from_secs(1);

/// What `board` holds, as a report.
pub(crate) fn report(board: &Board) -> GearmanReport {
    GearmanReport {
        functions: board
            .status()
            .into_iter()
            .map(|s| FunctionLine {
                function: s.function,
                total: s.total as u64,
                running: s.running as u64,
                workers: s.workers as u64,
                queued: s.queued.map(|q| q as u64),
            })
            .collect(),
        workers: board
            .connections()
            .map(|(id, c)| WorkerLine {
                id: *id,
                // gearmand prints the peer's IP without its port.
                ip: c
                    .addr
                    .rsplit_once(':')
                    .map_or(c.addr.clone(), |(ip, _)| ip.to_string()),
                client_id: c.client_id.clone(),
                functions: c.abilities.keys().cloned().collect(),
            })
            .collect(),
        jobs: board
            .jobs()
            .into_iter()
            .map(|(handle, attempt, queued)| JobLine {
                handle,
                retries: attempt.saturating_sub(1),
                queued,
            })
            .collect(),
    }
}

/// Whether the answer to `line` describes the cluster's workers and queues.
pub(crate) fn wants_cluster(line: &str) -> bool {
    matches!(
        line.split_whitespace().next(),
        Some("status" | "prioritystatus" | "workers" | "show" | "drop")
    )
}

/// This node's board and every other node's report, merged.
pub(crate) async fn cluster_report(shared: &GearmanShared) -> GearmanReport {
    let local = report(&lock(&shared.board));
    let others = ractor::pg::get_members(&GEARMAN_ADMIN_GROUP.to_string())
        .into_iter()
        .filter(|m| !m.get_id().is_local())
        .map(|m| {
            let m: ActorRef<GearmanAdminMessage> = m.into();
            async move {
                match m
                    .call(GearmanAdminMessage::Report, Some(REPORT_TIMEOUT))
                    .await
                {
                    Ok(ractor::rpc::CallResult::Success(w)) => w.into_inner().ok(),
                    _ => None,
                }
            }
        });
    let others = futures::future::join_all(others).await;
    GearmanReport::merge(std::iter::once(local).chain(others.into_iter().flatten()))
}

/// The answer to one admin line.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AdminAnswer {
    /// Text to send back.
    pub text: String,
    /// `maxqueue FUNCTION N` to apply.
    pub max_queue: Option<(String, usize)>,
    /// The node should shut down.
    pub shutdown: bool,
}

fn text(t: impl Into<String>) -> AdminAnswer {
    AdminAnswer {
        text: t.into(),
        ..AdminAnswer::default()
    }
}

/// gearmand ends `OK` of a command that changes state, and every `ERR`, with CRLF (its
/// `version`, `getpid`, `verbose` and listings with a bare LF); a line reader of either
/// kind reads both.
fn ok() -> AdminAnswer {
    text("OK\r\n")
}

fn err(code: &str, why: &str) -> AdminAnswer {
    if why.is_empty() {
        text(format!("ERR {code}\r\n"))
    } else {
        text(format!("ERR {code} {}\r\n", why.replace(' ', "+")))
    }
}

fn incomplete() -> AdminAnswer {
    err(
        "INVALID_ARGUMENTS",
        "An incomplete set of arguments was sent to this command",
    )
}

fn not_allowed(what: &str) -> AdminAnswer {
    err(
        "NOT_ALLOWED",
        &format!("{what} is accepted only from this machine or the networks of gearman_admin_from"),
    )
}

/// What an admin answer reads, gathered before it is written.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// Every node's report, merged (for the commands that [`wants_cluster`]).
    pub cluster: GearmanReport,
    /// The client's unique id of each Gearman job in flight with one, by job id (for
    /// `show unique jobs`).
    pub uniques: HashMap<String, String>,
}

/// The unique-key prefix of jobs submitted with a unique id through a Gearman port (the
/// key is `gearman\0UNIQUE\0FUNCTION`).
pub(crate) const UNIQUE_PREFIX: &str = "gearman\0";

/// The client's unique id in a job manager's unique key.
pub(crate) fn unique_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(UNIQUE_PREFIX)?
        .rsplit_once('\0')
        .map(|(u, _)| u)
}

/// Gathers what `line` needs: the cluster's report, and for `show unique jobs` the unique
/// ids every node's job manager holds.
pub(crate) async fn gather(line: &str, shared: &GearmanShared, nodes: &[String]) -> Facts {
    let mut facts = Facts::default();
    if wants_cluster(line) {
        facts.cluster = cluster_report(shared).await;
    }
    if is_show_unique(line) {
        let asks = nodes.iter().filter_map(|n| {
            let jm = first_member::<JobManagerMessage>(&job_manager_group(n))?;
            Some(async move {
                match jm
                    .call(
                        |r| JobManagerMessage::Uniques(UNIQUE_PREFIX.to_string(), r),
                        Some(REPORT_TIMEOUT),
                    )
                    .await
                {
                    Ok(ractor::rpc::CallResult::Success(w)) => w.into_inner().unwrap_or_default(),
                    _ => Vec::new(),
                }
            })
        });
        for (key, job) in futures::future::join_all(asks).await.into_iter().flatten() {
            if let Some(u) = unique_of_key(&key) {
                facts.uniques.insert(job, u.to_string());
            }
        }
    }
    facts
}

fn is_show_unique(line: &str) -> bool {
    let w: Vec<&str> = line.split_whitespace().collect();
    w == ["show", "unique", "jobs"]
}

/// The job handle of a `cancel job HANDLE` line.
pub(crate) fn cancel_target(line: &str) -> Option<&str> {
    let mut w = line.split_whitespace();
    match (w.next(), w.next(), w.next(), w.next()) {
        (Some("cancel"), Some("job"), Some(h), None) => Some(h),
        _ => None,
    }
}

/// Cancels job `handle` through this node's job manager (it forwards to the owner) and
/// says how, as gearmand would: `OK` when it was under way, `ERR UNKNOWN_JOB` when there
/// is no such job or it had ended already.
pub(crate) async fn cancel_job(node: &str, handle: &str, trusted: bool) -> String {
    // It ends someone's job: an operator's command, not any peer's (the port has no
    // authentication).
    if !trusted {
        return not_allowed("cancel").text;
    }
    let Some(jm) = first_member::<JobManagerMessage>(&job_manager_group(node)) else {
        return err(
            "SERVER_BUSY",
            "no job manager is running on this node; try again",
        )
        .text;
    };
    // A job that ended is gone for gearmand: only one under way is cancelled.
    let ask = |cancel: bool| {
        let (jm, handle) = (jm.clone(), handle.to_string());
        async move {
            let asked = jm
                .call(
                    |r| match cancel {
                        true => JobManagerMessage::Cancel(handle, r),
                        false => JobManagerMessage::Status(handle, r),
                    },
                    Some(REPORT_TIMEOUT * 5),
                )
                .await;
            match asked {
                Ok(ractor::rpc::CallResult::Success(w)) => match w.into_inner() {
                    Ok(Ok(st)) => Ok(Some(st.state)),
                    Ok(Err(JobQueryError::NotFound(_))) => Ok(None),
                    Ok(Err(e)) => Err(format!("{e}; try again")),
                    Err(e) => Err(format!("unreadable answer: {e}")),
                },
                _ => Err("the job's owner did not answer; try again".to_string()),
            }
        }
    };
    match ask(false).await {
        Ok(Some(s)) if !s.is_terminal() => match ask(true).await {
            Ok(Some(JobState::Cancelled)) => ok().text,
            Ok(_) => err("UNKNOWN_JOB", "").text,
            Err(e) => err("SERVER_BUSY", &e).text,
        },
        Ok(_) => err("UNKNOWN_JOB", "").text,
        Err(e) => err("SERVER_BUSY", &e).text,
    }
}

/// Answers `line` from `facts`; `trusted` tells whether the peer may change state (shut
/// the node down, set a `maxqueue`, create and drop functions): it is on this machine or
/// in `gearman_admin_from`.
pub(crate) fn answer(line: &str, facts: &Facts, trusted: bool) -> AdminAnswer {
    let cluster = &facts.cluster;
    let mut words = line.split_whitespace();
    match words.next().unwrap_or("") {
        "status" => {
            let mut t = String::new();
            for s in &cluster.functions {
                t.push_str(&format!(
                    "{}\t{}\t{}\t{}\n",
                    s.function, s.total, s.running, s.workers
                ));
            }
            t.push_str(".\n");
            text(t)
        }
        "prioritystatus" => {
            let mut t = String::new();
            for s in &cluster.functions {
                let [h, n, l] = s.queued;
                t.push_str(&format!("{}\t{h}\t{n}\t{l}\t{}\n", s.function, s.workers));
            }
            t.push_str(".\n");
            text(t)
        }
        "verbose" => text("OK INFO\n"),
        "show" => match (words.next(), words.next(), words.next()) {
            // gearmand: HANDLE, retries, ignore_job, queued.
            (Some("jobs"), None, None) => {
                let mut t = String::new();
                for j in &cluster.jobs {
                    t.push_str(&format!(
                        "{}\t{}\t0\t{}\n",
                        j.handle,
                        j.retries,
                        u8::from(j.queued)
                    ));
                }
                t.push_str(".\n");
                text(t)
            }
            // One line per job of `show jobs`: the client's unique id (gearmand makes one
            // up for a job submitted without; Troupe shows its handle).
            (Some("unique"), Some("jobs"), None) => {
                let mut t = String::new();
                for j in &cluster.jobs {
                    t.push_str(facts.uniques.get(&j.handle).unwrap_or(&j.handle));
                    t.push('\n');
                }
                t.push_str(".\n");
                text(t)
            }
            _ => err("UNKNOWN_SHOW_ARGUMENTS", ""),
        },
        // A function exists here while a worker can do it or work waits for it: one
        // created by hand would not be listed, and one without either is gone already.
        "create" | "drop" if !trusted => not_allowed("a function command"),
        "create" => match (words.next(), words.next()) {
            (Some("function"), Some(_)) => ok(),
            _ => incomplete(),
        },
        "drop" => match (words.next(), words.next()) {
            (Some("function"), Some(f)) => {
                match cluster.functions.iter().find(|l| l.function == f) {
                    Some(l) if l.workers > 0 || l.total > 0 => err(
                        "HAS_WORKERS_OR_JOBS",
                        "there are still connected workers or executing clients",
                    ),
                    _ => ok(),
                }
            }
            _ => incomplete(),
        },
        "workers" => {
            let mut t = String::new();
            for w in &cluster.workers {
                // As gearmand: `FD IP CLIENT_ID :` and ` FUNCTION` for each.
                t.push_str(&format!("{} {} {} :", w.id, w.ip, w.client_id));
                for f in &w.functions {
                    t.push(' ');
                    t.push_str(f);
                }
                t.push('\n');
            }
            t.push_str(".\n");
            text(t)
        }
        "version" => text(format!("OK troupe-{}\n", env!("CARGO_PKG_VERSION"))),
        "getpid" => text(format!("OK {}\n", std::process::id())),
        "maxqueue" => {
            // It refuses a function's jobs: an operator's command, not any peer's (the
            // port has no authentication).
            if !trusted {
                return not_allowed("maxqueue");
            }
            let Some(f) = words.next() else {
                return incomplete();
            };
            // gearmand: no size, or a negative one, means no limit.
            let n = match words.next().map(str::parse::<i64>) {
                None => 0,
                Some(Ok(n)) => usize::try_from(n).unwrap_or(0),
                Some(Err(_)) => return err("INVALID_ARGUMENTS", "the size is not a number"),
            };
            AdminAnswer {
                max_queue: Some((f.to_string(), n)),
                ..ok()
            }
        }
        "shutdown" => {
            if !trusted {
                return not_allowed("shutdown");
            }
            AdminAnswer {
                shutdown: true,
                ..ok()
            }
        }
        // `cancel job HANDLE` is answered by [`cancel_job`] before it gets here.
        "cancel" => err("UNKNOWN_ERROR", ""),
        "" => text(""),
        _ => err("UNKNOWN_COMMAND", "Unknown server command"),
    }
}

/// The actor that answers other nodes' questions about this node's Gearman front door.
pub(crate) struct GearmanAdmin;

impl Actor for GearmanAdmin {
    type Msg = GearmanAdminMessage;
    type State = Arc<GearmanShared>;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(GEARMAN_ADMIN_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(ctx.view.gearman.clone())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GearmanAdminMessage::Report(reply) => {
                let _ = reply.send(Wire::new(report(&lock(&shared.board))));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn facts(b: &Board) -> Facts {
        Facts {
            cluster: report(b),
            ..Facts::default()
        }
    }

    #[test]
    fn status_lists_functions_tab_separated_and_ends_with_a_dot() {
        let mut b = Board::new("n1");
        b.connect(1, "127.0.0.1:5".into());
        b.can_do(1, "rev", None);
        let r = facts(&b);
        assert_eq!(answer("status", &r, true).text, "rev\t0\t0\t1\n.\n");
        assert_eq!(answer("workers", &r, true).text, "1 127.0.0.1 - : rev\n.\n");
        assert!(wants_cluster("status") && wants_cluster("workers"));
        assert!(!wants_cluster("version") && !wants_cluster("maxqueue rev 1"));
    }

    #[test]
    fn shutdown_only_from_loopback_and_unknown_commands_are_errors() {
        let b = facts(&Board::new("n1"));
        assert!(answer("shutdown graceful", &b, true).shutdown);
        let a = answer("shutdown", &b, false);
        assert!(!a.shutdown && a.text.starts_with("ERR NOT_ALLOWED"));
        assert!(answer("frobnicate", &b, true)
            .text
            .starts_with("ERR UNKNOWN_COMMAND"));
        assert_eq!(
            answer("maxqueue rev 10", &b, true).max_queue,
            Some(("rev".into(), 10))
        );
        let a = answer("maxqueue rev 1", &b, false);
        assert!(a.max_queue.is_none() && a.text.starts_with("ERR NOT_ALLOWED"));
        assert!(answer("version", &b, true).text.starts_with("OK troupe-"));
    }

    #[test]
    fn show_jobs_lists_queued_and_held_jobs_and_drop_function_refuses_a_busy_one() {
        let mut b = Board::new("n1");
        b.connect(1, "127.0.0.1:5".into());
        b.can_do(1, "rev", None);
        let req = |job: &str| troupe_runtime::protocol::StepRequest {
            attempt: 2,
            ..super::super::board::test_request(
                job,
                "rev",
                troupe_runtime::job::spec::Priority::Normal,
            )
        };
        b.enqueue(req("n1-a-1"), Instant::now()).expect("queued");
        b.enqueue(req("n1-a-2"), Instant::now()).expect("queued");
        b.grab(1, std::time::Instant::now()).expect("grabbed");
        let r = facts(&b);
        let mut lines: Vec<&str> = Vec::new();
        let shown = answer("show jobs", &r, false).text;
        lines.extend(shown.lines());
        assert_eq!(lines.pop(), Some("."), "{shown}");
        lines.sort_unstable();
        assert_eq!(lines, ["n1-a-1\t1\t0\t0", "n1-a-2\t1\t0\t1"], "{shown}");
        assert!(wants_cluster("show jobs"));
        assert!(answer("drop function rev", &r, true)
            .text
            .starts_with("ERR HAS_WORKERS_OR_JOBS"));
        assert_eq!(answer("drop function idle", &r, true).text, "OK\r\n");
        assert!(answer("drop function idle", &r, false)
            .text
            .starts_with("ERR NOT_ALLOWED"));
        assert_eq!(answer("create function f", &r, true).text, "OK\r\n");
        assert_eq!(
            answer("show foo", &r, true).text,
            "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"
        );
        assert!(answer("create function", &r, true)
            .text
            .starts_with("ERR INVALID_ARGUMENTS"));
    }

    /// `show unique jobs` has a line per job of `show jobs`: the client's unique id, or
    /// the handle of a job submitted without one.
    #[test]
    fn show_unique_jobs_names_each_job_by_its_unique_id_or_handle() {
        let mut b = Board::new("n1");
        b.connect(1, "127.0.0.1:5".into());
        b.can_do(1, "rev", None);
        let req = |job: &str| {
            super::super::board::test_request(
                job,
                "rev",
                troupe_runtime::job::spec::Priority::Normal,
            )
        };
        b.enqueue(req("n1-a-1"), Instant::now()).expect("queued");
        b.enqueue(req("n1-a-2"), Instant::now()).expect("queued");
        let mut f = facts(&b);
        let key = format!("{UNIQUE_PREFIX}order-7\0rev");
        let u = unique_of_key(&key).expect("a Gearman key");
        f.uniques.insert("n1-a-2".into(), u.to_string());
        let shown = answer("show unique jobs", &f, false).text;
        let mut lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.pop(), Some("."), "{shown}");
        lines.sort_unstable();
        assert_eq!(lines, ["n1-a-1", "order-7"], "{shown}");
        assert_eq!(unique_of_key("job-file-key"), None);
        assert_eq!(cancel_target("cancel job H:1"), Some("H:1"));
        assert_eq!(cancel_target("cancel job"), None);
        assert_eq!(answer("cancel", &f, true).text, "ERR UNKNOWN_ERROR\r\n");
    }
}
