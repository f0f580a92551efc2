//! Prints the service's validation statement as a pgbench script, for
//! `cargo xtask load --ceiling`: the token hash is `sha256(int4send(:n))`,
//! matching the sessions the ceiling run seeds; the touch interval and idle
//! timeout are the service's defaults, passed as parameters as it does.

fn main() {
    let policy = auth_core::config::SessionPolicy::default();
    let sql = auth_core::store::sessions::VALIDATE
        .replace("$1", "sha256(int4send(:n))")
        .replace("$2", ":touch_secs")
        .replace("$3", ":idle_secs");
    println!("\\set n random(1, :tokens)");
    println!("\\set touch_secs {}", policy.touch_interval.as_secs());
    println!("\\set idle_secs {}", policy.idle_timeout.as_secs());
    println!("{};", sql.split_whitespace().collect::<Vec<_>>().join(" "));
}
