//! `cargo xtask serve`: the service on a persistent private database.

use anyhow::Context as _;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// Pool profile from config/pool-profiles.toml.
    #[arg(long)]
    profile: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let server = crate::db::app_server()?;
    let url = crate::db::app_url(&server);
    eprintln!("xtask: database {}", url.redacted());
    eprintln!("xtask: building auth-api (release)...");
    let built = Command::new(env!("CARGO"))
        // Not --quiet: a first build takes minutes; cargo's progress shows
        // that something is moving.
        .args(["build", "--release", "-p", "auth-api"])
        .status()
        .context("running cargo build")?;
    anyhow::ensure!(built.success(), "cargo build failed");

    // ctrl-c reaches auth-api too (same process group); it shuts down
    // gracefully and we then stop the database we started.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the ctrl-c handler")?;

    let mut cmd = Command::new("target/release/auth-api");
    cmd.env("DATABASE_URL", url.to_string())
        .env("TESSERA_BIND", &args.bind);
    if let Some(profile) = &args.profile {
        cmd.env("TESSERA_POOL_PROFILE", profile);
    }
    let mut child = cmd.spawn().context("starting auth-api")?;
    print_walkthrough(&args.bind);
    let status = child.wait().context("waiting for auth-api")?;
    if let Some(mut cluster) = server.cluster {
        cluster.stop()?;
        eprintln!(
            "xtask: database stopped; data kept in {}",
            crate::persistent_dir().display()
        );
    }
    anyhow::ensure!(
        status.success() || interrupted.load(Ordering::SeqCst),
        "auth-api exited with {status}"
    );
    Ok(())
}

fn print_walkthrough(bind: &str) {
    let base = format!("http://{bind}");
    println!(
        r#"
tessera is listening on {base}   (ctrl-c stops it; data survives restarts)

Try it (bash; needs curl and python3 for reading the token). Self-registered
users are workers; the first user who may create tasks (or an admin) is
made on the command line:
  echo 'correct horse battery' | DATABASE_URL=$(cargo xtask db url) \
      target/release/auth-api users create --email ada@example.com --role worker,assigner
  B={base}; J='Content-Type: application/json'
  curl -s -XPOST $B/v1/users -H "$J" -d '{{"email":"bob@example.com","password":"correct horse battery"}}'  # a worker
  T=$(curl -s -XPOST $B/v1/sessions -H "$J" -d '{{"email":"ada@example.com","password":"correct horse battery"}}' \
      | python3 -c 'import sys,json; print(json.load(sys.stdin)["token"])')
  curl -s $B/v1/sessions/current -H "Authorization: Bearer $T"            # validate
  curl -s $B/v1/sessions -H "Authorization: Bearer $T"                    # list
  T=$(curl -s -XPOST $B/v1/sessions/current/refresh -H "Authorization: Bearer $T" \
      | python3 -c 'import sys,json; print(json.load(sys.stdin)["token"])') # rotate
  A="Authorization: Bearer $T"
  curl -s -XPOST $B/v1/tasks -H "$J" -H "$A" -d '{{"tasks":[{{"title":"send invoice 1","priority":5,"key":"invoice-1"}}]}}'
  curl -s -XPOST $B/v1/tasks/claim -H "$J" -H "$A" -d '{{"count":1}}'               # takes it
  curl -s -XPOST $B/v1/tasks/claim -H "$J" -H "$A" -d '{{"count":1,"wait_ms":3000}}' # long poll: claimed 0 after 3 s
  curl -s $B/v1/tasks/stats -H "$A"
  curl -s $B/v1/users/me -H "$A"                                           # roles: worker, assigner
  curl -s -XDELETE $B/v1/sessions/current -H "Authorization: Bearer $T" -w '%{{http_code}}\n'   # logout: 204
  curl -s $B/v1/sessions/current -H "Authorization: Bearer $T"            # now 401 invalid_token
"#
    );
}
