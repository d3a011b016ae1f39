use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A change that every replica must apply to what it remembers. Published through the
/// store (PostgreSQL `NOTIFY`) so that a revoke on one replica is refused on all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// An app's secret, scopes or status changed, or it was deleted. `id` is absent in
    /// notices from replicas older than it; they make every app be read again.
    App {
        client_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Uuid>,
    },
    Enrollment {
        id: Uuid,
    },
    Grant {
        id: Uuid,
    },
    /// A token id is revoked until `exp` (unix seconds).
    Revoked {
        jti: String,
        exp: i64,
    },
    /// The signing keys changed (rotation).
    Keys,
}

/// What a change feed delivers: a change, or word about the feed itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeEvent {
    Changed(Change),
    /// The feed is down or silent: changes made elsewhere may go unheard until it resumes.
    Lost,
    /// The feed is listening again; changes made while it was lost were missed.
    Resumed,
}
