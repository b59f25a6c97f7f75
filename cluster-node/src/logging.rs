//! tracing set-up: human text by default, JSON on request; `RUST_LOG` overrides the level.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// How long a line may wait in the buffer before the writer thread writes it.
const FLUSH_EVERY: Duration = Duration::from_millis(10);

/// Buffered bytes at which the writer thread is woken before its time is up.
const WAKE_AT: usize = 64 * 1024;

/// Buffered bytes at which logging waits for the writer thread (never drops a line).
const HOLD_AT: usize = 4 * 1024 * 1024;

/// The node's log writer, set by [`init`]; [`finish`] writes what is left.
static WRITER: Mutex<Option<Batched>> = Mutex::new(None);

/// Log lines gathered in memory and written by a thread of their own every
/// [`FLUSH_EVERY`], many lines per `write` call.
///
/// Written by hand: tracing-appender's non-blocking writer wakes its thread for every
/// line (a futex wake, then the thread spins and yields before it sleeps again), which
/// on an idle node cost 15-25% of the CPU of a sequential one-step job; no crate we
/// found writes on a timer. The logging thread only copies the line into the buffer.
#[derive(Clone)]
pub struct Batched {
    shared: Arc<Shared>,
}

struct Shared {
    buf: Mutex<Pending>,
    /// Wakes the writer thread (buffer past [`WAKE_AT`], or closing).
    wake: Condvar,
    /// Wakes logging threads held at [`HOLD_AT`].
    room: Condvar,
    /// Held while a batch is written, so that batches reach the output in order.
    out: Mutex<Box<dyn Write + Send>>,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Batched {
    /// Starts the writer thread on `out`. Write errors are dropped: a closed stderr has
    /// nowhere to report to.
    pub fn start(out: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            buf: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            room: Condvar::new(),
            out: Mutex::new(out),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("troupe-log".into())
            .spawn(move || writer.run())?;
        Ok(Self { shared })
    }

    /// Writes what is buffered now, on this thread, and stops the writer thread.
    pub fn close(&self) {
        lock(&self.shared.buf).closed = true;
        self.shared.wake.notify_all();
        self.shared.write_pending();
    }

    /// Writes what is buffered now, on this thread (a panic's line).
    pub fn flush_now(&self) {
        self.shared.write_pending();
    }
}

impl Shared {
    fn run(&self) {
        loop {
            let until = Instant::now() + FLUSH_EVERY;
            {
                let mut pending = lock(&self.buf);
                while pending.bytes.len() < WAKE_AT && !pending.closed {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    pending = self
                        .wake
                        .wait_timeout(pending, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                if pending.closed {
                    return;
                }
            }
            self.write_pending();
        }
    }

    /// Takes the buffer and writes it, in the order batches were taken.
    fn write_pending(&self) {
        let mut out = lock(&self.out);
        let bytes = std::mem::take(&mut lock(&self.buf).bytes);
        self.room.notify_all();
        if !bytes.is_empty() {
            let _ = out.write_all(&bytes);
            let _ = out.flush();
        }
    }

    fn push(&self, line: &[u8]) {
        let mut pending = lock(&self.buf);
        while pending.bytes.len() >= HOLD_AT && !pending.closed {
            pending = self.room.wait(pending).unwrap_or_else(|p| p.into_inner());
        }
        if pending.closed {
            // After `finish`: nobody writes the buffer any more.
            drop(pending);
            let _ = lock(&self.out).write_all(line);
            return;
        }
        let before = pending.bytes.len();
        pending.bytes.extend_from_slice(line);
        if before < WAKE_AT && pending.bytes.len() >= WAKE_AT {
            self.wake.notify_one();
        }
    }
}

impl Write for Batched {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = Batched;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Writes the log lines still buffered; call before the process ends.
pub fn finish() {
    if let Some(w) = lock(&WRITER).take() {
        w.close();
    }
}

/// Installs the global subscriber, writing to stderr. `default` is the level without RUST_LOG.
///
/// Lines are formatted on the thread that logs and written by a thread of their own
/// ([`Batched`]: every 10 ms, never dropping a line; past 4 MiB buffered the logging
/// thread waits): a node logs a line per job, and the `write` call per line was about 3%
/// of a busy owner's actor thread (perf, one-step jobs).
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
        // `try_lock`: a panic while this thread holds the writer's slot must not hang.
        if let Ok(Some(w)) = WRITER.try_lock().as_deref() {
            w.flush_now();
        }
    }));
}

/// The batched stderr writer; kept in [`WRITER`] (a second call, in tests or an
/// embedding program, keeps the first). Without a thread, lines go straight to stderr.
fn writer() -> tracing_subscriber::fmt::writer::BoxMakeWriter {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let mut kept = lock(&WRITER);
    if let Some(w) = kept.as_ref() {
        return BoxMakeWriter::new(w.clone());
    }
    match Batched::start(Box::new(std::io::stderr())) {
        Ok(w) => {
            *kept = Some(w.clone());
            BoxMakeWriter::new(w)
        }
        Err(_) => BoxMakeWriter::new(std::io::stderr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8_lossy(&lock(&self.0)).into_owned()
        }
    }

    #[test]
    fn a_line_is_written_within_a_flush_window_and_close_writes_the_rest() {
        let sink = Sink::default();
        let w = Batched::start(Box::new(sink.clone())).expect("thread");
        w.clone().write_all(b"first\n").expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.text().is_empty() {
            assert!(Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.text(), "first\n");
        w.clone().write_all(b"second\n").expect("write");
        w.close();
        assert_eq!(sink.text(), "first\nsecond\n", "close writes what waits");
        w.clone().write_all(b"late\n").expect("write");
        assert!(
            sink.text().ends_with("late\n"),
            "after close, lines go straight out"
        );
    }

    #[test]
    fn lines_from_many_threads_all_arrive_each_threads_in_order() {
        let sink = Sink::default();
        let w = Batched::start(Box::new(sink.clone())).expect("thread");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = w.clone();
                // Past WAKE_AT and HOLD_AT: the writer thread is woken and loggers wait.
                std::thread::spawn(move || {
                    for i in 0..50_000 {
                        w.write_all(format!("t{t} {i:06} {}\n", "x".repeat(40)).as_bytes())
                            .expect("write");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("logger");
        }
        w.close();
        let text = sink.text();
        for t in 0..4 {
            let seen: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("t{t} ")))
                .map(|l| l[..6].parse().expect("number"))
                .collect();
            assert_eq!(seen, (0..50_000).collect::<Vec<_>>(), "thread {t}");
        }
    }
}
