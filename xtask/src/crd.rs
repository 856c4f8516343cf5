//! `cargo xtask crd`: regenerates the committed CRD from the Rust types.

use anyhow::{Context as _, Result};

use crate::setup::root;

/// Writes deploy/crd/cnfconfigurations.xcnf.io.yaml; says whether it changed.
pub fn run() -> Result<()> {
    let path = root().join(xcnf_agent::k8s::CRD_FILE);
    let yaml = xcnf_agent::k8s::crd_yaml()?;
    if std::fs::read_to_string(&path).is_ok_and(|old| old == yaml) {
        println!("{}: up to date", path.display());
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    println!("{}: written", path.display());
    Ok(())
}
