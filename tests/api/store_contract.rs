//! One contract for every store backend: SQLite always, PostgreSQL when TEST_DATABASE_URL
//! is set.

use chrono::{DateTime, TimeDelta, Utc};
use portcullis::{
    domain::{
        AppId, AuthGrant, Change, ChangeEvent, CidrList, ClientId, Enrollment, EnrollmentId,
        GrantId, GrantStatus, KeyState, NewApplication, NewSecret, Origin, OwnerId, QuotaWindow,
        ScopeSet, SecretId, SigningAlgorithm, SigningKeyRecord, Subject, SubjectKind, TokenQuota,
    },
    store::{
        ConnectOptions, DynStore, EnrollmentFilter, GrantFilter, Guarded, KeyRotation, Match,
        QuotaLease, SecretAdded, SecretTokens, StoreError, Usage, UsageOf, connect,
    },
};
use serde_json::json;

use crate::helpers::TestDatabase;

async fn backends() -> Vec<(&'static str, DynStore, TestDatabase)> {
    let mut databases = vec![("sqlite", TestDatabase::sqlite())];
    if let Ok(url) = std::env::var("TEST_DATABASE_URL")
        && !url.is_empty()
    {
        databases.push(("postgres", TestDatabase::postgres(&url).await));
    }
    let mut out = Vec::new();
    for (name, db) in databases {
        let store = connect(&ConnectOptions {
            url: db.url.clone(),
            max_connections: 4,
            acquire_timeout: std::time::Duration::from_secs(5),
            feed_heartbeat: std::time::Duration::from_secs(2),
        })
        .await
        .expect("store connects");
        store.migrate().await.expect("migrations run");
        out.push((name, store, db));
    }
    out
}

fn new_app(client_id: &str) -> NewApplication {
    // Millisecond precision, as the system clock gives: it must read back exactly.
    let created_at = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    NewApplication {
        id: AppId::generate(),
        client_id: ClientId::parse(client_id).unwrap(),
        name: "contract".into(),
        secret: new_secret("hash-0", created_at),
        allowed_scopes: ScopeSet::parse("all:read all:write").unwrap(),
        default_scopes: ScopeSet::parse("all:read").unwrap(),
        sandbox: true,
        allowed_cidrs: CidrList::default(),
        token_bound_cidrs: CidrList::default(),
        quota: TokenQuota::default(),
        created_at,
    }
}

fn new_secret(hash: &str, created_at: DateTime<Utc>) -> NewSecret {
    NewSecret {
        id: SecretId::generate(),
        hash: hash.into(),
        prefix: Some("pcs_AbCdEfGh".into()),
        description: format!("the secret hashed as {hash}"),
        created_at,
        expires_at: None,
        max_uses: None,
        allowed_cidrs: CidrList::default(),
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    for (name, store, _db) in backends().await {
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        store.ping().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let pool = store.pool_stats();
        assert!(
            pool.max == 4 && pool.idle <= pool.size && pool.size <= pool.max,
            "{name}: {pool:?}"
        );
    }
}

#[tokio::test]
async fn applications_round_trip() {
    for (name, store, _db) in backends().await {
        let new = new_app("pcc_contract");
        let inserted = store.insert_application(&new).await.unwrap();
        assert_eq!(inserted.id, new.id, "{name}");
        assert_eq!(
            inserted.created_at, new.created_at,
            "{name}: timestamps are exact"
        );
        assert_eq!(inserted.updated_at, new.created_at, "{name}");
        assert!(!inserted.disabled && inserted.sandbox, "{name}");
        assert_eq!(inserted.last_used_at, None, "{name}");

        let by_id = store.application(new.id).await.unwrap().unwrap();
        assert_eq!(by_id, inserted, "{name}");
        let by_client = store
            .application_by_client_id(&new.client_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_client, inserted, "{name}");
        assert!(
            store
                .application(AppId::generate())
                .await
                .unwrap()
                .is_none(),
            "{name}"
        );

        let disabled_at = inserted.updated_at + TimeDelta::milliseconds(500);
        let disabled = store
            .set_application_disabled(new.id, true, disabled_at)
            .await
            .unwrap()
            .unwrap();
        assert!(disabled.disabled, "{name}");
        let mut changed = inserted.clone();
        changed.name = "renamed".into();
        changed.default_scopes = ScopeSet::parse("all:write").unwrap();
        changed.updated_at = inserted.updated_at + TimeDelta::milliseconds(1500);
        let written = store
            .update_application_settings(
                new.id,
                &inserted.settings(),
                &changed.settings(),
                changed.updated_at,
            )
            .await
            .unwrap();
        let stored = store.application(new.id).await.unwrap().unwrap();
        assert_eq!(written, Guarded::Written(stored.clone()), "{name}");
        assert!(
            stored.disabled,
            "{name}: an edit made from a stale copy keeps the disable"
        );
        changed.disabled = true;
        assert_eq!(stored, changed, "{name}");

        let second = new_app("pcc_contract_2");
        store.insert_application(&second).await.unwrap();
        let listed = store.list_applications().await.unwrap();
        assert_eq!(listed.len(), 2, "{name}");

        assert!(store.delete_application(new.id).await.unwrap(), "{name}");
        assert!(
            !store.delete_application(new.id).await.unwrap(),
            "{name}: gone already"
        );
        let ghost = store
            .update_application_settings(
                new.id,
                &changed.settings(),
                &changed.settings(),
                changed.updated_at,
            )
            .await
            .unwrap();
        assert_eq!(ghost, Guarded::Missing, "{name}");
    }
}

fn cidrs(entries: &[&str]) -> CidrList {
    CidrList::parse(entries).unwrap()
}

/// Network bindings read back as written, on apps (created and updated under the same
/// guard as scopes), secrets and grants; rows written without one bind nothing.
#[tokio::test]
async fn network_bindings_are_kept_with_apps_secrets_and_grants() {
    for (name, store, _db) in backends().await {
        let plain = store
            .insert_application(&new_app("pcc_unbound"))
            .await
            .unwrap();
        assert!(plain.allowed_cidrs.is_empty() && plain.token_bound_cidrs.is_empty());

        let bound = NewApplication {
            allowed_cidrs: cidrs(&["10.0.0.0/8", "2001:db8::/32"]),
            token_bound_cidrs: cidrs(&["192.0.2.7"]),
            ..new_app("pcc_bound")
        };
        let app = store.insert_application(&bound).await.unwrap();
        assert_eq!(app.allowed_cidrs, bound.allowed_cidrs, "{name}");
        assert_eq!(app.token_bound_cidrs, bound.token_bound_cidrs, "{name}");

        let mut new = app.settings();
        new.allowed_cidrs = CidrList::default();
        new.token_bound_cidrs = cidrs(&["198.51.100.0/24"]);
        let now = app.updated_at + TimeDelta::seconds(1);
        let Guarded::Written(updated) = store
            .update_application_settings(app.id, &app.settings(), &new, now)
            .await
            .unwrap()
        else {
            panic!("{name}: the update is written");
        };
        assert!(
            updated.allowed_cidrs.is_empty(),
            "{name}: the list is lifted"
        );
        assert_eq!(updated.token_bound_cidrs, new.token_bound_cidrs, "{name}");
        assert_eq!(
            store
                .update_application_settings(app.id, &app.settings(), &new, now)
                .await
                .unwrap(),
            Guarded::Stale,
            "{name}: an edit from a copy whose lists changed since is not written"
        );

        let secret = NewSecret {
            allowed_cidrs: cidrs(&["203.0.113.0/24"]),
            ..new_secret("hash-1", now)
        };
        store.add_app_secret(app.id, &secret, 10).await.unwrap();
        let secrets = store.app_secrets(app.id).await.unwrap();
        let kept: Vec<&CidrList> = secrets.iter().map(|s| &s.allowed_cidrs).collect();
        assert_eq!(
            kept,
            [&CidrList::default(), &secret.allowed_cidrs],
            "{name}"
        );

        let g = AuthGrant {
            token_bound_cidrs: cidrs(&["198.51.100.0/24"]),
            ..grant(Origin::App(app.id), "pcc_bound", t0())
        };
        store.insert_grant(&g, 10).await.unwrap();
        assert_eq!(
            store.grant(g.id).await.unwrap().unwrap().token_bound_cidrs,
            g.token_bound_cidrs,
            "{name}"
        );
        let metered = AuthGrant {
            requests_per_minute: Some(7),
            ..grant(Origin::App(app.id), "pcc_bound", t0())
        };
        store.insert_grant(&metered, 10).await.unwrap();
        assert_eq!(
            store
                .grant(metered.id)
                .await
                .unwrap()
                .unwrap()
                .requests_per_minute,
            Some(7),
            "{name}: a grant's request quota reads back"
        );
    }
}

#[tokio::test]
async fn client_ids_are_unique() {
    for (name, store, _db) in backends().await {
        store
            .insert_application(&new_app("pcc_same"))
            .await
            .unwrap();
        let err = store
            .insert_application(&new_app("pcc_same"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{name}: {err:?}");
    }
}

/// A fixed moment with millisecond precision, so every timestamp reads back exactly.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000).unwrap()
}

fn enrollment(app_id: AppId, owner: &str, at: DateTime<Utc>) -> Enrollment {
    Enrollment {
        id: EnrollmentId::generate(),
        app_id,
        owner_id: OwnerId::parse(owner).unwrap(),
        data: json!({ "plan": "pro", "seats": [1, 2] }),
        scopes: ScopeSet::parse("all:read").unwrap(),
        sandbox: false,
        disabled: false,
        created_at: at,
        updated_at: at,
        last_used_at: None,
    }
}

#[tokio::test]
async fn enrollments_round_trip_and_stay_unique_per_app_and_owner() {
    for (name, store, _db) in backends().await {
        let app = store.insert_application(&new_app("pcc_enr")).await.unwrap();
        let other = store
            .insert_application(&new_app("pcc_enr_2"))
            .await
            .unwrap();
        let first = enrollment(app.id, "owner-1", t0());
        store.insert_enrollment(&first).await.unwrap();
        assert_eq!(
            store.enrollment(first.id).await.unwrap(),
            Some(first.clone()),
            "{name}"
        );
        let owner = OwnerId::parse("owner-1").unwrap();
        assert_eq!(
            store.enrollment_for_owner(app.id, &owner).await.unwrap(),
            Some(first.clone()),
            "{name}"
        );
        assert_eq!(
            store.enrollment_for_owner(other.id, &owner).await.unwrap(),
            None,
            "{name}"
        );

        let mut same_pair = enrollment(app.id, "owner-1", t0());
        same_pair.id = EnrollmentId::generate();
        let err = store.insert_enrollment(&same_pair).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(_)),
            "{name}: one per (app, owner)"
        );
        let mut same_id = enrollment(other.id, "owner-2", t0());
        same_id.id = first.id;
        let err = store.insert_enrollment(&same_id).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(_)),
            "{name}: ids are unique"
        );

        let second = enrollment(other.id, "owner-1", t0() + TimeDelta::seconds(1));
        store.insert_enrollment(&second).await.unwrap();
        let all = store
            .list_enrollments(&EnrollmentFilter::default(), 10)
            .await
            .unwrap();
        assert_eq!(
            all,
            vec![second.clone(), first.clone()],
            "{name}: newest first"
        );
        let of_app = EnrollmentFilter {
            app_id: Some(app.id),
            owner_id: None,
        };
        assert_eq!(
            store.list_enrollments(&of_app, 10).await.unwrap(),
            vec![first.clone()]
        );
        let of_owner = EnrollmentFilter {
            app_id: None,
            owner_id: Some(owner.clone()),
        };
        assert_eq!(
            store.list_enrollments(&of_owner, 1).await.unwrap(),
            vec![second.clone()]
        );

        let later = t0() + TimeDelta::seconds(5);
        let updated = store
            .update_enrollment_data(&first, &json!({ "plan": "free" }), later)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.data, json!({ "plan": "free" }), "{name}");
        assert_eq!(updated.updated_at, later, "{name}");
        let disabled = store
            .set_enrollment_disabled(first.id, true, later)
            .await
            .unwrap()
            .unwrap();
        assert!(
            disabled.disabled && disabled.data == json!({ "plan": "free" }),
            "{name}"
        );
        let missing = EnrollmentId::generate();
        assert_eq!(
            store
                .set_enrollment_disabled(missing, true, later)
                .await
                .unwrap(),
            None
        );
        let mut gone = first.clone();
        gone.id = missing;
        assert_eq!(
            store
                .update_enrollment_data(&gone, &json!({}), later)
                .await
                .unwrap(),
            None
        );
        // The same id, but another owner's record now: the data is not written there.
        let mut reused = first.clone();
        reused.owner_id = OwnerId::parse("owner-9").unwrap();
        assert_eq!(
            store
                .update_enrollment_data(&reused, &json!({ "x": 1 }), later)
                .await
                .unwrap(),
            None,
            "{name}: only into the very record the token was judged against"
        );
        let mut recreated = first.clone();
        recreated.created_at = later;
        assert_eq!(
            store
                .update_enrollment_data(&recreated, &json!({ "x": 1 }), later)
                .await
                .unwrap(),
            None,
            "{name}"
        );

        assert!(store.delete_enrollment(first.id).await.unwrap(), "{name}");
        assert!(
            !store.delete_enrollment(first.id).await.unwrap(),
            "{name}: gone already"
        );
        assert!(store.delete_application(other.id).await.unwrap());
        assert_eq!(
            store.enrollment(second.id).await.unwrap(),
            None,
            "{name}: with its app"
        );
    }
}

fn grant(origin: Origin, profile: &str, at: DateTime<Utc>) -> AuthGrant {
    let kind = match origin {
        Origin::App(_) => SubjectKind::App,
        Origin::Operator | Origin::Enrollment { .. } => SubjectKind::Owner,
    };
    AuthGrant {
        id: GrantId::generate(),
        profile: Subject {
            kind,
            id: profile.to_owned(),
        },
        origin,
        secret_id: None,
        client_id: "pcc_grants".into(),
        token_bound_cidrs: CidrList::default(),
        requests_per_minute: None,
        name: "name".into(),
        description: "description".into(),
        challenge: format!("auth-grant:{}", uuid::Uuid::new_v4()),
        status: GrantStatus::Active,
        scope: ScopeSet::parse("orders:read").unwrap(),
        created_at: at,
        expires_at: None,
        last_used_at: None,
    }
}

#[tokio::test]
async fn grants_belong_to_one_profile_through_one_app_and_go_with_their_origin() {
    for (name, store, _db) in backends().await {
        let app = store
            .insert_application(&new_app("pcc_grants"))
            .await
            .unwrap();
        let other_app = store
            .insert_application(&new_app("pcc_grants_2"))
            .await
            .unwrap();
        let e = enrollment(app.id, "owner-1", t0());
        store.insert_enrollment(&e).await.unwrap();
        let e2 = enrollment(other_app.id, "owner-1", t0());
        store.insert_enrollment(&e2).await.unwrap();
        let through_a = Origin::Enrollment {
            app_id: app.id,
            enrollment_id: e.id,
        };
        let through_b = Origin::Enrollment {
            app_id: other_app.id,
            enrollment_id: e2.id,
        };
        let mut mine = Vec::new();
        for i in 0..5 {
            let mut g = grant(through_a, "owner-1", t0() + TimeDelta::seconds(i));
            g.name = format!("grant-{i}");
            assert!(store.insert_grant(&g, 100).await.unwrap(), "{name}");
            mine.push(g);
        }
        let theirs = grant(through_b, "owner-1", t0());
        assert!(store.insert_grant(&theirs, 100).await.unwrap());
        let operator = grant(Origin::Operator, "owner-1", t0());
        assert!(store.insert_grant(&operator, 100).await.unwrap());
        let own_app = grant(Origin::App(app.id), "pcc_grants", t0());
        assert!(store.insert_grant(&own_app, 100).await.unwrap());

        assert_eq!(
            store.grant(mine[0].id).await.unwrap(),
            Some(mine[0].clone()),
            "{name}"
        );
        assert_eq!(
            store.grant(own_app.id).await.unwrap(),
            Some(own_app.clone()),
            "{name}"
        );
        assert_eq!(
            store.grant(operator.id).await.unwrap(),
            Some(operator.clone()),
            "{name}"
        );

        let a = mine[0].owner();
        let none = GrantFilter::default();
        let page = store.list_grants(&a, &none, None, 2).await.unwrap();
        let names: Vec<&str> = page.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["grant-4", "grant-3"], "{name}: newest first");
        let next = store
            .list_grants(&a, &none, Some(page[1].created_at), 10)
            .await
            .unwrap();
        assert_eq!(next.len(), 3, "{name}: the cursor continues after the page");
        assert_eq!(
            store
                .list_grants(&theirs.owner(), &none, None, 10)
                .await
                .unwrap(),
            vec![theirs.clone()],
            "{name}: one owner through another app is another profile"
        );
        assert_eq!(
            store
                .list_grants(&operator.owner(), &none, None, 10)
                .await
                .unwrap(),
            vec![operator.clone()],
            "{name}: the operator's owner tokens are a profile of their own"
        );
        let filtered = GrantFilter {
            name: Some(Match::AnyOf(vec!["grant-1".into(), "grant-2".into()])),
            id: Some(Match::Exact(mine[1].id)),
            ..GrantFilter::default()
        };
        let found = store.list_grants(&a, &filtered, None, 10).await.unwrap();
        assert_eq!(found, vec![mine[1].clone()], "{name}: filters combine");
        let nothing = GrantFilter {
            description: Some(Match::AnyOf(vec![])),
            ..GrantFilter::default()
        };
        assert!(
            store
                .list_grants(&a, &nothing, None, 10)
                .await
                .unwrap()
                .is_empty()
        );

        let b = theirs.owner();
        assert!(
            !store
                .update_grant_text(mine[0].id, &b, Some("x"), None)
                .await
                .unwrap()
        );
        assert!(
            store
                .update_grant_text(mine[0].id, &a, Some("x"), None)
                .await
                .unwrap()
        );
        assert_eq!(
            store.grant(mine[0].id).await.unwrap().unwrap().name,
            "x",
            "{name}"
        );
        assert!(
            !store.delete_revoked_grant(mine[0].id, &a).await.unwrap(),
            "active"
        );
        assert!(
            !store.revoke_grant(mine[0].id, &b).await.unwrap(),
            "{name}: not B's"
        );
        assert!(store.revoke_grant(mine[0].id, &a).await.unwrap(), "{name}");
        let revoked = GrantFilter {
            status: Some(GrantStatus::Revoked),
            ..GrantFilter::default()
        };
        assert_eq!(
            store
                .list_grants(&a, &revoked, None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            !store.delete_revoked_grant(mine[0].id, &b).await.unwrap(),
            "{name}"
        );
        assert!(
            store.delete_revoked_grant(mine[0].id, &a).await.unwrap(),
            "{name}"
        );
        assert_eq!(store.grant(mine[0].id).await.unwrap(), None, "{name}");

        // Grants go with the enrollment, and with the app, they came from.
        assert!(store.delete_enrollment(e.id).await.unwrap());
        assert_eq!(
            store.grant(mine[1].id).await.unwrap(),
            None,
            "{name}: with the enrollment"
        );
        assert!(store.grant(own_app.id).await.unwrap().is_some(), "{name}");
        assert!(store.delete_application(app.id).await.unwrap());
        assert_eq!(
            store.grant(own_app.id).await.unwrap(),
            None,
            "{name}: with the app"
        );
        assert!(
            store.grant(theirs.id).await.unwrap().is_some(),
            "{name}: not others'"
        );
        assert!(store.grant(operator.id).await.unwrap().is_some(), "{name}");
    }
}

#[tokio::test]
async fn the_grant_cap_counts_active_grants_of_one_profile() {
    for (name, store, _db) in backends().await {
        let app = store
            .insert_application(&new_app("pcc_grants"))
            .await
            .unwrap();
        let first = grant(Origin::App(app.id), "pcc_grants", t0());
        assert!(store.insert_grant(&first, 2).await.unwrap(), "{name}");
        assert!(
            store
                .insert_grant(&grant(Origin::App(app.id), "pcc_grants", t0()), 2)
                .await
                .unwrap()
        );
        let third = grant(Origin::App(app.id), "pcc_grants", t0());
        assert!(
            !store.insert_grant(&third, 2).await.unwrap(),
            "{name}: at the cap"
        );
        assert_eq!(
            store.grant(third.id).await.unwrap(),
            None,
            "{name}: nothing written"
        );
        // Another profile has its own allowance.
        assert!(
            store
                .insert_grant(&grant(Origin::Operator, "owner", t0()), 2)
                .await
                .unwrap()
        );
        // Revoking one frees a place, though the counter is only an upper bound.
        assert!(store.revoke_grant(first.id, &first.owner()).await.unwrap());
        assert!(
            store.insert_grant(&third, 2).await.unwrap(),
            "{name}: a place again"
        );
        let mut expired = grant(Origin::App(app.id), "pcc_grants", t0());
        expired.expires_at = Some(t0() - TimeDelta::seconds(1));
        assert!(
            !store.insert_grant(&expired, 2).await.unwrap(),
            "{name}: still two active"
        );
    }
}

#[tokio::test]
async fn usage_only_moves_forward() {
    for (name, store, _db) in backends().await {
        let app = store
            .insert_application(&new_app("pcc_usage"))
            .await
            .unwrap();
        let e = enrollment(app.id, "owner-1", t0());
        store.insert_enrollment(&e).await.unwrap();
        let g = grant(Origin::App(app.id), "pcc_usage", t0());
        store.insert_grant(&g, 10).await.unwrap();
        let secret = store.app_secrets(app.id).await.unwrap().remove(0);
        let at = |s: i64| t0() + TimeDelta::seconds(s);
        let all = |s: i64| {
            vec![
                Usage {
                    of: UsageOf::App(app.id),
                    at: at(s),
                    uses: 1,
                },
                Usage {
                    of: UsageOf::Enrollment(e.id),
                    at: at(s),
                    uses: 1,
                },
                Usage {
                    of: UsageOf::Grant(g.id),
                    at: at(s),
                    uses: 1,
                },
                Usage {
                    of: UsageOf::Secret(secret.id),
                    at: at(s),
                    uses: 3,
                },
            ]
        };
        store.record_usage(&all(10)).await.unwrap();
        store.record_usage(&all(5)).await.unwrap();
        store.record_usage(&[]).await.unwrap();
        let app_used = store
            .application(app.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at;
        let e_used = store.enrollment(e.id).await.unwrap().unwrap().last_used_at;
        let g_used = store.grant(g.id).await.unwrap().unwrap().last_used_at;
        let secret = store.app_secrets(app.id).await.unwrap().remove(0);
        assert_eq!(
            [app_used, e_used, g_used, secret.last_used_at],
            [Some(at(10)); 4],
            "{name}: never back"
        );
        assert_eq!(secret.use_count, 6, "{name}: a secret's uses add up");
    }
}

#[tokio::test]
async fn published_changes_reach_every_subscriber() {
    for (name, store, db) in backends().await {
        let Some(mut feed) = store.subscribe().await.unwrap() else {
            assert_eq!(
                name, "sqlite",
                "only the embedded store has no other replicas"
            );
            store.publish(&Change::Keys).await.unwrap();
            continue;
        };
        // Another replica's store, on the same database.
        let other = connect(&ConnectOptions {
            url: db.url.clone(),
            max_connections: 2,
            acquire_timeout: std::time::Duration::from_secs(5),
            feed_heartbeat: std::time::Duration::from_secs(2),
        })
        .await
        .unwrap();
        let change = Change::Grant {
            id: uuid::Uuid::new_v4(),
        };
        other.publish(&change).await.unwrap();
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                match feed.recv().await.expect("the feed stays open") {
                    ChangeEvent::Changed(c) => return c,
                    _ => continue,
                }
            }
        })
        .await
        .expect("the change arrives");
        assert_eq!(event, change, "{name}");
    }
}

/// A candidate key as the key ring makes one.
fn key(kid: &str, algorithm: SigningAlgorithm, created_at: DateTime<Utc>) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.into(),
        algorithm,
        state: KeyState::Next,
        sealed_private_key: vec![1, 2, 3],
        public_jwk: "{}".into(),
        created_at,
        activated_at: None,
        retired_at: None,
        tokens_live_until: None,
    }
}

/// (kid, state, activated_at, retired_at) of every stored key, by kid.
async fn key_states(
    store: &DynStore,
) -> Vec<(
    String,
    KeyState,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
)> {
    let mut keys: Vec<_> = store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.kid, k.state, k.activated_at, k.retired_at))
        .collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_not_internal() {
    let store = connect(&ConnectOptions {
        // A port nothing listens on.
        url: "postgres://postgres@127.0.0.1:1/none?connect_timeout=1".into(),
        max_connections: 1,
        acquire_timeout: std::time::Duration::from_millis(500),
        feed_heartbeat: std::time::Duration::from_secs(2),
    })
    .await
    .expect("connecting is lazy");
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn revocations_are_kept_until_expiry_then_purged() {
    for (name, store, _db) in backends().await {
        let t0 = DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        store
            .revoke_token("jti-1", t0 + TimeDelta::hours(1), t0)
            .await
            .unwrap();
        store
            .revoke_token("jti-1", t0 + TimeDelta::hours(1), t0)
            .await
            .unwrap();
        store
            .revoke_token("jti-2", t0 + TimeDelta::hours(3), t0)
            .await
            .unwrap();
        let active = store.active_revocations(t0).await.unwrap();
        assert_eq!(active.len(), 2, "{name}: revoking twice is harmless");
        let later = t0 + TimeDelta::hours(2);
        assert_eq!(
            store.purge_expired_revocations(later).await.unwrap(),
            1,
            "{name}"
        );
        let active = store.active_revocations(later).await.unwrap();
        assert_eq!(
            active,
            vec![("jti-2".to_owned(), t0 + TimeDelta::hours(3))],
            "{name}"
        );
    }
}

#[tokio::test]
async fn revocations_since_reads_by_when_they_were_recorded() {
    for (name, store, _db) in backends().await {
        let t0 = DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let revoke = |jti: &'static str, expires_in: TimeDelta, at: TimeDelta| {
            let store = store.clone();
            async move {
                store
                    .revoke_token(jti, t0 + expires_in, t0 + at)
                    .await
                    .unwrap()
            }
        };
        revoke("early", TimeDelta::hours(1), TimeDelta::zero()).await;
        revoke("at-the-point", TimeDelta::hours(1), TimeDelta::minutes(5)).await;
        revoke("later", TimeDelta::hours(2), TimeDelta::minutes(9)).await;
        revoke("expired", TimeDelta::minutes(8), TimeDelta::minutes(7)).await;

        let since = t0 + TimeDelta::minutes(5);
        let mut recent = store
            .revocations_since(since, t0 + TimeDelta::minutes(10))
            .await
            .unwrap();
        recent.sort();
        assert_eq!(
            recent,
            vec![
                ("at-the-point".to_owned(), t0 + TimeDelta::hours(1)),
                ("later".to_owned(), t0 + TimeDelta::hours(2)),
            ],
            "{name}: recorded at or after the point, token not yet expired"
        );
        assert!(
            store
                .revocations_since(t0 + TimeDelta::minutes(10), t0)
                .await
                .unwrap()
                .is_empty(),
            "{name}: nothing recorded since"
        );
    }
}

#[tokio::test]
async fn application_settings_are_written_only_from_the_values_read() {
    for (name, store, _db) in backends().await {
        let app = store
            .insert_application(&new_app("pcc_settings"))
            .await
            .unwrap();
        let read = app.settings();
        let t1 = app.updated_at + TimeDelta::seconds(1);
        let mut renamed = read.clone();
        renamed.name = "renamed".into();
        let Guarded::Written(stored) = store
            .update_application_settings(app.id, &read, &renamed, t1)
            .await
            .unwrap()
        else {
            panic!("{name}: the settings read are still there")
        };
        assert_eq!(stored.settings(), renamed, "{name}");
        assert_eq!(stored.updated_at, t1, "{name}");
        assert_eq!(stored.disabled, app.disabled, "{name}: nor the disable");
        assert_eq!(
            store.app_secrets(app.id).await.unwrap().len(),
            1,
            "{name}: settings updates never touch the secrets"
        );

        let mut narrowed = read.clone();
        narrowed.allowed_scopes = ScopeSet::parse("all:read").unwrap();
        let stale = store
            .update_application_settings(app.id, &read, &narrowed, t1)
            .await
            .unwrap();
        assert_eq!(
            stale,
            Guarded::Stale,
            "{name}: written from settings that changed since"
        );
        assert_eq!(
            store.application(app.id).await.unwrap().unwrap(),
            stored,
            "{name}: a stale update writes nothing"
        );

        let missing = store
            .update_application_settings(AppId::generate(), &read, &narrowed, t1)
            .await
            .unwrap();
        assert_eq!(missing, Guarded::Missing, "{name}");
    }
}

#[tokio::test]
async fn an_app_holds_several_secrets_up_to_a_cap() {
    for (name, store, _db) in backends().await {
        let new = new_app("pcc_several");
        let app = store.insert_application(&new).await.unwrap();
        let first = store.app_secrets(app.id).await.unwrap();
        assert_eq!(
            first.len(),
            1,
            "{name}: the app comes with its first secret"
        );
        assert_eq!(
            (first[0].id, first[0].hash.as_str(), first[0].use_count),
            (new.secret.id, "hash-0", 0),
            "{name}"
        );
        assert_eq!(first[0].prefix.as_deref(), Some("pcs_AbCdEfGh"), "{name}");

        let t1 = app.created_at + TimeDelta::seconds(1);
        let second = NewSecret {
            expires_at: Some(t1 + TimeDelta::hours(1)),
            max_uses: Some(3),
            prefix: None,
            ..new_secret("hash-1", t1)
        };
        let SecretAdded::Added(added) = store.add_app_secret(app.id, &second, 3).await.unwrap()
        else {
            panic!("{name}: room for a second secret")
        };
        assert_eq!(
            (added.id, added.expires_at, added.max_uses, added.prefix),
            (second.id, second.expires_at, Some(3), None),
            "{name}: read back as written"
        );
        let held = store.app_secrets(app.id).await.unwrap();
        assert_eq!(
            held.iter().map(|s| s.id).collect::<Vec<_>>(),
            [new.secret.id, second.id],
            "{name}: oldest first"
        );
        assert_eq!(
            store.application(app.id).await.unwrap().unwrap().updated_at,
            t1,
            "{name}: a secret write is a change to the app"
        );

        // The second expires in an hour: past then, it no longer counts toward the cap.
        let third = new_secret("hash-2", t1);
        assert!(matches!(
            store.add_app_secret(app.id, &third, 3).await.unwrap(),
            SecretAdded::Added(_)
        ));
        let fourth = new_secret("hash-3", t1);
        assert_eq!(
            store.add_app_secret(app.id, &fourth, 3).await.unwrap(),
            SecretAdded::Full,
            "{name}: three unexpired secrets already"
        );
        let later = new_secret("hash-3", t1 + TimeDelta::hours(2));
        assert!(
            matches!(
                store.add_app_secret(app.id, &later, 3).await.unwrap(),
                SecretAdded::Added(_)
            ),
            "{name}: an expired secret leaves room"
        );
        assert_eq!(
            store
                .add_app_secret(AppId::generate(), &new_secret("x", t1), 3)
                .await
                .unwrap(),
            SecretAdded::Missing,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_rotation_wins_only_from_the_secrets_it_read() {
    for (name, store, _db) in backends().await {
        let app = store
            .insert_application(&new_app("pcc_rotate"))
            .await
            .unwrap();
        let read: Vec<SecretId> = store
            .app_secrets(app.id)
            .await
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        let t1 = app.created_at + TimeDelta::seconds(1);
        let grace_ends = t1 + TimeDelta::hours(1);
        let rotated = new_secret("hash-1", t1);
        assert!(matches!(
            store
                .rotate_app_secrets(app.id, &read, &rotated, Some(grace_ends), 10)
                .await
                .unwrap(),
            SecretAdded::Added(_)
        ));
        let held = store.app_secrets(app.id).await.unwrap();
        assert_eq!(
            held.iter()
                .map(|s| (s.hash.as_str(), s.expires_at))
                .collect::<Vec<_>>(),
            [("hash-0", Some(grace_ends)), ("hash-1", None)],
            "{name}: the old secret ends with the grace, the new one does not"
        );

        let lost = new_secret("hash-2", t1);
        assert_eq!(
            store
                .rotate_app_secrets(app.id, &read, &lost, None, 10)
                .await
                .unwrap(),
            SecretAdded::Stale,
            "{name}: the secrets changed since they were read"
        );
        assert_eq!(
            store.app_secrets(app.id).await.unwrap(),
            held,
            "{name}: the losing rotation wrote nothing"
        );

        let read: Vec<SecretId> = held.iter().map(|s| s.id).collect();
        let no_grace = new_secret("hash-3", t1);
        assert!(matches!(
            store
                .rotate_app_secrets(app.id, &read, &no_grace, None, 10)
                .await
                .unwrap(),
            SecretAdded::Added(_)
        ));
        let held = store.app_secrets(app.id).await.unwrap();
        assert_eq!(
            held.iter().map(|s| s.hash.as_str()).collect::<Vec<_>>(),
            ["hash-3"],
            "{name}: without grace the others end at once"
        );
        assert_eq!(
            store
                .rotate_app_secrets(AppId::generate(), &[], &new_secret("x", t1), None, 10)
                .await
                .unwrap(),
            SecretAdded::Missing,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_secret_is_revoked_only_through_its_own_app_and_takes_its_grants_along() {
    for (name, store, _db) in backends().await {
        let app = store
            .insert_application(&new_app("pcc_revoke"))
            .await
            .unwrap();
        let other = store
            .insert_application(&new_app("pcc_other"))
            .await
            .unwrap();
        let secret = store.app_secrets(app.id).await.unwrap().remove(0);
        let t1 = app.created_at + TimeDelta::seconds(1);
        assert_eq!(
            store
                .revoke_app_secret(other.id, secret.id, None, t1)
                .await
                .unwrap(),
            None,
            "{name}: another app's secret is not found"
        );
        let minted = AuthGrant {
            secret_id: Some(secret.id),
            ..grant(Origin::App(app.id), "pcc_revoke", t0())
        };
        let unrelated = grant(Origin::App(app.id), "pcc_revoke", t0());
        store.insert_grant(&minted, 10).await.unwrap();
        store.insert_grant(&unrelated, 10).await.unwrap();
        assert_eq!(
            store.grant(minted.id).await.unwrap().unwrap().secret_id,
            Some(secret.id),
            "{name}: a grant remembers the secret behind it"
        );
        let tokens = SecretTokens {
            marker: format!("secret:{}", secret.id),
            until: t1 + TimeDelta::days(15),
        };
        let revoked = store
            .revoke_app_secret(app.id, secret.id, Some(&tokens), t1)
            .await
            .unwrap();
        assert_eq!(revoked, Some(vec![minted.id]), "{name}");
        assert!(store.app_secrets(app.id).await.unwrap().is_empty());
        assert_eq!(
            store.grant(minted.id).await.unwrap().unwrap().status,
            GrantStatus::Revoked,
            "{name}"
        );
        assert_eq!(
            store.grant(unrelated.id).await.unwrap().unwrap().status,
            GrantStatus::Active,
            "{name}: grants of other secrets stay"
        );
        assert!(
            store
                .active_revocations(t1)
                .await
                .unwrap()
                .contains(&(tokens.marker.clone(), tokens.until)),
            "{name}: the marker is a revocation every replica loads"
        );
        assert_eq!(
            store
                .revoke_app_secret(app.id, secret.id, None, t1)
                .await
                .unwrap(),
            None,
            "{name}: gone"
        );
    }
}

#[tokio::test]
async fn a_use_limit_is_never_overspent() {
    for (name, store, _db) in backends().await {
        let app = store
            .insert_application(&new_app("pcc_uses"))
            .await
            .unwrap();
        let t1 = app.created_at + TimeDelta::seconds(1);
        let limited = NewSecret {
            max_uses: Some(5),
            ..new_secret("hash-1", t1)
        };
        store.add_app_secret(app.id, &limited, 10).await.unwrap();
        // More than the limit at once: exactly the limit gets through.
        let mut spending = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let (store, id) = (store.clone(), limited.id);
            spending.spawn(async move { store.spend_secret_use(id, t1).await.unwrap() });
        }
        let mut granted = 0;
        while let Some(spent) = spending.join_next().await {
            granted += usize::from(spent.unwrap());
        }
        assert_eq!(granted, 5, "{name}");
        let held = store.app_secrets(app.id).await.unwrap();
        let limited = held.iter().find(|s| s.id == limited.id).unwrap();
        assert_eq!(
            (limited.use_count, limited.last_used_at),
            (5, Some(t1)),
            "{name}"
        );
    }
}

#[tokio::test]
async fn signing_keys_are_initialized_once() {
    for (name, store, _db) in backends().await {
        let t = DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let es = SigningAlgorithm::ES256;
        store
            .initialize_signing_keys(&key("c1", es, t), &key("n1", es, t), t)
            .await
            .unwrap();
        let first = key_states(&store).await;
        assert_eq!(
            first,
            vec![
                ("c1".into(), KeyState::Current, Some(t), None),
                ("n1".into(), KeyState::Next, None, None),
            ],
            "{name}"
        );
        let stored = store.signing_keys().await.unwrap();
        assert!(
            stored
                .iter()
                .all(|k| k.sealed_private_key == vec![1, 2, 3] && k.created_at == t),
            "{name}"
        );

        let later = t + TimeDelta::minutes(1);
        store
            .initialize_signing_keys(&key("c2", es, later), &key("n2", es, later), later)
            .await
            .unwrap();
        assert_eq!(
            key_states(&store).await,
            first,
            "{name}: keys in place are kept, candidates discarded"
        );

        let ed = SigningAlgorithm::EdDSA;
        store
            .initialize_signing_keys(&key("c3", ed, later), &key("n3", ed, later), later)
            .await
            .unwrap();
        assert_eq!(
            key_states(&store).await,
            vec![
                ("c1".into(), KeyState::Current, Some(t), None),
                ("n3".into(), KeyState::Next, None, None),
            ],
            "{name}: a new algorithm replaces the waiting key that never signed, not the current"
        );
    }
}

#[tokio::test]
async fn a_keys_publication_is_only_ever_extended() {
    for (name, store, _db) in backends().await {
        let t = DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let es = SigningAlgorithm::ES256;
        store
            .initialize_signing_keys(&key("c1", es, t), &key("n1", es, t), t)
            .await
            .unwrap();
        let live_until = |store: DynStore| async move {
            store
                .signing_keys()
                .await
                .unwrap()
                .into_iter()
                .map(|k| (k.kid, k.tokens_live_until))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            live_until(store.clone()).await,
            vec![("c1".into(), None), ("n1".into(), None)],
            "{name}"
        );

        let later = t + TimeDelta::days(60);
        store.keep_signing_key_until("c1", later).await.unwrap();
        store
            .keep_signing_key_until("c1", t + TimeDelta::days(1))
            .await
            .unwrap();
        store
            .keep_signing_key_until("unknown", later)
            .await
            .unwrap();
        assert_eq!(
            live_until(store.clone()).await,
            vec![("c1".into(), Some(later)), ("n1".into(), None)],
            "{name}: an earlier time does not shorten it; an unknown kid changes nothing"
        );
    }
}

#[tokio::test]
async fn rotation_promotes_only_a_next_key_published_long_enough() {
    for (name, store, _db) in backends().await {
        let t = DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let es = SigningAlgorithm::ES256;
        let lead = TimeDelta::seconds(20);
        assert_eq!(
            store
                .rotate_signing_keys(&key("n0", es, t), t, lead)
                .await
                .unwrap(),
            KeyRotation::TooEarly { retry_at: t + lead },
            "{name}: with no key waiting, the candidate is published first"
        );
        store
            .initialize_signing_keys(&key("c1", es, t), &key("n1", es, t), t)
            .await
            .unwrap();
        let before = key_states(&store).await;
        assert_eq!(
            before,
            vec![
                ("c1".into(), KeyState::Current, Some(t), None),
                ("n0".into(), KeyState::Next, None, None),
            ],
            "{name}"
        );

        let early = t + lead - TimeDelta::milliseconds(1);
        assert_eq!(
            store
                .rotate_signing_keys(&key("n2", es, early), early, lead)
                .await
                .unwrap(),
            KeyRotation::TooEarly { retry_at: t + lead },
            "{name}"
        );
        assert_eq!(
            key_states(&store).await,
            before,
            "{name}: a refused rotation changes nothing"
        );

        let on_time = t + lead;
        assert_eq!(
            store
                .rotate_signing_keys(&key("n2", es, on_time), on_time, lead)
                .await
                .unwrap(),
            KeyRotation::Rotated {
                current: "n0".into()
            },
            "{name}"
        );
        assert_eq!(
            key_states(&store).await,
            vec![
                ("c1".into(), KeyState::Retired, Some(t), Some(on_time)),
                ("n0".into(), KeyState::Current, Some(on_time), None),
                ("n2".into(), KeyState::Next, None, None),
            ],
            "{name}"
        );
        assert_eq!(
            store
                .rotate_signing_keys(&key("n3", es, on_time), on_time, lead)
                .await
                .unwrap(),
            KeyRotation::TooEarly {
                retry_at: on_time + lead
            },
            "{name}: the key published by the last rotation waits its turn"
        );
    }
}

#[tokio::test]
async fn quota_leases_never_pass_the_limit_and_quotas_round_trip() {
    for (name, store, _db) in backends().await {
        let quota = TokenQuota {
            per_hour: Some(10),
            per_day: None,
        };
        let app = store
            .insert_application(&NewApplication {
                quota,
                ..new_app("pcc_quota")
            })
            .await
            .unwrap();
        assert_eq!(app.quota, quota, "{name}: the quota reads back");
        let mut new = app.settings();
        new.quota = TokenQuota::default();
        let Guarded::Written(updated) = store
            .update_application_settings(app.id, &app.settings(), &new, app.updated_at)
            .await
            .unwrap()
        else {
            panic!("{name}: the update applies");
        };
        assert!(updated.quota.is_unlimited(), "{name}: the quota is lifted");

        let hour = QuotaWindow::Hour.start(Utc::now());
        let lease = |want| store.lease_quota(app.id, QuotaWindow::Hour, hour, want, 10);
        assert_eq!(
            lease(4).await.unwrap(),
            Some(QuotaLease {
                granted: 4,
                leased: 4
            }),
            "{name}: the first lease creates the window"
        );
        assert_eq!(
            lease(4).await.unwrap(),
            Some(QuotaLease {
                granted: 4,
                leased: 8
            }),
            "{name}"
        );
        assert_eq!(
            lease(4).await.unwrap(),
            Some(QuotaLease {
                granted: 2,
                leased: 10
            }),
            "{name}: only what is left"
        );
        assert_eq!(lease(1).await.unwrap(), None, "{name}: nothing is left");
        assert_eq!(
            store
                .lease_quota(app.id, QuotaWindow::Hour, hour, 5, 3)
                .await
                .unwrap(),
            None,
            "{name}: a lowered limit below what was leased grants nothing"
        );
        assert_eq!(
            store
                .lease_quota(app.id, QuotaWindow::Day, hour, 20, 10)
                .await
                .unwrap(),
            Some(QuotaLease {
                granted: 10,
                leased: 10
            }),
            "{name}: each window counts apart, and a lease never exceeds the limit"
        );
        let next_hour = hour + TimeDelta::hours(1);
        assert_eq!(
            store
                .lease_quota(app.id, QuotaWindow::Hour, next_hour, 1, 10)
                .await
                .unwrap()
                .map(|l| l.leased),
            Some(1),
            "{name}: a new window starts from zero"
        );
        assert_eq!(
            store.purge_quota_windows(next_hour).await.unwrap(),
            2,
            "{name}: windows that started before are purged"
        );
    }
}
