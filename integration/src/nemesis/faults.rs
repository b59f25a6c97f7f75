//! The nemesis's faults and their schedule. A schedule is a pure function of a seed and a
//! run length, so `NEMESIS_SEED` replays the same faults at the same offsets (what the
//! cluster does in between still depends on timing). One fault at a time: it holds for
//! a few seconds, then is healed, then the cluster gets a calm spell.

use serde::Serialize;

/// Node index whose data folder is a small tmpfs (the disk the nemesis fills).
pub const DISK_NODE: usize = 4;

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// SIGKILL the node; healed by starting it again on its data folder.
    Kill(usize),
    /// SIGSTOP the node for longer than `down_after_ms`; healed by SIGCONT.
    Pause(usize),
    /// These nodes (a minority) and the others do not hear each other.
    Split(Vec<usize>),
    /// The node's bridge port is down: it hears no one and no one hears it.
    Isolate(usize),
    /// The second node no longer receives what the first sends.
    OneWay(usize, usize),
    /// Spinning tasks on every slot of the node (submitted through it).
    Spin(usize),
    /// The node's data folder (on a small tmpfs) is filled to the last byte.
    DiskFull(usize),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |i: &usize| format!("n{}", i + 1);
        match self {
            Fault::Kill(i) => write!(f, "kill -9 {}", n(i)),
            Fault::Pause(i) => write!(f, "pause {}", n(i)),
            Fault::Split(side) => write!(
                f,
                "split {{{}}} from the rest",
                side.iter().map(n).collect::<Vec<_>>().join(",")
            ),
            Fault::Isolate(i) => write!(f, "isolate {}", n(i)),
            Fault::OneWay(a, b) => write!(f, "one-way cut {} -> {}", n(a), n(b)),
            Fault::Spin(i) => write!(f, "spin every slot of {}", n(i)),
            Fault::DiskFull(i) => write!(f, "fill the disk of {}", n(i)),
        }
    }
}

/// A fault at an offset from the start of the run, held for `hold_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// When it starts (ms after the workloads start).
    pub at_ms: u64,
    /// What it is.
    pub fault: Fault,
    /// How long it holds before it is healed.
    pub hold_ms: u64,
}

/// A small deterministic generator (xorshift64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).max(1))
    }

    /// A number in `0..n` (0 if n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    /// A number in `lo..hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo))
    }
}

/// The faults of a run of `secs` seconds on `nodes` nodes: the first after 3 s of calm,
/// each held 3-7 s (a pause 3-6 s, longer than the 2 s `down_after_ms`), then 3-5 s of
/// calm; none starts in the last 5 s.
pub fn schedule(seed: u64, secs: u64, nodes: usize) -> Vec<Planned> {
    let mut rng = Rng::new(seed);
    let n = nodes as u64;
    let mut out = vec![];
    let mut t = 3_000;
    let end = secs * 1000;
    loop {
        let node = rng.below(n) as usize;
        let (fault, hold_ms) = match rng.below(7) {
            0 => (Fault::Kill(node), rng.between(3_000, 7_000)),
            1 => (Fault::Pause(node), rng.between(3_000, 6_000)),
            2 => {
                let other = (node + 1 + rng.below(n - 1) as usize) % nodes;
                (Fault::Split(vec![node, other]), rng.between(3_000, 7_000))
            }
            3 => (Fault::Isolate(node), rng.between(3_000, 7_000)),
            4 => {
                let other = (node + 1 + rng.below(n - 1) as usize) % nodes;
                (Fault::OneWay(node, other), rng.between(3_000, 7_000))
            }
            5 => (Fault::Spin(node), rng.between(3_000, 7_000)),
            _ => (Fault::DiskFull(DISK_NODE), rng.between(3_000, 7_000)),
        };
        if t + hold_ms + 5_000 > end {
            break;
        }
        out.push(Planned {
            at_ms: t,
            fault,
            hold_ms,
        });
        t += hold_ms + rng.between(3_000, 5_000);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_schedule_and_another_differs() {
        assert_eq!(schedule(7, 120, 5), schedule(7, 120, 5));
        assert_ne!(schedule(7, 120, 5), schedule(8, 120, 5));
    }

    #[test]
    fn a_schedule_fits_the_run_and_holds_one_fault_at_a_time() {
        for seed in 0..50 {
            let s = schedule(seed, 120, 5);
            assert!(s.len() >= 8, "seed {seed}: {} faults", s.len());
            for w in s.windows(2) {
                assert!(w[0].at_ms + w[0].hold_ms < w[1].at_ms, "{w:?}");
            }
            let last = s.last().unwrap();
            assert!(last.at_ms + last.hold_ms <= 115_000);
            for p in &s {
                match &p.fault {
                    Fault::Split(side) => assert!(side.len() == 2 && side[0] != side[1]),
                    Fault::OneWay(a, b) => assert_ne!(a, b),
                    Fault::Pause(_) => assert!(p.hold_ms > 2_000),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn every_kind_of_fault_turns_up() {
        let s = schedule(1, 1200, 5);
        let kinds: std::collections::HashSet<_> =
            s.iter().map(|p| std::mem::discriminant(&p.fault)).collect();
        assert_eq!(kinds.len(), 7);
    }
}
