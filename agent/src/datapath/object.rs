//! Finding the eBPF object at run time.
//!
//! The object is a separate file rather than embedded in the binary so the
//! agent can be rebuilt on stable alone and the object swapped independently;
//! the price is this search, whose failure names the command that builds it.

use std::path::{Path, PathBuf};

use super::DatapathError;

/// Where a packaged object lives in the container image.
pub const INSTALLED: &str = "/usr/lib/xcnf/xcnf.bpf.o";

/// Resolves the object path: `explicit` (from `--ebpf-object` or
/// `XCNF_EBPF_OBJECT`) must exist; otherwise the first existing of: next to
/// the executable, the cargo build tree the executable came from, the
/// installed location.
pub fn find_object(explicit: Option<&Path>) -> Result<PathBuf, DatapathError> {
    if let Some(p) = explicit {
        return match std::fs::metadata(p) {
            Ok(m) if m.is_file() => Ok(p.to_path_buf()),
            Ok(_) => Err(DatapathError::ObjectUnreadable {
                path: p.to_path_buf(),
                source: std::io::Error::other("not a regular file"),
            }),
            Err(source) => Err(DatapathError::ObjectUnreadable {
                path: p.to_path_buf(),
                source,
            }),
        };
    }
    let mut searched = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        searched.push(dir.join("xcnf.bpf.o"));
        // target/<profile>/xcnf-agent → target/bpfel-unknown-none/<profile>/xcnf
        if let Some(target) = dir.parent() {
            for profile in ["release", "debug"] {
                searched.push(target.join("bpfel-unknown-none").join(profile).join("xcnf"));
            }
        }
    }
    searched.push(PathBuf::from(INSTALLED));
    searched
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(DatapathError::ObjectNotFound { searched })
}
