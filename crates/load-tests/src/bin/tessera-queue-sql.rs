//! Prints the service's claim and complete statements as JSON
//! (`{"claim": ..., "complete": ...}`), for `cargo xtask load --queue`,
//! which runs them with pgbench beside the service.

fn main() {
    let statements = serde_json::json!({
        "claim": auth_core::store::tasks::CLAIM,
        "complete": auth_core::store::tasks::COMPLETE,
    });
    println!("{statements}");
}
