//! Prints the service's validation statement as a pgbench script, for
//! `cargo xtask load --ceiling`: the token hash is `sha256(int4send(:n))`,
//! matching the sessions the ceiling run seeds, and the touch interval is
//! the service's default.

fn main() {
    let touch_secs = auth_core::config::SessionPolicy::default()
        .touch_interval
        .as_secs_f64();
    let sql = auth_core::store::sessions::validate_lookup_sql()
        .replace("$1", "sha256(int4send(:n))")
        .replace("$2", &format!("{touch_secs}"));
    println!("\\set n random(1, :tokens)");
    println!("{};", sql.split_whitespace().collect::<Vec<_>>().join(" "));
}
