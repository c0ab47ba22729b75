//! The keel server: tokio loop, peer transport, etcd gRPC API, JSON gateway (arrives with the server issue).
