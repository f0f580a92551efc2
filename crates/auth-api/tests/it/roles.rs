//! Who may do what (interface v2, "Roles"): each right on its own, every
//! `403` of the route table, the admin's user management, registration
//! open and closed, and disabled users.

use auth_api::config::Registration;
use auth_core::domain::{Role, Roles};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::TestApp;
use test_support::app::{
    LoggedIn, PASSWORD, expect_problem, expect_status, json_uuid, task_ids, test_config,
};

/// An app whose self-registered users get what ships: `worker` only.
async fn shipped() -> TestApp {
    let mut config = test_config();
    config.default_roles = Roles::none().with(Role::Worker);
    TestApp::spawn_with(config).await
}

async fn admin(app: &TestApp) -> LoggedIn {
    app.signup_as("root@example.com", &[Role::Admin]).await
}

/// An admin's claim for `assignee`, refused as for no one who may work;
/// the problem document.
async fn assignee_refused(app: &TestApp, root: &LoggedIn, assignee: uuid::Uuid) -> Value {
    let claim = json!({"count": 1, "assignee_id": assignee});
    let res = app.claim(&root.token, &claim).await;
    expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await
}

async fn forbidden(res: reqwest::Response) {
    expect_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn a_self_registered_user_is_a_worker_who_works_its_own_tasks_only() {
    let app = shipped().await;
    let worker = app.signup("wendy@example.com").await;
    let assigner = app.signup_as("anna@example.com", &[Role::Assigner]).await;
    assert_eq!(app.my_roles(&worker.token).await, json!(["worker"]));
    let ids = app.create_n_tasks(&assigner.token, "t", 3).await;

    forbidden(
        app.create_tasks(&worker.token, &json!({"tasks": [{"title": "x"}]}))
            .await,
    )
    .await;
    forbidden(app.stats(&worker.token).await).await;
    forbidden(app.list_tasks(&worker.token, "").await).await;
    forbidden(
        app.list_tasks(&worker.token, &format!("?assignee={}", assigner.user_id))
            .await,
    )
    .await;
    forbidden(
        app.post_json(
            &format!("/v1/tasks/{}/cancel", ids[2]),
            Some(&worker.token),
            &json!({}),
        )
        .await,
    )
    .await;
    let for_other = json!({"count": 1, "assignee_id": assigner.user_id});
    forbidden(app.claim(&worker.token, &for_other).await).await;
    // Refused before the body is read: a broken body is still a 403.
    let broken = app
        .client
        .post(app.url("/v1/tasks"))
        .bearer_auth(&worker.token)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    forbidden(broken).await;

    let claimed = app.claim_ok(&worker.token, 1).await;
    let id = json_uuid(&claimed["tasks"][0]["id"]);
    let mine = expect_status(
        app.list_tasks(&worker.token, "?assignee=me").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(task_ids(&mine), [id]);
    let own_id = format!("?assignee={}", worker.user_id);
    expect_status(app.list_tasks(&worker.token, &own_id).await, StatusCode::OK).await;
    let done = app.finish_ok(&worker.token, "complete", id).await;
    assert_eq!(done["status"], "completed");
    // Nothing of this reached the database: the three tasks, one completed.
    assert_eq!(app.db.shown_tasks("completed").await, 1);
    assert_eq!(app.db.count("SELECT count(*) AS n FROM tasks").await, 3);
}

#[tokio::test]
async fn an_assigner_runs_the_queue_but_manages_no_user() {
    let app = shipped().await;
    let assigner = app.signup_as("anna@example.com", &[Role::Assigner]).await;
    let worker = app.signup("wendy@example.com").await;
    let ids = app.create_n_tasks(&assigner.token, "t", 2).await;
    let for_worker = json!({"count": 1, "assignee_id": worker.user_id});
    let claimed = expect_status(
        app.claim(&assigner.token, &for_worker).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(claimed["tasks"][0]["assigned_to"], json!(worker.user_id));
    expect_status(
        app.post_json(
            &format!("/v1/tasks/{}/cancel", ids[1]),
            Some(&assigner.token),
            &json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_status(app.stats(&assigner.token).await, StatusCode::OK).await;
    expect_status(app.list_tasks(&assigner.token, "").await, StatusCode::OK).await;
    forbidden(app.get("/v1/users", Some(&assigner.token)).await).await;
    forbidden(
        app.get(
            &format!("/v1/users/{}", worker.user_id),
            Some(&assigner.token),
        )
        .await,
    )
    .await;
    forbidden(
        app.change_user(
            &assigner.token,
            assigner.user_id,
            &json!({"roles": ["admin"]}),
        )
        .await,
    )
    .await;
    assert_eq!(app.my_roles(&assigner.token).await, json!(["assigner"]));
}

#[tokio::test]
async fn a_user_without_roles_keeps_its_sessions_and_may_do_nothing_else() {
    let app = shipped().await;
    let root = admin(&app).await;
    let user = app.signup("nobody@example.com").await;
    let changed = expect_status(
        app.change_user(&root.token, user.user_id, &json!({"roles": []}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["roles"], json!([]));
    assert_eq!(app.my_roles(&user.token).await, json!([]));
    let me = expect_status(
        app.get("/v1/users/me", Some(&user.token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (
            me["id"].clone(),
            me["email"].clone(),
            me["disabled"].clone()
        ),
        (
            json!(user.user_id),
            json!("nobody@example.com"),
            json!(false)
        )
    );
    assert!(
        me["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{me}"
    );
    expect_status(app.list_sessions(&user.token).await, StatusCode::OK).await;
    forbidden(app.claim(&user.token, &json!({"count": 1})).await).await;
    // ... nor be given tasks: a claim for it is refused as for no user.
    let body = assignee_refused(&app, &root, user.user_id).await;
    assert_eq!(body["errors"][0]["field"], "assignee_id");
    // An assignee must hold `worker` itself: an assigner or an admin alone
    // may work for itself, not be given work.
    for roles in [json!(["assigner"]), json!(["admin"])] {
        expect_status(
            app.change_user(&root.token, user.user_id, &json!({"roles": roles}))
                .await,
            StatusCode::OK,
        )
        .await;
        assignee_refused(&app, &root, user.user_id).await;
    }
}

#[tokio::test]
async fn an_admin_lists_reads_and_changes_users() {
    let app = shipped().await;
    let root = admin(&app).await;
    for name in ["carol", "alice", "bob"] {
        app.signup(&format!("{name}@example.com")).await;
    }
    let page = |query: &'static str| {
        let app = &app;
        let token = root.token.clone();
        async move {
            let body = expect_status(
                app.get(&format!("/v1/users{query}"), Some(&token)).await,
                StatusCode::OK,
            )
            .await;
            body["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        page("?limit=2").await,
        ["alice@example.com", "bob@example.com"]
    );
    assert_eq!(
        page("?limit=2&after=bob@example.com").await,
        ["carol@example.com", "root@example.com"]
    );
    for bad in ["?limit=0", "?limit=1001", "?limit=x"] {
        expect_problem(
            app.get(&format!("/v1/users{bad}"), Some(&root.token)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    let bob = app.login_ok("bob@example.com").await;
    let read = expect_status(
        app.get(&format!("/v1/users/{}", bob.user_id), Some(&root.token))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (
            read["email"].clone(),
            read["roles"].clone(),
            read["disabled"].clone()
        ),
        (json!("bob@example.com"), json!(["worker"]), json!(false))
    );
    let unknown = uuid::Uuid::new_v4();
    expect_problem(
        app.get(&format!("/v1/users/{unknown}"), Some(&root.token))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_problem(
        app.change_user(&root.token, unknown, &json!({"disabled": true}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let changed = expect_status(
        app.change_user(
            &root.token,
            bob.user_id,
            &json!({"roles": ["admin", "assigner", "admin"]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["roles"], json!(["assigner", "admin"]));
    for bad in [
        json!({"roles": ["root"]}),
        json!({"roles": "admin"}),
        json!({"roles": [1]}),
        json!({"disabled": "yes"}),
        json!({"email": "x@example.com"}),
    ] {
        expect_problem(
            app.change_user(&root.token, bob.user_id, &bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    assert_eq!(app.my_roles(&bob.token).await, json!(["assigner", "admin"]));
}

#[tokio::test]
async fn registration_gives_roles_only_by_an_admin_and_closed_only_to_one() {
    let mut config = test_config();
    config.registration = Registration::Closed;
    let app = TestApp::spawn_with(config).await;
    let new = |email: &str| json!({"email": email, "password": PASSWORD});
    forbidden(
        app.post_json("/v1/users", None, &new("eve@example.com"))
            .await,
    )
    .await;
    let root = admin(&app).await;
    let user = app.signup_as("wendy@example.com", &[Role::Worker]).await;
    forbidden(
        app.post_json("/v1/users", Some(&user.token), &new("eve@example.com"))
            .await,
    )
    .await;
    expect_problem(
        app.post_json("/v1/users", Some("not-a-token"), &new("eve@example.com"))
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let made = expect_status(
        app.post_json(
            "/v1/users",
            Some(&root.token),
            &json!({"email": "eve@example.com", "password": PASSWORD, "roles": ["assigner"]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(made["roles"], json!(["assigner"]));
    assert_eq!(app.db.count("SELECT count(*) AS n FROM users").await, 3);

    // Refused before the body is read: closed without a token, or a bad token.
    let broken = |token: Option<&str>| {
        let mut req = app
            .client
            .post(app.url("/v1/users"))
            .header("Content-Type", "application/json")
            .body("{not json");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    forbidden(broken(None).await.unwrap()).await;
    // A valid token that is no admin's: refused before the body too.
    forbidden(broken(Some(&user.token)).await.unwrap()).await;
    expect_problem(
        broken(Some("not-a-token")).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    // An admin without `roles`: the default roles.
    let plain = expect_status(
        app.post_json("/v1/users", Some(&root.token), &new("dave@example.com"))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(plain["roles"], json!(["worker", "assigner"]));

    let open = shipped().await;
    let open_root = admin(&open).await;
    let given = json!({"email": "amy@example.com", "password": PASSWORD, "roles": ["admin"]});
    let made = expect_status(
        open.post_json("/v1/users", Some(&open_root.token), &given)
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(made["roles"], json!(["admin"]));
    let with_roles =
        json!({"email": "mallory@example.com", "password": PASSWORD, "roles": ["admin"]});
    forbidden(open.post_json("/v1/users", None, &with_roles).await).await;
    let made = expect_status(
        open.post_json("/v1/users", None, &new("eve@example.com"))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(made["roles"], json!(["worker"]));
    assert_eq!(
        open.db
            .count("SELECT count(*) AS n FROM users WHERE email = 'mallory@example.com'")
            .await,
        0
    );
}

#[tokio::test]
async fn disabling_a_user_ends_its_sessions_and_its_logins_until_enabled() {
    let app = shipped().await;
    let root = admin(&app).await;
    let first = app.signup("wendy@example.com").await;
    let second = app.login_ok("wendy@example.com").await;
    let changed = expect_status(
        app.change_user(&root.token, first.user_id, &json!({"disabled": true}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["disabled"], true);
    let active = format!(
        "SELECT count(*) AS n FROM sessions WHERE user_id = '{}' AND revoked_at IS NULL",
        first.user_id
    );
    assert_eq!(app.db.count(&active).await, 0);
    for token in [&first.token, &second.token] {
        expect_problem(
            app.current(token).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        )
        .await;
    }
    expect_problem(
        app.login("wendy@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    // Nor may it be given work.
    assignee_refused(&app, &root, first.user_id).await;
    expect_status(
        app.change_user(&root.token, first.user_id, &json!({"disabled": false}))
            .await,
        StatusCode::OK,
    )
    .await;
    let back = app.login_ok("wendy@example.com").await;
    assert_eq!(app.my_roles(&back.token).await, json!(["worker"]));
}

/// The route table's rights, each route tried by a caller with no role:
/// every one but the session routes and `GET /v1/users/me` is a 403.
#[tokio::test]
async fn every_route_that_needs_a_right_refuses_a_user_without_one() {
    let app = shipped().await;
    let root = admin(&app).await;
    let user = app.signup("nobody@example.com").await;
    expect_status(
        app.change_user(&root.token, user.user_id, &json!({"roles": []}))
            .await,
        StatusCode::OK,
    )
    .await;
    let id = uuid::Uuid::new_v4();
    let mut refused = Vec::new();
    for (method, path, access) in auth_api::routes::ACCESS {
        let Some(right) = access.right() else {
            continue;
        };
        let path = path.replace("{id}", &id.to_string());
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let res = app
            .client
            .request(method.clone(), app.url(&path))
            .bearer_auth(&user.token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, body["code"].clone()),
            (StatusCode::FORBIDDEN, json!("forbidden")),
            "{method} {path} needs {right:?}"
        );
        refused.push(path);
    }
    assert_eq!(refused.len(), 14, "{refused:?}");
}

#[tokio::test]
async fn a_worker_reads_only_its_own_task_and_an_assigner_any() {
    let app = shipped().await;
    let wendy = app.signup("wendy@example.com").await;
    let walt = app.signup("walt@example.com").await;
    let anna = app.signup_as("anna@example.com", &[Role::Assigner]).await;
    let ids = app.create_n_tasks(&anna.token, "r", 3).await;
    let claimed = app.claim_ok(&wendy.token, 1).await;
    let mine = json_uuid(&claimed["tasks"][0]["id"]);
    let path = |id: uuid::Uuid| format!("/v1/tasks/{id}");

    let own = expect_status(
        app.get(&path(mine), Some(&wendy.token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(json_uuid(&own["id"]), mine);
    assert_eq!(json_uuid(&own["assigned_to"]), wendy.user_id, "{own}");
    assert_eq!(json_uuid(&own["created_by"]), anna.user_id, "{own}");
    // Another worker, or an unassigned task: as if it did not exist.
    let unknown = uuid::Uuid::new_v4();
    for (token, id) in [
        (&walt.token, mine),
        (
            &wendy.token,
            ids.iter().copied().find(|i| *i != mine).unwrap(),
        ),
        (&wendy.token, unknown),
    ] {
        expect_problem(
            app.get(&path(id), Some(token)).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    // An assigner reads any task.
    for id in &ids {
        let task =
            expect_status(app.get(&path(*id), Some(&anna.token)).await, StatusCode::OK).await;
        assert_eq!(json_uuid(&task["id"]), *id);
    }
    expect_problem(
        app.get(&path(unknown), Some(&anna.token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // "Its own" is what is assigned to it now: a task it completed stays
    // readable, one it released is not.
    app.finish_ok(&wendy.token, "complete", mine).await;
    expect_status(
        app.get(&path(mine), Some(&wendy.token)).await,
        StatusCode::OK,
    )
    .await;
    let next = json_uuid(&app.claim_ok(&wendy.token, 1).await["tasks"][0]["id"]);
    app.finish_ok(&wendy.token, "release", next).await;
    expect_problem(
        app.get(&path(next), Some(&wendy.token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_problem(
        app.get("/v1/tasks/not-a-uuid", Some(&anna.token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}
