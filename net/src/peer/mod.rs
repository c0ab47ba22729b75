//! The peer side of a member: the transport that carries Raft's messages between members,
//! their frames on the wire, snapshot streams, and the questions members ask each other
//! outside Raft (hashes for the corruption check, the members list for a joining member).

pub mod frame;
pub mod query;
pub mod snapshot_stream;
pub mod transport;
