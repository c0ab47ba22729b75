//! etcd's v3 API types and gRPC service traits, generated from `proto/` by `build.rs`.

#![allow(clippy::all, missing_debug_implementations, unreachable_pub)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod authpb {
    tonic::include_proto!("authpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
