//! Logging setup. Request logs are at debug level: the gateway keeps access logs, and the
//! token path should not pay for a log line per request. Secrets and tokens are never
//! logged; only ids, outcomes and addresses are. Logs go to stderr so that command output
//! on stdout stays clean for scripts.

use std::{
    cell::RefCell,
    fmt::Write as _,
    io::IsTerminal,
    time::{SystemTime, UNIX_EPOCH},
};

use tracing_subscriber::{
    EnvFilter,
    fmt::{self, format::Writer, time::FormatTime},
    prelude::*,
};

use crate::config::LogFormat;

/// Installs the global subscriber; a second call is a no-op (tests build many servers).
/// `level` is the filter used unless `RUST_LOG` is set. Lines are written in batches by a
/// background thread (see [`batch`]), so a request never waits on stderr; the returned
/// guard writes what is pending when dropped, so hold it until exit.
pub fn init(format: LogFormat, level: &str) -> std::io::Result<FlushGuard> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = BatchWriter::spawn(std::io::stderr())?;
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_timer(Rfc3339Micros)
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_ansi(false)
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .compact()
                    .with_timer(Rfc3339Micros)
                    .with_ansi(colour_on_stderr())
                    .with_writer(writer),
            )
            .try_init(),
    };
    Ok(guard)
}

/// UTC timestamps such as `2026-12-01T20:32:49.344067Z`, as tracing-subscriber's default
/// timer writes them, with the date and time of day formatted once per second per thread:
/// a busy server writes thousands of lines within each second, one per token issued.
struct Rfc3339Micros;

impl FormatTime for Rfc3339Micros {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        thread_local! {
            static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        SECOND.with_borrow_mut(|(second, text)| {
            if *second != now.as_secs() {
                *second = now.as_secs();
                text.clear();
                let at = i64::try_from(*second)
                    .ok()
                    .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                    .unwrap_or_default();
                let _ = write!(text, "{}", at.format("%Y-%m-%dT%H:%M:%S"));
            }
            write!(w, "{text}.{:06}Z", now.subsec_micros())
        })
    }
}

/// Colour only for a person watching a terminal: escape codes in a file, a pipe or a log
/// collector are noise. `NO_COLOR` (https://no-color.org) turns it off everywhere.
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

mod batch;
pub mod metrics;

pub use batch::{BatchWriter, FlushGuard};
