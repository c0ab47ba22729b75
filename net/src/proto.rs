//! etcd's v3 API types and gRPC service traits, generated from `proto/` by `build.rs`; in real
//! mode also their serde impls (protobuf's JSON mapping) for the JSON gateway.

#![allow(
    clippy::all,
    clippy::unwrap_used,
    missing_debug_implementations,
    unreachable_pub
)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    #[cfg(not(madsim))]
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

pub mod authpb {
    tonic::include_proto!("authpb");
    #[cfg(not(madsim))]
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    #[cfg(not(madsim))]
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    #[cfg(not(madsim))]
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    #[cfg(not(madsim))]
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}
