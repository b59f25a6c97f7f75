//! tracing set-up: human text by default, JSON on request; `RUST_LOG` overrides the level.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, writing to stderr. `default` is the level without RUST_LOG.
pub fn init(json: bool, default: &str) {
    use std::io::IsTerminal;
    // ractor_cluster logs every TCP session at info, openraft its whole state at each
    // start; Troupe's own lines say what matters (node joined, node left, connection
    // refused, forming the core group).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},ractor=warn,ractor_cluster=error,openraft=warn"
        ))
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr (a pipe whose reader left) must not turn a log line into a
        // panic: tracing would report the failed write with eprintln!, which panics.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = if json {
        b.json().flatten_event(true).try_init()
    } else {
        b.compact().try_init()
    };
    // Panics inside tasks are caught and reported as failed steps; log them through tracing
    // instead of the default hook's raw stderr text.
    std::panic::set_hook(Box::new(|info| {
        let msg = troupe_actors::panic_message(info.payload());
        let at = info.location().map(|l| l.to_string()).unwrap_or_default();
        tracing::error!(panic = %msg, location = %at, "panic");
    }));
}
