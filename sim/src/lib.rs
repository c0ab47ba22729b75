//! keel's deterministic simulator (on madsim): cluster, nemesis, workload, history and checkers.
//!
//! The simulator proper arrives with the simulator issue; for now this crate proves that the
//! madsim build mode works (see `tests/madsim_smoke.rs`).
//!
//! What is here already, in plain Rust (no madsim, usable in both build modes):
//! - [`history`]: what a run records (client operations with times and outcomes, watch
//!   streams, final read-back, `HashKV` results, member revisions);
//! - [`model`]: a sequential specification of etcd's KV store with revisions;
//! - [`check`]: the checkers that judge a run (linearizability, serializable reads, watch
//!   guarantees, durability, cross-member), each returning a [`check::Violation`].

pub mod check;
pub mod history;
pub mod model;

pub use check::{check_all, CheckOptions, Report, Violation};
pub use history::History;
pub use model::KvModel;
