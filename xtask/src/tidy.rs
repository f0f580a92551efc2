//! Tidy: the architecture's invariants as tests (rust-analyzer's
//! `xtask/src/tidy.rs` is the model). Plain `#[test]`s over the source
//! tree, so tier 1 fails the moment a rule is broken.

#![cfg(test)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .expect("xtask lives in the workspace root")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The `[dependencies]` table of a manifest (not dev- or build-).
fn dependencies(manifest: &str) -> String {
    manifest
        .split("\n[")
        .find(|section| section.starts_with("dependencies]"))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn every_crate_root_says_what_it_is() {
    let mut missing = Vec::new();
    for krate in std::fs::read_dir(root().join("crates"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let src = krate.path().join("src");
        let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"]
            .iter()
            .map(|f| src.join(f))
            .filter(|p| p.exists())
            .collect();
        roots.extend(rust_files(&src.join("bin")));
        for file in roots {
            if !read(&file).trim_start().starts_with("//!") {
                missing.push(file.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "crate roots without a `//!` doc: {missing:?}"
    );
}

#[test]
fn auth_api_neither_depends_on_diesel_nor_writes_sql() {
    let manifest = read(&root().join("crates/auth-api/Cargo.toml"));
    assert!(
        !dependencies(&manifest).contains("diesel"),
        "auth-api's [dependencies] name diesel: its SQL belongs in auth-core's store"
    );
    let sql = [
        "sql_query",
        "diesel::",
        "SELECT ",
        "INSERT INTO",
        "UPDATE ",
        "DELETE FROM",
    ];
    let offenders: Vec<String> = rust_files(&root().join("crates/auth-api/src"))
        .into_iter()
        .filter(|f| {
            let text = read(f);
            sql.iter().any(|needle| text.contains(needle))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "SQL in auth-api: {offenders:?}");
}

/// Files under `dir` (relative to the root) whose text contains `needle`.
fn files_containing(dir: &str, needle: &str) -> Vec<String> {
    let files = rust_files(&root().join(dir));
    assert!(!files.is_empty(), "no Rust files under {dir}");
    files
        .into_iter()
        .filter(|f| read(f).contains(needle))
        .map(|f| f.display().to_string())
        .collect()
}

#[test]
fn wire_types_are_used_not_shadowed_and_the_routes_never_import_the_document() {
    let shadows = files_containing("crates/auth-api/src", "allow(dead_code)");
    assert!(
        shadows.is_empty(),
        "dead code allowed in auth-api (a schema-only shadow type?): {shadows:?}"
    );
    let cycle = files_containing("crates/auth-api/src/routes", "crate::openapi");
    assert!(
        cycle.is_empty(),
        "routes importing the document (openapi.rs imports the routes): {cycle:?}"
    );
}

#[test]
fn the_record_of_what_clients_were_told_exists_once() {
    let mut records = Vec::new();
    for dir in ["crates", "xtask/src"] {
        // Spelled in two parts so this file does not match itself.
        records.extend(files_containing(dir, concat!("pub struct ", "Record {")));
    }
    assert_eq!(
        records,
        [root()
            .join("crates/harness/src/record.rs")
            .display()
            .to_string()],
        "a second Record"
    );
}

#[test]
fn auth_core_does_not_depend_on_actix() {
    let manifest = read(&root().join("crates/auth-core/Cargo.toml"));
    assert!(
        !dependencies(&manifest).contains("actix"),
        "auth-core's [dependencies] name actix: HTTP belongs in auth-api"
    );
}

/// `TESSERA_*` names in `text`.
fn variables(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("TESSERA_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        // The bare prefix (code that strips it) names no setting.
        if name.len() > "TESSERA_".len() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn every_setting_the_service_reads_is_documented() {
    let mut read_by_code = std::collections::BTreeSet::new();
    for krate in ["auth-core", "auth-api"] {
        for file in rust_files(&root().join("crates").join(krate).join("src")) {
            // The deliberate faults are test machinery, not a setting.
            if file.ends_with("faults.rs") {
                continue;
            }
            read_by_code.extend(variables(&read(&file)));
        }
    }
    read_by_code.remove("TESSERA_FAULT");
    assert!(read_by_code.len() > 20, "found only {read_by_code:?}");
    for doc in [".env.sample", "docs/operations.md"] {
        let documented = variables(&read(&root().join(doc)));
        let missing: Vec<&String> = read_by_code.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "read by the service, missing from {doc}: {missing:?}"
        );
    }
}

#[test]
fn prove_knows_exactly_the_faults_the_code_defines() {
    let faults = read(&root().join("crates/auth-core/src/faults.rs"));
    let defined: std::collections::BTreeSet<&str> = faults
        .lines()
        .filter_map(|line| {
            let (_, name) = line.trim().strip_prefix("Fault::")?.split_once(" => \"")?;
            name.strip_suffix("\",")
        })
        .collect();
    let proved: std::collections::BTreeSet<&str> = crate::prove::FAULTS.iter().copied().collect();
    assert!(defined.len() >= 19, "found only {defined:?}");
    assert_eq!(defined, proved, "faults.rs and prove::FAULTS differ");
}
