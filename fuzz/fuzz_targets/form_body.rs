//! Request bodies of every dialect, in every format a client may claim to send.
#![no_main]

use http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
use libfuzzer_sys::fuzz_target;
use portcullis::http::{
    AuthorizeEnrollmentRequest, CreateAuthGrantRequest, CreateEnrollmentRequest,
    CreateTokenRequest, ListAuthGrantsRequest, TokenParameterRequest, TokenRequest,
    UpdateAuthGrantRequest, UpdateEnrollmentRequest,
    extract::{BodyFormat, body_format, parse_body, parse_form},
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let headers = headers(selector);
    let absent = if selector & 0x10 == 0 {
        BodyFormat::Json
    } else {
        BodyFormat::Form
    };
    let _ = body_format(&headers);
    let _ = parse_body::<CreateTokenRequest>(&headers, body, absent);
    let _ = parse_body::<AuthorizeEnrollmentRequest>(&headers, body, absent);
    let _ = parse_body::<UpdateEnrollmentRequest>(&headers, body, absent);
    let _ = parse_body::<CreateEnrollmentRequest>(&headers, body, absent);
    let _ = parse_body::<CreateAuthGrantRequest>(&headers, body, absent);
    let _ = parse_body::<ListAuthGrantsRequest>(&headers, body, absent);
    let _ = parse_body::<UpdateAuthGrantRequest>(&headers, body, absent);
    let _ = parse_form::<TokenRequest>(body);
    let _ = parse_form::<TokenParameterRequest>(body);

    // Whatever a form parses to, re-encoded, parses to the same pairs; nothing is
    // accepted that is not UTF-8.
    if let Ok(pairs) = parse_form::<Vec<(String, String)>>(body) {
        assert!(
            std::str::from_utf8(body).is_ok(),
            "accepted non-UTF-8 {body:?}"
        );
        let again = serde_urlencoded::to_string(&pairs).expect("pairs encode");
        let reparsed: Vec<(String, String)> =
            parse_form(again.as_bytes()).expect("a re-encoded form parses");
        assert_eq!(reparsed, pairs);
    }
});

fn headers(selector: u8) -> HeaderMap {
    let content_type = match selector & 0x0f {
        0 => return HeaderMap::new(),
        1 => "application/json",
        2 => "application/x-www-form-urlencoded",
        3 => "Application/X-WWW-Form-Urlencoded; charset=utf-8",
        4 => "application/jwt+json",
        5 => "text/plain",
        _ => "application/json; charset=utf-8",
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers
}
