//! The command line, run as the real binary against the test database: what it prints on
//! stdout (the result only), on stderr (nothing unless something went wrong), and its exit
//! status.

use std::process::Stdio;

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDatabase, settings_env, verify_token};

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `portcullis ARGS` with the test settings in a clean environment (no RUST_LOG, no
/// NO_COLOR from the caller) in an empty directory; stdout and stderr are pipes.
async fn portcullis(db: &TestDatabase, args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    // sqlx warns that it ignores the connect_timeout the helpers add to PostgreSQL URLs; a
    // warning is fair output, but not what these tests look at.
    let url = without_connect_timeout(&db.url);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(settings_env(db, &[("PORTCULLIS__DATABASE__URL", &url)]))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("the binary runs");
    Run {
        success: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn without_connect_timeout(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|param| !param.starts_with("connect_timeout="))
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The single line a command printed, without its newline.
fn only_line(run: &Run) -> &str {
    let line = run.stdout.strip_suffix('\n').expect("a line");
    assert!(!line.contains('\n'), "exactly one line: {:?}", run.stdout);
    line
}

#[tokio::test]
async fn token_mint_prints_only_a_token_that_the_server_accepts() {
    let app = TestApp::spawn().await;
    let db = app.database();

    let run = portcullis(
        &db,
        &[
            "token",
            "mint",
            "--sub",
            "cli-owner",
            "--kind",
            "owner",
            "--scope",
            "authGrants:read authGrants:write",
        ],
        &[],
    )
    .await;
    assert!(run.success, "{}", run.stderr);
    assert_eq!(run.stderr, "", "nothing but the token");
    let token = only_line(&run);
    let (_, claims) = verify_token(&app, token).await;
    assert_eq!(claims["sub"], "cli-owner");
    assert_eq!(claims["sub_kind"], "owner");
    assert_eq!(claims["scope"], "authGrants:read authGrants:write");
    let listed = app
        .http
        .post(format!("{}/profile/auth-grants", app.base))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200, "a bearer route accepts it");

    // For an app, within its allowed scopes; introspection sees what was asked for.
    let client = app
        .create_app(json!({ "name": "minted for", "allowed_scopes": "orders:read orders:write" }))
        .await;
    let run = portcullis(
        &db,
        &[
            "token",
            "mint",
            "--sub",
            &client.client_id,
            "--kind",
            "app",
            "--scope",
            "orders:read",
            "--expires-in",
            "600",
        ],
        &[],
    )
    .await;
    assert!(run.success, "{}", run.stderr);
    let token = only_line(&run);
    let introspected = app.introspection(&client, token).await;
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["sub"], client.client_id.as_str());
    assert_eq!(introspected["sub_kind"], "app");
    assert_eq!(introspected["scope"], "orders:read");
    let lifetime = introspected["exp"].as_i64().unwrap() - introspected["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 600, "--expires-in");

    // The admin API's shape for programs.
    let run = portcullis(
        &db,
        &[
            "token",
            "mint",
            "--sub",
            "cli-owner",
            "--kind",
            "owner",
            "--scope",
            "authGrants:read",
            "--output",
            "json",
        ],
        &[],
    )
    .await;
    assert!(run.success, "{}", run.stderr);
    let body: Value = serde_json::from_str(only_line(&run)).unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    verify_token(&app, body["access_token"].as_str().unwrap()).await;
}

#[tokio::test]
async fn token_mint_refuses_bad_flags_with_a_message_and_a_failing_exit() {
    let db = TestDatabase::new().await;
    let mint = |extra: &'static [&'static str]| {
        let mut args = vec!["token", "mint"];
        args.extend_from_slice(extra);
        args
    };
    let cases: [(&[&str], &str); 5] = [
        (
            &["--sub", "u", "--kind", "person", "--scope", "a:read"],
            "invalid value 'person' for '--kind",
        ),
        (
            &[
                "--sub",
                "u",
                "--kind",
                "owner",
                "--scope",
                "a:read not-a-scope",
            ],
            "scope 'not-a-scope' is not of the form resource:action",
        ),
        (&["--sub", "u", "--kind", "owner"], "--scope <SCOPE>"),
        (
            &[
                "--sub",
                "u",
                "--kind",
                "owner",
                "--scope",
                "a:read",
                "--expires-in",
                "0",
            ],
            "--expires-in: must be between 1 and",
        ),
        (
            &[
                "--sub",
                "pcc_nosuchapp0000",
                "--kind",
                "app",
                "--scope",
                "a:read",
            ],
            "--sub: no such enabled application",
        ),
    ];
    for (flags, message) in cases {
        let run = portcullis(&db, &mint(flags), &[]).await;
        assert!(!run.success, "{flags:?} must fail");
        assert_eq!(run.stdout, "", "{flags:?}: no token");
        assert!(
            run.stderr.contains(message),
            "{flags:?}: expected {message:?} in {:?}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn commands_print_their_result_without_log_lines_or_colour() {
    // A fresh database: the command creates the signing keys and the app, each an info
    // event at the configured default level.
    let db = TestDatabase::new().await;
    let run = portcullis(
        &db,
        &["apps", "create", "--name", "quiet", "--output", "env"],
        &[],
    )
    .await;
    assert!(run.success, "{}", run.stderr);
    assert_eq!(run.stderr, "", "no log lines at the default settings");
    let names: Vec<&str> = run
        .stdout
        .lines()
        .map(|line| line.split_once('=').unwrap().0)
        .collect();
    assert_eq!(names, ["APP_ID", "CLIENT_ID", "CLIENT_SECRET"]);
    assert!(!run.stdout.contains('\x1b'));

    // RUST_LOG still wins; written to a pipe, the lines carry no colour.
    for format in ["pretty", "json"] {
        let run = portcullis(
            &db,
            &["apps", "create", "--name", "chatty"],
            &[("RUST_LOG", "info"), ("PORTCULLIS__LOG__FORMAT", format)],
        )
        .await;
        assert!(run.success, "{}", run.stderr);
        assert!(
            run.stderr.contains("app.created"),
            "{format}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains('\x1b') && !run.stdout.contains('\x1b'),
            "{format}: no ANSI escapes off a terminal: {:?}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn app_secrets_are_created_listed_and_revoked_from_the_cli() {
    let app = TestApp::spawn().await;
    let db = app.database();
    let first = app.default_app().await;

    let run = portcullis(
        &db,
        &[
            "apps",
            "secrets",
            "create",
            &first.id,
            "--description",
            "from the cli",
            "--max-uses",
            "2",
            "--output",
            "env",
        ],
        &[],
    )
    .await;
    assert!(run.success, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    let vars: Vec<(&str, &str)> = run
        .stdout
        .lines()
        .map(|line| line.split_once('=').unwrap())
        .collect();
    assert_eq!(
        vars.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        ["SECRET_ID", "CLIENT_SECRET"]
    );
    let (secret_id, secret) = (vars[0].1.to_owned(), vars[1].1.to_owned());
    let holder = crate::helpers::TestClient {
        secret: secret.clone(),
        ..first.clone()
    };
    assert_eq!(app.endorsed_json(holder.json(None)).await.status(), 200);

    let run = portcullis(
        &db,
        &["apps", "secrets", "list", &first.id, "--output", "json"],
        &[],
    )
    .await;
    assert!(run.success, "{}", run.stderr);
    assert!(!run.stdout.contains(&secret) && !run.stdout.contains(&first.secret));
    let listed: Vec<Value> = serde_json::from_str(only_line(&run)).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["id"], secret_id.as_str());
    assert_eq!(listed[1]["description"], "from the cli");
    assert_eq!(listed[1]["prefix"], &secret[..12]);
    assert_eq!(listed[1]["max_uses"], 2);
    assert_eq!(listed[1]["use_count"], 1, "counted as it happened");

    let run = portcullis(
        &db,
        &["apps", "secrets", "create", &first.id, "--max-uses", "0"],
        &[],
    )
    .await;
    assert!(!run.success);
    assert!(
        run.stderr.contains("--max-uses: must be between 1 and"),
        "{}",
        run.stderr
    );

    let run = portcullis(
        &db,
        &[
            "apps",
            "secrets",
            "revoke",
            &first.id,
            &secret_id,
            "--revoke-tokens",
        ],
        &[],
    )
    .await;
    assert!(run.success, "{}", run.stderr);
    assert!(only_line(&run).starts_with(&format!("revoked {secret_id}, its tokens")));
    let other = app.default_app().await;
    let run = portcullis(
        &db,
        &["apps", "secrets", "revoke", &other.id, &secret_id],
        &[],
    )
    .await;
    assert!(!run.success, "already gone, and not the other app's anyway");
    // With SQLite, a running server hears of a CLI's change when its cache expires; the
    // store itself no longer holds the secret.
    let app_id = portcullis::domain::AppId::parse(&first.id).unwrap();
    let listed = app.authority.app_secrets(app_id).await.unwrap();
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn audit_list_and_apps_usage_read_what_the_server_and_the_cli_did() {
    let app = TestApp::spawn().await;
    let db = app.database();
    let client = app.default_app().await;
    let issued = app
        .oauth_basic(&client, "grant_type=client_credentials")
        .await;
    assert_eq!(issued.status(), 200);
    app.authority.flush_audit().await.unwrap();
    // A command's own events are written before it exits.
    let rotate = portcullis(&db, &["apps", "rotate-secret", &client.id], &[]).await;
    assert!(rotate.success, "{}", rotate.stderr);

    let run = portcullis(
        &db,
        &["audit", "list", "--app-id", &client.id, "--output", "json"],
        &[],
    )
    .await;
    assert!(run.success, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    let page: Value = serde_json::from_str(only_line(&run)).unwrap();
    let names: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app.secret_rotated", "token.issued", "app.created"]);
    assert_eq!(page["next_cursor"], Value::Null);

    let run = portcullis(
        &db,
        &["audit", "list", "--event", "token.issued", "--limit", "1"],
        &[],
    )
    .await;
    assert!(run.success, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stdout);
    assert!(lines[0].contains("token.issued"), "{}", run.stdout);
    assert!(lines[0].contains(&format!("client={}", client.client_id)));

    let bad = portcullis(&db, &["audit", "list", "--since", "yesterday"], &[]).await;
    assert!(!bad.success);
    assert!(bad.stderr.contains("--since"), "{}", bad.stderr);

    let run = portcullis(
        &db,
        &[
            "apps", "usage", &client.id, "--days", "2", "--output", "json",
        ],
        &[],
    )
    .await;
    assert!(run.success, "{}", run.stderr);
    let usage: Value = serde_json::from_str(only_line(&run)).unwrap();
    let counts: Vec<u64> = usage["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["issued"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [0, 1]);
}
