use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use portcullis::{
    domain::{
        AppId, Application, AuthGrant, Change, ChangeEvent, ClientId, Enrollment, EnrollmentId,
        GrantId, NewApplication, OwnerId, SigningKeyRecord, Subject,
    },
    store::{DynStore, EnrollmentFilter, GrantFilter, PoolStats, Store, StoreError, Usage},
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::helpers::{ADMIN_TOKEN, Spawn, TestApp};

#[tokio::test]
async fn oversized_bodies_are_413_in_each_dialects_envelope() {
    let app = TestApp::spawn().await;
    let big = format!(
        "grant_type=client_credentials&pad={}",
        "x".repeat(70 * 1024)
    );
    let response = app.post_raw("/api/v1/auth/tokens", None, big.clone()).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["is_error"], true);
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");

    let response = app
        .post_raw(
            "/oauth2/token",
            Some("application/x-www-form-urlencoded"),
            big,
        )
        .await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn invalid_utf8_and_nul_bytes_are_4xx_never_5xx() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let bodies: [(Option<&str>, Vec<u8>); 4] = [
        (Some("application/json"), b"{\"client_id\":\"\xff\xfe\"}".to_vec()),
        (None, b"client_id=\xff&client_secret=x&grant_type=client_credentials".to_vec()),
        (
            None,
            format!("{}%00", client.form("")).into_bytes(),
        ),
        (
            Some("application/json"),
            json!({"client_id": "a\u{0}b", "client_secret": "x", "grant_type": "client_credentials"})
                .to_string()
                .into_bytes(),
        ),
    ];
    for path in ["/api/v1/auth/tokens", "/oauth2/token"] {
        for (content_type, body) in &bodies {
            let status = app
                .post_raw(path, *content_type, body.clone())
                .await
                .status();
            assert!(
                status.is_client_error(),
                "{path} {content_type:?}: {status}"
            );
        }
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_echoes_the_callers() {
    let app = TestApp::spawn().await;
    for path in ["/health/live", "/no/such/route", "/.well-known/jwks.json"] {
        let response = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("x-request-id"), "{path}");
    }
    let response = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let admin = app
        .http
        .get(format!("{}/admin/v1/apps", app.admin))
        .send()
        .await
        .unwrap();
    assert!(admin.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(format!("{}/nope", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

/// Delegates to the real store until told to fail or hang.
struct FlakyStore {
    inner: DynStore,
    mode: Arc<AtomicU8>,
}

const HEALTHY: u8 = 0;
const DOWN: u8 = 1;
const HANGING: u8 = 2;

impl FlakyStore {
    async fn gate(&self) -> Result<(), StoreError> {
        match self.mode.load(Ordering::SeqCst) {
            DOWN => Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
            HANGING => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.migrate().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.ping().await
    }
    fn pool_stats(&self) -> PoolStats {
        self.inner.pool_stats()
    }
    async fn insert_application(&self, app: &NewApplication) -> Result<Application, StoreError> {
        self.gate().await?;
        self.inner.insert_application(app).await
    }
    async fn application(&self, id: AppId) -> Result<Option<Application>, StoreError> {
        self.gate().await?;
        self.inner.application(id).await
    }
    async fn application_by_client_id(
        &self,
        client_id: &ClientId,
    ) -> Result<Option<Application>, StoreError> {
        self.gate().await?;
        self.inner.application_by_client_id(client_id).await
    }
    async fn list_applications(&self) -> Result<Vec<Application>, StoreError> {
        self.gate().await?;
        self.inner.list_applications().await
    }
    async fn update_application(&self, app: &Application) -> Result<bool, StoreError> {
        self.gate().await?;
        self.inner.update_application(app).await
    }
    async fn set_application_disabled(
        &self,
        id: AppId,
        disabled: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Application>, StoreError> {
        self.gate().await?;
        self.inner.set_application_disabled(id, disabled, now).await
    }
    async fn delete_application(&self, id: AppId) -> Result<bool, StoreError> {
        self.gate().await?;
        self.inner.delete_application(id).await
    }
    async fn insert_enrollment(&self, e: &Enrollment) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.insert_enrollment(e).await
    }
    async fn enrollment(&self, id: EnrollmentId) -> Result<Option<Enrollment>, StoreError> {
        self.gate().await?;
        self.inner.enrollment(id).await
    }
    async fn enrollment_for_owner(
        &self,
        app_id: AppId,
        owner_id: &OwnerId,
    ) -> Result<Option<Enrollment>, StoreError> {
        self.gate().await?;
        self.inner.enrollment_for_owner(app_id, owner_id).await
    }
    async fn list_enrollments(
        &self,
        filter: &EnrollmentFilter,
        limit: u32,
    ) -> Result<Vec<Enrollment>, StoreError> {
        self.gate().await?;
        self.inner.list_enrollments(filter, limit).await
    }
    async fn update_enrollment_data(
        &self,
        id: EnrollmentId,
        data: &Value,
        now: DateTime<Utc>,
    ) -> Result<Option<Enrollment>, StoreError> {
        self.gate().await?;
        self.inner.update_enrollment_data(id, data, now).await
    }
    async fn set_enrollment_disabled(
        &self,
        id: EnrollmentId,
        disabled: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Enrollment>, StoreError> {
        self.gate().await?;
        self.inner.set_enrollment_disabled(id, disabled, now).await
    }
    async fn delete_enrollment(&self, id: EnrollmentId) -> Result<bool, StoreError> {
        self.gate().await?;
        self.inner.delete_enrollment(id).await
    }
    async fn insert_grant(&self, g: &AuthGrant, max_active: u32) -> Result<bool, StoreError> {
        self.gate().await?;
        self.inner.insert_grant(g, max_active).await
    }
    async fn grant(&self, id: GrantId) -> Result<Option<AuthGrant>, StoreError> {
        self.gate().await?;
        self.inner.grant(id).await
    }
    async fn list_grants(
        &self,
        profile: &Subject,
        filter: &GrantFilter,
        before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<AuthGrant>, StoreError> {
        self.gate().await?;
        self.inner.list_grants(profile, filter, before, limit).await
    }
    async fn update_grant_text(
        &self,
        id: GrantId,
        profile: &Subject,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.gate().await?;
        self.inner
            .update_grant_text(id, profile, name, description)
            .await
    }
    async fn revoke_grant(&self, id: GrantId, profile: &Subject) -> Result<bool, StoreError> {
        self.gate().await?;
        self.inner.revoke_grant(id, profile).await
    }
    async fn delete_revoked_grant(
        &self,
        id: GrantId,
        profile: &Subject,
    ) -> Result<bool, StoreError> {
        self.gate().await?;
        self.inner.delete_revoked_grant(id, profile).await
    }
    async fn revoke_token(
        &self,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.revoke_token(jti, expires_at, now).await
    }
    async fn active_revocations(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        self.gate().await?;
        self.inner.active_revocations(now).await
    }
    async fn purge_expired_revocations(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.gate().await?;
        self.inner.purge_expired_revocations(now).await
    }
    async fn record_usage(&self, usage: &[Usage]) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.record_usage(usage).await
    }
    async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.publish(change).await
    }
    async fn subscribe(&self) -> Result<Option<mpsc::Receiver<ChangeEvent>>, StoreError> {
        self.inner.subscribe().await
    }
    async fn insert_next_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.insert_next_signing_key(key).await
    }
    async fn promote_next_signing_key(&self, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.gate().await?;
        self.inner.promote_next_signing_key(now).await
    }
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.gate().await?;
        self.inner.signing_keys().await
    }
    async fn activate_new_signing_key(
        &self,
        key: &SigningKeyRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.activate_new_signing_key(key, now).await
    }
}

async fn flaky_app(overrides: &[(&str, &str)]) -> (TestApp, Arc<AtomicU8>) {
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let switch = mode.clone();
    let app = TestApp::spawn_with(Spawn {
        overrides,
        wrap_store: Some(Box::new(move |inner| {
            Arc::new(FlakyStore {
                inner,
                mode: switch,
            })
        })),
        ..Spawn::default()
    })
    .await;
    (app, mode)
}

#[tokio::test]
async fn a_store_outage_gives_fast_503s_and_recovers_without_restart() {
    let (app, mode) = flaky_app(&[]).await;
    let warm = app.default_app().await;
    let cold = app.default_app().await;
    assert_eq!(app.endorsed_json(warm.json(None)).await.status(), 200);

    mode.store(DOWN, Ordering::SeqCst);
    let ready = app
        .http
        .get(format!("{}/health/ready", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let live = app
        .http
        .get(format!("{}/health/live", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200, "liveness does not depend on the store");

    let response = app.endorsed_json(cold.json(None)).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(
        !body.to_string().contains("PoolTimedOut"),
        "no internals leak"
    );

    let response = app
        .oauth_basic(&cold, "grant_type=client_credentials")
        .await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");

    let admin = app
        .http
        .get(format!("{}/admin/v1/apps", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 503);
    assert_eq!(admin.headers()["content-type"], "application/problem+json");

    assert_eq!(
        app.endorsed_json(warm.json(None)).await.status(),
        200,
        "a verified credential keeps working from the cache"
    );

    mode.store(HEALTHY, Ordering::SeqCst);
    assert_eq!(app.endorsed_json(cold.json(None)).await.status(), 200);
    let ready = app
        .http
        .get(format!("{}/health/ready", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn a_hanging_store_hits_the_request_timeout() {
    let (app, mode) = flaky_app(&[
        ("PORTCULLIS__SERVER__REQUEST_TIMEOUT_MS", "1500"),
        ("PORTCULLIS__DATABASE__ACQUIRE_TIMEOUT_MS", "500"),
    ])
    .await;
    let client = app.default_app().await;
    mode.store(HANGING, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let response = app.endorsed_json(client.json(None)).await;
    assert_eq!(response.status(), 408);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
}

#[tokio::test]
async fn shutdown_drains_and_exits_cleanly() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    assert_eq!(app.endorsed_json(client.json(None)).await.status(), 200);
    app.shutdown().await.expect("a clean exit");
}
