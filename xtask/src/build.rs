//! Building the eBPF object and the userspace binaries.

use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::setup::{self, root, run};

/// Builds the eBPF object and returns its path.
///
/// Maps are `#[btf_map]` and the object is linked with `--btf`, so bpftool
/// prints map values field by field.
pub fn ebpf(release: bool) -> Result<PathBuf> {
    setup::ensure_rust_src()?;
    setup::ensure_bpf_linker()?;
    let rustflags = [
        // aya-ebpf picks architecture-specific bindings (pt_regs) by this cfg.
        format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
        // Byte arrays (addresses, MACs) load and compare as words rather
        // than byte by byte: about a seventh fewer translated instructions.
        // The verifier still demands aligned stack accesses, and LLVM may
        // now put a word at an odd stack offset: a load that fails with
        // "misaligned stack access" after an unrelated change is that.
        // Giving the value on the stack a word-aligned shape (a struct with
        // a `u32` rather than loose `[u8; N]` and `bool` fields) fixes it.
        "-Ctarget-feature=+allows-misaligned-mem-access".to_owned(),
    ]
    .join("\x1f");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root())
        .args(["run", "nightly", "cargo", "build", "--package", "xcnf-ebpf"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        // The stable toolchain that runs xtask must not leak into the nightly build.
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO");
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    Ok(root()
        .join("target/bpfel-unknown-none")
        .join(profile)
        .join("xcnf"))
}

/// Builds the agent and the test helper binaries (debug, stable).
pub fn userspace() -> Result<()> {
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "--package",
        "xcnf-agent",
        "--package",
        "xcnf-tests",
        "--bins",
    ]))
}
