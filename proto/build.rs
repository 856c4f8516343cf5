//! Compiles the .proto files with protox (pure Rust, no protoc) and generates
//! the prost messages and tonic client/server code into OUT_DIR.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message as _;

/// The schema files, relative to the crate root (which is the include path, so
/// their protobuf names are `xcnf/v1alpha1/...`).
const PROTOS: &[&str] = &[
    "xcnf/v1alpha1/config.proto",
    "xcnf/v1alpha1/datapath.proto",
    "xcnf/v1alpha1/api.proto",
];

/// Written to OUT_DIR and embedded as `FILE_DESCRIPTOR_SET`.
const DESCRIPTOR_FILE: &str = "xcnf_descriptor_set.bin";

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed=build.rs");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }

    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let fds = protox::compile(&files, [&root])?;

    fs::write(out_dir.join(DESCRIPTOR_FILE), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .out_dir(&out_dir)
        .build_client(true)
        .build_server(true)
        // No `connect()` helper: it would need tonic's transport feature here.
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;

    Ok(())
}
