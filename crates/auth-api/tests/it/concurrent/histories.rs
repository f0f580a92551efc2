//! The randomized run, short and with a fixed seed: histories of logins,
//! refreshes, revocations and queue calls from three users over two
//! instances, each round judged by the model of the rules (`crates/model`)
//! and by a fresh read of the database. `cargo xtask model --seeds N` runs
//! many seeds; `prove` runs this one under every deliberate fault.

/// Seeds and rounds: about ten seconds on two cores, every kind of step
/// and every kind of crowd.
const SEEDS: [u64; 4] = [20261207, 7, 1, 2];
const ROUNDS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixed_seed_histories_are_explained_by_the_model_of_the_rules() {
    for seed in SEEDS {
        if let Err(failure) = model::check(seed, ROUNDS, model::Shrink::No).await {
            let saved = std::env::temp_dir().join(format!("tessera-model-failure-{seed}.json"));
            let written = serde_json::to_string_pretty(&failure.history)
                .ok()
                .and_then(|json| std::fs::write(&saved, json).ok());
            let saved = written.map(|()| saved.display().to_string());
            panic!("{}", model::describe(&failure, saved.as_deref()));
        }
    }
}
