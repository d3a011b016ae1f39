//! Accepting and keeping connections: how long a connection may take to send a request head
//! or sit idle, how many may be open, and what happens beyond that.
//!
//! hyper's own header-read timer cannot serve here: it starts whenever the connection waits
//! for a head, so it would also be the keep-alive idle bound, and the two must differ (a
//! short head bound stops slow clients; a long idle bound keeps gateways' pooled connections
//! from racing our close). Each connection is therefore watched by its own deadline, moved
//! by what the connection does:
//!
//! - from accept, or from the first byte after a finished request, the head must be complete
//!   within `header_timeout`;
//! - from the end of a request until the next byte, the connection may idle `idle_timeout`;
//! - while a request is being handled there is no deadline here: the request timeout applies.
//!
//! Beyond `max_connections`, a connection is still accepted (so it never sits in the kernel's
//! backlog holding a descriptor we cannot see) into a small reserve where it may send one
//! request, within a short head bound, with keep-alive off: the health routes answer as
//! always, everything else is a fast 503. A reserve slot whose connection has not sent its
//! head yet goes to the next newcomer, so silent connections cannot hold the health routes
//! hostage; with every reserve slot busy answering, a newcomer gets a canned 503 and is
//! closed at once.

use std::{
    collections::VecDeque,
    future::{Future, poll_fn},
    io,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Body,
    extract::{ConnectInfo, Request},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, oneshot},
};
use tower::ServiceExt;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use super::REQUEST_ID;
use crate::telemetry;

/// How long a connection beyond the cap may take to send its one request head: a health
/// probe sends it at once.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The only routes a connection beyond the cap is served.
const HEALTH_ROUTES: [&str; 2] = ["/health/live", "/health/ready"];

/// Written to a connection refused outright, before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\
content-length: 0\r\nconnection: close\r\n\r\n";

/// The first pause after an accept error (out of descriptors, most likely), doubled on each
/// further error up to [`ACCEPT_BACKOFF_MAX`]: long enough not to spin, short enough to take
/// connections again soon after descriptors are freed.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// The bounds one listener keeps.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Connections accepted beyond `max_connections`, for the health routes.
    pub reserve: usize,
}

/// Serves `router` on `listener` until `stop` resolves, then stops accepting and waits for
/// the open connections to finish their requests (idle ones close at once, silent ones at
/// their head deadline).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    name: &'static str,
    stop: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let reserve = Arc::new(Reserve::new(limits.reserve));
    let overflow_router = overflow_router(router.clone());
    let mut http1 = http1::Builder::new();
    // Ours are the deadlines; see the module's comment.
    http1.header_read_timeout(None);
    let mut http1_once = http1.clone();
    http1_once.keep_alive(false);
    let mut backoff = AcceptBackoff::default();
    let mut stop = pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.succeeded(name);
                accepted
            }
            Err(e) => {
                if let Some(pause) = backoff.failed(&e, name) {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = &mut stop => break,
                    }
                }
                continue;
            }
        };
        let state = Arc::new(ConnState::new());
        let place = match slots.clone().try_acquire_owned() {
            Ok(slot) => Place::Slot(slot),
            Err(_) => {
                telemetry::metrics::connection_over_capacity(name);
                match reserve.admit(state.clone()) {
                    Some((ticket, evicted)) => Place::Reserve(ticket, evicted),
                    None => {
                        // Best effort: a peer that is not reading may never see it.
                        let _ = stream.try_write(REFUSAL);
                        continue;
                    }
                }
            }
        };
        let io = Watched::new(stream, state.clone());
        let (conn, timeouts) = match place {
            Place::Slot(_) => (
                http1.serve_connection(io, service(router.clone(), state.clone(), peer)),
                Timeouts {
                    header: limits.header_timeout,
                    idle: limits.idle_timeout,
                },
            ),
            Place::Reserve(..) => (
                http1_once
                    .serve_connection(io, service(overflow_router.clone(), state.clone(), peer)),
                Timeouts {
                    header: limits.header_timeout.min(OVERFLOW_HEADER_TIMEOUT),
                    idle: Duration::ZERO,
                },
            ),
        };
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _open = telemetry::metrics::connection_opened(name);
            let served = guard(conn, &state, timeouts, name);
            match place {
                Place::Slot(_slot) => served.await,
                Place::Reserve(_ticket, evicted) => tokio::select! {
                    () = served => {}
                    _ = evicted => {}
                },
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Where an accepted connection is counted; given back when the connection ends.
enum Place {
    Slot(OwnedSemaphorePermit),
    Reserve(Ticket, oneshot::Receiver<()>),
}

/// Hands each request to the router with the peer's address, and tells the connection's
/// state while it is being handled.
fn service(
    router: Router,
    state: Arc<ConnState>,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone {
    service_fn(move |mut request: hyper::Request<Incoming>| {
        let handling = Handling::start(state.clone());
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = router.clone().oneshot(request.map(Body::new));
        async move {
            let response = response.await;
            drop(handling);
            response
        }
    })
}

/// What a connection beyond the cap is served: the health routes, and a 503 for the rest.
fn overflow_router(router: Router) -> Router {
    Router::new()
        .fallback(move |request: Request| {
            let router = router.clone();
            async move {
                if HEALTH_ROUTES.contains(&request.uri().path()) {
                    match router.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                } else {
                    over_capacity()
                }
            }
        })
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
}

fn over_capacity() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [("retry-after", "1")],
        Json(json!({
            "error": "unavailable",
            "message": "too many open connections; try again",
        })),
    )
        .into_response()
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
}

/// Which deadline closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Idle,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Idle => "idle",
        }
    }
}

/// Drives `conn` until it ends or its current deadline passes; dropping it then closes the
/// socket. The deadline is read again after every poll of the connection, which is where
/// everything that moves it happens (bytes read, requests starting and finishing).
async fn guard(conn: impl Future, state: &ConnState, timeouts: Timeouts, name: &'static str) {
    let mut conn = pin!(conn);
    let mut sleep = pin!(tokio::time::sleep_until(state.opened.into()));
    let timed_out = poll_fn(|cx| {
        if conn.as_mut().poll(cx).is_ready() {
            // A failed connection (reset, malformed request) has nothing left to tell.
            return Poll::Ready(None);
        }
        let Some((deadline, phase)) = state.deadline(timeouts) else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx).map(|()| Some(phase))
    })
    .await;
    if let Some(phase) = timed_out {
        telemetry::metrics::connection_timed_out(name, phase.as_str());
    }
}

/// What one connection is doing, in milliseconds since it was accepted. Written by its IO
/// and its service, read by its guard, all within the connection's own task.
#[derive(Debug)]
struct ConnState {
    opened: Instant,
    /// Requests being handled (HTTP/1 handles one at a time; counted all the same).
    handling: AtomicU32,
    /// When the head now awaited began: the accept, or the first byte after a request.
    head_since: AtomicU64,
    /// When the last request finished.
    idle_since: AtomicU64,
}

const NEVER: u64 = u64::MAX;

impl ConnState {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            handling: AtomicU32::new(0),
            // The first head is due from the moment the connection is accepted.
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(NEVER),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    fn is_handling(&self) -> bool {
        self.handling.load(Ordering::Relaxed) > 0
    }

    fn bytes_arrived(&self) {
        if !self.is_handling() && self.head_since.load(Ordering::Relaxed) == NEVER {
            self.head_since.store(self.now(), Ordering::Relaxed);
        }
    }

    fn deadline(&self, timeouts: Timeouts) -> Option<(Instant, Phase)> {
        if self.is_handling() {
            return None;
        }
        let (since, bound, phase) = match self.head_since.load(Ordering::Relaxed) {
            NEVER => (
                self.idle_since.load(Ordering::Relaxed),
                timeouts.idle,
                Phase::Idle,
            ),
            since => (since, timeouts.header, Phase::Header),
        };
        Some((self.opened + Duration::from_millis(since) + bound, phase))
    }
}

/// Marks a request as being handled until dropped.
struct Handling(Arc<ConnState>);

impl Handling {
    fn start(state: Arc<ConnState>) -> Self {
        state.handling.fetch_add(1, Ordering::Relaxed);
        state.head_since.store(NEVER, Ordering::Relaxed);
        Self(state)
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        if self.0.handling.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle_since.store(self.0.now(), Ordering::Relaxed);
        }
    }
}

/// The accepted stream, noting when bytes arrive.
struct Watched {
    stream: TcpStream,
    state: Arc<ConnState>,
}

impl Watched {
    fn new(stream: TcpStream, state: Arc<ConnState>) -> TokioIo<Self> {
        TokioIo::new(Self { stream, state })
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The slots beyond the cap. Each entry is a connection that may still be evicted: one whose
/// head has not arrived yet gives its slot to a newcomer.
struct Reserve {
    size: usize,
    held: Mutex<VecDeque<Held>>,
    next_id: AtomicU64,
}

struct Held {
    id: u64,
    state: Arc<ConnState>,
    /// Dropping it closes the connection.
    _evict: oneshot::Sender<()>,
}

/// A connection's place in the reserve, given back when dropped.
struct Ticket {
    reserve: Arc<Reserve>,
    id: u64,
}

impl Reserve {
    fn new(size: usize) -> Self {
        Self {
            size,
            held: Mutex::new(VecDeque::with_capacity(size)),
            next_id: AtomicU64::new(0),
        }
    }

    /// A slot for a new connection, and what tells it that it was evicted; `None` when the
    /// reserve is empty or every connection in it is being answered.
    fn admit(self: &Arc<Self>, state: Arc<ConnState>) -> Option<(Ticket, oneshot::Receiver<()>)> {
        if self.size == 0 {
            return None;
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.len() >= self.size {
            // The oldest silent connection goes: it has had the longest to speak.
            let silent = held.iter().position(|h| !h.state.is_handling())?;
            held.remove(silent);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (evict, evicted) = oneshot::channel();
        held.push_back(Held {
            id,
            state,
            _evict: evict,
        });
        let ticket = Ticket {
            reserve: self.clone(),
            id,
        };
        Some((ticket, evicted))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut held = self
            .reserve
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = held.iter().position(|h| h.id == self.id) {
            held.remove(at);
        }
    }
}

/// Pauses the accept loop after errors that will not go away at once (no descriptors left,
/// no memory), and logs each burst of them once.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    /// How long to wait before accepting again; `None` when the error concerned only the
    /// one connection (its peer gave up before we took it).
    fn failed(&mut self, e: &io::Error, name: &'static str) -> Option<Duration> {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
                | io::ErrorKind::Interrupted
        ) {
            return None;
        }
        self.failures = self.failures.saturating_add(1);
        telemetry::metrics::accept_failed(name);
        if self.failures == 1 {
            tracing::warn!(
                listener = name,
                error = %e,
                "cannot accept connections; pausing briefly and retrying"
            );
        }
        let doublings = (self.failures - 1).min(16);
        Some((ACCEPT_BACKOFF_MIN * 2u32.pow(doublings)).min(ACCEPT_BACKOFF_MAX))
    }

    fn succeeded(&mut self, name: &'static str) {
        if self.failures > 0 {
            tracing::warn!(
                listener = name,
                failed_accepts = self.failures,
                "accepting connections again"
            );
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(75),
    };

    fn at(state: &ConnState, ms: u64) -> Instant {
        state.opened + Duration::from_millis(ms)
    }

    #[test]
    fn the_first_head_is_due_from_the_accept_then_idle_and_head_bounds_alternate() {
        let state = Arc::new(ConnState::new());
        assert_eq!(
            state.deadline(TIMEOUTS),
            Some((at(&state, 10_000), Phase::Header))
        );

        let handling = Handling::start(state.clone());
        assert_eq!(
            state.deadline(TIMEOUTS),
            None,
            "the request timeout applies"
        );
        state.bytes_arrived();
        assert_eq!(state.deadline(TIMEOUTS), None, "body bytes start no head");
        drop(handling);
        let idle = state.idle_since.load(Ordering::Relaxed);
        assert_eq!(
            state.deadline(TIMEOUTS),
            Some((at(&state, idle + 75_000), Phase::Idle))
        );

        state.bytes_arrived();
        let head = state.head_since.load(Ordering::Relaxed);
        assert!(head >= idle);
        assert_eq!(
            state.deadline(TIMEOUTS),
            Some((at(&state, head + 10_000), Phase::Header)),
            "a head begun while idle must finish within the head bound"
        );
        state.bytes_arrived();
        assert_eq!(
            state.head_since.load(Ordering::Relaxed),
            head,
            "more bytes of the same head do not extend it"
        );
    }

    #[test]
    fn the_reserve_evicts_the_oldest_silent_connection_never_one_being_answered() {
        let reserve = Arc::new(Reserve::new(2));
        let (a, b, c) = (
            Arc::new(ConnState::new()),
            Arc::new(ConnState::new()),
            Arc::new(ConnState::new()),
        );
        let (_ta, mut evicted_a) = reserve.admit(a.clone()).unwrap();
        let _answering = Handling::start(a);
        let (_tb, mut evicted_b) = reserve.admit(b).unwrap();
        let (_tc, _) = reserve
            .admit(c.clone())
            .expect("b is silent: it makes room");
        assert!(
            evicted_b
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        assert_eq!(
            evicted_a.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );

        let _answering_c = Handling::start(c);
        assert!(
            reserve.admit(Arc::new(ConnState::new())).is_none(),
            "every connection in the reserve is being answered"
        );
        drop(_tc);
        assert!(
            reserve.admit(Arc::new(ConnState::new())).is_some(),
            "a slot came back"
        );
    }

    #[test]
    fn accept_errors_back_off_and_reset_but_a_vanished_peer_costs_no_pause() {
        let mut backoff = AcceptBackoff::default();
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(backoff.failed(&aborted, "test"), None);

        let emfile = io::Error::from_raw_os_error(24);
        let pauses: Vec<_> = (0..10)
            .map(|_| backoff.failed(&emfile, "test").unwrap())
            .collect();
        assert_eq!(pauses[0], ACCEPT_BACKOFF_MIN);
        assert_eq!(pauses[1], ACCEPT_BACKOFF_MIN * 2);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*pauses.last().unwrap(), ACCEPT_BACKOFF_MAX);

        backoff.succeeded("test");
        assert_eq!(backoff.failed(&emfile, "test"), Some(ACCEPT_BACKOFF_MIN));
    }
}
