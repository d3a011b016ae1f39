//! Log lines handed to one background thread that writes them in batches.
//!
//! A request that logs (every token issued leaves an audit line) only appends its finished
//! line to a shared buffer under a short lock. The writer thread is woken once per batch —
//! by the first line into an empty buffer, or early when a batch fills — and then waits a
//! moment for more lines before writing them all with one `write`. A writer that wakes and
//! writes once per line (as `tracing_appender::non_blocking` does) made logging cost more
//! than a fifth of the token path's CPU; batching makes it a few percent.
//!
//! Nothing is dropped: when the buffer holds [`MAX_PENDING`] bytes, loggers wait for the
//! writer (audit lines are records, not hints), and dropping the [`FlushGuard`] writes
//! whatever is left before the process exits.

use std::{
    io::{self, Write},
    mem,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::{self, JoinHandle},
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer gathers lines after the first one of a batch: long enough to make
/// batches under load, short enough that a line reaches the log at once for a person
/// watching it.
const GATHER: Duration = Duration::from_millis(5);

/// A batch this big is written without waiting out [`GATHER`].
const FULL_BATCH: usize = 64 * 1024;

/// Beyond this many unwritten bytes, loggers wait for the writer instead of growing memory.
const MAX_PENDING: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// The writer was told about the current batch (it is non-empty, or full).
    woken: bool,
    woken_full: bool,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// The writer waits here for a batch.
    batch: Condvar,
    /// Loggers wait here while the buffer is at [`MAX_PENDING`].
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves only bytes behind: keep logging.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `MakeWriter` for tracing-subscriber's fmt layer; cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Writes what is pending and stops the writer thread when dropped; hold it until exit.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// Starts the writer thread, which owns `sink`.
    pub fn spawn<W: Write + Send + 'static>(sink: W) -> io::Result<(Self, FlushGuard)> {
        let shared = Arc::new(Shared::default());
        let thread = thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn({
                let shared = shared.clone();
                move || write_batches(&shared, sink)
            })?;
        let guard = FlushGuard {
            shared: shared.clone(),
            thread: Some(thread),
        };
        Ok((Self { shared }, guard))
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.shared.lock();
        if pending.closed {
            // The writer is gone (the process is exiting): nothing would write the line.
            return;
        }
        while pending.lines.len() >= MAX_PENDING && !pending.closed {
            pending = self
                .shared
                .room
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
        pending.lines.extend_from_slice(line);
        // One wake-up per batch, not per line: only the line that starts a batch (or fills
        // it) pays for waking the writer.
        let wake = if !pending.woken {
            pending.woken = true;
            true
        } else if !pending.woken_full && pending.lines.len() >= FULL_BATCH {
            pending.woken_full = true;
            true
        } else {
            false
        };
        drop(pending);
        if wake {
            self.shared.batch.notify_one();
        }
    }
}

impl Write for &BatchWriter {
    /// tracing-subscriber formats each event completely and then writes it whole, so one
    /// call is one line and lines never interleave.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = &'a BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

fn write_batches<W: Write>(shared: &Shared, mut sink: W) {
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.lock();
        while !pending.woken && !pending.closed {
            pending = shared
                .batch
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
        // Gather: more lines usually follow the first within a few milliseconds.
        if !pending.closed && pending.lines.len() < FULL_BATCH {
            pending = shared
                .batch
                .wait_timeout_while(pending, GATHER, |p| p.lines.len() < FULL_BATCH && !p.closed)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let was_full = pending.lines.len() >= MAX_PENDING;
        mem::swap(&mut batch, &mut pending.lines);
        pending.woken = false;
        pending.woken_full = false;
        let closed = pending.closed;
        drop(pending);
        if was_full {
            shared.room.notify_all();
        }
        write_batch(&mut sink, &batch);
        batch.clear();
        // Memory for a burst is not kept forever.
        batch.shrink_to(FULL_BATCH);
        if closed {
            return;
        }
    }
}

/// Writes a batch, waiting out a destination that is briefly full. A failing destination
/// cannot be reported anywhere else: the rest of the batch is lost and logging goes on (as
/// it would writing to stderr directly), but a line cut short is ended, so the next batch's
/// first line is not glued to it.
fn write_batch<W: Write>(sink: &mut W, batch: &[u8]) {
    let mut written = 0;
    let mut waits = 0;
    while written < batch.len() {
        match sink.write(&batch[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && waits < MAX_WAITS => {
                waits += 1;
                thread::sleep(Duration::from_millis(1));
            }
            Err(_) => break,
        }
    }
    if written > 0 && written < batch.len() && batch[written - 1] != b'\n' {
        let _ = sink.write_all(b"\n");
    }
    let _ = sink.flush();
}

/// How many 1 ms waits a non-blocking destination gets per batch before the batch is given up.
const MAX_WAITS: u32 = 1000;

/// How long exiting waits for the last lines to be written: a log collector that stopped
/// reading must not keep the process from exiting.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.batch.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + FINAL_FLUSH;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Instant,
    };

    use super::*;

    /// A sink that records what reached it and how many writes it took.
    #[derive(Clone, Default)]
    struct Recorder {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
        /// Each write takes this long: a slow disk or a blocked pipe.
        delay: Duration,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            thread::sleep(self.delay);
            self.bytes
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            self.writes.fetch_add(1, Ordering::SeqCst);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log_lines(writer: &BatchWriter, thread: usize, count: usize) {
        for i in 0..count {
            let line = format!("{{\"thread\":{thread},\"line\":{i}}}\n");
            (&*writer).write_all(line.as_bytes()).unwrap();
        }
    }

    #[test]
    fn every_line_arrives_whole_and_in_order_per_thread_in_far_fewer_writes() {
        let sink = Recorder::default();
        let (writer, guard) = BatchWriter::spawn(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                thread::spawn(move || log_lines(&writer, t, 20_000))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);

        let bytes = sink.bytes.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).expect("a whole line");
            let t = value["thread"].as_u64().unwrap() as usize;
            assert_eq!(value["line"].as_u64().unwrap() as usize, next[t]);
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
        let writes = sink.writes.load(Ordering::SeqCst);
        assert!(writes < 80_000 / 10, "{writes} writes for 80000 lines");
    }

    #[test]
    fn a_slow_sink_makes_loggers_wait_and_loses_nothing() {
        let sink = Recorder {
            delay: Duration::from_millis(20),
            ..Recorder::default()
        };
        let (writer, guard) = BatchWriter::spawn(sink.clone()).unwrap();
        // Far more than MAX_PENDING in all: loggers must wait for room, not drop.
        let line = [b'x'; 1023]
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<u8>>();
        let lines = 3 * MAX_PENDING / line.len();
        let logger = {
            let writer = writer.clone();
            thread::spawn(move || {
                for _ in 0..lines {
                    (&writer).write_all(&line).unwrap();
                    assert!(writer.shared.lock().lines.len() <= MAX_PENDING + 1024);
                }
            })
        };
        logger.join().unwrap();
        drop(guard);
        assert_eq!(sink.bytes.lock().unwrap().len(), lines * 1024);
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_more() {
        let sink = Recorder::default();
        let (writer, _guard) = BatchWriter::spawn(sink.clone()).unwrap();
        (&writer).write_all(b"one line\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.bytes.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the line never reached the sink");
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.bytes.lock().unwrap().as_slice(), b"one line\n");
    }

    /// Takes `budget` bytes, then fails once (a full disk, a collector restarting), then
    /// takes everything again.
    struct Hiccup {
        bytes: Arc<Mutex<Vec<u8>>>,
        budget: Option<usize>,
    }

    impl Write for Hiccup {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = match self.budget {
                Some(0) => {
                    self.budget = None;
                    return Err(io::Error::other("no space left"));
                }
                Some(budget) => {
                    let n = buf.len().min(budget);
                    self.budget = Some(budget - n);
                    n
                }
                None => buf.len(),
            };
            self.bytes
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_batch_cut_short_ends_its_last_line_so_the_next_batch_starts_clean() {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let mut sink = Hiccup {
            bytes: bytes.clone(),
            budget: Some(12),
        };
        write_batch(&mut sink, b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
        write_batch(&mut sink, b"{\"d\":4}\n");
        let text = String::from_utf8(bytes.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\"\n{\"d\":4}\n");
    }

    #[test]
    fn exiting_does_not_wait_for_a_destination_that_stopped_reading() {
        let sink = Recorder {
            delay: Duration::from_secs(30),
            ..Recorder::default()
        };
        let (writer, guard) = BatchWriter::spawn(sink).unwrap();
        (&writer).write_all(b"stuck\n").unwrap();
        // Let the writer take the batch and block in the sink.
        thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        drop(guard);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        (&writer).write_all(b"after exit\n").unwrap();
        assert!(
            writer.shared.lock().lines.is_empty(),
            "nothing is kept after exit"
        );
    }

    #[test]
    fn dropping_the_guard_writes_what_is_pending() {
        let sink = Recorder {
            delay: Duration::from_millis(50),
            ..Recorder::default()
        };
        let (writer, guard) = BatchWriter::spawn(sink.clone()).unwrap();
        log_lines(&writer, 0, 1000);
        drop(guard);
        assert_eq!(
            sink.bytes
                .lock()
                .unwrap()
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            1000
        );
    }
}
