//! Pieces of requests that several dialects read the same way.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, header, request::Parts},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use ipnet::IpNet;
use percent_encoding::percent_decode_str;
use subtle::{Choice, ConstantTimeEq};

use super::AppState;
use crate::authority::ClientCredentials;

/// The caller's address: the socket peer, or — only when that peer is a trusted proxy —
/// the nearest untrusted hop of `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

#[derive(Debug, Default)]
pub struct TrustedProxies(pub Arc<[IpNet]>);

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// IPv4 peers of a dual-stack listener arrive as `::ffff:a.b.c.d`, and a proxy may write
    /// them so too: every address is made canonical first, so one IPv4 client is keyed,
    /// logged and matched against `trusted_proxies` as the IPv4 address it is (left mapped,
    /// all of IPv4 would share one IPv6 /64 and one rate-limit bucket).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        // Walk from the nearest hop outwards; the first address we do not trust is the
        // client. Anything unparsable ends the walk: nothing beyond it can be believed.
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                Ok(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        Ok(Self(state.trusted_proxies.client_ip(peer, &parts.headers)))
    }
}

/// How a request body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Form,
    /// No `Content-Type` at all.
    Absent,
    Unsupported,
}

pub fn body_format(headers: &HeaderMap) -> BodyFormat {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return BodyFormat::Absent;
    };
    let Ok(value) = value.to_str() else {
        return BodyFormat::Unsupported;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => BodyFormat::Json,
        "application/x-www-form-urlencoded" => BodyFormat::Form,
        e if e.starts_with("application/") && e.ends_with("+json") => BodyFormat::Json,
        _ => BodyFormat::Unsupported,
    }
}

/// Credentials from an `Authorization: Basic` header.
///
/// RFC 6749 §2.3.1 has clients form-encode the id and the secret before base64, but most do
/// not (`curl -u`, Go's `SetBasicAuth`, requests, authlib's default), so both readings are
/// kept: `client_id`/`client_secret` are the form-decoded parts, and `as_sent` holds the parts
/// exactly as sent when decoding changed them (a secret with `+` or `%`). Parts that do not
/// decode at all (a `%FF` that is not UTF-8) are read only as sent.
#[derive(Debug, PartialEq, Eq)]
pub struct BasicCredentials {
    pub client_id: String,
    pub client_secret: String,
    pub as_sent: Option<(String, String)>,
}

impl BasicCredentials {
    /// The core's view, for a request from `source_ip`.
    pub fn presented(&self, source_ip: IpAddr) -> ClientCredentials<'_> {
        ClientCredentials {
            client_id: &self.client_id,
            client_secret: &self.client_secret,
            as_sent: self
                .as_sent
                .as_ref()
                .map(|(id, secret)| (id.as_str(), secret.as_str())),
            source_ip,
        }
    }

    /// Every reading of the header, the form-decoded one first.
    pub fn readings(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once((self.client_id.as_str(), self.client_secret.as_str())).chain(
            self.as_sent
                .as_ref()
                .map(|(id, secret)| (id.as_str(), secret.as_str())),
        )
    }

    /// Only the readings whose parts equal the ones sent beside them in the body (`None`:
    /// not sent there, anything matches), compared in constant time; `None` when no reading
    /// does. The body carries no encoding, so it tells which reading the client meant.
    pub fn named_alike(self, id: Option<&str>, secret: Option<&str>) -> Option<Self> {
        let same = |body: Option<&str>, basic: &str| {
            body.map_or(Choice::from(1), |body| {
                body.as_bytes().ct_eq(basic.as_bytes())
            })
        };
        let decoded = same(id, &self.client_id) & same(secret, &self.client_secret);
        let raw = self
            .as_sent
            .as_ref()
            .map_or(Choice::from(0), |(raw_id, raw_secret)| {
                same(id, raw_id) & same(secret, raw_secret)
            });
        match (bool::from(decoded), bool::from(raw)) {
            (true, true) => Some(self),
            (true, false) => Some(Self {
                as_sent: None,
                ..self
            }),
            (false, true) => self.as_sent.map(|(client_id, client_secret)| Self {
                client_id,
                client_secret,
                as_sent: None,
            }),
            (false, false) => None,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum BasicAuth {
    Absent,
    Malformed,
    Present(BasicCredentials),
}

/// Bounds the header before decoding; credentials are never this long.
const MAX_AUTHORIZATION_LEN: usize = 4096;

pub fn basic_auth(headers: &HeaderMap) -> BasicAuth {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return BasicAuth::Absent;
    };
    decode_basic(value.as_bytes())
}

pub fn decode_basic(value: &[u8]) -> BasicAuth {
    let Ok(value) = std::str::from_utf8(value) else {
        return BasicAuth::Malformed;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return BasicAuth::Absent;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return BasicAuth::Absent;
    }
    if value.len() > MAX_AUTHORIZATION_LEN {
        return BasicAuth::Malformed;
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    // An unencoded id cannot hold a colon (RFC 7617 §2), so the first one ends it.
    let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return BasicAuth::Malformed;
    };
    let credentials = match (form_decode(id), form_decode(secret)) {
        (Some(client_id), Some(client_secret)) => {
            let unchanged = client_id == id && client_secret == secret;
            BasicCredentials {
                client_id,
                client_secret,
                as_sent: (!unchanged).then(|| (id.to_owned(), secret.to_owned())),
            }
        }
        _ => BasicCredentials {
            client_id: id.to_owned(),
            client_secret: secret.to_owned(),
            as_sent: None,
        },
    };
    if credentials.client_id.is_empty() {
        return BasicAuth::Malformed;
    }
    BasicAuth::Present(credentials)
}

fn form_decode(part: &str) -> Option<String> {
    percent_decode_str(&part.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let encoded = STANDARD.encode("my%20app:s%3Acret+x");
        assert_eq!(
            decode_basic(format!("Basic {encoded}").as_bytes()),
            BasicAuth::Present(BasicCredentials {
                client_id: "my app".into(),
                client_secret: "s:cret x".into(),
                as_sent: Some(("my%20app".into(), "s%3Acret+x".into())),
            })
        );
    }

    #[test]
    fn unencoded_basic_credentials_are_kept_as_sent() {
        let generated = STANDARD.encode("pcc_Ab-9_z:pcs_Zy-8_x");
        assert_eq!(
            decode_basic(format!("Basic {generated}").as_bytes()),
            BasicAuth::Present(BasicCredentials {
                client_id: "pcc_Ab-9_z".into(),
                client_secret: "pcs_Zy-8_x".into(),
                as_sent: None,
            }),
            "nothing to decode: one reading, so one argon2 run"
        );
        // `%FF` decodes to no UTF-8 at all: the only reading is the one sent.
        let raw = STANDARD.encode("app:a+b%FF:c d");
        assert_eq!(
            decode_basic(format!("Basic {raw}").as_bytes()),
            BasicAuth::Present(BasicCredentials {
                client_id: "app".into(),
                client_secret: "a+b%FF:c d".into(),
                as_sent: None,
            })
        );
    }

    #[test]
    fn the_body_picks_the_basic_reading_it_names() {
        let basic = || BasicCredentials {
            client_id: "app".into(),
            client_secret: "a b%".into(),
            as_sent: Some(("app".into(), "a+b%25".into())),
        };
        let only = |id: &str, secret: &str| BasicCredentials {
            client_id: id.into(),
            client_secret: secret.into(),
            as_sent: None,
        };
        assert_eq!(
            basic().named_alike(Some("app"), Some("a b%")),
            Some(only("app", "a b%"))
        );
        assert_eq!(
            basic().named_alike(Some("app"), Some("a+b%25")),
            Some(only("app", "a+b%25"))
        );
        assert_eq!(basic().named_alike(None, None), Some(basic()));
        assert_eq!(basic().named_alike(Some("app"), None), Some(basic()));
        assert_eq!(basic().named_alike(Some("app"), Some("other")), None);
        assert_eq!(basic().named_alike(Some("other"), None), None);
    }

    #[test]
    fn malformed_basic_headers_are_told_apart_from_absent_ones() {
        let no_colon = format!("Basic {}", STANDARD.encode("nocolon"));
        let empty_id = format!("Basic {}", STANDARD.encode(":secret"));
        let bad_utf8 = format!("Basic {}", STANDARD.encode([0xff, b':', b'x']));
        for (value, why) in [
            ("Basic !!!", "not base64"),
            (no_colon.as_str(), "no colon"),
            (empty_id.as_str(), "empty client id"),
            (bad_utf8.as_str(), "invalid UTF-8"),
        ] {
            assert_eq!(
                decode_basic(value.as_bytes()),
                BasicAuth::Malformed,
                "{why}"
            );
        }
        assert_eq!(decode_basic(b"Bearer abc"), BasicAuth::Absent);
    }

    #[test]
    fn content_types_are_classified() {
        let cases = [
            (Some("application/json"), BodyFormat::Json),
            (Some("Application/JSON; charset=utf-8"), BodyFormat::Json),
            (Some("application/x-www-form-urlencoded"), BodyFormat::Form),
            (Some("text/plain"), BodyFormat::Unsupported),
            (None, BodyFormat::Absent),
        ];
        for (ct, expected) in cases {
            let h = ct.map_or_else(HeaderMap::new, |ct| headers(&[("content-type", ct)]));
            assert_eq!(body_format(&h), expected, "{ct:?}");
        }
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct GoShaped {
        id: Option<String>,
        #[serde(rename = "ID")]
        upper_id: Option<String>,
        data: Option<serde_json::Value>,
    }

    fn go(body: &str) -> Result<GoShaped, String> {
        parse_json_go(body.as_bytes())
    }

    #[test]
    fn go_keys_match_exactly_first_then_ignoring_case() {
        let folded = go(r#"{"Data":{"Data":1,"data":2},"iD":"x"}"#).unwrap();
        assert_eq!(
            folded.data,
            Some(serde_json::json!({"Data": 1, "data": 2})),
            "only the body's own keys fold, not data's"
        );
        assert_eq!(folded.id.as_deref(), Some("x"));
        let exact = go(r#"{"ID":"upper"}"#).unwrap();
        assert_eq!(
            (exact.id, exact.upper_id.as_deref()),
            (None, Some("upper")),
            "`ID` is a field of its own, though it also folds onto `id`"
        );
        let both = go(r#"{"Id":"a","ID":"b"}"#).unwrap();
        assert_eq!(
            (both.id.as_deref(), both.upper_id.as_deref()),
            (Some("a"), Some("b"))
        );
        assert_eq!(go(r#"{"Unknown":1}"#).unwrap().data, None);
    }

    #[test]
    fn go_keys_fold_as_go_does_beyond_ascii() {
        #[derive(Debug, serde::Deserialize)]
        struct Named {
            kind: Option<u8>,
            size: Option<u8>,
        }
        let named: Named =
            parse_json_go("{\"\u{212A}IND\":1,\"\u{17F}ize\":2}".as_bytes()).unwrap();
        assert_eq!(
            (named.kind, named.size),
            (Some(1), Some(2)),
            "Kelvin sign, long s"
        );
        assert_eq!(
            go("{\"\u{131}d\":\"x\"}").unwrap().id,
            None,
            "dotless i is not i"
        );
    }

    #[test]
    fn two_keys_for_one_field_are_refused() {
        for body in [
            r#"{"data":1,"Data":2}"#,
            r#"{"DATA":1,"data":2}"#,
            r#"{"Data":1,"dATA":2}"#,
            r#"{"data":1,"data":2}"#,
        ] {
            assert!(go(body).is_err(), "{body}");
        }
    }

    #[test]
    fn go_keys_leave_other_json_to_serde() {
        for body in ["[", "\"text\"", "{\"data\":1} trailing", ""] {
            assert!(go(body).is_err(), "{body:?}");
        }
        assert_eq!(
            go(r#"{"data":null}"#).unwrap(),
            GoShaped {
                id: None,
                upper_id: None,
                data: None
            }
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies(vec!["10.0.0.0/8".parse().unwrap()].into());
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.2")]);
        let untrusted_peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(proxies.client_ip(untrusted_peer, &h), untrusted_peer);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            proxies.client_ip(proxy, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap(),
            "the nearest untrusted hop, not the spoofable leftmost one"
        );
        let garbage = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(proxies.client_ip(proxy, &garbage), proxy);
    }

    #[test]
    fn ipv4_mapped_addresses_are_read_as_ipv4() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(v4("::ffff:203.0.113.9"), &HeaderMap::new()),
            v4("203.0.113.9"),
            "a dual-stack listener's IPv4 peer"
        );
        // A mapped proxy address is trusted as its IPv4 self, and a mapped hop is read so too.
        let proxies = TrustedProxies(vec!["10.0.0.0/8".parse().unwrap()].into());
        let h = headers(&[("x-forwarded-for", "::ffff:198.51.100.7, ::ffff:10.0.0.2")]);
        assert_eq!(
            proxies.client_ip(v4("::ffff:10.0.0.1"), &h),
            v4("198.51.100.7")
        );
        // Real IPv6 stays IPv6.
        assert_eq!(
            none.client_ip(v4("2001:db8::1"), &HeaderMap::new()),
            v4("2001:db8::1")
        );
    }
}

/// The token of an `Authorization: Bearer` header, if that is the scheme used.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Why a body could not be read as the request type.
#[derive(Debug)]
pub enum BodyError {
    UnsupportedMediaType,
    Malformed(String),
}

/// How the keys of a JSON body's object are matched to the request type's field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKeys {
    /// serde's rule: the exact name.
    Exact,
    /// Go's `encoding/json` rule, for dialects that mirror a Go service: the exact name, or
    /// else the first field equal to it ignoring case. Unlike Go (last one wins), two keys
    /// for the same field are refused.
    GoFold,
}

/// Parses a JSON or form body; `absent` says how to read a body sent without a
/// `Content-Type`.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    absent: BodyFormat,
) -> Result<T, BodyError> {
    parse_body_keyed(headers, body, absent, JsonKeys::Exact)
}

/// [`parse_body`], with JSON keys matched to fields as `keys` says.
pub fn parse_body_keyed<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    absent: BodyFormat,
    keys: JsonKeys,
) -> Result<T, BodyError> {
    let format = match body_format(headers) {
        BodyFormat::Absent => absent,
        other => other,
    };
    parse_body_as(format, body, keys)
}

/// Reads a body in a format already resolved from its `Content-Type`.
pub fn parse_body_as<T: serde::de::DeserializeOwned>(
    format: BodyFormat,
    body: &[u8],
    keys: JsonKeys,
) -> Result<T, BodyError> {
    match (format, keys) {
        (BodyFormat::Json, JsonKeys::Exact) => serde_json::from_slice(body)
            .map_err(|e| BodyError::Malformed(format!("invalid JSON body: {e}"))),
        (BodyFormat::Json, JsonKeys::GoFold) => parse_json_go(body).map_err(BodyError::Malformed),
        (BodyFormat::Form, _) => parse_form(body).map_err(BodyError::Malformed),
        (BodyFormat::Absent | BodyFormat::Unsupported, _) => Err(BodyError::UnsupportedMediaType),
    }
}

/// Reads a JSON object's keys as Go's `encoding/json` does (see [`JsonKeys::GoFold`]): each
/// top-level key is renamed to the field it names, then serde reads the object as usual.
/// Values (`data`'s contents included) are left as sent.
fn parse_json_go<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let malformed = |e: serde_json::Error| format!("invalid JSON body: {e}");
    let Ok(Entries(entries)) = serde_json::from_slice::<Entries>(body) else {
        // Not an object: serde's own reading of the type gives the answer, as without folding.
        return serde_json::from_slice(body).map_err(malformed);
    };
    let fields = field_names::<T>();
    let mut named_by: Vec<Option<String>> = vec![None; fields.len()];
    let mut object = serde_json::Map::new();
    for (key, value) in entries {
        let field = fields
            .iter()
            .position(|f| *f == key)
            .or_else(|| fields.iter().position(|f| go_fold_eq(&key, f)));
        let Some(i) = field else {
            // Names no field: serde ignores it (or refuses it, if the type says so).
            object.insert(key, value);
            continue;
        };
        // Both keys fold onto a short ASCII field name, so echoing them is harmless.
        if let Some(first) = &named_by[i] {
            return Err(format!(
                "invalid JSON body: `{first}` and `{key}` both name the field `{}`",
                fields[i]
            ));
        }
        object.insert(fields[i].to_owned(), value);
        named_by[i] = Some(key);
    }
    serde_json::from_value(serde_json::Value::Object(object)).map_err(malformed)
}

/// A JSON object's entries in order, duplicates kept (a `Map` would silently keep the last).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// The field names a derived `Deserialize` asks for, read by a deserializer that only
/// listens, so the names live once (in the type) and cannot drift. Empty for anything that is
/// not read as a struct (keys then match exactly).
fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    struct Listen<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Listen<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("listened"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Listen(&mut fields));
    fields
}

/// Go's case-insensitive match (`bytes.EqualFold`) against an ASCII field name: ASCII letters
/// match either case, and the only other characters that fold onto ASCII letters are the
/// Kelvin sign (k) and the long s (s).
fn go_fold_eq(key: &str, field: &str) -> bool {
    let key = key.chars().map(|c| match c {
        '\u{212A}' => 'k',
        '\u{17F}' => 's',
        c => c.to_ascii_lowercase(),
    });
    key.eq(field.chars().map(|c| c.to_ascii_lowercase()))
}

/// Reads an `application/x-www-form-urlencoded` body. serde_urlencoded would turn invalid
/// UTF-8 (raw or percent-encoded) into U+FFFD; a credential must arrive exactly as sent or
/// not at all, so such bodies are refused.
pub fn parse_form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let utf8 = std::str::from_utf8(body).is_ok_and(|text| {
        text.split(['&', '='])
            .all(|part| percent_decode_str(part).decode_utf8().is_ok())
    });
    if !utf8 {
        return Err("invalid form body: not UTF-8".to_owned());
    }
    serde_urlencoded::from_bytes(body).map_err(|e| format!("invalid form body: {e}"))
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    use proptest::prelude::*;

    use super::*;

    /// Either encoding a client may use for one part: `application/x-www-form-urlencoded`
    /// (space as `+`) or plain percent-encoding of everything.
    fn form_encode(part: &str, plus_for_space: bool) -> String {
        if plus_for_space {
            serde_urlencoded::to_string([("", part)]).unwrap()[1..].to_owned()
        } else {
            utf8_percent_encode(part, NON_ALPHANUMERIC).to_string()
        }
    }

    fn basic_header(id: &str, secret: &str, plus: bool) -> String {
        let pair = format!("{}:{}", form_encode(id, plus), form_encode(secret, plus));
        format!("Basic {}", STANDARD.encode(pair))
    }

    fn content_type(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = value.parse() {
            h.insert(header::CONTENT_TYPE, v);
        }
        h
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct GoRequest {
        id: String,
        data: serde_json::Value,
    }

    fn any_case(s: &'static str) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<bool>(), s.len()).prop_map(move |upper| {
            s.chars()
                .zip(upper)
                .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(crate::proptest_config(512))]

        #[test]
        fn basic_credentials_round_trip(
            id in ".{1,64}", secret in ".{0,64}", plus in any::<bool>(),
            scheme in any_case("basic"), pad in " {0,2}",
        ) {
            let header = basic_header(&id, &secret, plus).replacen("Basic", &scheme, 1);
            let BasicAuth::Present(found) = decode_basic(format!("{pad}{header}{pad}").as_bytes())
            else {
                return Err(TestCaseError::fail("not decoded"));
            };
            prop_assert_eq!((found.client_id.as_str(), found.client_secret.as_str()), (id.as_str(), secret.as_str()));
        }

        #[test]
        fn unencoded_credentials_are_one_of_the_readings(
            id in "[!-9;-~]{1,32}", secret in "[ -~]{0,64}",
        ) {
            // Sent as `curl -u` does: no encoding, the first colon ends the id.
            let header = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
            let BasicAuth::Present(found) = decode_basic(header.as_bytes()) else {
                return Err(TestCaseError::fail("not decoded"));
            };
            prop_assert!(found.readings().any(|r| r == (id.as_str(), secret.as_str())));
            prop_assert!(found.readings().count() <= 2);
            // Without `%` or `+` there is nothing to decode: a single reading, one argon2 run.
            if !id.contains(['%', '+']) && !secret.contains(['%', '+']) {
                prop_assert_eq!(found.readings().count(), 1);
            }
        }

        #[test]
        fn percent_encoded_invalid_utf8_is_read_as_sent(
            id in "[a-z]{1,8}", secret in "[a-z]{0,8}", bad in 0x80..=0xffu8, in_id in any::<bool>(),
        ) {
            let bad = format!("%{bad:02X}");
            let (id, secret) = if in_id {
                (format!("{id}{bad}"), secret)
            } else {
                (id, format!("{secret}{bad}"))
            };
            let header = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
            prop_assert_eq!(
                decode_basic(header.as_bytes()),
                BasicAuth::Present(BasicCredentials { client_id: id, client_secret: secret, as_sent: None })
            );
        }

        #[test]
        fn other_schemes_are_absent_and_oversized_basic_is_malformed(
            scheme in "[A-Za-z]{1,10}", rest in "[ -~]{1,64}", huge in MAX_AUTHORIZATION_LEN..2 * MAX_AUTHORIZATION_LEN,
        ) {
            prop_assume!(!scheme.eq_ignore_ascii_case("basic"));
            prop_assert_eq!(decode_basic(format!("{scheme} {rest}").as_bytes()), BasicAuth::Absent);
            let long = format!("Basic {}", STANDARD.encode(format!("id:{}", "s".repeat(huge))));
            prop_assert_eq!(decode_basic(long.as_bytes()), BasicAuth::Malformed);
        }

        #[test]
        fn arbitrary_authorization_bytes_never_panic(value in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let BasicAuth::Present(c) = decode_basic(&value) {
                prop_assert!(!c.client_id.is_empty());
            }
        }

        #[test]
        fn content_types_ignore_case_and_parameters(
            (essence, expected) in prop_oneof![
                any_case("application/json").prop_map(|e| (e, BodyFormat::Json)),
                any_case("application/x-www-form-urlencoded").prop_map(|e| (e, BodyFormat::Form)),
                any_case("application/merge-patch+json").prop_map(|e| (e, BodyFormat::Json)),
                any_case("text/plain").prop_map(|e| (e, BodyFormat::Unsupported)),
                any_case("multipart/form-data").prop_map(|e| (e, BodyFormat::Unsupported)),
            ],
            params in "(; ?[a-z]{1,8}=[a-z0-9-]{1,8}){0,3}",
            pad in " {0,2}",
        ) {
            prop_assert_eq!(body_format(&content_type(&format!("{pad}{essence}{pad}{params}"))), expected);
        }

        #[test]
        fn arbitrary_bodies_and_content_types_never_panic(
            ct in prop_oneof![
                Just("application/json".to_owned()),
                Just("application/x-www-form-urlencoded".to_owned()),
                ".{0,40}",
            ],
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let headers = content_type(&ct);
            let format = body_format(&headers);
            let parsed = parse_body::<BTreeMap<String, serde_json::Value>>(&headers, &body, BodyFormat::Form);
            if matches!(format, BodyFormat::Unsupported) {
                prop_assert!(matches!(parsed, Err(BodyError::UnsupportedMediaType)));
            }
        }

        #[test]
        fn go_keys_in_any_case_read_like_exact_ones(
            id in any_case("id"), data in any_case("data"), value in "[a-z0-9]{0,8}",
        ) {
            let body = serde_json::json!({ id: value, data: {"Keep": value} }).to_string();
            prop_assert_eq!(
                parse_json_go::<GoRequest>(body.as_bytes()),
                Ok(GoRequest { id: value.clone(), data: serde_json::json!({"Keep": value}) })
            );
        }

        #[test]
        fn form_bodies_round_trip(fields in proptest::collection::btree_map("[a-z_]{1,12}", ".{0,40}", 0..6)) {
            let body = serde_urlencoded::to_string(&fields).unwrap();
            let parsed: BTreeMap<String, String> =
                parse_body(&HeaderMap::new(), body.as_bytes(), BodyFormat::Form).unwrap();
            prop_assert_eq!(parsed, fields);
        }

        #[test]
        fn form_bodies_with_invalid_utf8_are_rejected(
            key in "[a-z]{1,8}", value in "[a-z]{0,8}", bad in 0x80..=0xffu8, escaped in any::<bool>(),
        ) {
            let mut body = format!("{key}={value}").into_bytes();
            if escaped {
                body.extend(format!("%{bad:02X}").bytes());
            } else {
                body.push(bad);
            }
            prop_assert!(
                parse_body::<BTreeMap<String, String>>(&HeaderMap::new(), &body, BodyFormat::Form).is_err(),
                "{:?}", String::from_utf8_lossy(&body)
            );
            prop_assert!(parse_form::<BTreeMap<String, String>>(&body).is_err());
        }
    }
}
