//! keel's deterministic simulator (on madsim): cluster, nemesis, workload, history and checkers.
//!
//! The simulated world and the runner need madsim (`--cfg madsim`): [`world`] (keel servers
//! on madsim nodes with `SimDisk`s), [`client`] and [`watcher`] (recording clients),
//! [`nemesis`] (faults), [`run`] (one seed, end to end). [`workload`] is plain Rust.
//!
//! What is here already, in plain Rust (no madsim, the same in both build modes):
//! - [`history`]: what a run records — client operations with invoke/complete times and
//!   outcomes (ok, store error, failed, indeterminate), watch streams with every response,
//!   a final read-back, `HashKV` results, member revisions;
//! - [`model`]: a sequential specification of etcd's KV store with revisions
//!   ([`KvModel`]), written independently of keel-core (and tested against it);
//! - [`check`]: the checkers that judge a run, each returning a [`check::Violation`] whose
//!   `Display` a failing run prints after its seed and replay command.
//!
//! Recording, in short (details in [`history`]):
//! ```
//! use keel_sim::history::{History, Outcome, Put, Request, Response};
//!
//! let mut history = History::new();
//! let put = Request::Put(Put { key: "k".into(), value: "v1".into(), ..Put::default() });
//! let id = history.invoke(1, Some(1), 1_000, put);
//! // ... the client gets its answer (a timeout would be Outcome::Indeterminate) ...
//! history.complete(id, 2_000, Outcome::Ok(Response::Put { revision: 2, prev_kv: None }));
//! let report = keel_sim::check_all(&history, &keel_sim::CheckOptions::default())
//!     .unwrap_or_else(|violation| panic!("seed 7 failed (replay: ...):\n{violation}"));
//! assert_eq!(report.revision, 2);
//! ```

pub mod check;
pub mod history;
pub mod model;
pub mod seeds;

pub use check::{check_all, CheckOptions, Report, Violation};
pub use history::History;
pub use model::KvModel;
pub mod workload;

#[cfg(madsim)]
pub mod client;
#[cfg(madsim)]
pub mod crash_probe;
#[cfg(madsim)]
pub mod invariants;
#[cfg(madsim)]
pub mod lease_holder;
#[cfg(madsim)]
pub mod nemesis;
#[cfg(madsim)]
pub mod operator;
#[cfg(madsim)]
pub mod run;
#[cfg(madsim)]
pub mod watcher;
#[cfg(madsim)]
pub mod world;
