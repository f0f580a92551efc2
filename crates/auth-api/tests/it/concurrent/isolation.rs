//! The hot statements judged by PostgreSQL's own isolation tester
//! (`isolationtester`, the tool PostgreSQL tests its locking with): each
//! spec runs the statements exactly as this build sends them (a chosen
//! fault's included), values written in for the binds, in sessions whose
//! steps are interleaved by the spec's permutations; the tester prints what
//! each step returned and which step waited. The output, with timestamps
//! masked, must equal the one committed beside this file
//! (`isolation/<spec>.out`; `TESSERA_BLESS=1` rewrites them, to be read
//! before committing).

use auth_core::store::{login_attempts, sessions, tasks, users};
use std::path::PathBuf;
use test_support::db::TestDb;

const ADA: &str = "00000000-0000-4000-8000-00000000000a";
const BOB: &str = "00000000-0000-4000-8000-00000000000b";
const SESSION: &str = "00000000-0000-4000-8000-0000000000e0";
const NEW_SESSION: [&str; 2] = [
    "00000000-0000-4000-8000-0000000000e1",
    "00000000-0000-4000-8000-0000000000e2",
];
/// Token hashes: 32 bytes of one value each.
const TOKEN: [&str; 3] = [
    "'\\x0101010101010101010101010101010101010101010101010101010101010101'::bytea",
    "'\\x0202020202020202020202020202020202020202020202020202020202020202'::bytea",
    "'\\x0303030303030303030303030303030303030303030303030303030303030303'::bytea",
];

/// Two users; every spec starts from them, and each permutation from
/// nothing else (the teardown empties every table the statements touch).
const USERS: &str = "INSERT INTO users (id, email, password_hash) VALUES
     ('00000000-0000-4000-8000-00000000000a', 'ada@example.com', 'x'),
     ('00000000-0000-4000-8000-00000000000b', 'bob@example.com', 'x');";
const TEARDOWN: &str = "TRUNCATE users, sessions, rotated_tokens, tasks, task_count_deltas,
     login_attempts RESTART IDENTITY CASCADE;";

/// `sql` with `$1`, `$2`, ... replaced by `values`.
fn bound(sql: &str, values: &[&str]) -> String {
    let mut out = sql.to_owned();
    for (i, value) in values.iter().enumerate().rev() {
        out = out.replace(&format!("${}", i + 1), value);
    }
    out
}

/// A session of the spec: its name, whether it runs in one transaction,
/// and its steps (name, SQL). A session keeps its connection from one
/// permutation to the next, so every permutation ends the transaction of
/// every session that has one. Steps are sent on one line: the tester
/// prints a step's text, which the comparison leaves out.
struct Session {
    name: &'static str,
    in_transaction: bool,
    steps: Vec<(&'static str, String)>,
}

fn render(setup: &str, sessions: &[Session], permutations: &[&str]) -> String {
    let mut spec = format!("setup {{ {USERS} {setup} }}\nteardown {{ {TEARDOWN} }}\n");
    for session in sessions {
        spec.push_str(&format!("session {}\n", session.name));
        if session.in_transaction {
            spec.push_str("setup { BEGIN; }\n");
        }
        for (step, sql) in &session.steps {
            let sql = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            spec.push_str(&format!("step {step} {{ {sql}; }}\n"));
        }
    }
    for permutation in permutations {
        spec.push_str(&format!("permutation {permutation}\n"));
    }
    spec
}

/// The isolation tester of the PostgreSQL whose binaries run the tests.
fn isolationtester() -> PathBuf {
    let bin = pg_provision::find_bin_dir().expect("PostgreSQL's binaries");
    let tester = bin
        .parent()
        .expect("a bin directory has a parent")
        .join("lib/pgxs/src/test/isolation/isolationtester");
    assert!(
        tester.is_file(),
        "no {}: install PostgreSQL's client package (Debian: postgresql-client-15)",
        tester.display()
    );
    tester
}

/// What the tester printed, comparable between runs: timestamps masked,
/// each step's text left out, table rulings and spacing evened.
fn comparable(output: &str) -> String {
    output
        .lines()
        .map(|line| {
            let line = masked_times(line);
            let line = match line.strip_prefix("step ") {
                Some(rest) if !rest.contains("<... completed>") => {
                    let (name, text) = rest.split_once(':').unwrap_or((rest, ""));
                    let waiting = if text.trim_end().ends_with("<waiting ...>") {
                        " <waiting ...>"
                    } else {
                        ""
                    };
                    format!("step {name}{waiting}")
                }
                _ => line,
            };
            let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
            if !line.is_empty() && line.chars().all(|c| c == '-' || c == '+') {
                line.split('+').map(|_| "-").collect::<Vec<_>>().join("+")
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `2026-12-07 13:12:28.223615+00` (fraction and zone optional) as `<time>`.
fn masked_times(line: &str) -> String {
    let shape = "dddd-dd-dd dd:dd:dd";
    let fits = |s: &[u8]| {
        s.len() >= shape.len()
            && shape.bytes().zip(s).all(|(want, got)| match want {
                b'd' => got.is_ascii_digit(),
                other => other == *got,
            })
    };
    let bytes = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if fits(&bytes[i..]) {
            let mut end = i + shape.len();
            if bytes.get(end) == Some(&b'.') {
                end += 1;
                while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                    end += 1;
                }
            }
            let zone = &bytes[end..];
            if zone.len() >= 3
                && (zone[0] == b'+' || zone[0] == b'-')
                && zone[1..3].iter().all(u8::is_ascii_digit)
            {
                end += 3;
            }
            out.push_str("<time>");
            i = end;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

/// Runs `spec` on a database of its own and compares with `isolation/<name>.out`.
async fn judge(name: &str, spec: String) {
    let db = TestDb::new().await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/concurrent/isolation");
    let tester = isolationtester();
    let url = db.url();
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = std::process::Command::new(tester)
            .arg(url)
            // Timestamps print in the session's zone; the masking expects UTC.
            .env("PGTZ", "UTC")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting isolationtester");
        child
            .stdin
            .take()
            .expect("its stdin")
            .write_all(spec.as_bytes())
            .expect("writing the spec");
        child.wait_with_output().expect("running isolationtester")
    })
    .await
    .expect("the tester's thread");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "isolationtester failed: {}{}",
        printed,
        String::from_utf8_lossy(&output.stderr)
    );
    let actual = comparable(&printed) + "\n";
    let path = dir.join(format!("{name}.out"));
    if std::env::var_os("TESSERA_BLESS").is_some() {
        std::fs::create_dir_all(&dir).expect("the specs' directory");
        std::fs::write(&path, &actual).expect("writing the expected output");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (TESSERA_BLESS=1 writes it)", path.display()));
    assert!(
        actual == expected,
        "isolation spec `{name}` printed something else.\n--- expected ({})\n{expected}\n--- printed\n{actual}",
        path.display()
    );
}

fn quoted(value: &str) -> String {
    format!("'{value}'::uuid")
}

/// The operator (the command line: no caller session) revoking Ada's
/// session in a transaction, then committing.
fn operator() -> Session {
    let revoke = bound(
        sessions::REVOKE,
        &[
            "NULL::uuid",
            "NULL::bytea",
            &quoted(ADA),
            &quoted(SESSION),
            "true",
        ],
    );
    Session {
        name: "operator",
        in_transaction: true,
        steps: vec![
            ("operator_revokes", revoke),
            ("operator_commits", "COMMIT".into()),
        ],
    }
}

/// Two claimers at once: the second passes over the rows the first holds
/// (no waiting), and a task on its last attempt with a lapsed lease is
/// claimed by neither.
#[tokio::test]
async fn claims_skip_each_others_rows_and_leave_spent_tasks() {
    let setup = format!(
        "INSERT INTO tasks (id, title, priority, max_attempts) SELECT
             ('00000000-0000-4000-8000-0000000001' || lpad(n::text, 2, '0'))::uuid, 'task ' || n, 0, 3
         FROM generate_series(1, 4) AS n;
         INSERT INTO tasks (id, title, priority, max_attempts, status, assigned_to, assigned_by,
                            assigned_at, lease_expires_at, attempt)
         VALUES ('00000000-0000-4000-8000-000000000199', 'spent', 10, 3, 'assigned', {ada}, {ada},
                 now() - interval '1 hour', now() - interval '1 minute', 3);",
        ada = quoted(ADA)
    );
    let claim = |who: &str| {
        bound(
            tasks::claim_sql(),
            &["2", &quoted(who), &quoted(who), "300"],
        )
    };
    let sessions = [
        Session {
            name: "ada",
            in_transaction: true,
            steps: vec![("ada_claims", claim(ADA)), ("ada_commits", "COMMIT".into())],
        },
        Session {
            name: "bob",
            in_transaction: true,
            steps: vec![("bob_claims", claim(BOB)), ("bob_commits", "COMMIT".into())],
        },
    ];
    let spec = render(
        &setup,
        &sessions,
        &["ada_claims bob_claims ada_commits bob_commits"],
    );
    judge("claim", spec).await;
}

/// The fence: a worker whose claim was taken over writes nothing, whether
/// it writes before the new holder or while the new holder's heartbeat is
/// uncommitted (it does not even wait for that: the row is not its own;
/// without the fence it would wait, then write). A finished task is not
/// cancelled.
#[tokio::test]
async fn a_late_worker_is_fenced_before_and_after_waiting() {
    let task = quoted("00000000-0000-4000-8000-000000000101");
    let setup = format!(
        "INSERT INTO tasks (id, title, max_attempts, status, assigned_to, assigned_by, assigned_at,
                            lease_expires_at, attempt)
         VALUES ({task}, 'held by bob', 5, 'assigned', {bob}, {bob}, now(),
                 now() + interval '5 minutes', 2);",
        bob = quoted(BOB)
    );
    let heartbeat = |who: &str| {
        bound(
            tasks::heartbeat_sql(),
            &[&task, &quoted(who), "NULL", "300"],
        )
    };
    let complete =
        |who: &str, attempt: &str| bound(tasks::complete_sql(), &[&task, &quoted(who), attempt]);
    let sessions = [
        Session {
            name: "ada",
            in_transaction: false,
            steps: vec![
                ("ada_heartbeats", heartbeat(ADA)),
                ("ada_completes", complete(ADA, "NULL")),
                ("ada_cancels", bound(tasks::cancel_sql(), &[&task])),
            ],
        },
        Session {
            name: "bob",
            in_transaction: true,
            steps: vec![
                ("bob_heartbeats", heartbeat(BOB)),
                ("bob_completes", complete(BOB, "2")),
                ("bob_commits", "COMMIT".into()),
            ],
        },
    ];
    let spec = render(
        &setup,
        &sessions,
        &[
            "ada_heartbeats ada_completes bob_heartbeats bob_completes bob_commits ada_cancels",
            "bob_heartbeats ada_completes bob_commits",
        ],
    );
    judge("fence", spec).await;
}

/// Rotations: of two with one token the second waits and then finds
/// nothing, the token rotated away is remembered; a rotation queued behind
/// a revocation finds the session revoked.
#[tokio::test]
async fn a_rotation_waits_for_a_racing_rotation_or_revocation_and_then_finds_nothing() {
    let setup = format!(
        "INSERT INTO sessions (id, user_id, token_hash, idle_expires_at, absolute_expires_at)
         VALUES ({session}, {ada}, {token}, now() + interval '10 minutes', now() + interval '1 day');",
        session = quoted(SESSION),
        ada = quoted(ADA),
        token = TOKEN[0]
    );
    let rotate = |to: &str| bound(sessions::rotate_sql(), &[TOKEN[0], to, "600"]);
    let sessions = [
        Session {
            name: "first",
            in_transaction: true,
            steps: vec![
                ("first_rotates", rotate(TOKEN[1])),
                ("first_commits", "COMMIT".into()),
            ],
        },
        Session {
            name: "second",
            in_transaction: true,
            steps: vec![
                ("second_rotates", rotate(TOKEN[2])),
                ("second_commits", "COMMIT".into()),
            ],
        },
        operator(),
        Session {
            name: "reader",
            in_transaction: false,
            steps: vec![(
                "reader_reads",
                "SELECT (SELECT count(*) FROM rotated_tokens) AS remembered,
                        (SELECT revoked_at IS NOT NULL FROM sessions) AS revoked"
                    .into(),
            )],
        },
    ];
    let spec = render(
        &setup,
        &sessions,
        &[
            "first_rotates second_rotates first_commits second_commits reader_reads operator_revokes operator_commits",
            "operator_revokes first_rotates operator_commits first_commits reader_reads second_rotates second_commits",
        ],
    );
    judge("rotate", spec).await;
}

/// A validation whose touch is due, queued behind a revocation, answers
/// nothing and leaves the session revoked.
#[tokio::test]
async fn a_touch_queued_behind_a_revocation_revives_nothing() {
    let setup = format!(
        "INSERT INTO sessions (id, user_id, token_hash, last_seen_at, idle_expires_at,
                               absolute_expires_at)
         VALUES ({session}, {ada}, {token}, now() - interval '5 minutes',
                 now() + interval '5 minutes', now() + interval '1 day');",
        session = quoted(SESSION),
        ada = quoted(ADA),
        token = TOKEN[0]
    );
    let sessions = [
        operator(),
        Session {
            name: "client",
            in_transaction: false,
            steps: vec![
                (
                    "client_validates",
                    bound(sessions::validate_sql(), &[TOKEN[0], "60", "600"]),
                ),
                (
                    "client_reads",
                    "SELECT revoked_at IS NOT NULL AS revoked FROM sessions".into(),
                ),
            ],
        },
    ];
    let spec = render(
        &setup,
        &sessions,
        &["operator_revokes client_validates operator_commits client_reads"],
    );
    judge("touch", spec).await;
}

/// Two logins of one user at the cap of 2: the second waits on the user's
/// lock, then counts the first's session and evicts the oldest.
#[tokio::test]
async fn logins_of_one_user_queue_on_its_lock_and_count_each_other() {
    let setup = format!(
        "INSERT INTO sessions (id, user_id, token_hash, created_at, last_seen_at, idle_expires_at,
                               absolute_expires_at)
         VALUES ({session}, {ada}, {token}, now() - interval '1 hour', now(),
                 now() + interval '10 minutes', now() + interval '1 day');",
        session = quoted(SESSION),
        ada = quoted(ADA),
        token = TOKEN[0]
    );
    let lock = users::lock_sql(ADA.parse().expect("a uuid"));
    let open = |i: usize| {
        bound(
            sessions::open_sql(),
            &[
                &quoted(NEW_SESSION[i]),
                &quoted(ADA),
                TOKEN[i + 1],
                "600",
                "86400",
                "NULL",
                "NULL",
                "NULL::bigint",
                "2",
                "'x'",
            ],
        )
    };
    let login = |name: &'static str, i: usize| Session {
        name,
        in_transaction: true,
        steps: vec![
            (
                if i == 0 {
                    "first_locks"
                } else {
                    "second_locks"
                },
                lock.clone(),
            ),
            (
                if i == 0 {
                    "first_opens"
                } else {
                    "second_opens"
                },
                open(i),
            ),
            (
                if i == 0 {
                    "first_commits"
                } else {
                    "second_commits"
                },
                "COMMIT".into(),
            ),
        ],
    };
    let sessions = [
        login("first", 0),
        login("second", 1),
        Session {
            name: "reader",
            in_transaction: false,
            steps: vec![(
                "reader_counts",
                "SELECT count(*) FILTER (WHERE revoked_at IS NULL) AS active,
                        count(*) FILTER (WHERE revoked_at IS NOT NULL) AS evicted
                 FROM sessions"
                    .into(),
            )],
        },
    ];
    let spec = render(
        &setup,
        &sessions,
        &[
            "first_locks second_locks first_opens first_commits second_opens second_commits reader_counts",
        ],
    );
    judge("open", spec).await;
}

/// A password change (through the caller's session) and a login that
/// verified the old password (stored as `x`), each on the user's lock: a
/// login queued behind the change opens nothing; one that took the lock
/// first commits its session, which the change, behind it, revokes with
/// the caller's other sessions, the caller's own left active.
#[tokio::test]
async fn a_login_that_verified_the_old_password_opens_nothing_after_a_change() {
    // The caller's own session, through which the change is asked.
    let caller = format!(
        "INSERT INTO sessions (id, user_id, token_hash, created_at, last_seen_at, idle_expires_at,
                               absolute_expires_at)
         VALUES ({session}, {ada}, {token}, now(), now(), now() + interval '10 minutes',
                 now() + interval '1 day');",
        session = quoted(SESSION),
        ada = quoted(ADA),
        token = TOKEN[0]
    );
    let change = Session {
        name: "change",
        in_transaction: true,
        steps: vec![
            (
                "change_stores",
                bound(users::set_password_sql(), &[&quoted(ADA), "'y'", "'x'"]),
            ),
            (
                "change_revokes",
                bound(
                    sessions::revoke_others_sql(),
                    &[&quoted(ADA), &quoted(SESSION), TOKEN[0]],
                ),
            ),
            ("change_commits", "COMMIT".into()),
        ],
    };
    let open = bound(
        sessions::open_sql(),
        &[
            &quoted(NEW_SESSION[0]),
            &quoted(ADA),
            TOKEN[1],
            "600",
            "86400",
            "NULL",
            "NULL",
            "NULL::bigint",
            "10",
            "'x'",
        ],
    );
    let login = Session {
        name: "login",
        in_transaction: true,
        steps: vec![
            ("login_locks", users::lock_sql(ADA.parse().expect("a uuid"))),
            ("login_opens", open),
            ("login_commits", "COMMIT".into()),
        ],
    };
    let reader = Session {
        name: "reader",
        in_transaction: false,
        steps: vec![(
            "reader_counts",
            "SELECT count(*) FILTER (WHERE revoked_at IS NULL) AS active,
                    count(*) FILTER (WHERE revoked_at IS NOT NULL) AS revoked
             FROM sessions"
                .into(),
        )],
    };
    let spec = render(
        &caller,
        &[change, login, reader],
        &[
            "change_stores login_locks change_revokes change_commits login_opens login_commits reader_counts",
            "login_locks login_opens change_stores login_commits change_revokes change_commits reader_counts",
        ],
    );
    judge("password", spec).await;
}

/// The login admission (limit 1): a login admitted while another's check
/// of the same email is in flight is neither admitted nor refused but told
/// to wait (`busy`), queued first on the email's lock.
#[tokio::test]
async fn an_admission_while_a_check_is_in_flight_is_told_to_wait() {
    let email = "'ada@example.com'";
    let lock = login_attempts::lock_email_sql("ada@example.com");
    let admit = bound(login_attempts::admit_sql(), &[email, "1", "600", "60"]);
    let login = |name: &'static str, steps: [&'static str; 3]| Session {
        name,
        in_transaction: true,
        steps: vec![
            (steps[0], lock.clone()),
            (steps[1], admit.clone()),
            (steps[2], "COMMIT".into()),
        ],
    };
    let sessions = [
        login("first", ["first_locks", "first_admits", "first_commits"]),
        login(
            "second",
            ["second_locks", "second_admits", "second_commits"],
        ),
    ];
    let spec = render(
        "",
        &sessions,
        &["first_locks first_admits second_locks first_commits second_admits second_commits"],
    );
    judge("admit", spec).await;
}

/// Two creates with one idempotency key by one creator, the second while
/// the first's is uncommitted: the second waits on the key, then inserts
/// nothing and raises nothing (and its keyless task is inserted); one row
/// holds the key.
#[tokio::test]
async fn a_create_with_a_key_being_inserted_waits_and_then_inserts_nothing() {
    let insert = |id: &str, title: &str| {
        bound(
            tasks::insert_sql(),
            &[
                &format!(
                    "ARRAY[{}, {}]",
                    quoted(id),
                    quoted(&id.replace("-0000000001", "-0000000002"))
                ),
                &format!("ARRAY['{title}', '{title} (keyless)']"),
                "ARRAY[true, true]",
                "ARRAY[0, 0]",
                "ARRAY[NULL, NULL]::timestamptz[]",
                "ARRAY[3, 3]",
                "ARRAY['invoice-7', NULL]",
                "'00000000-0000-4000-8000-00000000000a'::uuid",
                "ARRAY[sha256('invoice-7'), NULL]",
            ],
        )
    };
    let creator = |name: &'static str, steps: [&'static str; 2], id: &str| Session {
        name,
        in_transaction: true,
        steps: vec![(steps[0], insert(id, name)), (steps[1], "COMMIT".into())],
    };
    let sessions = [
        creator(
            "first",
            ["first_creates", "first_commits"],
            "00000000-0000-4000-8000-000000000101",
        ),
        creator(
            "second",
            ["second_creates", "second_commits"],
            "00000000-0000-4000-8000-000000000111",
        ),
        Session {
            name: "reader",
            in_transaction: false,
            steps: vec![(
                "reader_counts",
                "SELECT count(*) FILTER (WHERE key = 'invoice-7') AS keyed,
                        count(*) FILTER (WHERE key IS NULL) AS keyless
                 FROM tasks"
                    .into(),
            )],
        },
    ];
    let spec = render(
        "",
        &sessions,
        &["first_creates second_creates first_commits second_commits reader_counts"],
    );
    judge("insert", spec).await;
}
