//! The keel server: the loop that drives a `keel_core::node::Node`, the peer transport, etcd's
//! v3 gRPC services, the JSON gateway and the command line.

pub mod api;
#[cfg(not(madsim))]
pub mod bench;
pub mod compactor;
pub mod config;
pub mod frame;
pub mod handle;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod server_loop;
pub mod transport;
