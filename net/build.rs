//! Compiles etcd's v3 API (vendored under `proto/`) into Rust with prost and tonic. Under
//! `--cfg madsim`, madsim-tonic-build generates code against madsim's simulated tonic.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        // Keys and values stay `Bytes` from the wire to the store: no copies.
        .bytes(["."])
        .compile_protos(&["../proto/etcd/api/etcdserverpb/rpc.proto"], &["../proto"])?;
    Ok(())
}
