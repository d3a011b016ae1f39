//! Scope and scope-set parsing, rendering and coverage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::domain::{Scope, ScopeSet};

fuzz_target!(|text: &str| {
    if let Ok(scope) = Scope::parse(text) {
        assert_eq!(scope.to_string(), text, "a scope renders as it was written");
        assert!(text.is_ascii() && !text.bytes().any(|b| b.is_ascii_control() || b == b' '));
        assert!(scope.covers(&scope));
    }

    // Two sets from one input: coverage and `within` must agree with each other.
    let (left, right) = text.split_once('|').unwrap_or((text, ""));
    let (Ok(wanted), Ok(allowed)) = (ScopeSet::parse(left), ScopeSet::parse(right)) else {
        return;
    };
    assert_eq!(ScopeSet::parse(&wanted.to_string()).as_ref(), Ok(&wanted));
    let kept = wanted.within(&allowed);
    for scope in wanted.iter() {
        assert_eq!(kept.iter().any(|k| k == scope), allowed.covers(scope));
    }
    assert!(kept.iter().all(|k| wanted.iter().any(|w| w == k)));
    assert!(allowed.covers_all(&kept));
    assert_eq!(allowed.covers_all(&wanted), kept == wanted);
    assert_eq!(allowed.first_uncovered(&wanted).is_none(), kept == wanted);
});
