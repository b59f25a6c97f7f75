//! Gearman's text admin protocol, as `gearadmin` and monitoring scripts speak it.
//!
//! Answers describe this node's Gearman front door: its external workers, and the
//! attempts waiting for them or held by them (a Troupe cluster has no single queue;
//! each node answers for the workers connected to it).

use super::board::Board;

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

/// Answers `line`; `loopback` tells whether the peer is on this machine (only it may
/// shut the node down or set a `maxqueue`).
pub(crate) fn answer(line: &str, board: &Board, loopback: bool) -> AdminAnswer {
    let mut words = line.split_whitespace();
    match words.next().unwrap_or("") {
        "status" => {
            let mut t = String::new();
            for s in board.status() {
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
            for s in board.status() {
                let [h, n, l] = s.queued;
                t.push_str(&format!("{}\t{h}\t{n}\t{l}\t{}\n", s.function, s.workers));
            }
            t.push_str(".\n");
            text(t)
        }
        "verbose" => text("OK INFO\n"),
        "workers" => {
            let mut t = String::new();
            for (id, c) in board.connections() {
                let fs: Vec<&str> = c.abilities.keys().map(String::as_str).collect();
                // gearmand prints the peer's IP without its port.
                let ip = c
                    .addr
                    .rsplit_once(':')
                    .map_or(c.addr.as_str(), |(ip, _)| ip);
                t.push_str(&format!("{id} {ip} {} : {}\n", c.client_id, fs.join(" ")));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_functions_tab_separated_and_ends_with_a_dot() {
        let mut b = Board::new("n1");
        b.connect(1, "127.0.0.1:5".into());
        b.can_do(1, "rev", None);
        assert_eq!(answer("status", &b, true).text, "rev\t0\t0\t1\n.\n");
        assert_eq!(answer("workers", &b, true).text, "1 127.0.0.1 - : rev\n.\n");
    }

    #[test]
    fn shutdown_only_from_loopback_and_unknown_commands_are_errors() {
        let b = Board::new("n1");
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
}
