//! One contract for every store backend: SQLite always, PostgreSQL when TEST_DATABASE_URL
//! is set.

use chrono::{TimeDelta, Utc};
use portcullis::{
    domain::{
        AppId, ClientId, KeyState, NewApplication, ScopeSet, SigningAlgorithm, SigningKeyRecord,
    },
    store::{ConnectOptions, DynStore, StoreError, connect},
};

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
    NewApplication {
        id: AppId::generate(),
        client_id: ClientId::parse(client_id).unwrap(),
        name: "contract".into(),
        secret_hash: "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        allowed_scopes: ScopeSet::parse("all:read all:write").unwrap(),
        default_scopes: ScopeSet::parse("all:read").unwrap(),
        sandbox: true,
        // Millisecond precision, as the system clock gives: it must read back exactly.
        created_at: chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap(),
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
        assert!(store.update_application(&changed).await.unwrap(), "{name}");
        let stored = store.application(new.id).await.unwrap().unwrap();
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
        let mut ghost = changed.clone();
        ghost.id = AppId::generate();
        assert!(!store.update_application(&ghost).await.unwrap(), "{name}");
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

fn key(kid: &str) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.into(),
        algorithm: SigningAlgorithm::ES256,
        state: KeyState::Current,
        sealed_private_key: vec![1, 2, 3],
        public_jwk: "{}".into(),
        created_at: Utc::now(),
        activated_at: None,
        retired_at: None,
    }
}

#[tokio::test]
async fn activating_a_key_retires_the_previous_one() {
    for (name, store, _db) in backends().await {
        let t1 = chrono::DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let t2 = t1 + TimeDelta::hours(1);
        store
            .activate_new_signing_key(&key("k1"), t1)
            .await
            .unwrap();
        store
            .activate_new_signing_key(&key("k2"), t2)
            .await
            .unwrap();
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(keys.len(), 2, "{name}");
        let k1 = keys.iter().find(|k| k.kid == "k1").unwrap();
        let k2 = keys.iter().find(|k| k.kid == "k2").unwrap();
        assert_eq!(k1.state, KeyState::Retired, "{name}");
        assert_eq!(k1.retired_at, Some(t2), "{name}");
        assert_eq!(k2.state, KeyState::Current, "{name}");
        assert_eq!(k2.activated_at, Some(t2), "{name}");
        assert_eq!(k2.sealed_private_key, vec![1, 2, 3], "{name}");

        let err = store
            .activate_new_signing_key(&key("k2"), t2)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(_)),
            "{name}: duplicate kid"
        );
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(
            keys.iter().filter(|k| k.state == KeyState::Current).count(),
            1,
            "{name}: a failed activation rolls back"
        );
    }
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
        let t0 = chrono::DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
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
        let t0 = chrono::DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
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
async fn the_next_key_is_promoted_atomically() {
    for (name, store, _db) in backends().await {
        let t = chrono::DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        assert!(
            !store.promote_next_signing_key(t).await.unwrap(),
            "{name}: no next yet"
        );
        store.activate_new_signing_key(&key("k1"), t).await.unwrap();
        let mut next = key("k2");
        next.state = KeyState::Next;
        store.insert_next_signing_key(&next).await.unwrap();
        let mut another = key("k3");
        another.state = KeyState::Next;
        let err = store.insert_next_signing_key(&another).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(_)),
            "{name}: one next at a time"
        );
        assert!(store.promote_next_signing_key(t).await.unwrap(), "{name}");
        let keys = store.signing_keys().await.unwrap();
        let state = |kid: &str| keys.iter().find(|k| k.kid == kid).unwrap().state;
        assert_eq!(state("k1"), KeyState::Retired, "{name}");
        assert_eq!(state("k2"), KeyState::Current, "{name}");
    }
}
