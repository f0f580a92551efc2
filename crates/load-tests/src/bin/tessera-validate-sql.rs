//! Prints the service's validation statement as a pgbench script, for
//! `cargo xtask load --ceiling`: the token hash is `sha256(int4send(:n))`,
//! matching the sessions the ceiling run seeds.

fn main() {
    let sql =
        auth_core::store::sessions::validate_lookup_sql().replace("$1", "sha256(int4send(:n))");
    println!("\\set n random(1, :tokens)");
    println!("{};", sql.split_whitespace().collect::<Vec<_>>().join(" "));
}
