//! Safe start-up: the service listens at once, says it is not ready while
//! its database is missing, and becomes ready by itself once the database
//! exists and the migrations are applied (the `startup` fault case runs the
//! same with PostgreSQL stopped and with four instances at once).

use reqwest::StatusCode;
use std::time::Duration;
use test_support::app::{expect_problem, expect_status, test_config};
use test_support::{TestApp, TestDb};

#[tokio::test]
async fn a_service_started_before_its_database_exists_becomes_ready_once_it_does() {
    let app = TestApp::spawn_on(TestDb::not_created(), test_config()).await;
    expect_status(app.get("/healthz", None).await, StatusCode::OK).await;
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let register = app
        .register("early@example.com", "correct horse battery")
        .await;
    assert!(register.headers().contains_key("retry-after"));
    expect_problem(
        register,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;

    app.db.create_empty().await;
    // The migrations task says when it is done (a watch channel): no
    // polling. Its retries back off to at most 10 s; allow three of them.
    let mut migrated = app.state.migrated.clone();
    tokio::time::timeout(Duration::from_secs(30), migrated.wait_for(|done| *done))
        .await
        .expect("not migrated 30 s after the database appeared")
        .expect("the migrations task ended without migrating");
    expect_status(app.get("/readyz", None).await, StatusCode::OK).await;
    assert!(*app.state.migrated.borrow());
    let applied = app
        .db
        .count("SELECT count(*) AS n FROM __diesel_schema_migrations")
        .await;
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .unwrap()
        .count();
    assert_eq!(applied, shipped as i64, "every migration applied once");
    expect_status(
        app.register("early@example.com", "correct horse battery")
            .await,
        StatusCode::CREATED,
    )
    .await;
}
