//! `cargo xtask test`: everything CI checks, in one command.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{
    build,
    setup::{self, root},
};

pub fn run(args: &[String]) -> Result<()> {
    if !setup::is_root() {
        bail!(
            "cargo xtask test needs root: the integration tests load eBPF and create network namespaces"
        );
    }
    setup::ensure_tools()?;
    let object = build::ebpf(true)?;
    build::userspace()?;
    let cargo = env!("CARGO");
    setup::run(
        Command::new(cargo)
            .current_dir(root())
            .args(["fmt", "--all", "--", "--check"]),
    )?;
    setup::run(Command::new(cargo).current_dir(root()).args([
        "clippy",
        "--workspace",
        "--exclude",
        "xcnf-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    setup::run(
        Command::new(cargo)
            .current_dir(root())
            .args([
                "test",
                "--workspace",
                "--exclude",
                "xcnf-ebpf",
                "--no-fail-fast",
                "--",
            ])
            .args(args)
            .env("PATH", setup::path_with_sbin())
            .env("XCNF_EBPF_OBJECT", &object)
            .env("XCNF_AGENT_BIN", root().join("target/debug/xcnf-agent")),
    )
}
