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

/// rust-analyzer's rule: a reader opening any module first reads what it is.
#[test]
fn every_module_says_what_it_is() {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|krate| krate.path().join("src"))
        .collect();
    sources.push(root().join("xtask/src"));
    let modules: Vec<PathBuf> = sources
        .iter()
        .flat_map(|src| rust_files(src))
        // Included into an item list (by `include!`), not a module.
        .filter(|file| !file.ends_with("faults/table.rs"))
        .collect();
    assert!(modules.len() > 100, "found only {} modules", modules.len());
    let missing: Vec<String> = modules
        .iter()
        .filter(|file| !read(file).trim_start().starts_with("//!"))
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a `//!` doc: {missing:?}"
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
            if file.components().any(|c| c.as_os_str() == "faults") {
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

/// Whether `text` defines an item named `name` (a fn, const, static, type).
fn defines(text: &str, name: &str) -> bool {
    [
        format!("fn {name}("),
        format!("fn {name}<"),
        format!("const {name}:"),
        format!("static {name}:"),
        format!("struct {name} "),
        format!("enum {name} "),
    ]
    .iter()
    .any(|needle| text.contains(needle.as_str()))
}

/// ARCHITECTURE.md's "Rules" table.
fn rule_rows() -> Vec<crate::rules::Rule> {
    crate::rules::rules(&read(&root().join("ARCHITECTURE.md"))).expect("the rule table")
}

#[test]
fn rule_table_names_what_exists() {
    let rows = rule_rows();
    assert!(rows.len() >= 30, "found only {} rules", rows.len());
    let concurrent: String = rust_files(&root().join("crates/auth-api/tests/it/concurrent"))
        .iter()
        .map(|f| read(f))
        .collect();
    let mut homes: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for row in &rows {
        let rule = row.name();
        assert_eq!(row.cells.len(), 6, "{rule}: not six cells");
        let lives = row.homes();
        assert!(!lives.is_empty(), "{rule}: lives nowhere");
        for place in lives {
            let (path, symbol) = place
                .split_once(':')
                .unwrap_or_else(|| panic!("{rule}: `{place}` is not path:symbol"));
            let text = read(&root().join("crates").join(path));
            let mut names = symbol.split("::");
            let (owner, item) = match (names.next(), names.next()) {
                (Some(owner), Some(item)) => (Some(owner), item),
                (Some(item), None) => (None, item),
                _ => panic!("{rule}: `{place}` names nothing"),
            };
            assert!(defines(&text, item), "{rule}: {path} defines no `{item}`");
            if let Some(owner) = owner {
                assert!(
                    text.contains(&format!("impl {owner} ")),
                    "{rule}: {path} has no `impl {owner}`"
                );
            }
        }
        let faults = row.faults();
        assert!(!faults.is_empty(), "{rule}: no fault breaks it");
        for fault in faults {
            assert!(
                crate::prove::FAULTS.contains(&fault),
                "{rule}: `{fault}` is no fault of faults/table.rs"
            );
            homes.entry(fault).or_default().push(rule);
        }
        let tests = row.tests();
        assert!(!tests.is_empty(), "{rule}: no test races it");
        for test in tests {
            assert!(
                concurrent.contains(&format!("async fn {test}()")),
                "{rule}: no tier-2 test `{test}`"
            );
        }
        assert!(
            !row.cells[4].is_empty() && !row.cells[5].is_empty(),
            "{rule}: no sizes or no way forced"
        );
    }
    for fault in crate::prove::FAULTS {
        let rows = homes.get(fault).map_or(0, Vec::len);
        assert_eq!(
            rows,
            1,
            "`{fault}` is in {rows} rows of the rule table: {:?}",
            homes.get(fault)
        );
    }
}

/// Every `fn` name defined in the workspace's Rust files.
fn defined_functions() -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for dir in ["crates", "xtask"] {
        for file in rust_files(&root().join(dir)) {
            let text = read(&file);
            for rest in text.split("fn ").skip(1) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        }
    }
    names
}

#[test]
fn every_invariant_names_the_tests_that_check_it() {
    let doc = read(&root().join("ARCHITECTURE.md"));
    let section = doc
        .split("\n## Invariants\n")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("ARCHITECTURE.md has an Invariants section");
    let bullets: Vec<String> = section
        .split("\n- ")
        .skip(1)
        .map(|b| b.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(
        bullets.len() >= 10,
        "found only {} invariants",
        bullets.len()
    );
    let defined = defined_functions();
    for bullet in &bullets {
        let checks = bullet
            .split_once("Checked by ")
            .map(|(_, names)| crate::rules::quoted(names))
            .unwrap_or_default();
        assert!(!checks.is_empty(), "names no test: {bullet}");
        for check in checks {
            assert!(defined.contains(check), "no test `{check}`: {bullet}");
        }
    }
}

/// The rules' time is the database's: no code of the service reads the
/// host's clock for one. The one exception stamps a metric.
#[test]
fn no_rule_reads_the_hosts_clock() {
    let mut found = Vec::new();
    for krate in ["auth-core", "auth-api"] {
        for file in rust_files(&root().join("crates").join(krate).join("src")) {
            for (n, line) in read(&file).lines().enumerate() {
                let reads_clock = ["Utc::now(", "SystemTime::now(", "Local::now("]
                    .iter()
                    .any(|clock| line.contains(clock));
                // The cleanup's `last_run_unix` metric: when it ran, not a rule.
                let metric = file.ends_with("auth-core/src/retention.rs")
                    && line.contains("let now = SystemTime::now()");
                if reads_clock && !metric {
                    found.push(format!("{}:{}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "the host's clock read at {found:?}");
}

/// A token or a password printed by `{}` would reach a log.
#[test]
fn secrets_have_no_display() {
    let domain = root().join("crates/auth-core/src/domain");
    assert!(read(&domain.join("token.rs")).contains("pub struct SessionToken"));
    assert!(read(&domain.join("password.rs")).contains("pub struct Password"));
    for file in rust_files(&root().join("crates")) {
        let text = read(&file);
        for secret in ["SessionToken", "Password"] {
            assert!(
                !text.contains(&format!("Display for {secret} ")),
                "{} implements Display for {secret}",
                file.display()
            );
        }
    }
}

/// The deliberate faults exist only when a build asks for them by name.
#[test]
fn the_faults_are_never_on_by_default() {
    let mut manifests = vec![root().join("Cargo.toml"), root().join("xtask/Cargo.toml")];
    for krate in std::fs::read_dir(root().join("crates"))
        .into_iter()
        .flatten()
        .flatten()
    {
        manifests.push(krate.path().join("Cargo.toml"));
    }
    for manifest in manifests.iter().filter(|m| m.exists()) {
        for line in read(manifest).lines() {
            let line = line.trim();
            let turns_on = (line.starts_with("default") && line.contains("faults"))
                || (line.contains("features") && line.contains("\"faults\"") && line.contains('{'));
            assert!(!turns_on, "{}: {line}", manifest.display());
        }
    }
}

/// Every statement of `store/` is one piece of SQL: `format!` builds only
/// a value into a one-line statement (a lock's key or id) or the task
/// listing's union of parts, and these are counted here so a new one is
/// seen.
#[test]
fn store_statements_are_whole() {
    let allowed = [
        ("login_attempts.rs", 1), // the email's advisory-lock key
        ("users.rs", 1),          // the user's id in its lock
        ("tasks.rs", 1),          // a test
    ];
    for file in rust_files(&root().join("crates/auth-core/src/store")) {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let uses = read(&file).matches("format!(").count();
        let allowed = allowed
            .iter()
            .find(|(f, _)| *f == name)
            .map_or(0, |(_, n)| *n);
        assert_eq!(uses, allowed, "{name} builds SQL with format! {uses} times");
    }
}

/// `text` with every string literal, `'{'`/`'}'` character literal and
/// comment blanked, so the braces left are the code's own.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let rest = &chars[i..];
        if rest.starts_with(&['/', '/']) {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if rest.starts_with(&['\'', '{', '\'']) || rest.starts_with(&['\'', '}', '\'']) {
            out.push_str("   ");
            i += 3;
        } else if chars[i] == 'r' && matches!(rest.get(1), Some('#' | '"')) {
            // A raw string: r"...", r#"..."#, ...
            let hashes = rest[1..].iter().take_while(|c| **c == '#').count();
            if rest.get(1 + hashes) != Some(&'"') {
                out.push(chars[i]);
                i += 1;
                continue;
            }
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let mut j = i + 2 + hashes;
            while j < chars.len() && !chars[j..].starts_with(&close) {
                j += 1;
            }
            let end = (j + close.len()).min(chars.len());
            out.extend(chars[i..end].iter().map(|c| blank(*c)));
            i = end;
        } else if chars[i] == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(chars.len());
            out.extend(chars[i..end].iter().map(|c| blank(*c)));
            i = end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Every function with a body in `text`: its name and length in lines.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let code = code_only(text);
    let lines: Vec<&str> = code.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let qualifiers = [
            "pub",
            "pub(crate)",
            "pub(super)",
            "async",
            "const",
            "unsafe",
        ];
        if !words[..at].iter().all(|w| qualifiers.contains(w)) {
            continue;
        }
        let name: String = words
            .get(at + 1)
            .unwrap_or(&"")
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let mut depth = 0i32;
        for (end, body) in lines.iter().enumerate().skip(start) {
            if depth == 0 && body.trim_end().ends_with(';') && !body.contains('{') {
                break; // a declaration without a body
            }
            for c in body.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if depth == 0 && body.contains('}') {
                found.push((name.clone(), end - start + 1));
                break;
            }
        }
    }
    found
}

#[test]
fn function_lengths_are_measured_on_code_alone() {
    let text = "fn a() {\n    let s = \"}}\";\n    let c = '{';\n    // }\n}\npub async fn b(x: u8) -> u8 {\n    x\n}\nfn declared();\n";
    assert_eq!(
        function_lengths(text),
        [("a".to_owned(), 5), ("b".to_owned(), 3)]
    );
    let raw = "fn q() -> &'static str {\n    r#\"{ \"\"#\n}\n";
    assert_eq!(function_lengths(raw), [("q".to_owned(), 3)]);
}

/// A function a reader can hold in view: none over 80 lines in the
/// product's code or in the tooling (tests may tell one long story).
#[test]
fn no_function_is_over_80_lines() {
    let mut long = Vec::new();
    for dir in ["crates/auth-core/src", "crates/auth-api/src", "xtask/src"] {
        for file in rust_files(&root().join(dir)) {
            for (name, lines) in function_lengths(&read(&file)) {
                if lines > 80 {
                    long.push(format!("{}:{name} ({lines} lines)", file.display()));
                }
            }
        }
    }
    assert!(long.is_empty(), "functions over 80 lines: {long:#?}");
}

/// Many arguments are a struct waiting to be named.
#[test]
fn no_function_is_allowed_too_many_arguments() {
    let allowed: Vec<String> = rust_files(&root().join("crates"))
        .into_iter()
        .chain(rust_files(&root().join("xtask")))
        .filter(|file| read(file).contains(&format!("{}::too_many_arguments", "clippy")))
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        allowed.is_empty(),
        "too_many_arguments allowed in {allowed:?}"
    );
}

/// In the tooling (xtask, harness, load-tests) a file name means one thing.
#[test]
fn no_tooling_file_name_means_two_things() {
    let mut seen: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for dir in ["xtask/src", "crates/harness/src", "crates/load-tests/src"] {
        for file in rust_files(&root().join(dir)) {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if !["mod.rs", "lib.rs", "main.rs"].contains(&name.as_str()) {
                seen.entry(name).or_default().push(file);
            }
        }
    }
    let twice: Vec<_> = seen
        .into_iter()
        .filter(|(_, files)| files.len() > 1)
        .collect();
    assert!(twice.is_empty(), "file names used twice: {twice:#?}");
}
