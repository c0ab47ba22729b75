//! Behaviour tests of keel-core's MVCC store, named after the etcd behaviour they pin down,
//! and a property test against a naive reference model.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;
mod compaction;
mod kv;
mod layout;
mod lease;
mod model;
mod quota;
mod range_stream;
mod snapshot;
mod txn;
mod watch;
