//! Slow and silent clients against the real binary: request heads that never finish, idle
//! keep-alive connections, more connections than the cap or the open-file limit allows, and
//! the open-file limit raised at start.

use std::time::{Duration, Instant};

use reqwest::Client;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{ADMIN_TOKEN, TestDatabase, start_binary, start_binary_with_ulimit};

const QUIET: (&str, &str) = ("PORTCULLIS__LOG__LEVEL", "warn");

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("the listener accepts")
}

/// The public listener's open connections, as the admin listener's metrics count them.
async fn open_public_connections(admin: &str) -> u64 {
    let text = Client::new()
        .get(format!("{admin}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("portcullis_connections_open{listener=\"public\"} "))
        .map_or(0, |value| value.trim().parse::<f64>().unwrap_or(0.0) as u64)
}

/// Reads until the server closes the connection (an end of stream or a reset), and returns
/// how long that took from `since` and what was received; panics if it is still open at
/// `limit`.
async fn closed_by_server(stream: &mut TcpStream, since: Instant, limit: Duration) -> Duration {
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let remaining = limit.saturating_sub(since.elapsed());
        match tokio::time::timeout(remaining, stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "still open {:?} later, having received {:?}",
                since.elapsed(),
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
        }
    }
    assert!(
        received.is_empty(),
        "closed without an answer, got {:?}",
        String::from_utf8_lossy(&received)
    );
    since.elapsed()
}

/// Sends `GET path` on a kept-alive connection and reads the whole answer; returns its
/// status line.
async fn request(stream: &mut TcpStream, path: &str) -> String {
    let head = format!("GET {path} HTTP/1.1\r\nHost: portcullis.test\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut chunk))
            .await
            .expect("answered in time")
            .unwrap();
        assert!(n > 0, "closed before answering");
        received.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .expect("a content-length");
            if body.len() >= length {
                return head.lines().next().unwrap().to_owned();
            }
        }
    }
}

#[tokio::test]
async fn a_request_head_that_never_finishes_is_closed_at_the_header_timeout() {
    let db = TestDatabase::new().await;
    let (_server, base, _) = start_binary(
        &db,
        &[QUIET, ("PORTCULLIS__SERVER__HEADER_TIMEOUT_MS", "1000")],
    )
    .await;

    let mut silent = connect(&base).await;
    let mut partial = connect(&base).await;
    let mut dripping = connect(&base).await;
    let opened = Instant::now();
    partial
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: portcullis.test\r\n")
        .await
        .unwrap();
    // A byte every 100 ms for 3 s: each one arrives in time, the head never does.
    let drip = tokio::spawn(async move {
        for byte in b"POST /oauth2/token HTTP/1.1\r\nX-Slow: a" {
            if dripping.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        dripping
    });

    let limit = Duration::from_millis(3000);
    for (name, stream) in [("silent", &mut silent), ("partial head", &mut partial)] {
        let closed = closed_by_server(stream, opened, limit).await;
        assert!(
            closed >= Duration::from_millis(900),
            "{name}: closed after {closed:?}, before the bound"
        );
    }
    let mut dripping = drip.await.unwrap();
    let closed = closed_by_server(&mut dripping, opened, limit).await;
    assert!(closed >= Duration::from_millis(900), "dripping: {closed:?}");

    let live = Client::new()
        .get(format!("{base}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200, "a prompt client is served as before");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout_and_not_before() {
    let db = TestDatabase::new().await;
    // The head bound stays at its default (10 s): only the idle bound can close it here.
    let (_server, base, _) = start_binary(
        &db,
        &[QUIET, ("PORTCULLIS__SERVER__IDLE_TIMEOUT_MS", "1500")],
    )
    .await;

    let mut stream = connect(&base).await;
    assert_eq!(
        request(&mut stream, "/health/live").await,
        "HTTP/1.1 200 OK"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        request(&mut stream, "/health/live").await,
        "HTTP/1.1 200 OK",
        "kept alive while idle for less than the bound"
    );
    let answered = Instant::now();
    let closed = closed_by_server(&mut stream, answered, Duration::from_secs(4)).await;
    assert!(
        closed >= Duration::from_millis(1400),
        "closed {closed:?} after the last answer, before the idle bound"
    );
}

#[tokio::test]
async fn beyond_the_connection_cap_health_still_answers_and_other_routes_get_a_fast_503() {
    let db = TestDatabase::new().await;
    let (_server, base, admin) = start_binary(
        &db,
        &[
            QUIET,
            ("PORTCULLIS__SERVER__MAX_CONNECTIONS", "20"),
            // Long enough that the silent connections stay for the whole test.
            ("PORTCULLIS__SERVER__HEADER_TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    // The readiness checks' connections are gone before the count starts: one still open
    // would hold a slot, and its close would free it for the request that must find none.
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_public_connections(&admin).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the readiness checks' connections stay open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The cap, the health reserve (32) and then some, all silent.
    let mut silent = Vec::new();
    for _ in 0..70 {
        silent.push(connect(&base).await);
    }
    let http = Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();

    for path in ["/health/live", "/health/ready"] {
        let health = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(health.status(), 200, "{path} over the cap");
    }
    let refused = http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503, "other routes over the cap");
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(refused.headers().contains_key("x-request-id"));

    drop(silent);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let jwks = http
            .get(format!("{base}/.well-known/jwks.json"))
            .send()
            .await
            .unwrap();
        if jwks.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused once they went");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The attack of issue 13: with a low open-file limit, 300 silent connections made `accept`
/// fail with "Too many open files" and `/health/live` stop answering.
#[tokio::test]
async fn connections_beyond_the_open_file_limit_leave_health_answering() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let db = TestDatabase::new().await;
    let (_server, base, _) = start_binary_with_ulimit(&db, &[QUIET], Some("-n 512")).await;
    let mut silent = Vec::new();
    for _ in 0..600 {
        silent.push(connect(&base).await);
    }
    let http = Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let live = http.get(format!("{base}/health/live")).send().await;
    assert_eq!(live.expect("answered").status(), 200);

    drop(silent);
    let deadline = Instant::now() + Duration::from_secs(5);
    while http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .map_or(true, |r| r.status() != 200)
    {
        assert!(Instant::now() < deadline, "still refused once they went");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serve_raises_the_soft_open_file_limit_to_the_hard_one() {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    assert!(hard > 256, "needs a hard limit above 256 to show anything");
    let db = TestDatabase::new().await;
    let (server, _, _) = start_binary_with_ulimit(&db, &[QUIET], Some("-S -n 256")).await;

    let pid = server.id().expect("running");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert_ne!(numbers[0], "256", "the soft limit was not raised: {line}");
    assert_eq!(numbers[0], numbers[1], "soft is not the hard limit: {line}");
}
