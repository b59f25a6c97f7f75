//! The queue between the journal's handle and its writer thread.
//!
//! Written by hand rather than taken from `std::sync::mpsc` or crossbeam: those wake the
//! receiver on every send, and a one-step job sends the writer about six writes (its
//! start, input, end, the end's confirmation...). Each wake is a futex call on the node's
//! async thread and two context switches of the writer: about 16% of the owner's CPU in
//! sequential calls on the 2-core build machine (perf, half in the sends' futex calls,
//! half in the writer's wakes). Here a send wakes the writer only
//! when it must act on it: it sleeps with nothing to do, or it is gathering a batch and
//! the write is urgent (somebody waits for it) or fills the batch. Writes that arrive
//! while it gathers wait, without a wake, for the end of its commit window.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::write::Write;

/// What the writer is doing, as senders see it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Committing or about to look at the queue again: no wake needed.
    Busy,
    /// Asleep until a write comes (or its timer): any write wakes it.
    Idle,
    /// Gathering a batch until the end of its window: only an urgent write or a full
    /// batch wakes it.
    Gathering,
}

struct State {
    writes: VecDeque<Write>,
    /// Some queued write is urgent (or the write just taken was: then the batch it
    /// starts does not linger anyway, and recomputes this as it takes the queue).
    urgent: bool,
    mode: Mode,
    /// The writer is gone: sends fail.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    senders: AtomicUsize,
    /// Writes one batch takes at most; a batch this full is committed at once.
    max_batch: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::locked(&self.state)
    }
}

/// The sending side (the journal's handles); cloning adds a sender.
pub(super) struct Sender {
    shared: Arc<Shared>,
}

/// The writer's side.
pub(super) struct Receiver {
    shared: Arc<Shared>,
}

/// Why [`Receiver::recv_timeout`] returned no write.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RecvError {
    /// Nothing came in time.
    Timeout,
    /// Every sender is gone and the queue is empty.
    Disconnected,
}

/// A queue whose batches hold at most `max_batch` writes.
pub(super) fn channel(max_batch: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            writes: VecDeque::new(),
            urgent: false,
            mode: Mode::Busy,
            closed: false,
        }),
        wake: Condvar::new(),
        senders: AtomicUsize::new(1),
        max_batch: max_batch.max(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl Sender {
    /// Queues `w`; gives it back if the writer is gone.
    pub(super) fn send(&self, w: Write) -> Result<(), Write> {
        let mut s = self.shared.lock();
        if s.closed {
            return Err(w);
        }
        let urgent = w.is_urgent();
        s.urgent |= urgent;
        s.writes.push_back(w);
        let wake = match s.mode {
            Mode::Busy => false,
            Mode::Idle => true,
            Mode::Gathering => urgent || s.writes.len() + 1 >= self.shared.max_batch,
        };
        if wake {
            // One wake is enough until the writer looks again.
            s.mode = Mode::Busy;
            drop(s);
            self.shared.wake.notify_one();
        }
        Ok(())
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Under the lock, so that a writer about to sleep sees the count first.
            let _s = self.shared.lock();
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
    }
}

impl Receiver {
    fn disconnected(&self) -> bool {
        self.shared.senders.load(Ordering::Acquire) == 0
    }

    /// The next write, waiting for it at most `wait`.
    pub(super) fn recv_timeout(&self, wait: Duration) -> Result<Write, RecvError> {
        let until = Instant::now() + wait;
        let mut s = self.shared.lock();
        loop {
            if let Some(w) = s.writes.pop_front() {
                s.mode = Mode::Busy;
                if s.writes.is_empty() {
                    s.urgent = false;
                }
                return Ok(w);
            }
            if self.disconnected() {
                s.mode = Mode::Busy;
                return Err(RecvError::Disconnected);
            }
            let now = Instant::now();
            if now >= until {
                s.mode = Mode::Busy;
                return Err(RecvError::Timeout);
            }
            s.mode = Mode::Idle;
            s = match self.shared.wake.wait_timeout(s, until - now) {
                Ok((s, _)) => s,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// The batch that starts with `first`: what arrives within `linger` of it, or, once a
    /// write in it is urgent, only what is already queued; at most `max_batch` writes.
    pub(super) fn gather(&self, first: Write, linger: Duration) -> Vec<Write> {
        let until = Instant::now() + linger;
        let max = self.shared.max_batch;
        let urgent = first.is_urgent();
        let mut batch = vec![first];
        let mut s = self.shared.lock();
        if !urgent {
            loop {
                if s.urgent || s.writes.len() + 1 >= max || self.disconnected() {
                    break;
                }
                let now = Instant::now();
                if now >= until {
                    break;
                }
                s.mode = Mode::Gathering;
                s = match self.shared.wake.wait_timeout(s, until - now) {
                    Ok((s, _)) => s,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
        }
        s.mode = Mode::Busy;
        let take = s.writes.len().min(max - 1);
        batch.extend(s.writes.drain(..take));
        s.urgent = s.writes.iter().any(Write::is_urgent);
        batch
    }

    /// Takes what is queued now (tests).
    #[cfg(test)]
    pub(super) fn try_iter(&self) -> impl Iterator<Item = Write> {
        let mut s = self.shared.lock();
        s.urgent = false;
        std::mem::take(&mut s.writes).into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::journal::tests::{fetch_write as fetch, input_write as input};

    /// A gathering writer keeps gathering through writes nobody waits for and goes at the
    /// first urgent one, with everything queued before it.
    #[test]
    fn a_gathering_writer_goes_at_the_first_urgent_write() {
        let (tx, rx) = channel(100);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            assert!(tx.send(input(2)).is_ok());
            assert!(tx.send(input(3)).is_ok());
            std::thread::sleep(Duration::from_millis(20));
            assert!(tx.send(fetch()).is_ok());
            tx
        });
        let began = Instant::now();
        let batch = rx.gather(input(1), Duration::from_secs(60));
        assert!(began.elapsed() < Duration::from_secs(30));
        assert_eq!(batch.len(), 4);
        assert!(batch[3].is_urgent());
        drop(sender.join().expect("the sender thread ends"));
    }

    /// A full batch goes without waiting for its window.
    #[test]
    fn a_full_batch_goes_at_once() {
        let (tx, rx) = channel(3);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            for seq in 2..=5 {
                assert!(tx.send(input(seq)).is_ok());
            }
            tx
        });
        let began = Instant::now();
        let batch = rx.gather(input(1), Duration::from_secs(60));
        assert!(began.elapsed() < Duration::from_secs(30));
        assert_eq!(batch.len(), 3);
        let _tx = sender.join().expect("the sender thread ends");
        assert_eq!(rx.try_iter().count(), 2);
    }

    /// An idle writer wakes for any write; once every sender is gone and the queue is
    /// empty it is told so; a send to a writer that is gone gives the write back.
    #[test]
    fn an_idle_writer_wakes_for_any_write_and_stops_with_its_senders() {
        let (tx, rx) = channel(100);
        let tx2 = tx.clone();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            assert!(tx2.send(input(1)).is_ok());
        });
        assert!(rx.recv_timeout(Duration::from_secs(60)).is_ok());
        sender.join().expect("the sender thread ends");
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(10)).err(),
            Some(RecvError::Timeout)
        );
        assert!(tx.send(input(2)).is_ok());
        drop(tx);
        assert!(rx.recv_timeout(Duration::from_secs(60)).is_ok());
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)).err(),
            Some(RecvError::Disconnected)
        );
        let (tx, rx) = channel(100);
        drop(rx);
        assert!(tx.send(input(3)).is_err());
    }
}
