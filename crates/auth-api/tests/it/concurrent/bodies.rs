//! A crowd of bodies padded with a member the route does not have: each is
//! refused on its first bytes, before the rest of it arrives, so what the
//! crowd costs is bounded by those bytes, not by what the bodies hold.

use serde_json::json;
use std::time::Duration;
use test_support::TestApp;
use test_support::concurrency::run_together;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Bodies declared 1 MiB (the limit of `POST /v1/tasks`), of which only
/// the first 16 KiB are ever sent.
const DECLARED: usize = 1024 * 1024;
const SENT: usize = 16 * 1024;

/// Sends the head and the first bytes of a padded create, then waits (no
/// more bytes follow) for the status line; `None` if none came in 10 s.
async fn padded_prefix(host: &str, token: &str) -> Option<String> {
    let mut stream = TcpStream::connect(host).await.unwrap();
    let mut body = json!({"tasks": [{"title": "x"}]}).to_string();
    body.pop(); // the closing brace: the pad follows
    body.push_str(",\"pad\":[0");
    while body.len() < SENT {
        body.push_str(",0");
    }
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {DECLARED}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer)).await;
    let n = read.ok()?.ok()?;
    let text = String::from_utf8_lossy(&answer[..n]).into_owned();
    text.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn a_crowd_of_padded_bodies_is_refused_before_the_bodies_arrive() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let host = app.address.trim_start_matches("http://").to_owned();
    for n in [1, 30] {
        let answers = run_together(n, |_| {
            let (host, token) = (host.clone(), ada.token.clone());
            async move { padded_prefix(&host, &token).await }
        })
        .await;
        assert!(
            answers
                .iter()
                .all(|a| a.as_deref() == Some("HTTP/1.1 422 Unprocessable Entity")),
            "x{n}: {answers:?}"
        );
    }
    assert_eq!(app.db.count("SELECT count(*) AS n FROM tasks").await, 0);
}
