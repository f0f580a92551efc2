//! The binary's command line: every setting is a flag listed by `--help`
//! (in step with `.env.sample` and docs/operations.md), and the admin
//! commands do what they print, checked by reading the database afresh.

use reqwest::StatusCode;
use serde_json::json;
use std::collections::BTreeSet;
use std::process::Stdio;
use test_support::app::expect_status;
use test_support::{TestApp, TestDb};
use tokio::io::AsyncWriteExt as _;

/// Runs `auth-api args...` against `database_url`, `stdin` on its input;
/// it must succeed; returns its stdout.
async fn auth_api(database_url: &str, args: &[&str], stdin: &str) -> String {
    let out = run(database_url, args, stdin).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "auth-api {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `auth-api args...`, which must fail; what it said on stderr.
async fn auth_api_fails(database_url: &str, args: &[&str]) -> String {
    let out = run(database_url, args, "").await;
    assert!(!out.status.success(), "auth-api {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn run(database_url: &str, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("TESSERA_ARGON2_M_KIB", "8")
        .env("TESSERA_ARGON2_T", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    child.wait_with_output().await.unwrap()
}

/// `TESSERA_*` and `DATABASE_URL` names in `text`.
fn settings_named(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.starts_with("TESSERA_") || *w == "DATABASE_URL")
        .map(str::to_owned)
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[tokio::test]
async fn help_lists_every_setting_of_env_sample_and_the_operations_guide() {
    let help = auth_api("unused", &["--help"], "").await;
    let listed = settings_named(&help);
    assert!(listed.len() > 30, "only {listed:?}");
    for (doc, text) in [
        (".env.sample", read(".env.sample")),
        ("docs/operations.md", read("docs/operations.md")),
    ] {
        let documented = settings_named(&text);
        let missing_from_help: Vec<_> = documented.difference(&listed).collect();
        let undocumented: Vec<_> = listed.difference(&documented).collect();
        assert!(
            missing_from_help.is_empty(),
            "in {doc}, not in --help: {missing_from_help:?}"
        );
        assert!(
            undocumented.is_empty(),
            "in --help, not in {doc}: {undocumented:?}"
        );
    }
    // Each is a flag too, and its default is shown.
    assert!(help.contains("--session-idle-secs <VALUE>"), "{help}");
    assert!(help.contains("[default: 1800]"), "{help}");
    let version = auth_api("unused", &["--version"], "").await;
    assert_eq!(
        version.trim(),
        format!("auth-api {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn sessions_revoke_revokes_every_session_of_the_user_and_prints_the_count() {
    let app = TestApp::spawn().await;
    let first = app.signup("revoke-me@example.com").await;
    let second = app.login_ok("revoke-me@example.com").await;
    let bystander = app.signup("bystander@example.com").await;
    let out = auth_api(
        &app.db.url(),
        &["sessions", "revoke", "--email", "revoke-me@example.com"],
        "",
    )
    .await;
    assert_eq!(out.trim(), "revoked 2 sessions of revoke-me@example.com");
    let active = |user: uuid::Uuid| {
        format!(
            "SELECT count(*) AS n FROM sessions WHERE user_id = '{user}' AND revoked_at IS NULL"
        )
    };
    assert_eq!(app.db.count(&active(first.user_id)).await, 0);
    assert_eq!(app.db.count(&active(bystander.user_id)).await, 1);
    for token in [&first.token, &second.token] {
        assert_eq!(app.current(token).await.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn users_create_takes_the_password_from_stdin_and_the_user_can_log_in() {
    let app = TestApp::spawn().await;
    let out = auth_api(
        &app.db.url(),
        &[
            "users",
            "create",
            "--email",
            "Admin@Example.com",
            "--role",
            "admin",
        ],
        "correct horse battery\n",
    )
    .await;
    assert!(out.starts_with("created user "), "{out}");
    assert!(
        out.trim()
            .ends_with("(admin@example.com) with roles [admin]"),
        "{out}"
    );
    let login = app
        .login("admin@example.com", "correct horse battery")
        .await;
    let token = expect_status(login, StatusCode::CREATED).await["token"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    let me = expect_status(app.get("/v1/users/me", Some(&token)).await, StatusCode::OK).await;
    assert_eq!(me["roles"], json!(["admin"]));
    assert_eq!(me["email"], "admin@example.com");
    // Without --role: the configured default (the service's own, worker).
    let out = auth_api(
        &app.db.url(),
        &["users", "create", "--email", "plain@example.com"],
        "correct horse battery\n",
    )
    .await;
    assert!(out.trim().ends_with("with roles [worker]"), "{out}");
    let out = auth_api(
        &app.db.url(),
        &[
            "users",
            "set-roles",
            "--email",
            "Plain@example.com",
            "--role",
            "admin",
            "--role",
            "worker",
        ],
        "",
    )
    .await;
    assert!(
        out.trim().ends_with("now has roles [worker,admin]"),
        "{out}"
    );
    let stored = "SELECT count(*) AS n FROM users
                  WHERE email = 'plain@example.com' AND roles = '{worker,admin}'";
    assert_eq!(app.db.count(stored).await, 1);
    let unknown = auth_api_fails(
        &app.db.url(),
        &[
            "users",
            "set-roles",
            "--email",
            "nobody@example.com",
            "--role",
            "worker",
        ],
    )
    .await;
    assert!(unknown.contains("nobody@example.com"), "{unknown}");
    let bad = auth_api_fails(
        &app.db.url(),
        &[
            "users",
            "create",
            "--email",
            "x@example.com",
            "--role",
            "root",
        ],
    )
    .await;
    assert!(bad.contains("`root` is not a role"), "{bad}");
}

#[tokio::test]
async fn cleanup_dry_run_deletes_nothing_and_cleanup_deletes_what_it_counted() {
    let app = TestApp::spawn().await;
    let user = app.signup("old@example.com").await;
    app.db
        .execute(&format!(
            "UPDATE sessions SET revoked_at = now() - interval '8 days' WHERE user_id = '{}'",
            user.user_id
        ))
        .await;
    let sessions = "SELECT count(*) AS n FROM sessions";
    let dry = auth_api(&app.db.url(), &["cleanup", "--dry-run"], "").await;
    assert_eq!(
        dry.trim(),
        "would delete: 1 sessions, 0 API keys, 0 login attempts, 0 tasks"
    );
    assert_eq!(app.db.count(sessions).await, 1);
    let run = auth_api(&app.db.url(), &["cleanup"], "").await;
    assert_eq!(
        run.trim(),
        "deleted: 1 sessions, 0 API keys, 0 login attempts, 0 tasks"
    );
    assert_eq!(app.db.count(sessions).await, 0);
}

#[tokio::test]
async fn migrate_applies_every_migration_once() {
    let db = TestDb::not_created();
    db.create_empty().await;
    let first = auth_api(&db.url(), &["migrate"], "").await;
    let shipped = std::fs::read_dir(format!("{}/../../migrations", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .count();
    assert_eq!(first.trim(), format!("applied {shipped} migrations"));
    let again = auth_api(&db.url(), &["migrate"], "").await;
    assert_eq!(again.trim(), "applied 0 migrations");
    // The flag wins over the environment: a bad URL in the environment is ignored.
    let url = db.url();
    let flagged = auth_api(
        "postgres://nobody@127.0.0.1:1/none",
        &["--database-url", &url, "migrate"],
        "",
    )
    .await;
    assert_eq!(flagged.trim(), "applied 0 migrations");
}

/// A variable's value is read trimmed (a secret file's trailing newline is
/// no part of a URL) and an empty one counts as unset, as before the
/// settings were clap's.
#[tokio::test]
async fn variables_are_read_trimmed_and_an_empty_one_is_unset() {
    let app = TestApp::spawn().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .arg("migrate")
        .env("DATABASE_URL", format!("  {}\n", app.db.url()))
        .env("TESSERA_WORKERS", "")
        .env("TESSERA_DB_POOLER", " none ")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "applied 0 migrations");
}
