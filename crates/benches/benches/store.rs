//! Store-level validate and claim against a real database (a TestDb clone):
//! the statements the service runs, timed from the client side (round trip
//! included), on 10,000 sessions, 10,000 API keys, and 100,000 tasks with
//! 10,000 leased. A key's validation and a session's run side by side, on
//! one connection, in one run.

use auth_core::domain::TokenHash;
use auth_core::store::{api_keys, sessions, tasks};
use criterion::{Criterion, criterion_group, criterion_main};
use diesel_async::AsyncPgConnection;
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::time::{Duration, Instant};
use test_support::TestDb;
use uuid::Uuid;

const WORKER: &str = "00000000-0000-4000-8000-000000000001";

async fn seed(db: &TestDb) {
    db.execute(&format!(
        "INSERT INTO users (id, email, password_hash) VALUES ('{WORKER}', 'bench@example.test', 'x')"
    ))
    .await;
    db.execute(&format!(
        "INSERT INTO sessions (id, user_id, token_hash, idle_expires_at, absolute_expires_at)
         SELECT gen_random_uuid(), '{WORKER}', sha256(int4send(g)), now() + interval '1 hour', now() + interval '1 hour'
         FROM generate_series(1, 10000) AS g"
    ))
    .await;
    db.execute(&format!(
        "INSERT INTO api_keys (id, user_id, name, key_hash, roles, last_used_at)
         SELECT gen_random_uuid(), '{WORKER}', 'key ' || g, sha256(int4send(g)), '{{worker}}', now()
         FROM generate_series(1, 10000) AS g"
    ))
    .await;
    db.execute("INSERT INTO tasks (id, title) SELECT gen_random_uuid(), 'task ' || g FROM generate_series(1, 100000) AS g")
        .await;
    db.execute(&format!(
        "UPDATE tasks SET status = 'assigned', assigned_to = '{WORKER}', assigned_by = '{WORKER}',
             assigned_at = now(), lease_expires_at = now() + interval '1 hour', attempt = 1
         WHERE seq <= 10000"
    ))
    .await;
    db.execute("VACUUM ANALYZE sessions").await;
    db.execute("VACUUM ANALYZE api_keys").await;
    db.execute("VACUUM ANALYZE tasks").await;
}

/// The hash the seeded session (and API key) number `n` was stored under.
fn seeded_hash(n: i32) -> TokenHash {
    TokenHash(Sha256::digest(n.to_be_bytes()).into())
}

fn store(c: &mut Criterion) {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio: {e}"),
    };
    let (db, mut conn) = runtime.block_on(async {
        let db = TestDb::new().await;
        seed(&db).await;
        let conn: AsyncPgConnection = db.connect().await;
        (db, conn)
    });
    let worker = match Uuid::parse_str(WORKER) {
        Ok(id) => id,
        Err(e) => panic!("{e}"),
    };

    let mut n = 0;
    c.bench_function("store: validate lookup (10k sessions)", |b| {
        b.iter(|| {
            n = n % 10_000 + 1;
            let hash = seeded_hash(n);
            // A touch interval longer than the run: the read-only path.
            let found = runtime.block_on(sessions::validate(
                &mut conn,
                &hash,
                Duration::from_secs(3600),
                Duration::from_secs(1800),
            ));
            assert!(matches!(found, Ok(Some(_))), "seeded session {n} not found");
            black_box(found)
        })
    });

    let mut n = 0;
    c.bench_function("store: validate key lookup (10k keys)", |b| {
        b.iter(|| {
            n = n % 10_000 + 1;
            let hash = seeded_hash(n);
            // As for sessions: a touch interval longer than the run.
            let found = runtime.block_on(api_keys::validate(
                &mut conn,
                &hash,
                Duration::from_secs(3600),
            ));
            assert!(matches!(found, Ok(Some(_))), "seeded key {n} not found");
            black_box(found)
        })
    });

    let request = tasks::ClaimRequest {
        count: 30,
        assignee: worker,
        assigned_by: worker,
        lease: Duration::from_secs(300),
    };
    c.bench_function("store: claim 30 of 100k (10k leased)", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let claimed = match runtime.block_on(tasks::claim(&mut conn, request)) {
                    Ok(rows) => rows,
                    Err(e) => panic!("claim failed: {e}"),
                };
                timed += started.elapsed();
                assert_eq!(claimed.len(), 30);
                // Untimed: put the tasks back so every iteration claims from the same queue.
                let ids: Vec<String> = claimed.iter().map(|t| format!("'{}'", t.id)).collect();
                runtime.block_on(db.execute(&format!(
                    "UPDATE tasks SET status = 'unassigned', assigned_to = NULL, assigned_by = NULL,
                         assigned_at = NULL, lease_expires_at = NULL, attempt = 0
                     WHERE id IN ({})",
                    ids.join(",")
                )));
            }
            timed
        })
    });
    drop(conn);
    drop(db);
}

criterion_group!(benches, store);
criterion_main!(benches);
