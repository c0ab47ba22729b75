//! Compiles etcd's v3 API (vendored under `proto/`) into Rust with prost and tonic. Under
//! `--cfg madsim`, madsim-tonic-build generates code against madsim's simulated tonic.
//!
//! In real mode it also generates serde impls (pbjson) for the JSON gateway: protobuf's JSON
//! mapping with etcd's gateway options (proto field names, int64 as strings, bytes as
//! base64, defaults omitted, unknown fields ignored). Simulated tonic serves no HTTP, so the
//! simulator build skips them.

use std::path::PathBuf;

/// The packages whose messages cross the gateway (not the annotation protos they import).
const JSON_PACKAGES: [&str; 3] = [".etcdserverpb", ".mvccpb", ".authpb"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    let simulated = std::env::var_os("CARGO_CFG_MADSIM").is_some();
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("etcd_descriptors.bin");
    let mut builder = tonic_build::configure()
        .build_server(true)
        .build_client(true)
        // Keys and values stay `Bytes` from the wire to the store: no copies.
        .bytes(["."]);
    if !simulated {
        builder = builder.file_descriptor_set_path(&descriptors);
    }
    builder.compile_protos(&["../proto/etcd/api/etcdserverpb/rpc.proto"], &["../proto"])?;
    if !simulated {
        pbjson_build::Builder::new()
            .register_descriptors(&std::fs::read(&descriptors)?)?
            .preserve_proto_field_names()
            .ignore_unknown_fields()
            .build(&JSON_PACKAGES)?;
    }
    Ok(())
}
