//! Logging setup: structured `tracing` to stderr, text or JSON, filter from the config
//! (`RUST_LOG` wins when set, for one-off debugging).
//!
//! Proxy worker threads buffer their log lines: one `write(2)` per request line costs more than
//! the rest of the request's logging. A worker's buffer is written out when it passes
//! [`FLUSH_BYTES`], at once for warnings and errors, and by the worker's periodic
//! [`flush_thread_buffer`] call, so an ordinary line reaches stderr within that period. Every
//! other thread writes through.
//!
//! May call: `config`, `calendar`.

mod line;

use std::{
    cell::{Cell, RefCell},
    io::Write,
    sync::OnceLock,
};

pub use line::Value;

use tracing::{Level, Metadata};
use tracing_subscriber::{EnvFilter, fmt, fmt::MakeWriter};

use crate::config::{LogConfig, LogFormat};

/// A worker's buffer is written out once it holds this much.
const FLUSH_BYTES: usize = 32 * 1024;

thread_local! {
    static BUFFERED: Cell<bool> = const { Cell::new(false) };
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The format of the subscriber [`init`] installed; unset while another one (or none) is.
static INSTALLED: OnceLock<line::LineFormat> = OnceLock::new();

pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = log.format == LogFormat::Json;
    let installed = fmt()
        .with_env_filter(filter)
        .event_format(line::LineFormat { json })
        .with_writer(Stderr)
        .try_init();
    if installed.is_ok() {
        let _ = INSTALLED.set(line::LineFormat { json });
    }
}

/// Writes the `INFO` line of target `regkeeper::request` with `fields` as the `tracing` event
/// with those fields would be written, without making the event: through `tracing`'s dispatch
/// and field visiting, a proxied request's log line cost a sixth of its instructions. Only
/// while [`init`]'s subscriber is the one installed (`false` otherwise, for the caller to send
/// the event instead), and only what its filter lets through.
pub fn request_line(fields: &[(&str, Value<'_>)]) -> bool {
    let Some(format) = INSTALLED.get() else {
        return false;
    };
    // The filter decides as for the event: by target and level.
    if !tracing::enabled!(target: "regkeeper::request", Level::INFO) {
        return true;
    }
    line::LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        if format
            .render_fields(&mut line, "regkeeper::request", fields)
            .is_ok()
        {
            let _ = EventWriter { urgent: false }.write(line.as_bytes());
        }
    });
    true
}

/// Makes this thread's log lines buffered until [`flush_thread_buffer`] (proxy workers only).
pub fn buffer_this_thread() {
    BUFFERED.with(|b| b.set(true));
}

/// Writes out this thread's buffered log lines.
pub fn flush_thread_buffer() {
    BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        if !buffer.is_empty() {
            let _ = std::io::stderr().lock().write_all(&buffer);
            buffer.clear();
        }
    });
}

struct Stderr;

/// One event's formatted line, written through or into the thread's buffer.
struct EventWriter {
    urgent: bool,
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter { urgent: true }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> EventWriter {
        EventWriter {
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

impl Write for EventWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if !BUFFERED.with(Cell::get) {
            return std::io::stderr().lock().write(line);
        }
        let full = BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.extend_from_slice(line);
            buffer.len() >= FLUSH_BYTES
        });
        if full || self.urgent {
            flush_thread_buffer();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An error and its causes on one line, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
