//! keel-core: the pure logic of keel. No IO, no clock, no threads, no OS randomness: inputs
//! are calls, outputs are values, and the same inputs give the same outputs bit for bit.
//! `clippy.toml` in this crate forbids the ways out.

pub mod auth;
pub mod codec;
pub mod coverage;
pub mod mvcc;
pub mod node;
pub mod raft;
pub mod rpctypes;
