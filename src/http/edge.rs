//! What every request passes through on its way to a route, as one layer: its request id,
//! the header-size bounds, the request deadline, the request metrics and the debug trace.
//!
//! One hand-written service instead of a stack of five middlewares, because the stack cost
//! more than a tenth of the warm token path: each `from_fn` clones the route it wraps and
//! boxes a future, and each tower-http layer adds its own future and bookkeeping. Here the
//! route is called at once (no clone), and one boxed future does the rest.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{MatchedPath, Request},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;
use tower::{Layer, Service};

use crate::telemetry;

/// Headers are bounded (hyper already caps their number at 100): no credential or token we
/// accept comes near these sizes.
pub const HEADER_VALUE_LIMIT_BYTES: usize = 8 * 1024;
pub const HEADERS_LIMIT_BYTES: usize = 32 * 1024;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps every route of a router (`Router::layer`), so the matched route template is known.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLayer {
    /// A request not answered by then gets 408.
    pub request_timeout: Duration,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, route: S) -> Self::Service {
        Edge {
            route,
            request_timeout: self.request_timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Edge<S> {
    route: S,
    request_timeout: Duration,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.route.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        // The caller's id is kept, so one request can be followed through a gateway and
        // us; otherwise a new one is made.
        let request_id = match request.headers().get(&REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = new_request_id();
                request.headers_mut().insert(REQUEST_ID.clone(), id.clone());
                id
            }
        };
        // A route template, never the raw path, whose ids would make the label set unbounded.
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = method_label(request.method());
        let debug = tracing::enabled!(tracing::Level::DEBUG);
        let target = debug.then(|| request.uri().path().to_owned());
        let answer = match oversized(request.headers()) {
            Some(refusal) => Err(refusal),
            None => Ok(self.route.call(request)),
        };
        let request_timeout = self.request_timeout;
        Box::pin(async move {
            let mut response = match answer {
                Ok(answer) => match tokio::time::timeout(request_timeout, answer).await {
                    Ok(Ok(response)) => response,
                    Err(_elapsed) => StatusCode::REQUEST_TIMEOUT.into_response(),
                },
                Err(refusal) => refusal,
            };
            response
                .headers_mut()
                .insert(REQUEST_ID.clone(), request_id);
            let elapsed = started.elapsed();
            let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
            telemetry::metrics::request(route, method, response.status().as_u16(), elapsed);
            if let Some(path) = target {
                tracing::debug!(
                    method,
                    path,
                    route,
                    status = response.status().as_u16(),
                    latency_us = elapsed.as_micros() as u64,
                    request_id = response.headers()[&REQUEST_ID].to_str().unwrap_or("?"),
                    "request answered"
                );
            }
            Ok(response)
        })
    }
}

fn new_request_id() -> HeaderValue {
    let mut text = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

/// 431 when one header value, or all headers together, exceed the bounds.
fn oversized(headers: &HeaderMap) -> Option<Response> {
    let mut total = 0;
    for (name, value) in headers {
        total += name.as_str().len() + value.len();
        if value.len() > HEADER_VALUE_LIMIT_BYTES || total > HEADERS_LIMIT_BYTES {
            return Some(
                (
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    Json(json!({
                        "error": "request_header_fields_too_large",
                        "message": format!(
                            "each header value may hold {HEADER_VALUE_LIMIT_BYTES} bytes and \
                             all headers {HEADERS_LIMIT_BYTES}"
                        ),
                    })),
                )
                    .into_response(),
            );
        }
    }
    None
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
