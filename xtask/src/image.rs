//! `cargo xtask image`: the OCI image, built with buildah without a daemon.
//!
//! The assembly (payload, exactly the shared libraries it loads, buildah
//! from scratch + copy + config + commit) lives in `xcnf_tests::image`, so
//! the image test builds its image with the same code.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};
use xcnf_tests::image::{self, ImageOptions, Payload};

use crate::{
    build,
    setup::{self, root},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The oci-archive to write.
    #[arg(long, default_value = "target/image/xcnf.oci.tar")]
    output: PathBuf,
    /// The image's reference name inside the archive.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
}

pub fn run(args: &Args) -> Result<()> {
    if !setup::is_root() {
        bail!("cargo xtask image needs root: buildah keeps its layers as root-owned files");
    }
    setup::ensure_tools()?;
    let object = build::ebpf(true)?;
    setup::run(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "--release",
        "--package",
        "xcnf-agent",
        "--bins",
    ]))?;
    let release = root().join("target/release");
    let bpftool = setup::which("bpftool").context("bpftool not found (Debian package bpftool)")?;
    let archive = if args.output.is_absolute() {
        args.output.clone()
    } else {
        root().join(&args.output)
    };
    let built = image::build(&ImageOptions {
        payload: Payload {
            agent: release.join("xcnf-agent"),
            xcnfctl: release.join("xcnfctl"),
            bpftool,
            object,
        },
        archive: archive.clone(),
        tag: args.tag.clone(),
        labels: labels(&args.tag),
        work: root().join("target/image/work"),
    })?;
    let _ = std::fs::remove_dir_all(root().join("target/image/work"));
    let size = std::fs::metadata(&archive)
        .with_context(|| format!("{}", archive.display()))?
        .len();
    println!("{} ({} KiB)", archive.display(), size / 1024);
    for e in &built.entries {
        println!("  {}", e.display());
    }
    // What a registry client sees: the check that the archive is usable.
    setup::run(Command::new("skopeo").arg("inspect").arg(format!(
        "oci-archive:{}:{}",
        archive.display(),
        args.tag
    )))
}

/// `org.opencontainers.image.*` labels; the revision when this is a git
/// checkout.
fn labels(version: &str) -> Vec<(String, String)> {
    let mut l = vec![
        ("org.opencontainers.image.title", "xcnf".to_owned()),
        (
            "org.opencontainers.image.description",
            "xcnf CNF agent (eBPF datapath) with xcnfctl and bpftool; run as a sidecar of the CNF pod"
                .to_owned(),
        ),
        ("org.opencontainers.image.version", version.to_owned()),
        (
            "org.opencontainers.image.source",
            env!("CARGO_PKG_REPOSITORY").to_owned(),
        ),
        (
            "org.opencontainers.image.licenses",
            env!("CARGO_PKG_LICENSE").to_owned(),
        ),
    ];
    if let Ok(rev) = setup::output(
        Command::new("git")
            .current_dir(root())
            .args(["rev-parse", "HEAD"]),
    ) {
        l.push(("org.opencontainers.image.revision", rev.trim().to_owned()));
    }
    l.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
