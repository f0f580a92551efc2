//! Request decoding (bytes -> the route's form -> checked values, as the
//! extractor does) and response encoding (a claim answer of 30 tasks).

use auth_api::fields::{Read, read};
use auth_api::routes::sessions::LoginRequest;
use auth_api::routes::tasks::CreateTasksRequest;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;

fn decode(c: &mut Criterion) {
    let body = br#"{"email":"Ada.Lovelace@Example.com","password":"correct horse battery staple"}"#;
    c.bench_function("decode login body", |b| {
        b.iter(|| {
            black_box(matches!(
                read::<LoginRequest>(black_box(body), true),
                Ok(Read::Done(_))
            ))
        })
    });
    let batch: Vec<Value> = (0..1000)
        .map(|i| json!({"title": format!("task {i}"), "schedulable": i % 2 == 0}))
        .collect();
    let bytes = json!({ "tasks": batch }).to_string().into_bytes();
    let mut group = c.benchmark_group("decode task batch");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("1000 tasks", |b| {
        b.iter(|| {
            black_box(matches!(
                read::<CreateTasksRequest>(black_box(&bytes), true),
                Ok(Read::Done(_))
            ))
        })
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let tasks: Vec<Value> = (0..30)
        .map(|i| {
            json!({
                "id": uuid::Uuid::new_v4(), "title": format!("task {i}"), "schedulable": true,
                "status": "assigned", "assigned_to": uuid::Uuid::new_v4(),
                "assigned_by": uuid::Uuid::new_v4(), "assigned_at": "2026-11-23T10:00:00Z",
                "lease_expires_at": "2026-11-23T10:05:00Z", "completed_at": null
            })
        })
        .collect();
    let answer = json!({"requested": 30, "claimed": 30, "tasks": tasks});
    c.bench_function("encode claim answer (30 tasks)", |b| {
        b.iter(|| serde_json::to_vec(black_box(&answer)))
    });
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
