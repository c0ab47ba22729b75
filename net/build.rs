//! Compiles etcd's v3 API (vendored under `proto/`) into Rust with prost and tonic. Under
//! `--cfg madsim`, madsim-tonic-build generates code against madsim's simulated tonic.
//!
//! In real mode it also generates serde impls (pbjson) for the JSON gateway: protobuf's JSON
//! mapping with etcd's gateway options (proto field names, int64 as strings, bytes as
//! base64, defaults omitted, unknown fields ignored). Simulated tonic serves no HTTP, so the
//! simulator build skips them.

use std::path::PathBuf;

/// The packages whose messages cross the gateway (not the annotation protos they import).
const JSON_PACKAGES: [&str; 5] = [
    ".etcdserverpb",
    ".mvccpb",
    ".authpb",
    ".v3lockpb",
    ".v3electionpb",
];

/// etcd's services: the core API, and the lock and election services etcd's server runs on
/// top of it.
const PROTOS: [&str; 3] = [
    "../proto/etcd/api/etcdserverpb/rpc.proto",
    "../proto/etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
    "../proto/etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    build_info();
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
    builder.compile_protos(&PROTOS, &["../proto"])?;
    if !simulated {
        pbjson_build::Builder::new()
            .register_descriptors(&std::fs::read(&descriptors)?)?
            .preserve_proto_field_names()
            .ignore_unknown_fields()
            .build(&JSON_PACKAGES)?;
    }
    Ok(())
}

/// What `keel --version` reports of the build. The commit and date come from the release
/// command (`scripts/release.sh` sets `KEEL_BUILD_COMMIT` and `KEEL_BUILD_DATE`), not from
/// `git` here: reading `.git` would rebuild this crate at every commit of a working tree.
fn build_info() {
    println!("cargo:rerun-if-env-changed=KEEL_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=KEEL_BUILD_DATE");
    let given = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "not provided (build with scripts/release.sh)".to_string())
    };
    let rustc = std::env::var_os("RUSTC")
        .and_then(|rustc| {
            std::process::Command::new(rustc)
                .arg("--version")
                .output()
                .ok()
        })
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let target = |name: &str| std::env::var(name).unwrap_or_else(|_| "unknown".to_string());
    println!(
        "cargo:rustc-env=KEEL_BUILD_COMMIT={}",
        given("KEEL_BUILD_COMMIT")
    );
    println!(
        "cargo:rustc-env=KEEL_BUILD_DATE={}",
        given("KEEL_BUILD_DATE")
    );
    println!("cargo:rustc-env=KEEL_BUILD_RUSTC={rustc}");
    println!(
        "cargo:rustc-env=KEEL_BUILD_TARGET={}/{}",
        target("CARGO_CFG_TARGET_OS"),
        target("CARGO_CFG_TARGET_ARCH")
    );
}
