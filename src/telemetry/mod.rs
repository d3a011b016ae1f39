//! Logging setup. Request logs are at debug level: the gateway keeps access logs, and the
//! token path should not pay for a log line per request. Secrets and tokens are never
//! logged; only ids, outcomes and addresses are. Logs go to stderr so that command output
//! on stdout stays clean for scripts.

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber; a second call is a no-op (tests build many servers).
/// `level` is the filter used unless `RUST_LOG` is set. Lines are written by a background
/// thread, so a request never waits on stderr; the returned guard flushes what is queued
/// when dropped, so hold it until exit.
pub fn init(format: LogFormat, level: &str) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Not lossy: audit events must not be dropped, so a full queue pushes back instead.
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
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
                    .with_ansi(colour_on_stderr())
                    .with_writer(writer),
            )
            .try_init(),
    };
    guard
}

/// Colour only for a person watching a terminal: escape codes in a file, a pipe or a log
/// collector are noise. `NO_COLOR` (https://no-color.org) turns it off everywhere.
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub mod metrics;
