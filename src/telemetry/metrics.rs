//! Prometheus metrics, served on the admin listener at `GET /metrics`.
//!
//! Recording goes through the `metrics` facade into one process-wide recorder (installed on
//! first use), so the core records without knowing who scrapes. Counters and histograms
//! are lock-free atomics. Gauges that describe state (argon2 queue and runs, database pool)
//! are read when scraped instead of being kept up to date on every request; the open
//! connections gauge is the exception, moved as connections open and close.

use std::{
    collections::HashMap,
    sync::{LazyLock, OnceLock, RwLock},
    time::Duration,
};

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::authority::credentials::Limit;

const REQUEST_DURATION: &str = "portcullis_http_request_duration_seconds";

/// Latency buckets for an in-memory token path measured in hundreds of microseconds, up to
/// an argon2 run and a database outage's acquire timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's recorder; the first call installs it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), DURATION_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's); then ours
        // only renders what is recorded through it, which is nothing, and says so.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "portcullis_http_requests_total",
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time from request to response head, by route template, method and status"
    );
    describe_counter!(
        "portcullis_tokens_issued_total",
        "Tokens minted, by grant type"
    );
    describe_counter!(
        "portcullis_auth_failures_total",
        "Rejected credentials: kind=client (client id/secret) or bearer (token)"
    );
    describe_counter!(
        "portcullis_rate_limited_total",
        "Requests refused with 429, by the allowance that ran out"
    );
    describe_gauge!(
        "portcullis_change_feed_up",
        "1 while the change feed from other replicas is heard (PostgreSQL), 0 while it is lost"
    );
    describe_counter!(
        "portcullis_change_feed_interruptions_total",
        "Times the change feed closed, failed or went silent (missed heartbeats)"
    );
    describe_gauge!(
        "portcullis_argon2_queue_depth",
        "argon2 jobs waiting for a worker thread"
    );
    describe_counter!(
        "portcullis_argon2_runs_total",
        "argon2 computations: secrets hashed and verified, dummy verifications included"
    );
    describe_gauge!(
        "portcullis_connections_open",
        "Open client connections, by listener (public, admin)"
    );
    describe_counter!(
        "portcullis_connections_over_capacity_total",
        "Connections accepted beyond server.max_connections (health routes only, or refused)"
    );
    describe_counter!(
        "portcullis_connections_timed_out_total",
        "Connections closed by the server: phase=header (the request head came too slowly) \
         or idle (kept alive with nothing to do)"
    );
    describe_counter!(
        "portcullis_accept_errors_total",
        "Failures to accept a connection (out of file descriptors, most likely)"
    );
    describe_counter!(
        "portcullis_audit_dropped_total",
        "Audit events logged but not kept for the store because its buffer was full"
    );
    describe_gauge!(
        "portcullis_db_pool_connections",
        "Database pool connections, by state (idle, in_use) and the configured max"
    );
}

/// Records one answered request. The handles for each (route, method, status) are kept, so
/// a request costs two atomic updates instead of building and looking up two label sets.
pub fn request(route: &str, method: &'static str, status: u16, elapsed: Duration) {
    let status = status_label(status);
    let find = |known: &RequestHandles| known.method == method && known.status == status;
    let cached = REQUEST_HANDLES
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(route)
        .and_then(|known| known.iter().find(|h| find(h)).cloned());
    let handles = cached.unwrap_or_else(|| {
        // Handles are kept, so they must come from our recorder, never the no-op one.
        handle();
        let mut all = REQUEST_HANDLES.write().unwrap_or_else(|e| e.into_inner());
        let known = all.entry(route.into()).or_default();
        match known.iter().find(|h| find(h)) {
            Some(handles) => handles.clone(),
            None => {
                let labels = [
                    ("route", route.to_owned()),
                    ("method", method.to_owned()),
                    ("status", status.to_owned()),
                ];
                let handles = RequestHandles {
                    method,
                    status,
                    count: counter!("portcullis_http_requests_total", &labels),
                    duration: histogram!(REQUEST_DURATION, &labels),
                };
                known.push(handles.clone());
                handles
            }
        }
    });
    handles.duration.record(elapsed.as_secs_f64());
    handles.count.increment(1);
}

/// The request metrics of one route, method and status. Routes are the router's templates
/// and "unmatched", so the map stays as small as the label set.
#[derive(Clone)]
struct RequestHandles {
    method: &'static str,
    status: &'static str,
    count: Counter,
    duration: Histogram,
}

static REQUEST_HANDLES: LazyLock<RwLock<HashMap<Box<str>, Vec<RequestHandles>>>> =
    LazyLock::new(Default::default);

pub fn token_issued(grant_type: &'static str) {
    // One handle per grant type, kept: the label set is built once, not per token.
    static ISSUED: LazyLock<RwLock<HashMap<&'static str, Counter>>> =
        LazyLock::new(Default::default);
    let known = ISSUED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(grant_type)
        .cloned();
    let issued = known.unwrap_or_else(|| {
        handle();
        ISSUED
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(grant_type)
            .or_insert_with(
                || counter!("portcullis_tokens_issued_total", "grant_type" => grant_type),
            )
            .clone()
    });
    issued.increment(1);
}

pub fn auth_failed(kind: &'static str) {
    counter!("portcullis_auth_failures_total", "kind" => kind).increment(1);
}

pub fn rate_limited(limit: Limit) {
    counter!("portcullis_rate_limited_total", "limit" => limit.as_str()).increment(1);
}

/// Audit events the buffer had no room for.
pub fn audit_dropped(n: u64) {
    counter!("portcullis_audit_dropped_total").increment(n);
}

/// The change feed listens (again).
pub fn change_feed_up() {
    gauge!("portcullis_change_feed_up").set(1.0);
}

/// The change feed closed, failed or went silent.
pub fn change_feed_lost() {
    gauge!("portcullis_change_feed_up").set(0.0);
    counter!("portcullis_change_feed_interruptions_total").increment(1);
}

/// Counts a connection as open until the returned guard is dropped.
pub fn connection_opened(listener: &'static str) -> OpenConnection {
    gauge!("portcullis_connections_open", "listener" => listener).increment(1.0);
    OpenConnection(listener)
}

pub struct OpenConnection(&'static str);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        gauge!("portcullis_connections_open", "listener" => self.0).decrement(1.0);
    }
}

pub fn connection_over_capacity(listener: &'static str) {
    counter!("portcullis_connections_over_capacity_total", "listener" => listener).increment(1);
}

pub fn connection_timed_out(listener: &'static str, phase: &'static str) {
    counter!("portcullis_connections_timed_out_total", "listener" => listener, "phase" => phase)
        .increment(1);
}

pub fn accept_failed(listener: &'static str) {
    counter!("portcullis_accept_errors_total", "listener" => listener).increment(1);
}

/// Gauges read at scrape time.
pub struct Snapshot {
    pub argon2_queue_depth: usize,
    pub argon2_runs: u64,
    pub pool_size: u32,
    pub pool_idle: u32,
    pub pool_max: u32,
}

/// The Prometheus text exposition of everything recorded, with `s`'s gauges.
pub fn render(s: Snapshot) -> String {
    let handle = handle();
    gauge!("portcullis_argon2_queue_depth").set(s.argon2_queue_depth as f64);
    counter!("portcullis_argon2_runs_total").absolute(s.argon2_runs);
    let in_use = s.pool_size.saturating_sub(s.pool_idle);
    gauge!("portcullis_db_pool_connections", "state" => "idle").set(f64::from(s.pool_idle));
    gauge!("portcullis_db_pool_connections", "state" => "in_use").set(f64::from(in_use));
    gauge!("portcullis_db_pool_connections", "state" => "max").set(f64::from(s.pool_max));
    handle.run_upkeep();
    handle.render()
}

/// Status codes as static labels, so recording a request allocates nothing.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        431 => "431",
        500 => "500",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
