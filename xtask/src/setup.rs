//! Installing what the tasks need: toolchain pieces and Debian packages.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Runs a command and fails with its rendering if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// PATH with the sbin directories, where Debian puts ip, bpftool and ethtool.
pub fn path_with_sbin() -> String {
    let cur = std::env::var("PATH").unwrap_or_default();
    let mut parts: Vec<&str> = cur.split(':').filter(|p| !p.is_empty()).collect();
    for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        if !parts.contains(&extra) {
            parts.push(extra);
        }
    }
    parts.join(":")
}

pub fn which(bin: &str) -> Option<PathBuf> {
    path_with_sbin()
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// Commands the demo, the tests and the benchmark run, and the Debian
/// package of each: the NAT44 end-to-end tests drive real iperf3, traceroute
/// and tracepath through the cnf; the benchmark generates with trafgen and
/// compares against nftables masquerade. The image is built with buildah and
/// checked with skopeo and umoci; the least-privilege test drops capabilities
/// with capsh.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("bpftool", "bpftool"),
    ("curl", "curl"),
    ("ping", "iputils-ping"),
    ("ethtool", "ethtool"),
    ("nsenter", "util-linux"),
    ("setpriv", "util-linux"),
    ("iperf3", "iperf3"),
    ("traceroute", "traceroute"),
    ("tracepath", "iputils-tracepath"),
    ("trafgen", "netsniff-ng"),
    ("nft", "nftables"),
    ("tcpdump", "tcpdump"),
    ("capsh", "libcap2-bin"),
    ("buildah", "buildah"),
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
];

/// apt-get installs whichever tools are missing.
pub fn ensure_tools() -> Result<()> {
    let mut missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing tools from Debian packages {}: run as root so they can be installed, or apt-get install them",
            missing.join(" ")
        );
    }
    run(Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

/// The LLVM major version of the nightly toolchain that builds the eBPF.
pub fn nightly_llvm_major() -> Result<u32> {
    let vv = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
        .context("no nightly toolchain: install it with `rustup toolchain install nightly`")?;
    vv.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .with_context(|| format!("no LLVM version in `rustc +nightly -vV`:\n{vv}"))
}

/// Adds rust-src to nightly if it is missing (`-Z build-std` needs it).
pub fn ensure_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

/// The LLVM major a bpf-linker binary is linked against, read from its
/// dynamic dependencies (`libLLVM.so.22.1-rust-…` or `libLLVM-22.so`).
fn linker_llvm_major(bin: &Path) -> Option<u32> {
    let ldd = output(Command::new("ldd").arg(bin)).ok()?;
    ldd.split_whitespace().find_map(|w| {
        let rest = w
            .strip_prefix("libLLVM.so.")
            .or_else(|| w.strip_prefix("libLLVM-"))?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// Makes sure a bpf-linker built against nightly's LLVM major is on PATH,
/// building one if not.
///
/// It links against the nightly toolchain's own libLLVM, so it matches
/// nightly exactly and needs no apt packages: `LLVM_PREFIX` points at a
/// directory whose `lib/` holds links to that library, and the installed
/// binary's rpath keeps pointing there.
pub fn ensure_bpf_linker() -> Result<()> {
    let major = nightly_llvm_major()?;
    if let Some(bin) = which("bpf-linker") {
        match linker_llvm_major(&bin) {
            Some(m) if m == major => return Ok(()),
            found => eprintln!(
                "{} is built for LLVM {found:?}, nightly uses LLVM {major}: reinstalling",
                bin.display()
            ),
        }
    }
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
    let libdir = Path::new(sysroot.trim()).join("lib");
    let lib = std::fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| {
            n.starts_with(&format!("libLLVM.so.{major}")) || n == &format!("libLLVM-{major}.so")
        })
        .with_context(|| format!("no libLLVM {major} in {}", libdir.display()))?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let prefix = cargo_home.join(format!("xcnf-llvm-{major}"));
    let plib = prefix.join("lib");
    std::fs::create_dir_all(&plib)?;
    for name in ["libLLVM.so", lib.as_str()] {
        let link = plib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(libdir.join(&lib), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            "^0.13",
            "--locked",
            "--force",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS"))?;
    match which("bpf-linker").as_deref().and_then(linker_llvm_major) {
        Some(m) if m == major => Ok(()),
        other => bail!(
            "bpf-linker installed but {} (LLVM {other:?}); is cargo's bin directory on PATH?",
            which("bpf-linker").map_or("not found on PATH".into(), |p| p.display().to_string())
        ),
    }
}
