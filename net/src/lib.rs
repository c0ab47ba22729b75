//! The keel server: the loop that drives a `keel_core::node::Node`, the peer transport, etcd's
//! v3 gRPC services, the JSON gateway and the command line.

// The server's wings: the loop that drives the node (and the handle the services reach it
// by), the peer side (transport, frames, snapshot streams, peer questions), etcd's gRPC
// services, and HTTP on the client port (the JSON gateway, health, metrics).
pub mod grpc;
#[cfg(not(madsim))]
pub mod http;
pub mod peer;
pub mod server_loop;

pub mod backup;
#[cfg(not(madsim))]
pub mod bench;
pub mod blocking;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod corruption;
pub mod jwt;
pub mod log_format;
pub mod metrics;
pub mod process_metrics;
pub mod proto;
pub mod random;
pub mod server;
#[cfg(not(madsim))]
pub mod systemd;
pub mod tls;

/// The etcd version keel answers as (`/version`, and wherever etcd reports its version):
/// clients pick features by it, and keel serves etcd 3.5's v3 API.
pub const ETCD_VERSION: &str = "3.5.0";
/// keel's own version (`keel --version`, the `keel` field of `/version`).
pub const KEEL_VERSION: &str = env!("CARGO_PKG_VERSION");
