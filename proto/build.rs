//! Compiles the .proto files with protox (pure Rust, no protoc) and generates
//! the prost messages and tonic client/server code into OUT_DIR.
//!
//! Four separate compilations, each with its own descriptor set: the xcnf
//! schema, the Network Service Mesh API, the SPIFFE Workload API and gRPC's
//! health checking protocol. The NSM
//! and SPIFFE files keep upstream's bare file names (`connection.proto`,
//! imported as such), so they need their own include roots, which must not
//! overlap the crate root the xcnf files are named from.

use std::{
    env,
    error::Error,
    fs,
    path::{Path, PathBuf},
};

use prost::Message as _;

/// The xcnf schema files, relative to the crate root (which is the include
/// path, so their protobuf names are `xcnf/v1alpha1/...`).
const PROTOS: &[&str] = &[
    "xcnf/v1alpha1/config.proto",
    "xcnf/v1alpha1/datapath.proto",
    "xcnf/v1alpha1/api.proto",
];

/// Include roots of the NSM files, relative to the crate root. As upstream
/// (networkservicemesh/api `pkg/api/networkservice` and `pkg/api/registry`),
/// each file's protobuf name is its bare file name.
const NSM_INCLUDES: &[&str] = &[
    "networkservicemesh/networkservice",
    "networkservicemesh/registry",
];

/// The NSM files, by their protobuf names.
const NSM_PROTOS: &[&str] = &[
    "connectioncontext.proto",
    "connection.proto",
    "networkservice.proto",
    "registry.proto",
];

/// Include root of the SPIFFE Workload API file. It declares no protobuf
/// package (as upstream, so the gRPC paths are `/SpiffeWorkloadAPI/...`), which
/// prost writes to `_.rs`.
const SPIFFE_INCLUDE: &str = "spiffe";

/// The SPIFFE Workload API file, by its protobuf name.
const SPIFFE_PROTO: &str = "workload.proto";

/// The gRPC health checking protocol, by its protobuf name (include root:
/// the crate root), compiled on its own like the NSM and SPIFFE files.
const HEALTH_PROTO: &str = "grpc/health/v1/health.proto";

/// Written to OUT_DIR (no consumer embeds it yet).
const HEALTH_DESCRIPTOR_FILE: &str = "health_descriptor_set.bin";

/// Written to OUT_DIR (no consumer embeds it yet; kept for symmetry with the
/// other two compilations).
const SPIFFE_DESCRIPTOR_FILE: &str = "spiffe_descriptor_set.bin";

/// Written to OUT_DIR and embedded as `FILE_DESCRIPTOR_SET`.
const DESCRIPTOR_FILE: &str = "xcnf_descriptor_set.bin";

/// Written to OUT_DIR and embedded as `nsm::FILE_DESCRIPTOR_SET`.
const NSM_DESCRIPTOR_FILE: &str = "nsm_descriptor_set.bin";

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed=build.rs");

    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    generate(
        &files,
        std::slice::from_ref(&root),
        &out_dir,
        DESCRIPTOR_FILE,
    )?;

    let includes: Vec<PathBuf> = NSM_INCLUDES.iter().map(|i| root.join(i)).collect();
    let nsm_files = NSM_PROTOS
        .iter()
        .map(|name| locate(name, &includes))
        .collect::<Result<Vec<_>, _>>()?;
    generate(&nsm_files, &includes, &out_dir, NSM_DESCRIPTOR_FILE)?;

    let spiffe_include = root.join(SPIFFE_INCLUDE);
    generate(
        &[spiffe_include.join(SPIFFE_PROTO)],
        &[spiffe_include],
        &out_dir,
        SPIFFE_DESCRIPTOR_FILE,
    )?;

    generate(
        &[root.join(HEALTH_PROTO)],
        std::slice::from_ref(&root),
        &out_dir,
        HEALTH_DESCRIPTOR_FILE,
    )?;

    Ok(())
}

/// The path of a bare-named file in the first include root that holds it.
fn locate(name: &str, includes: &[PathBuf]) -> Result<PathBuf, String> {
    includes
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| format!("{name} is in none of the NSM include roots {includes:?}"))
}

/// Compiles `files`, writes their descriptor set to `out_dir/descriptor_file`
/// and generates their Rust code (one `<package>.rs` per protobuf package).
fn generate(
    files: &[PathBuf],
    includes: &[PathBuf],
    out_dir: &Path,
    descriptor_file: &str,
) -> Result<(), Box<dyn Error>> {
    for file in files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let fds = protox::compile(files, includes)?;

    fs::write(out_dir.join(descriptor_file), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .out_dir(out_dir)
        .build_client(true)
        .build_server(true)
        // No `connect()` helper: it would need tonic's transport feature here.
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;

    Ok(())
}
