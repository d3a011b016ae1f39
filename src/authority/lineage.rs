//! A credential's standing, judged along its whole chain at each use: token → grant →
//! enrollment → app. Each link must still exist, be enabled and unexpired, and be the very
//! record the token names (same subject, same client, created before the token), and the
//! scopes of every link intersect: nothing derived carries a scope its parent no longer has.
//!
//! This is the only place that judges a token's chain; whether the token itself (or the one
//! it was exchanged from, or every token of the secret that minted it) was revoked is checked
//! just before, in `authenticate_bearer`. A grant created with a token of a secret revoked
//! with its tokens falls here, with that secret.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{
    ADMIN_CLIENT_ID, AuthorityError, records::Records, revocations::RevocationList, tokens::Claims,
    verify::LEEWAY_SECS,
};
use crate::domain::{
    AppId, Application, AuthGrant, ClientId, Enrollment, EnrollmentId, GrantId, Origin, Profile,
    ScopeSet, Subject, SubjectKind,
};

/// What a token that still stands may do, and for whom.
#[derive(Debug, Clone)]
pub struct Standing {
    /// The token's scope narrowed by every link of its chain.
    pub scope: ScopeSet,
    /// Whose grants the token sees.
    pub profile: Profile,
    /// The credential a grant created with this token would come from; `None` for tokens
    /// derived from a grant, which may not create grants.
    pub origin: Option<Origin>,
    pub enrollment: Option<Arc<Enrollment>>,
    pub grant: Option<Arc<AuthGrant>>,
}

/// The enrollment and app behind an enrollment, if both still stand, with what they allow.
pub struct EnrollmentChain {
    pub enrollment: Arc<Enrollment>,
    pub app: Arc<Application>,
    pub scope: ScopeSet,
}

pub struct Judge<'a> {
    pub records: &'a Records,
    pub revocations: &'a RevocationList,
    pub now: DateTime<Utc>,
}

/// A record created after the token was issued cannot be what the token was issued for
/// (an id deleted and used again). Replicas' clocks may differ by the verification leeway.
pub(super) fn issued_before(claims: &Claims, created_at: DateTime<Utc>) -> bool {
    claims.iat + LEEWAY_SECS < created_at.timestamp()
}

/// The same for a grant and the enrollment it names: an enrollment id used again later is
/// not where the grant came from.
fn created_before(grant: DateTime<Utc>, enrollment: DateTime<Utc>) -> bool {
    grant.timestamp() + LEEWAY_SECS < enrollment.timestamp()
}

impl Judge<'_> {
    /// The standing of a verified token, or `None` if anything along its chain fell.
    pub async fn token(&self, claims: &Claims) -> Result<Option<Standing>, AuthorityError> {
        let Ok(scope) = ScopeSet::parse(&claims.scope) else {
            return Ok(None);
        };
        let subject = Subject {
            kind: claims.sub_kind,
            id: claims.sub.clone(),
        };
        if let Some(raw) = &claims.grant_id {
            let Ok(id) = GrantId::parse(raw) else {
                return Ok(None);
            };
            return self.grant_token(claims, subject, scope, id).await;
        }
        if let Some(raw) = &claims.enrollment_id {
            let Ok(id) = EnrollmentId::parse(raw) else {
                return Ok(None);
            };
            let Some(chain) = self.enrollment_by_id(id).await? else {
                return Ok(None);
            };
            let names_it = claims.sub_kind == SubjectKind::Owner
                && claims.sub == chain.enrollment.owner_id.as_str()
                && claims.client_id == chain.app.client_id.as_str()
                && !issued_before(claims, chain.enrollment.created_at);
            if !names_it {
                return Ok(None);
            }
            return Ok(Some(Standing {
                scope: scope.intersect(&chain.scope),
                profile: Profile {
                    subject,
                    app_id: Some(chain.app.id),
                },
                origin: Some(Origin::Enrollment {
                    app_id: chain.app.id,
                    enrollment_id: id,
                }),
                enrollment: Some(chain.enrollment),
                grant: None,
            }));
        }
        match claims.sub_kind {
            SubjectKind::App => {
                let Ok(client_id) = ClientId::parse(&claims.client_id) else {
                    return Ok(None);
                };
                let Some(app) = self.records.app_by_client_id(&client_id).await? else {
                    return Ok(None);
                };
                if app.disabled
                    || claims.sub != claims.client_id
                    || issued_before(claims, app.created_at)
                {
                    return Ok(None);
                }
                Ok(Some(Standing {
                    scope: scope.intersect(&app.allowed_scopes),
                    profile: Profile {
                        subject,
                        app_id: Some(app.id),
                    },
                    origin: Some(Origin::App(app.id)),
                    enrollment: None,
                    grant: None,
                }))
            }
            // An owner token without an enrollment stands on the operator's word alone, and
            // only the operator's mint issues those.
            SubjectKind::Owner if claims.client_id == ADMIN_CLIENT_ID => Ok(Some(Standing {
                scope,
                profile: Profile {
                    subject,
                    app_id: None,
                },
                origin: Some(Origin::Operator),
                enrollment: None,
                grant: None,
            })),
            SubjectKind::Owner => Ok(None),
        }
    }

    async fn grant_token(
        &self,
        claims: &Claims,
        subject: Subject,
        scope: ScopeSet,
        id: GrantId,
    ) -> Result<Option<Standing>, AuthorityError> {
        let Some(grant) = self.records.grant(id).await? else {
            return Ok(None);
        };
        let names_it = grant.profile == subject
            && grant.client_id == claims.client_id
            && !issued_before(claims, grant.created_at);
        if !names_it {
            return Ok(None);
        }
        let Some(allowed) = self.grant(&grant).await? else {
            return Ok(None);
        };
        Ok(Some(Standing {
            scope: scope.intersect(&allowed),
            profile: grant.owner(),
            origin: None,
            enrollment: None,
            grant: Some(grant),
        }))
    }

    /// What a grant may still do: its scope narrowed by its origin's, or `None` if the grant
    /// or anything it came from no longer stands.
    pub async fn grant(&self, grant: &AuthGrant) -> Result<Option<ScopeSet>, AuthorityError> {
        if !grant.is_active_at(self.now) {
            return Ok(None);
        }
        // The store revokes such a grant too; this takes effect before its cache notices.
        if grant
            .secret_id
            .is_some_and(|s| self.revocations.revokes_secret(s))
        {
            return Ok(None);
        }
        let allowed = match grant.origin {
            Origin::Operator => return Ok(Some(grant.scope.clone())),
            Origin::App(app_id) => match self.app(app_id).await? {
                Some(app) if app.client_id.as_str() == grant.client_id => {
                    app.allowed_scopes.clone()
                }
                _ => return Ok(None),
            },
            Origin::Enrollment {
                app_id,
                enrollment_id,
            } => match self.enrollment_by_id(enrollment_id).await? {
                Some(chain)
                    if chain.app.id == app_id
                        && chain.enrollment.owner_id.as_str() == grant.profile.id
                        && !created_before(grant.created_at, chain.enrollment.created_at) =>
                {
                    chain.scope
                }
                _ => return Ok(None),
            },
        };
        Ok(Some(grant.scope.intersect(&allowed)))
    }

    /// The enrollment and its app, if both stand.
    pub async fn enrollment_by_id(
        &self,
        id: EnrollmentId,
    ) -> Result<Option<EnrollmentChain>, AuthorityError> {
        match self.records.enrollment(id).await? {
            Some(enrollment) => self.enrollment(enrollment).await,
            None => Ok(None),
        }
    }

    async fn enrollment(
        &self,
        enrollment: Arc<Enrollment>,
    ) -> Result<Option<EnrollmentChain>, AuthorityError> {
        if enrollment.disabled {
            return Ok(None);
        }
        let Some(app) = self.app(enrollment.app_id).await? else {
            return Ok(None);
        };
        let scope = enrollment.scopes.intersect(&app.allowed_scopes);
        Ok(Some(EnrollmentChain {
            enrollment,
            app,
            scope,
        }))
    }

    /// The app, if it exists and is enabled.
    async fn app(&self, id: AppId) -> Result<Option<Arc<Application>>, AuthorityError> {
        Ok(self.records.app(id).await?.filter(|app| !app.disabled))
    }
}
