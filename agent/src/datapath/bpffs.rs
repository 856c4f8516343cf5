//! The bpffs mount and the instance's pin layout.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use super::{DatapathError, HookChoice};

/// Where bpffs is conventionally mounted.
pub const BPFFS_DEFAULT: &str = "/sys/fs/bpf";

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts a bpffs at `root` unless one is already there.
///
/// Pins only outlive the agent if this bpffs does: in a pod, mount it from
/// the host (or a per-pod hostPath) rather than relying on this fallback.
pub fn ensure_mounted(root: &Path) -> Result<(), DatapathError> {
    let err = |message: String| DatapathError::Bpffs {
        path: root.to_path_buf(),
        message,
    };
    if is_bpffs(root) {
        return Ok(());
    }
    std::fs::create_dir_all(root).map_err(|e| err(format!("cannot create mount point: {e}")))?;
    let target = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| err("path contains a NUL byte".into()))?;
    // SAFETY: valid NUL-terminated strings; mount(2) does not retain them.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(err(format!(
            "not a bpffs, and mounting one failed: {} (needs CAP_SYS_ADMIN, or mount bpffs before starting the agent)",
            std::io::Error::last_os_error()
        )));
    }
    tracing::info!(path = %root.display(), "mounted bpffs");
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated, st is a valid out-pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type == BPF_FS_MAGIC
}

/// Paths of one instance's pins: `<root>/xcnf/<instance>/...`.
#[derive(Clone, Debug)]
pub struct Pins {
    root: PathBuf,
    dir: PathBuf,
}

impl Pins {
    pub fn new(root: impl Into<PathBuf>, instance: &str) -> Self {
        let root = root.into();
        let dir = root.join("xcnf").join(instance);
        Self { root, dir }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn map(&self, m: xcnf_common::maps::MapName) -> PathBuf {
        self.dir.join(m.pin)
    }

    fn links_dir(&self) -> PathBuf {
        self.dir.join("links")
    }

    pub fn link(&self, ifname: &str, hook: HookChoice) -> PathBuf {
        self.links_dir().join(format!("{}-{ifname}", hook.tag()))
    }

    /// The interface name a link pin belongs to.
    pub fn link_ifname(pin: &Path) -> Option<&str> {
        let name = pin.file_name()?.to_str()?;
        name.strip_prefix("tc-")
            .or_else(|| name.strip_prefix("xdp-"))
    }

    /// Where verified programs are pinned for the next start to reuse.
    pub fn progs_dir(&self) -> PathBuf {
        self.dir.join("progs")
    }

    /// The pin of program `name` built from the object, settings and maps
    /// that `key` fingerprints.
    pub fn prog(&self, name: &str, key: u64) -> PathBuf {
        self.progs_dir().join(format!("{name}-{key:016x}"))
    }

    /// The marker directory saying which map layout the pins were made with
    /// (bpffs holds directories but no regular files).
    pub fn layout_marker(&self, fingerprint: u64) -> PathBuf {
        self.dir.join(format!("layout-{fingerprint:016x}"))
    }

    /// Layout markers present, whatever their fingerprint.
    pub fn layout_markers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("layout-"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every link pin of this instance.
    pub fn link_pins(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.links_dir())
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    pub fn create(&self) -> Result<(), DatapathError> {
        let dir = self.links_dir();
        std::fs::create_dir_all(&dir).map_err(|source| {
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                DatapathError::Permission {
                    what: format!("creating pin directory {}", dir.display()),
                    source: Box::new(source),
                }
            } else {
                DatapathError::PinDir { path: dir, source }
            }
        })
    }

    /// Removes every pin of the instance and its directory. Removing a link
    /// pin detaches the link once the agent's own fds are closed.
    pub fn remove_all(&self) -> Result<(), DatapathError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DatapathError::PinDir {
                path: self.dir.clone(),
                source,
            }),
        }
    }
}
