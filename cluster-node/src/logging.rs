//! tracing set-up: human text by default, JSON on request; `RUST_LOG` overrides the level.

use std::io::Write;
use std::sync::Mutex;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// The log writer thread's guard: dropping it writes what is left (see [`finish`]).
static WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// stderr behind a buffer that the log writer thread flushes whenever it has no more
/// lines, so that a busy node writes many lines per `write` call. Errors are dropped: a
/// closed stderr has nowhere to report to, and tracing-appender's thread would
/// `eprintln!` them, which panics on a closed stderr.
struct Stderr(std::io::BufWriter<std::io::Stderr>);

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Writes the log lines still queued for the writer thread; call before the process ends.
pub fn finish() {
    drop(WRITER.lock().unwrap_or_else(|p| p.into_inner()).take());
}

/// Installs the global subscriber, writing to stderr. `default` is the level without RUST_LOG.
///
/// Lines are formatted on the thread that logs and written by a thread of their own
/// (tracing-appender, never dropping a line: a full queue of 128k lines makes the logging
/// thread wait): a node logs a line per job, and the `write` call per line was about 3% of
/// a busy owner's actor thread (perf, one-step jobs).
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
        .with_writer(writer());
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

/// The non-blocking stderr writer; keeps its guard in [`WRITER`] (a second call, in
/// tests or an embedding program, keeps the first).
fn writer() -> tracing_appender::non_blocking::NonBlocking {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("troupe-log")
        .finish(Stderr(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        )));
    let mut kept = WRITER.lock().unwrap_or_else(|p| p.into_inner());
    if kept.is_none() {
        *kept = Some(guard);
    }
    writer
}
