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

impl Scope {
    /// The scope both `self` and `other` cover, if any: whatever it covers, both cover.
    fn meet(&self, other: &Scope) -> Option<Scope> {
        let resource = if self.resource_is_wildcard() {
            other.resource.clone()
        } else if other.resource_is_wildcard() || self.resource == other.resource {
            self.resource.clone()
        } else {
            return None;
        };
        let action = match (self.action.as_str(), other.action.as_str()) {
            (WILDCARD, a) | (a, WILDCARD) => a.to_owned(),
            (a, b) if a == b => a.to_owned(),
            // A write covers delete, so what both a write and a delete cover is delete.
            ("write", "delete") | ("delete", "write") => "delete".to_owned(),
            _ => return None,
        };
        Some(Scope { resource, action })
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

    /// What both sets allow: a scope is covered by the result exactly when both cover it.
    /// Every link of a credential's chain narrows its token this way.
    pub fn intersect(&self, other: &ScopeSet) -> ScopeSet {
        let mut scopes: Vec<Scope> = self
            .0
            .iter()
            .flat_map(|a| other.0.iter().filter_map(move |b| a.meet(b)))
            .collect();
        scopes.sort();
        scopes.dedup();
        // Drop what another scope already covers, so the result reads simply; of two that
        // cover each other (`*:read`, `all:read`) the first stays.
        let redundant = |s: &Scope| {
            scopes
                .iter()
                .any(|t| t != s && t.covers(s) && (!s.covers(t) || t < s))
        };
        let kept: Vec<Scope> = scopes.iter().filter(|s| !redundant(s)).cloned().collect();
        Self(kept)
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

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// The grammar restated independently of `is_part`, as the oracle for arbitrary input.
    fn grammar_accepts(raw: &str) -> bool {
        let part_ok = |p: &str| {
            p == "*"
                || (!p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)))
        };
        let parts: Vec<&str> = raw.split(':').collect();
        raw.len() <= Scope::MAX_LEN && parts.len() == 2 && part_ok(parts[0]) && part_ok(parts[1])
    }

    /// A few names, so that arbitrary pairs of scopes often overlap.
    fn small_scope() -> impl Strategy<Value = Scope> {
        let resource = prop_oneof!["\\*", "all", "users", "grants"];
        let action = prop_oneof!["\\*", "read", "write", "delete"];
        (resource, action).prop_map(|(r, a)| Scope::parse(&format!("{r}:{a}")).unwrap())
    }

    fn any_valid_scope() -> impl Strategy<Value = String> {
        let part = prop_oneof![1 => Just("*".to_owned()), 9 => "[A-Za-z0-9_.-]{1,40}"];
        (part.clone(), part).prop_map(|(r, a)| format!("{r}:{a}"))
    }

    fn small_set() -> impl Strategy<Value = ScopeSet> {
        proptest::collection::vec(small_scope(), 0..6).prop_map(|mut v| {
            v.sort();
            v.dedup();
            ScopeSet(v)
        })
    }

    proptest! {
        #![proptest_config(crate::proptest_config(512))]

        #[test]
        fn parse_accepts_exactly_the_grammar(raw in prop_oneof![
            any::<String>(),
            any_valid_scope(),
            // Valid scopes with one foreign character spliced in: control, NUL, space,
            // non-ASCII, a second colon.
            (any_valid_scope(), any::<prop::sample::Index>(), prop_oneof![
                Just('\0'), Just(' '), Just('\t'), Just('\n'), Just(':'), Just('é'),
                Just('\u{7f}'), any::<char>(),
            ]).prop_map(|(s, at, c)| {
                let mut chars: Vec<char> = s.chars().collect();
                chars.insert(at.index(chars.len() + 1), c);
                chars.into_iter().collect()
            }),
        ]) {
            let parsed = Scope::parse(&raw);
            prop_assert_eq!(parsed.is_ok(), grammar_accepts(&raw), "{:?}", raw);
            if let Ok(scope) = parsed {
                prop_assert_eq!(scope.to_string(), raw);
            }
        }

        #[test]
        fn a_set_parses_back_from_its_rendering(
            items in proptest::collection::vec(any_valid_scope(), 0..ScopeSet::MAX_SCOPES),
            gaps in proptest::collection::vec(" {1,3}", ScopeSet::MAX_SCOPES + 1),
        ) {
            let set = ScopeSet::from_items(items.iter().map(String::as_str)).unwrap();
            prop_assert_eq!(ScopeSet::parse(&set.to_string()).unwrap(), set.clone());
            // Order, repeats and runs of spaces do not matter.
            let mut messy = gaps[0].clone();
            for (item, gap) in items.iter().rev().zip(&gaps[1..]) {
                messy.push_str(item);
                messy.push_str(gap);
            }
            prop_assert_eq!(ScopeSet::parse(&messy).unwrap(), set.clone());
            let rendered = set.to_vec();
            let mut sorted = rendered.clone();
            sorted.sort_by(|a, b| Scope::parse(a).unwrap().cmp(&Scope::parse(b).unwrap()));
            sorted.dedup();
            prop_assert_eq!(rendered, sorted, "sorted and deduplicated");
        }

        #[test]
        fn more_than_max_scopes_are_refused(extra in 1..5usize) {
            let items: Vec<String> = (0..ScopeSet::MAX_SCOPES + extra)
                .map(|i| format!("r{}:read", i % 3))
                .collect();
            prop_assert_eq!(
                ScopeSet::from_items(items.iter().map(String::as_str)),
                Err(InvalidScope::TooMany),
                "the limit counts what was sent, before deduplication"
            );
        }

        #[test]
        fn coverage_is_reflexive_and_transitive(
            a in small_scope(), b in small_scope(), c in small_scope(),
        ) {
            prop_assert!(a.covers(&a));
            if a.covers(&b) && b.covers(&c) {
                prop_assert!(a.covers(&c), "{} ⊇ {} ⊇ {} but not {} ⊇ {}", a, b, c, a, c);
            }
        }

        #[test]
        fn the_intersection_covers_exactly_what_both_cover(
            a in small_set(), b in small_set(), wanted in small_scope(),
        ) {
            let both = a.intersect(&b);
            prop_assert_eq!(
                both.covers(&wanted),
                a.covers(&wanted) && b.covers(&wanted),
                "{} ∩ {} = {} on {}", a, b, both, wanted
            );
            let other_way = b.intersect(&a);
            prop_assert!(
                both.covers_all(&other_way) && other_way.covers_all(&both),
                "commutative, up to spelling (`*` and `all`)"
            );
            prop_assert_eq!(both.intersect(&both), both.clone(), "idempotent");
        }

        #[test]
        fn within_keeps_exactly_what_the_allowed_set_covers(
            wanted in small_set(), allowed in small_set(),
        ) {
            let kept = wanted.within(&allowed);
            for scope in wanted.iter() {
                prop_assert_eq!(kept.iter().any(|k| k == scope), allowed.covers(scope));
            }
            prop_assert!(kept.iter().all(|k| wanted.iter().any(|w| w == k)), "a subset of wanted");
            prop_assert!(allowed.covers_all(&kept), "covered by allowed");
            prop_assert_eq!(kept.within(&allowed), kept.clone(), "idempotent");
            prop_assert_eq!(allowed.covers_all(&wanted), kept == wanted);
            prop_assert_eq!(
                allowed.first_uncovered(&wanted),
                wanted.iter().find(|w| !kept.iter().any(|k| k == *w))
            );
        }
    }
}
