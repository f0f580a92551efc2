use reqwest::StatusCode;
use test_support::TestApp;
use test_support::app::{expect_problem, expect_status};

#[tokio::test]
async fn register_stores_the_email_normalised() {
    let app = TestApp::spawn().await;
    let body = expect_status(
        app.register("  Ada@Example.COM ", "long enough pw").await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(body["email"], "ada@example.com");
    let id = body["id"].as_str().unwrap();
    let stored = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM users WHERE id = '{id}' AND email = 'ada@example.com'"
        ))
        .await;
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn a_taken_email_is_409_whatever_its_case() {
    let app = TestApp::spawn().await;
    expect_status(
        app.register("ada@example.com", "long enough pw").await,
        StatusCode::CREATED,
    )
    .await;
    expect_problem(
        app.register("ADA@example.com ", "another pw 123").await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    assert_eq!(app.db.count("SELECT count(*) AS n FROM users").await, 1);
}

#[tokio::test]
async fn invalid_values_are_422_listing_every_field() {
    let app = TestApp::spawn().await;
    let body = expect_problem(
        app.register("not-an-email", "short").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["email", "password"]);

    let too_long_email = format!("{}@example.com", "a".repeat(250));
    for (email, password) in [
        (too_long_email.as_str(), "long enough pw"),
        ("a@b.c", "1234567"),
        ("a@b.c", &"x".repeat(129)),
        ("", "long enough pw"),
    ] {
        expect_problem(
            app.register(email, password).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    // 128 characters of a 2-byte letter is within the limit: characters, not bytes.
    expect_status(
        app.register("b@b.c", &"é".repeat(128)).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(app.db.count("SELECT count(*) AS n FROM users").await, 1);
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_hashes() {
    let app = TestApp::spawn().await;
    app.signup("ada@example.com").await;
    let hashed = app
        .db
        .count("SELECT count(*) AS n FROM users WHERE password_hash LIKE '$argon2id$%' AND password_hash NOT LIKE '%correct horse%'")
        .await;
    assert_eq!(hashed, 1);
}

/// Only a unique violation means "taken": any other failure of the insert
/// (here a trigger the test installs) is a 500, never a false `email_taken`.
#[tokio::test]
async fn a_failed_insert_that_is_not_a_duplicate_is_a_500_not_email_taken() {
    let app = TestApp::spawn().await;
    app.db
        .execute(
            "CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
             CREATE TRIGGER refuse_insert BEFORE INSERT ON users \
             FOR EACH ROW EXECUTE FUNCTION refuse_insert()",
        )
        .await;
    let problem = expect_problem(
        app.register("ada@example.com", "long enough pw").await,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
    )
    .await;
    assert!(
        !problem.to_string().contains("refused by the test"),
        "a 500 shows no internals: {problem}"
    );
    assert_eq!(app.db.count("SELECT count(*) AS n FROM users").await, 0);
}
