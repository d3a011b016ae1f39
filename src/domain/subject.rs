use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of principal a token speaks for. Carried in every token (`sub_kind`) so
/// that an app's `client_id` and an owner's id can never be confused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    App,
    Owner,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Owner => "owner",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "app" => Some(Self::App),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a token speaks for: always an id together with its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    pub kind: SubjectKind,
    pub id: String,
}
