//! Plain data types shared by every layer. No I/O, no framework types.

mod app_secret;
mod application;
mod audit;
mod auth_grant;
mod change;
mod enrollment;
mod ids;
mod network;
mod quota;
mod scope;
mod signing_key;
mod subject;

pub use app_secret::{AppSecret, NewSecret, SecretId, SecretState};
pub use application::{AppSettings, Application, NewApplication};
pub use audit::{AuditRecord, CredentialRef, DailyCount};
pub use auth_grant::{AuthGrant, GrantId, GrantStatus, Origin, Profile, parse_utc_timestamp};
pub use change::{Change, ChangeEvent};
pub use enrollment::{Enrollment, EnrollmentId, OwnerId};
pub use ids::{AppId, ClientId, InvalidId};
pub use network::{CidrList, InvalidCidr};
pub use quota::{QuotaState, QuotaStatus, QuotaWindow, TokenQuota};
pub use scope::{InvalidScope, Scope, ScopeSet};
pub use signing_key::{KeyState, SigningAlgorithm, SigningKeyRecord};
pub use subject::{Subject, SubjectKind};
