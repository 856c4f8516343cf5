//! The agent's small on-disk records (the config in force, what it made in
//! the kernel and in VPP): written whole or not at all, so a crash in the
//! middle of a write leaves the previous record for the next start.

use std::{io, path::Path};

/// Writes `bytes` to a temporary file next to `path` and renames it over
/// `path`, creating the directory first.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
