//! The keel server: the loop that drives a `keel_core::node::Node`, the peer transport, etcd's
//! v3 gRPC services, the JSON gateway and the command line.

pub mod api;
pub mod backup;
#[cfg(not(madsim))]
pub mod bench;
pub mod blocking;
pub mod bootstrap;
pub mod clock;
pub mod compactor;
pub mod config;
pub mod corruption;
pub mod frame;
pub mod handle;
pub mod jwt;
pub mod log_format;
pub mod metrics;
pub mod peer_query;
pub mod process_metrics;
pub mod proto;
pub mod random;
pub mod server;
pub mod server_loop;
pub mod snapshot_stream;
#[cfg(not(madsim))]
pub mod systemd;
pub mod tls;
pub mod transport;

// HTTP on the client port: simulated tonic serves gRPC only.
#[cfg(not(madsim))]
pub mod authority;
#[cfg(not(madsim))]
pub mod gateway;
#[cfg(not(madsim))]
pub mod grpc_metrics;
#[cfg(not(madsim))]
pub mod http;

/// The etcd version keel answers as (`/version`, and wherever etcd reports its version):
/// clients pick features by it, and keel serves etcd 3.5's v3 API.
pub const ETCD_VERSION: &str = "3.5.0";
/// keel's own version (`keel --version`, the `keel` field of `/version`).
pub const KEEL_VERSION: &str = env!("CARGO_PKG_VERSION");
