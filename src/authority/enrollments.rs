//! Enrollments: an application installed for an owner, and the tokens that act for that
//! owner through it.

use std::sync::Arc;

use serde_json::Value;

use super::audit::{AuditEvent, AuditTrail, Event};
use super::{
    AuthorityError, Conflict, Rule, changes::ChangeHub, clock::SharedClock, records::Records,
};
use crate::{
    domain::{AppId, Change, Enrollment, EnrollmentId, OwnerId, ScopeSet, SubjectKind},
    store::{DynStore, EnrollmentFilter, StoreError},
};

/// Admin listings return at most this many.
pub const LIST_LIMIT: u32 = 1000;

#[derive(Debug, Default)]
pub struct CreateEnrollment {
    pub app_id: Option<AppId>,
    pub owner_id: String,
    pub id: Option<String>,
    pub data: Option<Value>,
    /// Space-delimited; defaults to the app's default scopes.
    pub scopes: Option<String>,
}

/// What a create produced: a new enrollment, or the identical one that already existed.
pub enum Created {
    New(Enrollment),
    Existing(Enrollment),
}

impl Created {
    pub fn into_inner(self) -> Enrollment {
        match self {
            Self::New(e) | Self::Existing(e) => e,
        }
    }
}

pub struct Enrollments {
    store: DynStore,
    audit: Arc<AuditTrail>,
    records: Arc<Records>,
    changes: Arc<ChangeHub>,
    clock: SharedClock,
}

pub fn parse_owner(raw: &str) -> Result<OwnerId, AuthorityError> {
    OwnerId::parse(raw).map_err(|_| {
        AuthorityError::invalid(
            "owner_id",
            Rule::PrintableAscii {
                min: 1,
                max: OwnerId::MAX_LEN,
            },
        )
    })
}

pub fn parse_enrollment_id(raw: &str) -> Result<EnrollmentId, AuthorityError> {
    EnrollmentId::parse(raw).map_err(|_| AuthorityError::invalid("id", Rule::NotAUuid))
}

pub fn check_data(data: &Value) -> Result<(), AuthorityError> {
    let size = serde_json::to_vec(data).map_or(usize::MAX, |v| v.len());
    if size > Enrollment::DATA_MAX_BYTES {
        return Err(AuthorityError::invalid(
            "data",
            Rule::MaxBytes {
                max: Enrollment::DATA_MAX_BYTES,
            },
        ));
    }
    // PostgreSQL's jsonb cannot hold NUL and SQLite can: refuse it everywhere, so both
    // stores give the same answer.
    if holds_nul(data) {
        return Err(AuthorityError::invalid("data", Rule::Nul));
    }
    Ok(())
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

impl Enrollments {
    pub fn new(
        store: DynStore,
        records: Arc<Records>,
        changes: Arc<ChangeHub>,
        clock: SharedClock,
        audit: Arc<AuditTrail>,
    ) -> Self {
        Self {
            store,
            audit,
            records,
            changes,
            clock,
        }
    }

    /// Creates the enrollment of `request.owner_id` with the app. Asking again for the same
    /// app, owner and id returns the existing one; any other clash is a conflict.
    pub async fn create(&self, request: CreateEnrollment) -> Result<Created, AuthorityError> {
        let app_id = request
            .app_id
            .ok_or_else(|| AuthorityError::invalid("app_id", Rule::Required))?;
        let owner_id = parse_owner(&request.owner_id)?;
        let id = request.id.as_deref().map(parse_enrollment_id).transpose()?;
        let data = request
            .data
            .unwrap_or_else(|| Value::Object(Default::default()));
        check_data(&data)?;
        let app = self
            .store
            .application(app_id)
            .await?
            .ok_or_else(|| AuthorityError::invalid("app_id", Rule::NoSuchApp))?;
        let scopes = match &request.scopes {
            Some(raw) => ScopeSet::parse(raw)
                .map_err(|e| AuthorityError::invalid("scopes", Rule::Scope(e)))?,
            None => app.default_scopes.clone(),
        };
        if let Some(scope) = app.allowed_scopes.first_uncovered(&scopes) {
            return Err(AuthorityError::invalid(
                "scopes",
                Rule::NotAllowedForApp(scope.to_string()),
            ));
        }

        if let Some(existing) = self.store.enrollment_for_owner(app_id, &owner_id).await? {
            return match id {
                Some(id) if id != existing.id => Err(Conflict::OwnerEnrolledUnderAnotherId.into()),
                _ => Ok(Created::Existing(existing)),
            };
        }
        let now = self.clock.now();
        let enrollment = Enrollment {
            id: id.unwrap_or_else(EnrollmentId::generate),
            app_id,
            owner_id,
            data,
            scopes,
            sandbox: app.sandbox,
            disabled: false,
            created_at: now,
            updated_at: now,
            last_used_at: None,
        };
        match self.store.insert_enrollment(&enrollment).await {
            Ok(()) => {
                self.audit.record(
                    AuditEvent::new(Event::EnrollmentCreated)
                        .enrollment(enrollment.id)
                        .app(app_id)
                        .subject(SubjectKind::Owner, enrollment.owner_id.as_str()),
                );
                Ok(Created::New(enrollment))
            }
            // A concurrent create of the same pair, or an id used elsewhere.
            Err(StoreError::Conflict(_)) => {
                match self
                    .store
                    .enrollment_for_owner(app_id, &enrollment.owner_id)
                    .await?
                {
                    Some(existing) if existing.id == enrollment.id => {
                        Ok(Created::Existing(existing))
                    }
                    _ => Err(Conflict::EnrollmentIdTaken.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get(&self, id: EnrollmentId) -> Result<Enrollment, AuthorityError> {
        self.store
            .enrollment(id)
            .await?
            .ok_or(AuthorityError::NotFound)
    }

    /// The enrollment `id`, but only if it belongs to `app_id`: another app's enrollment is
    /// indistinguishable from a missing one.
    pub async fn get_for_app(
        &self,
        app_id: AppId,
        id: EnrollmentId,
    ) -> Result<Arc<Enrollment>, AuthorityError> {
        match self.records.enrollment(id).await? {
            Some(e) if e.app_id == app_id => Ok(e),
            _ => Err(AuthorityError::NotFound),
        }
    }

    pub async fn get_for_owner(
        &self,
        app_id: AppId,
        owner_id: &OwnerId,
    ) -> Result<Arc<Enrollment>, AuthorityError> {
        self.records
            .enrollment_for_owner(app_id, owner_id)
            .await?
            .ok_or(AuthorityError::NotFound)
    }

    pub async fn list(&self, filter: &EnrollmentFilter) -> Result<Vec<Enrollment>, AuthorityError> {
        Ok(self.store.list_enrollments(filter, LIST_LIMIT).await?)
    }

    pub async fn set_disabled(
        &self,
        id: EnrollmentId,
        disabled: bool,
    ) -> Result<Enrollment, AuthorityError> {
        let enrollment = self
            .store
            .set_enrollment_disabled(id, disabled, self.clock.now())
            .await?
            .ok_or(AuthorityError::NotFound)?;
        let event = if disabled {
            Event::EnrollmentDisabled
        } else {
            Event::EnrollmentEnabled
        };
        self.changed(&enrollment, event).await;
        Ok(enrollment)
    }

    /// Writes the data of `of`, the enrollment a token was judged against; if that
    /// record is gone (or its id now names another), the token no longer stands.
    pub async fn update_data(
        &self,
        of: &Enrollment,
        data: Value,
    ) -> Result<Enrollment, AuthorityError> {
        check_data(&data)?;
        let enrollment = self
            .store
            .update_enrollment_data(of, &data, self.clock.now())
            .await?
            .ok_or(AuthorityError::InvalidToken)?;
        self.changed(&enrollment, Event::EnrollmentUpdated).await;
        Ok(enrollment)
    }

    pub async fn delete(&self, id: EnrollmentId) -> Result<(), AuthorityError> {
        if !self.store.delete_enrollment(id).await? {
            return Err(AuthorityError::NotFound);
        }
        self.changes.announce(Change::Enrollment { id: id.0 }).await;
        self.audit
            .record(AuditEvent::new(Event::EnrollmentDeleted).enrollment(id));
        Ok(())
    }

    async fn changed(&self, enrollment: &Enrollment, event: Event) {
        self.changes
            .announce(Change::Enrollment {
                id: enrollment.id.0,
            })
            .await;
        self.audit.record(
            AuditEvent::new(event)
                .enrollment(enrollment.id)
                .app(enrollment.app_id),
        );
    }
}
