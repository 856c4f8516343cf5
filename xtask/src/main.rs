//! `cargo xtask`: the project's own commands. Each one installs what it needs
//! on a fresh machine (nightly's rust-src, bpf-linker, Debian packages), so the
//! README's two commands are the whole set-up.

mod bench;
mod build;
mod crd;
mod demo;
mod demo_nsm;
mod demo_vpp;
mod image;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "xcnf project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the eBPF object (installs rust-src and bpf-linker if missing).
    BuildEbpf {
        /// Release profile (what the agent and tests load).
        #[arg(long)]
        release: bool,
    },
    /// Format check, clippy, unit tests and the integration tests (root).
    Test {
        /// Extra arguments passed to the test binaries (e.g. a name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The NAT44 example chain in network namespaces, with curl through the cnf (root);
    /// `--vpp`: the cnf's NAT in VPP over memif; `--nsm`: the cnf's interfaces from NSM.
    Demo(demo::Args),
    /// Per-packet cost (BPF_PROG_TEST_RUN) and end-to-end comparison with the kernel (root).
    Bench(bench::Args),
    /// The OCI image (oci-archive) with buildah, no daemon: agent, xcnfctl, bpftool, eBPF object (root).
    Image(image::Args),
    /// Regenerate the CNFConfiguration CRD (deploy/crd/) from the Rust config types.
    Crd,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::BuildEbpf { release } => build::ebpf(release).map(|p| {
            println!("{}", p.display());
        }),
        Cmd::Test { args } => test::run(&args),
        Cmd::Demo(args) => demo::run(&args),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Image(args) => image::run(&args),
        Cmd::Crd => crd::run(),
    }
}
