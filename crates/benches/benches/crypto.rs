//! Token generation and hashing, and argon2id with the production parameters
//! against the cheap test parameters.

use auth_core::config::{HashParams, HashPoolConfig};
use auth_core::domain::{Password, SessionToken};
use auth_core::hashing::PasswordHasher;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn tokens(c: &mut Criterion) {
    c.bench_function("token: generate 256 bits + sha256", |b| {
        b.iter(|| match SessionToken::generate() {
            Ok(token) => black_box(token.hash()),
            Err(e) => panic!("OS RNG failed: {e}"),
        })
    });
    let token = match SessionToken::generate() {
        Ok(token) => token.expose(),
        Err(e) => panic!("OS RNG failed: {e}"),
    };
    c.bench_function("token: parse presented + sha256", |b| {
        b.iter(|| SessionToken::parse(black_box(&token)).map(|t| t.hash()))
    });
}

fn argon2(c: &mut Criterion) {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio: {e}"),
    };
    let password = match Password::parse("correct horse battery staple") {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let mut group = c.benchmark_group("argon2id verify");
    group.sample_size(20);
    for (name, params) in [
        ("production (19 MiB, t=2)", HashParams::PRODUCTION),
        ("tests (8 KiB, t=1)", HashParams::FAST_INSECURE_FOR_TESTS),
    ] {
        let hasher = match PasswordHasher::new(
            params,
            HashPoolConfig {
                workers: Some(1),
                ..HashPoolConfig::default()
            },
        ) {
            Ok(h) => h,
            Err(e) => panic!("{e}"),
        };
        let stored = match runtime.block_on(hasher.hash(&password)) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        group.bench_function(name, |b| {
            b.to_async(&runtime)
                .iter(|| hasher.verify("correct horse battery staple", &stored))
        });
    }
    group.finish();
}

criterion_group!(benches, tokens, argon2);
criterion_main!(benches);
