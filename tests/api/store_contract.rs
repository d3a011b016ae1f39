//! One contract for every store backend: SQLite always, PostgreSQL when TEST_DATABASE_URL
//! is set.

use chrono::{TimeDelta, Utc};
use portcullis::{
    domain::{
        AppId, ClientId, KeyState, NewApplication, ScopeSet, SigningAlgorithm, SigningKeyRecord,
    },
    store::{ConnectOptions, DynStore, Guarded, KeyRotation, StoreError, connect},
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

/// A candidate key as the key ring makes one.
fn key(
    kid: &str,
    algorithm: SigningAlgorithm,
    created_at: chrono::DateTime<Utc>,
) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.into(),
        algorithm,
        state: KeyState::Next,
        sealed_private_key: vec![1, 2, 3],
        public_jwk: "{}".into(),
        created_at,
        activated_at: None,
        retired_at: None,
    }
}

/// (kid, state, activated_at, retired_at) of every stored key, by kid.
async fn key_states(
    store: &DynStore,
) -> Vec<(
    String,
    KeyState,
    Option<chrono::DateTime<Utc>>,
    Option<chrono::DateTime<Utc>>,
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
        assert_eq!(
            (stored.secret_hash.as_str(), stored.disabled),
            (app.secret_hash.as_str(), app.disabled),
            "{name}: settings updates never touch the secret or the disable"
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
async fn application_secrets_are_swapped_only_from_the_hash_they_replace() {
    for (name, store, _db) in backends().await {
        let app = store
            .insert_application(&new_app("pcc_secret"))
            .await
            .unwrap();
        let t1 = app.updated_at + TimeDelta::seconds(1);
        let grace_ends = t1 + TimeDelta::hours(1);
        let Guarded::Written(rotated) = store
            .rotate_application_secret(app.id, &app.secret_hash, "hash-1", Some(grace_ends), t1)
            .await
            .unwrap()
        else {
            panic!("{name}: the secret read is still current")
        };
        assert_eq!(rotated.secret_hash, "hash-1", "{name}");
        assert_eq!(
            rotated.previous_secret_hash.as_deref(),
            Some(app.secret_hash.as_str()),
            "{name}: the replaced secret is kept for its grace"
        );
        assert_eq!(
            rotated.previous_secret_expires_at,
            Some(grace_ends),
            "{name}"
        );
        assert_eq!(rotated.updated_at, t1, "{name}");
        assert_eq!(
            rotated.settings(),
            app.settings(),
            "{name}: only the secret columns change"
        );

        let lost = store
            .rotate_application_secret(app.id, &app.secret_hash, "hash-2", Some(grace_ends), t1)
            .await
            .unwrap();
        assert_eq!(lost, Guarded::Stale, "{name}: the secret changed since");
        assert_eq!(
            store.application(app.id).await.unwrap().unwrap(),
            rotated,
            "{name}: the losing rotation wrote nothing"
        );

        let Guarded::Written(no_grace) = store
            .rotate_application_secret(app.id, "hash-1", "hash-3", None, t1)
            .await
            .unwrap()
        else {
            panic!("{name}: hash-1 is current")
        };
        assert_eq!(
            (
                no_grace.secret_hash.as_str(),
                no_grace.previous_secret_hash,
                no_grace.previous_secret_expires_at
            ),
            ("hash-3", None, None),
            "{name}: no grace keeps no previous secret"
        );

        let missing = store
            .rotate_application_secret(AppId::generate(), "hash-3", "hash-4", None, t1)
            .await
            .unwrap();
        assert_eq!(missing, Guarded::Missing, "{name}");
    }
}

#[tokio::test]
async fn signing_keys_are_initialized_once() {
    for (name, store, _db) in backends().await {
        let t = chrono::DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
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
async fn rotation_promotes_only_a_next_key_published_long_enough() {
    for (name, store, _db) in backends().await {
        let t = chrono::DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
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
