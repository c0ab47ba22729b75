//! The keel server: the loop that drives a `keel_core::node::Node`, the peer transport, etcd's
//! v3 gRPC services, the JSON gateway and the command line.

pub mod proto;
