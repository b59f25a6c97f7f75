//! OTP-style restart intensity, written here because `ractor-supervisor` does not compile
//! with ractor_cluster in the build (its messages lack the `Message` impl that the
//! `cluster` feature requires, and its matches on `SupervisionEvent` miss the cluster-only
//! variant).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Counts restarts in a sliding window: more than `max` within `window` means the
/// supervisor should give up and stop (escalate) instead of restarting in a loop.
#[derive(Debug, Clone)]
pub(crate) struct RestartIntensity {
    max: u32,
    window: Duration,
    recent: VecDeque<Instant>,
    total: u64,
}

impl RestartIntensity {
    /// At most `max` restarts within `window`.
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            recent: VecDeque::new(),
            total: 0,
        }
    }

    /// Records a restart at `now`; false if it goes over the limit.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        while let Some(&t) = self.recent.front() {
            if now.duration_since(t) > self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        self.total += 1;
        self.recent.len() as u32 <= self.max
    }

    /// Restarts recorded since the start.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_restarts_in_a_window() {
        let mut r = RestartIntensity::new(2, Duration::from_secs(10));
        let t = Instant::now();
        assert!(r.allow(t));
        assert!(r.allow(t + Duration::from_secs(1)));
        assert!(!r.allow(t + Duration::from_secs(2)));
        // Once the window has passed, restarts are allowed again.
        let mut r = RestartIntensity::new(2, Duration::from_secs(10));
        assert!(r.allow(t));
        assert!(r.allow(t + Duration::from_secs(1)));
        assert!(r.allow(t + Duration::from_secs(20)));
        assert_eq!(r.total(), 3);
    }
}
