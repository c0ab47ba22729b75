//! keel's deterministic simulator (on madsim): cluster, nemesis, workload, history and checkers.
//!
//! The simulator proper arrives with the simulator issue; for now this crate proves that the
//! madsim build mode works (see `tests/madsim_smoke.rs`).

#[cfg(madsim)]
pub mod world;
