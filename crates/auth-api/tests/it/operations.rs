use reqwest::StatusCode;
use test_support::TestApp;
use test_support::app::expect_status;

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    expect_status(app.get("/healthz", None).await, StatusCode::OK).await;
    expect_status(app.get("/readyz", None).await, StatusCode::OK).await;
}
