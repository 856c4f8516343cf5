//! The xcnf OCI image: assembled with buildah from a staged root filesystem
//! (no Docker daemon, and no RUN step, which needs a runtime this machine
//! cannot give), and taken apart again with umoci.
//!
//! `cargo xtask image` builds it from release binaries; the image test builds
//! it from the binaries under test with the same code, so what the test runs
//! is what the command ships.

use std::{
    collections::BTreeSet,
    ffi::OsStr,
    path::{Component, Path, PathBuf},
    process::Command,
};

/// Where the payload sits in the image. The object's path is the one the
/// agent searches when nothing names it (`/usr/lib/xcnf/xcnf.bpf.o`), so the
/// entrypoint needs no flag to find it.
pub const AGENT_PATH: &str = "/usr/bin/xcnf-agent";
pub const XCNFCTL_PATH: &str = "/usr/bin/xcnfctl";
/// Where Debian puts bpftool, so `kubectl exec` finds it on the usual PATH.
pub const BPFTOOL_PATH: &str = "/usr/sbin/bpftool";
pub const OBJECT_PATH: &str = "/usr/lib/xcnf/xcnf.bpf.o";
/// Empty directories the pod mounts volumes on (`/run`: the emptyDir for the
/// API socket and state; `/sys/fs/bpf`: the bpffs hostPath). A runtime would
/// create missing mount points itself, but not on a read-only root.
pub const MOUNT_POINTS: &[&str] = &["/run", "/tmp", "/proc", "/sys", "/dev"];

/// Symlinks followed in a row before a path is declared a loop (Linux's
/// own limit).
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: shared library {library} not found (ldd)", .binary.display())]
    LibraryNotFound { binary: PathBuf, library: String },
    #[error("{}: {reason}", .path.display())]
    BadPath { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `cmd`, returning its stdout, or its stderr in the error.
pub fn run(cmd: &mut Command) -> Result<String, ImageError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| ImageError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(ImageError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The files that go into the image, as they are on this machine.
#[derive(Clone, Debug)]
pub struct Payload {
    pub agent: PathBuf,
    pub xcnfctl: PathBuf,
    pub bpftool: PathBuf,
    pub object: PathBuf,
}

impl Payload {
    /// Host file → image path, executables first.
    fn placements(&self) -> [(&Path, &'static str, u32); 4] {
        [
            (&self.agent, AGENT_PATH, 0o755),
            (&self.xcnfctl, XCNFCTL_PATH, 0o755),
            (&self.bpftool, BPFTOOL_PATH, 0o755),
            (&self.object, OBJECT_PATH, 0o644),
        ]
    }
}

#[derive(Clone, Debug)]
pub struct ImageOptions {
    pub payload: Payload,
    /// The oci-archive to write.
    pub archive: PathBuf,
    /// The reference name inside the archive (`oci-archive:<file>:<tag>`).
    pub tag: String,
    /// OCI annotations-style labels (`org.opencontainers.image.*`).
    pub labels: Vec<(String, String)>,
    /// Scratch space: the staged root filesystem and buildah's own storage,
    /// kept apart from the machine's (`/var/lib/containers`) so parallel
    /// builds and tests never share state. Emptied first.
    pub work: PathBuf,
}

/// What went into the image.
#[derive(Clone, Debug)]
pub struct Built {
    pub archive: PathBuf,
    /// Every shared library (and the dynamic loader), as ldd names them.
    pub libraries: Vec<PathBuf>,
    /// Every regular file and symlink in the image, by image path.
    pub entries: Vec<PathBuf>,
}

/// The shared libraries `binary` loads, with the dynamic loader, as ldd
/// resolves them on this machine. A library ldd cannot find is an error:
/// the image would not run.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| ImageError::Spawn {
            command: format!("ldd {}", binary.display()),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    // A static binary: ldd says so (and exits 1) and there is nothing to copy.
    if text.contains("statically linked") || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        return Err(ImageError::Failed {
            command: format!("ldd {}", binary.display()),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)",
        // "/lib64/ld-linux-x86-64.so.2 (0x...)", "linux-vdso.so.1 (0x...)".
        let (name, resolved) = match line.split_once(" => ") {
            Some((name, rest)) => (name.trim(), rest.trim()),
            None => (line, line),
        };
        if resolved.starts_with("not found") {
            return Err(ImageError::LibraryNotFound {
                binary: binary.to_path_buf(),
                library: name.to_owned(),
            });
        }
        let path = resolved.split_whitespace().next().unwrap_or_default();
        // The vDSO lives in the kernel, not in a file.
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// `base` joined with `rel`, `.` and `..` resolved by name. Only used on
/// paths whose components before `rel` are real directories, where that is
/// what the kernel does too.
fn lexical_join(base: &Path, rel: &Path) -> PathBuf {
    let mut out = if rel.is_absolute() {
        PathBuf::from("/")
    } else {
        base.to_path_buf()
    };
    for c in rel.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Copies the host's `path` into `stage` at the same place, recreating
/// every symlink met on the way (`/lib64` → `usr/lib64`, `libz.so.1` →
/// `libz.so.1.2.13`, …) and copying what the last one points at, so the
/// image resolves the path exactly as the host does. Returns the image
/// paths of the links and the file it made.
pub fn replicate(stage: &Path, path: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let mut made = Vec::new();
    let mut todo = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        if !todo.is_absolute() {
            return Err(ImageError::BadPath {
                path: todo,
                reason: "not an absolute path".into(),
            });
        }
        let parts: Vec<&OsStr> = todo
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let mut cur = PathBuf::from("/");
        let mut next = None;
        for (i, part) in parts.iter().enumerate() {
            let host = cur.join(part);
            let dest = stage.join(host.strip_prefix("/").unwrap_or(&host));
            let meta = std::fs::symlink_metadata(&host).map_err(io(&host))?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&host).map_err(io(&host))?;
                if std::fs::symlink_metadata(&dest).is_err() {
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent).map_err(io(parent))?;
                    }
                    std::os::unix::fs::symlink(&target, &dest).map_err(io(&dest))?;
                    made.push(host.clone());
                }
                let mut resolved = lexical_join(&cur, &target);
                for rest in &parts[i + 1..] {
                    resolved.push(rest);
                }
                next = Some(resolved);
                break;
            } else if meta.is_dir() {
                std::fs::create_dir_all(&dest).map_err(io(&dest))?;
            } else if i + 1 == parts.len() && meta.is_file() {
                if std::fs::symlink_metadata(&dest).is_err() {
                    std::fs::copy(&host, &dest).map_err(io(&host))?;
                    made.push(host.clone());
                }
            } else {
                return Err(ImageError::BadPath {
                    path: host,
                    reason: "neither a directory, a regular file nor a symlink".into(),
                });
            }
            cur = host;
        }
        match next {
            Some(p) => todo = p,
            None => return Ok(made),
        }
    }
    Err(ImageError::BadPath {
        path: path.to_path_buf(),
        reason: format!("more than {MAX_SYMLINKS} symlinks (a loop?)"),
    })
}

/// Lays out the image's root filesystem in `stage`: the payload, exactly
/// the libraries it loads, and the mount points. Returns the libraries.
pub fn stage_rootfs(payload: &Payload, stage: &Path) -> Result<Vec<PathBuf>, ImageError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut libraries = BTreeSet::new();
    for (host, image, mode) in payload.placements() {
        let dest = stage.join(image.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::copy(host, &dest).map_err(io(host))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
            .map_err(io(&dest))?;
        if mode & 0o111 != 0 {
            libraries.extend(shared_libraries(host)?);
        }
    }
    for lib in &libraries {
        replicate(stage, lib)?;
    }
    for dir in MOUNT_POINTS {
        let dest = stage.join(dir.trim_start_matches('/'));
        std::fs::create_dir_all(&dest).map_err(io(&dest))?;
    }
    let tmp = stage.join("tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).map_err(io(&tmp))?;
    Ok(libraries.into_iter().collect())
}

/// Every file and symlink under `root`, as absolute image paths, sorted.
pub fn list_entries(root: &Path) -> Result<Vec<PathBuf>, ImageError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImageError> {
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let p = e.path();
            let t = e.file_type().map_err(io(&p))?;
            if t.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                out.push(Path::new("/").join(rel));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// buildah with storage under `work`, apart from the machine's. The vfs
/// driver needs no overlay support from the kernel or a fuse helper, which
/// a VM or a container running this may lack; the image is one small layer.
fn buildah(work: &Path) -> Command {
    let mut c = Command::new("buildah");
    c.arg("--root")
        .arg(work.join("storage"))
        .arg("--runroot")
        .arg(work.join("runroot"))
        .args(["--storage-driver", "vfs"]);
    c
}

/// Builds the image into `opts.archive` (an oci-archive).
pub fn build(opts: &ImageOptions) -> Result<Built, ImageError> {
    match std::fs::remove_dir_all(&opts.work) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ImageError::Io {
                path: opts.work.clone(),
                source,
            });
        }
    }
    let stage = opts.work.join("rootfs");
    std::fs::create_dir_all(&stage).map_err(io(&stage))?;
    let libraries = stage_rootfs(&opts.payload, &stage)?;
    let entries = list_entries(&stage)?;
    if let Some(parent) = opts.archive.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // buildah appends to an existing archive's index rather than replace it.
    let _ = std::fs::remove_file(&opts.archive);

    let ctr = run(buildah(&opts.work)
        .args(["from", "--name"])
        .arg(format!("xcnf-{}", std::process::id()))
        .arg("scratch"))?;
    let ctr = ctr.trim().to_owned();
    let result = (|| {
        run(buildah(&opts.work)
            .arg("copy")
            .arg(&ctr)
            .arg(&stage)
            .arg("/"))?;
        let mut config = buildah(&opts.work);
        config
            .arg("config")
            .arg("--entrypoint")
            .arg(format!("[\"{AGENT_PATH}\"]"))
            .args(["--cmd", ""])
            .args(["--env", "PATH=/usr/sbin:/usr/bin"])
            .args(["--workingdir", "/"]);
        for (k, v) in &opts.labels {
            config.arg("--label").arg(format!("{k}={v}"));
        }
        run(config.arg(&ctr))?;
        let dest = format!("oci-archive:{}:{}", opts.archive.display(), opts.tag);
        run(buildah(&opts.work)
            .args(["commit", "--format", "oci", "--disable-compression=false"])
            .args(["--rm", "--quiet"])
            .arg(&ctr)
            .arg(dest))
    })();
    if result.is_err() {
        let _ = buildah(&opts.work).arg("rm").arg(&ctr).output();
    }
    result?;
    // The storage holds a second copy of every layer; only the archive is wanted.
    let _ = std::fs::remove_dir_all(opts.work.join("storage"));
    let _ = std::fs::remove_dir_all(opts.work.join("runroot"));
    Ok(Built {
        archive: opts.archive.clone(),
        libraries,
        entries,
    })
}

/// Unpacks `archive`'s image `tag` into `dir` with umoci (as root, so file
/// owners are kept) and returns the root filesystem's path.
pub fn unpack(archive: &Path, tag: &str, dir: &Path) -> Result<PathBuf, ImageError> {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&layout).map_err(io(&layout))?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&layout))?;
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle))?;
    Ok(bundle.join("rootfs"))
}
