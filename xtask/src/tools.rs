//! Programs taken from Debian's packages without installing them: the
//! package is downloaded and unpacked under `target/tools/`, once.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `binary` (a path inside the packages) from `packages`, unpacked into
/// `target/tools/<name>` unless it is there already.
pub fn debian(name: &str, packages: &[&str], binary: &str) -> anyhow::Result<PathBuf> {
    let dir = tool_dir(name);
    let extracted = dir.join(binary);
    if extracted.exists() {
        return Ok(extracted);
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "xtask: fetching Debian's {} for {binary}...",
        packages.join(" ")
    );
    let fetched = Command::new("apt-get")
        .arg("download")
        .args(packages)
        .current_dir(&dir)
        .status()
        .with_context(|| {
            format!(
                "apt-get download {} (or install Debian's package `{}`)",
                packages.join(" "),
                packages[0]
            )
        })?;
    anyhow::ensure!(
        fetched.success(),
        "apt-get download {} failed",
        packages.join(" ")
    );
    for deb in debs(&dir)? {
        let unpacked = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&dir)
            .status()
            .context("dpkg-deb")?;
        anyhow::ensure!(unpacked.success(), "dpkg-deb -x {} failed", deb.display());
        std::fs::remove_file(&deb)?;
    }
    anyhow::ensure!(
        extracted.exists(),
        "{} not in {}",
        binary,
        packages.join(" ")
    );
    Ok(extracted)
}

/// Where `debian(name, ..)` unpacks; its shared libraries are under
/// `usr/lib/<triplet>` there.
pub fn tool_dir(name: &str) -> PathBuf {
    Path::new("target/tools").join(name)
}

fn debs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect())
}
