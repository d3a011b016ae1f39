//! Logging setup. Request logs are at debug level: the gateway keeps access logs, and the
//! token path should not pay for a log line per request. Secrets and tokens are never
//! logged; only ids, outcomes and addresses are. Logs go to stderr so that command output
//! on stdout stays clean for scripts.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber; a second call is a no-op (tests build many servers).
/// Lines are written by a background thread, so a request never waits on stderr; the
/// returned guard flushes what is queued when dropped, so hold it until exit.
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
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().compact().with_writer(writer))
            .try_init(),
    };
    guard
}

pub mod metrics;
