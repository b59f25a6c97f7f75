//! Gearman's text admin protocol, as `gearadmin` and monitoring scripts speak it, and
//! [`GearmanAdmin`], the actor through which other nodes read this node's front door.
//!
//! A Troupe cluster has no single queue: each node's board holds the external workers
//! connected to it and the attempts waiting for them or held by them. `status`,
//! `prioritystatus` and `workers` answer for the whole cluster, as one gearmand would:
//! the node asked gathers every node's [`GearmanReport`] (its own board's, and each other
//! node's through its `GearmanAdmin`, in `troupe.gearman_admin`) and sums them. A node
//! that does not answer within [`REPORT_TIMEOUT`] is left out of that answer.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use troupe_runtime::protocol::{
    FunctionLine, GearmanAdminMessage, GearmanReport, JobLine, WorkerLine, GEARMAN_ADMIN_GROUP,
};
use troupe_runtime::wire::Wire;

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

/// Answers `line` from `cluster` (the merged reports, for the commands that
/// [`wants_cluster`]); `loopback` tells whether the peer is on this machine (only it may
/// shut the node down or set a `maxqueue`).
pub(crate) fn answer(line: &str, cluster: &GearmanReport, loopback: bool) -> AdminAnswer {
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
        "show" => match (words.next(), words.next()) {
            // gearmand: HANDLE, retries, ignore_job, queued.
            (Some("jobs"), None) => {
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
            _ => text("ERR UNKNOWN_COMMAND Unknown+server+command\n"),
        },
        // A function exists here while a worker can do it or work waits for it: one
        // created by hand would not be listed, and one without either is gone already.
        "create" | "drop" if !loopback => {
            text("ERR NOT_ALLOWED function+commands+are+accepted+only+from+this+machine\n")
        }
        "create" => match (words.next(), words.next()) {
            (Some("function"), Some(_)) => text("OK\n"),
            _ => text(
                "ERR INCOMPLETE_ARGS An+incomplete+set+of+arguments+was+sent+to+this+command\n",
            ),
        },
        "drop" => match (words.next(), words.next()) {
            (Some("function"), Some(f)) => {
                match cluster.functions.iter().find(|l| l.function == f) {
                    Some(l) if l.workers > 0 || l.total > 0 => text(
                        "ERR HAS_WORKERS_OR_JOBS there+are+still+connected+workers+or+executing+clients\n",
                    ),
                    _ => text("OK\n"),
                }
            }
            _ => text(
                "ERR INCOMPLETE_ARGS An+incomplete+set+of+arguments+was+sent+to+this+command\n",
            ),
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
            if !loopback {
                return text("ERR NOT_ALLOWED maxqueue+is+accepted+only+from+this+machine\n");
            }
            let Some(f) = words.next() else {
                return text(
                    "ERR INCOMPLETE_ARGS An+incomplete+set+of+arguments+was+sent+to+this+command\n",
                );
            };
            // gearmand: no size, or a negative one, means no limit.
            let n = match words.next().map(str::parse::<i64>) {
                None => 0,
                Some(Ok(n)) => usize::try_from(n).unwrap_or(0),
                Some(Err(_)) => return text("ERR INVALID_ARGUMENT the+size+is+not+a+number\n"),
            };
            AdminAnswer {
                text: "OK\n".into(),
                max_queue: Some((f.to_string(), n)),
                shutdown: false,
            }
        }
        "shutdown" => {
            if !loopback {
                return text("ERR NOT_ALLOWED shutdown+is+accepted+only+from+this+machine\n");
            }
            AdminAnswer {
                text: "OK\n".into(),
                max_queue: None,
                shutdown: true,
            }
        }
        "" => text(""),
        _ => text("ERR UNKNOWN_COMMAND Unknown+server+command\n"),
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
    use super::*;

    #[test]
    fn status_lists_functions_tab_separated_and_ends_with_a_dot() {
        let mut b = Board::new("n1");
        b.connect(1, "127.0.0.1:5".into());
        b.can_do(1, "rev", None);
        let r = report(&b);
        assert_eq!(answer("status", &r, true).text, "rev\t0\t0\t1\n.\n");
        assert_eq!(answer("workers", &r, true).text, "1 127.0.0.1 - : rev\n.\n");
        assert!(wants_cluster("status") && wants_cluster("workers"));
        assert!(!wants_cluster("version") && !wants_cluster("maxqueue rev 1"));
    }

    #[test]
    fn shutdown_only_from_loopback_and_unknown_commands_are_errors() {
        let b = report(&Board::new("n1"));
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
        b.enqueue(req("n1-a-1")).expect("queued");
        b.enqueue(req("n1-a-2")).expect("queued");
        b.grab(1, std::time::Instant::now()).expect("grabbed");
        let r = report(&b);
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
        assert_eq!(answer("drop function idle", &r, true).text, "OK\n");
        assert!(answer("drop function idle", &r, false)
            .text
            .starts_with("ERR NOT_ALLOWED"));
        assert_eq!(answer("create function f", &r, true).text, "OK\n");
    }
}
