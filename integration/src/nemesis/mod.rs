//! The nemesis bench's library: a history of what clients and tasks saw
//! ([`history`]), the faults and their seeded schedule ([`faults`]), and the checker that
//! turns a history into the figures of the bench's last line ([`checker`]). The bench
//! itself (`benches/nemesis.rs`) runs the cluster, the workloads and the nemesis.

pub mod checker;
pub mod faults;
pub mod history;
