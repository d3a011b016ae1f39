//! Scopes are `resource:action` pairs. `*` (or `all`) as the resource and `*` as the action
//! match anything in that position, and a `write` action also covers `delete`.

use std::fmt;

/// One `resource:action` scope, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    resource: String,
    action: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidScope {
    #[error("scope '{0}' is not of the form resource:action")]
    Malformed(String),
    #[error("a scope may be at most {} characters", Scope::MAX_LEN)]
    TooLong,
    #[error("at most {} scopes may be requested", ScopeSet::MAX_SCOPES)]
    TooMany,
}

const WILDCARD: &str = "*";

impl Scope {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, InvalidScope> {
        if raw.len() > Self::MAX_LEN {
            return Err(InvalidScope::TooLong);
        }
        let malformed = || InvalidScope::Malformed(raw.to_owned());
        let (resource, action) = raw.split_once(':').ok_or_else(malformed)?;
        if !is_part(resource) || !is_part(action) {
            return Err(malformed());
        }
        Ok(Self {
            resource: resource.to_owned(),
            action: action.to_owned(),
        })
    }

    fn resource_is_wildcard(&self) -> bool {
        self.resource == WILDCARD || self.resource == "all"
    }

    /// Whether holding `self` entitles the holder to `wanted`.
    /// A wildcard is only covered by a wildcard in the same position.
    pub fn covers(&self, wanted: &Scope) -> bool {
        let resource = self.resource_is_wildcard()
            || (!wanted.resource_is_wildcard() && self.resource == wanted.resource);
        let action = self.action == WILDCARD
            || (wanted.action != WILDCARD
                && (self.action == wanted.action
                    || (self.action == "write" && wanted.action == "delete")));
        resource && action
    }
}

fn is_part(s: &str) -> bool {
    s == WILDCARD
        || (!s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.action)
    }
}

/// A deduplicated, ordered set of scopes; renders space-delimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    pub const MAX_SCOPES: usize = 64;

    /// Parses a space-delimited list (RFC 6749 §3.3).
    pub fn parse(raw: &str) -> Result<Self, InvalidScope> {
        Self::from_items(raw.split(' ').filter(|s| !s.is_empty()))
    }

    pub fn from_items<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, InvalidScope> {
        let mut scopes = Vec::new();
        for item in items {
            if scopes.len() == Self::MAX_SCOPES {
                return Err(InvalidScope::TooMany);
            }
            scopes.push(Scope::parse(item)?);
        }
        scopes.sort();
        scopes.dedup();
        Ok(Self(scopes))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn covers(&self, wanted: &Scope) -> bool {
        self.0.iter().any(|held| held.covers(wanted))
    }

    pub fn covers_all(&self, wanted: &ScopeSet) -> bool {
        wanted.0.iter().all(|w| self.covers(w))
    }

    /// The first scope of `wanted` that `self` does not cover.
    pub fn first_uncovered<'a>(&self, wanted: &'a ScopeSet) -> Option<&'a Scope> {
        wanted.0.iter().find(|w| !self.covers(w))
    }

    /// The scopes of `self` that `allowed` covers.
    pub fn within(&self, allowed: &ScopeSet) -> ScopeSet {
        Self(
            self.0
                .iter()
                .filter(|s| allowed.covers(s))
                .cloned()
                .collect(),
        )
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().map(Scope::to_string).collect()
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{scope}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(raw: &str) -> ScopeSet {
        ScopeSet::parse(raw).unwrap()
    }

    fn scope(raw: &str) -> Scope {
        Scope::parse(raw).unwrap()
    }

    #[test]
    fn coverage_follows_the_contract() {
        let cases = [
            ("all:read", "authGrants:read", true, "all as resource"),
            ("all:write", "authGrants:write", true, "all as resource"),
            (
                "all:write",
                "authGrants:delete",
                true,
                "write covers delete",
            ),
            (
                "all:read",
                "authGrants:write",
                false,
                "read never covers write",
            ),
            ("*:*", "authGrants:delete", true, "full wildcard"),
            ("authGrants:*", "authGrants:delete", true, "action wildcard"),
            ("authGrants:*", "users:read", false, "other resource"),
            ("users:read", "*:read", false, "a wildcard needs a wildcard"),
            ("users:*", "users:*", true, "identical wildcard"),
            (
                "users:write",
                "users:*",
                false,
                "action wildcard needs a wildcard",
            ),
            (
                "*:read",
                "all:read",
                true,
                "* and all are the same resource wildcard",
            ),
            (
                "users:delete",
                "users:write",
                false,
                "delete never covers write",
            ),
        ];
        for (held, wanted, expected, why) in cases {
            assert_eq!(
                scope(held).covers(&scope(wanted)),
                expected,
                "{held} ⊇ {wanted}: {why}"
            );
        }
    }

    #[test]
    fn malformed_scopes_are_rejected() {
        let long = format!("{}:read", "a".repeat(Scope::MAX_LEN));
        for (raw, why) in [
            ("read", "no colon"),
            (":read", "empty resource"),
            ("users:", "empty action"),
            ("a:b:c", "two colons"),
            ("us ers:read", "inner space"),
            ("users:re\0ad", "NUL byte"),
            ("üsers:read", "non-ASCII"),
            (long.as_str(), "too long"),
        ] {
            assert!(
                Scope::parse(raw).is_err(),
                "{raw:?} must be rejected: {why}"
            );
        }
    }

    #[test]
    fn sets_dedupe_sort_and_render_space_delimited() {
        let s = set("  b:write a:read b:write ");
        assert_eq!(s.to_string(), "a:read b:write");
        assert_eq!(s.to_vec(), vec!["a:read", "b:write"]);
        assert!(set("").is_empty());
    }

    #[test]
    fn too_many_scopes_are_rejected() {
        let raw = (0..=ScopeSet::MAX_SCOPES)
            .map(|i| format!("r{i}:read"))
            .collect::<Vec<_>>();
        assert_eq!(
            ScopeSet::from_items(raw.iter().map(String::as_str)),
            Err(InvalidScope::TooMany)
        );
    }

    #[test]
    fn subset_checks_name_the_first_missing_scope() {
        let held = set("all:read users:write");
        assert!(held.covers_all(&set("users:read users:delete")));
        let wanted = set("users:read billing:write");
        assert_eq!(held.first_uncovered(&wanted), Some(&scope("billing:write")));
    }
}
