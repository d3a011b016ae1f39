//! How the calling application's credentials are taken from a request: HTTP Basic, the body,
//! or both, by the rule of the route's dialect. Each rule is one function, which decides the
//! pair before anything is looked up or hashed.

use std::net::IpAddr;

use axum::http::HeaderMap;

use super::{
    error::{ApiError, Dialect},
    extract::{BasicAuth, BasicCredentials, basic_auth},
};
use crate::authority::{AuthorityError, ClientCredentials};

/// Where a dialect takes the application's credentials from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// RFC 6749 §2.3: HTTP Basic or the body, one method per request.
    OneMethod,
    /// HTTP Basic, the body, or both naming the same credentials (the official Invopop Go
    /// client always sends both).
    SameInBoth,
    /// The body only.
    BodyOnly,
}

/// A dialect whose routes authenticate the calling application.
pub trait AuthenticatesClients: Dialect {
    const CLIENT_AUTH: ClientAuth;

    /// The answer when no credentials were sent at all.
    fn missing_credentials() -> ApiError<Self> {
        AuthorityError::InvalidClient.into()
    }
}

/// Client credentials as the request presented them.
#[derive(Debug)]
pub enum Presented {
    Basic(BasicCredentials),
    Body {
        client_id: String,
        client_secret: String,
    },
}

impl Presented {
    /// The credentials for the core to judge: Basic's readings (form-decoded, and as sent
    /// when that differs), or the body's one.
    pub fn judge_from(&self, source_ip: IpAddr) -> ClientCredentials<'_> {
        match self {
            Self::Basic(basic) => basic.presented(source_ip),
            Self::Body {
                client_id,
                client_secret,
            } => ClientCredentials {
                client_id,
                client_secret,
                as_sent: None,
                source_ip,
            },
        }
    }
}

/// Why credentials are refused before any lookup.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Like any bad credential: malformed, or two forms that differ.
    Invalid,
    Missing,
    TwoMethods,
    OtherClientId,
}

/// The application's credentials from `headers` and the body's `client_id` /
/// `client_secret`, by `D`'s rule.
pub fn client_credentials<D: AuthenticatesClients>(
    headers: &HeaderMap,
    client_id: Option<String>,
    client_secret: Option<String>,
) -> Result<Presented, ApiError<D>> {
    let decided = match D::CLIENT_AUTH {
        ClientAuth::OneMethod => one_method(basic_auth(headers), client_id, client_secret),
        ClientAuth::SameInBoth => same_in_both(basic_auth(headers), client_id, client_secret),
        ClientAuth::BodyOnly => body_only(client_id, client_secret),
    };
    decided.map_err(|refusal| match refusal {
        Refusal::Invalid => AuthorityError::InvalidClient.into(),
        Refusal::Missing => D::missing_credentials(),
        Refusal::TwoMethods => {
            ApiError::bad_request("use one client authentication method, not both")
        }
        Refusal::OtherClientId => {
            ApiError::bad_request("client_id in the body does not match the Authorization header")
        }
    })
}

/// RFC 6749 §2.3: `client_secret_basic` or `client_secret_post`, never both. A body
/// `client_id` beside Basic may only repeat the Basic one (either of its readings).
fn one_method(
    basic: BasicAuth,
    client_id: Option<String>,
    client_secret: Option<String>,
) -> Result<Presented, Refusal> {
    match (basic, client_id, client_secret) {
        (BasicAuth::Malformed, _, _) => Err(Refusal::Invalid),
        (BasicAuth::Present(_), _, Some(_)) => Err(Refusal::TwoMethods),
        (BasicAuth::Present(basic), body_id, None) => basic
            .named_alike(body_id.as_deref(), None)
            .map(Presented::Basic)
            .ok_or(Refusal::OtherClientId),
        (BasicAuth::Absent, Some(client_id), Some(client_secret)) => Ok(Presented::Body {
            client_id,
            client_secret,
        }),
        (BasicAuth::Absent, _, _) => Err(Refusal::Missing),
    }
}

/// Basic, the body, or both: when both are sent they must name the same credentials. A
/// difference is any bad credential's refusal, decided in constant time and not saying which
/// part differed. The body carries no encoding, so it also tells which of Basic's readings
/// (form-decoded or as sent) the client meant.
fn same_in_both(
    basic: BasicAuth,
    client_id: Option<String>,
    client_secret: Option<String>,
) -> Result<Presented, Refusal> {
    match (basic, client_id, client_secret) {
        (BasicAuth::Present(basic), client_id, client_secret) => basic
            .named_alike(client_id.as_deref(), client_secret.as_deref())
            .map(Presented::Basic)
            .ok_or(Refusal::Invalid),
        (BasicAuth::Malformed, _, _) => Err(Refusal::Invalid),
        (BasicAuth::Absent, client_id, client_secret) => body_only(client_id, client_secret),
    }
}

/// The body alone; an `Authorization` header is not read.
fn body_only(
    client_id: Option<String>,
    client_secret: Option<String>,
) -> Result<Presented, Refusal> {
    match (client_id, client_secret) {
        (Some(client_id), Some(client_secret)) => Ok(Presented::Body {
            client_id,
            client_secret,
        }),
        _ => Err(Refusal::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id: &str, secret: &str) -> BasicAuth {
        BasicAuth::Present(BasicCredentials {
            client_id: id.into(),
            client_secret: secret.into(),
            as_sent: None,
        })
    }

    fn pair(presented: Result<Presented, Refusal>) -> Result<(String, String), Refusal> {
        presented.map(|p| {
            let c = p.judge_from(IpAddr::from([127, 0, 0, 1]));
            (c.client_id.to_owned(), c.client_secret.to_owned())
        })
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn one_method_takes_basic_or_the_body_never_both() {
        let ok = |id: &str, secret: &str| Ok((id.to_owned(), secret.to_owned()));
        let cases = [
            (basic("a", "s"), None, None, ok("a", "s"), "Basic alone"),
            (
                basic("a", "s"),
                some("a"),
                None,
                ok("a", "s"),
                "Basic with the same body id",
            ),
            (
                basic("a", "s"),
                some("b"),
                None,
                Err(Refusal::OtherClientId),
                "another body id",
            ),
            (
                basic("a", "s"),
                None,
                some("s"),
                Err(Refusal::TwoMethods),
                "a body secret too",
            ),
            (
                BasicAuth::Absent,
                some("a"),
                some("s"),
                ok("a", "s"),
                "the body alone",
            ),
            (
                BasicAuth::Absent,
                some("a"),
                None,
                Err(Refusal::Missing),
                "no secret",
            ),
            (
                BasicAuth::Malformed,
                some("a"),
                some("s"),
                Err(Refusal::Invalid),
                "bad Basic",
            ),
        ];
        for (basic, id, secret, expected, why) in cases {
            assert_eq!(pair(one_method(basic, id, secret)), expected, "{why}");
        }
    }

    #[test]
    fn same_in_both_accepts_two_forms_only_when_they_agree() {
        let ok = |id: &str, secret: &str| Ok((id.to_owned(), secret.to_owned()));
        let cases = [
            (basic("a", "s"), None, None, ok("a", "s"), "Basic alone"),
            (
                basic("a", "s"),
                some("a"),
                some("s"),
                ok("a", "s"),
                "both, the same",
            ),
            (
                basic("a", "s"),
                some("a"),
                some("t"),
                Err(Refusal::Invalid),
                "another secret",
            ),
            (
                basic("a", "s"),
                some("b"),
                None,
                Err(Refusal::Invalid),
                "another id",
            ),
            (
                BasicAuth::Absent,
                some("a"),
                some("s"),
                ok("a", "s"),
                "the body alone",
            ),
            (
                BasicAuth::Absent,
                None,
                some("s"),
                Err(Refusal::Missing),
                "no id",
            ),
            (
                BasicAuth::Malformed,
                some("a"),
                some("s"),
                Err(Refusal::Invalid),
                "bad Basic",
            ),
        ];
        for (basic, id, secret, expected, why) in cases {
            assert_eq!(pair(same_in_both(basic, id, secret)), expected, "{why}");
        }
    }
}
