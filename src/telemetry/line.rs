//! The log line format, text or JSON. Written for the hot path: a request line costs one
//! timestamp (date and time part cached per second and thread), and fields are written straight
//! into the line, quoted or escaped only when they need it.

use std::{
    cell::RefCell,
    fmt::{self, Write as _},
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// `2026-11-27T18:24:50.574224Z INFO regkeeper::request: message key=value …` or one JSON object
/// per line with the same fields.
pub struct LineFormat {
    pub json: bool,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The line is built in a plain `String` (statically dispatched, inlined writes) and handed
        // to `writer` in one call; writing each piece through `writer` costs several times more.
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            self.render(&mut line, event)?;
            writer.write_str(&line)
        })
    }
}

/// A field's value in a line written without a `tracing` event ([`LineFormat::render_fields`]).
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    Str(&'a str),
    U64(u64),
}

impl LineFormat {
    fn render(&self, line: &mut String, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        self.start(line, meta.level().as_str(), meta.target())?;
        if self.json {
            let mut fields = JsonFields {
                out: line,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
        } else {
            let mut fields = TextFields {
                out: line,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
        }
        self.end(line);
        Ok(())
    }

    /// The line an `INFO` event of `target` with `fields` (and no message) renders to, written
    /// without the event: for the request line, where `tracing`'s field visiting cost more
    /// than the rest of the line.
    pub fn render_fields(
        &self,
        line: &mut String,
        target: &str,
        fields: &[(&str, Value<'_>)],
    ) -> fmt::Result {
        self.start(line, "INFO", target)?;
        for (name, value) in fields {
            match (self.json, *value) {
                (true, Value::Str(value)) => json_str(line, name, value)?,
                (true, Value::U64(value)) => json_u64(line, name, value)?,
                (false, Value::Str(value)) => text_str(line, name, value)?,
                (false, Value::U64(value)) => text_u64(line, name, value)?,
            }
        }
        self.end(line);
        Ok(())
    }

    fn start(&self, line: &mut String, level: &str, target: &str) -> fmt::Result {
        if self.json {
            line.push_str("{\"timestamp\":\"");
            write_timestamp(line)?;
            line.push_str("\",\"level\":\"");
            line.push_str(level);
            line.push_str("\",\"target\":\"");
            line.push_str(target);
            line.push('"');
        } else {
            write_timestamp(line)?;
            // A space after the timestamp, then levels right-aligned to 5 columns, as
            // `tracing` prints them (`…Z  INFO`, `…Z ERROR`).
            line.push(' ');
            line.push_str(&"     "[level.len().min(5)..]);
            line.push_str(level);
            line.push(' ');
            line.push_str(target);
            line.push(':');
        }
        Ok(())
    }

    fn end(&self, line: &mut String) {
        line.push_str(if self.json { "}\n" } else { "\n" });
    }
}

/// ` name=value`, quoted when the value needs it; a `message` without its name.
fn text_str(out: &mut impl fmt::Write, name: &str, value: &str) -> fmt::Result {
    text_key(out, name)?;
    let plain = name == "message"
        || (!value.is_empty()
            && !value
                .bytes()
                .any(|b| b <= b' ' || b == b'"' || b == b'=' || b == b'\\'));
    if plain {
        out.write_str(value)
    } else {
        write!(out, "{value:?}")
    }
}

fn text_u64(out: &mut impl fmt::Write, name: &str, value: u64) -> fmt::Result {
    text_key(out, name)?;
    write_u64(out, value)
}

fn text_key(out: &mut impl fmt::Write, name: &str) -> fmt::Result {
    out.write_char(' ')?;
    if name != "message" {
        out.write_str(name)?;
        out.write_char('=')?;
    }
    Ok(())
}

/// `,"name":"value"`.
fn json_str(out: &mut impl fmt::Write, name: &str, value: &str) -> fmt::Result {
    json_key(out, name)?;
    write_json_string(out, value)
}

fn json_u64(out: &mut impl fmt::Write, name: &str, value: u64) -> fmt::Result {
    json_key(out, name)?;
    write_u64(out, value)
}

fn json_key(out: &mut impl fmt::Write, name: &str) -> fmt::Result {
    out.write_str(",\"")?;
    out.write_str(name)?;
    out.write_str("\":")
}

thread_local! {
    /// The line being formatted, reused so formatting allocates nothing once warm.
    pub(super) static LINE: RefCell<String> = const { RefCell::new(String::new()) };
    /// (unix second, "YYYY-MM-DDTHH:MM:SS") of the last line this thread wrote.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn write_timestamp(out: &mut impl fmt::Write) -> fmt::Result {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, micros) = (now.as_secs(), now.subsec_micros());
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            cached.1.clear();
            let (year, month, day) = crate::calendar::civil_from_days((secs / 86_400) as i64);
            let of_day = secs % 86_400;
            let _ = write!(
                cached.1,
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
                of_day / 3600,
                of_day / 60 % 60,
                of_day % 60
            );
            cached.0 = secs;
        }
        out.write_str(&cached.1)
    })?;
    out.write_char('.')?;
    // Six digits, zero-padded.
    let mut digits = [b'0'; 6];
    let mut rest = micros;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.write_str(std::str::from_utf8(&digits).unwrap_or("000000"))?;
    out.write_char('Z')
}

/// `message key=value key="value with spaces"`.
struct TextFields<'a, W: fmt::Write> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> TextFields<'_, W> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        text_key(self.out, field.name())
    }
}

impl<W: fmt::Write> tracing::field::Visit for TextFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.result = self
            .result
            .and_then(|()| text_str(self.out, field.name(), value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.result = self
            .result
            .and_then(|()| text_u64(self.out, field.name(), value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.result = self.result.and_then(|()| {
            self.key(field)?;
            if value < 0 {
                self.out.write_char('-')?;
            }
            write_u64(self.out, value.unsigned_abs())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.result = self.result.and_then(|()| {
            self.key(field)?;
            write!(self.out, "{value}")
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.result = self.result.and_then(|()| {
            self.key(field)?;
            write!(self.out, "{value:?}")
        });
    }
}

/// `,"key":value` pairs; strings and `Debug`/`Display` values as escaped JSON strings.
struct JsonFields<'a, W: fmt::Write> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> tracing::field::Visit for JsonFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.result = self
            .result
            .and_then(|()| json_str(self.out, field.name(), value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.result = self
            .result
            .and_then(|()| json_u64(self.out, field.name(), value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.result = self
            .result
            .and_then(|()| write!(self.out, ",\"{}\":{value}", field.name()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.result = self
            .result
            .and_then(|()| write!(self.out, ",\"{}\":{value}", field.name()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.result = self.result.and_then(|()| {
            write!(self.out, ",\"{}\":\"", field.name())?;
            write!(JsonEscape(self.out), "{value:?}")?;
            self.out.write_char('"')
        });
    }
}

/// Decimal digits without `core::fmt`'s machinery (request lines carry several numbers): `itoa`
/// writes two digits per step from a table.
fn write_u64(out: &mut impl fmt::Write, value: u64) -> fmt::Result {
    out.write_str(itoa::Buffer::new().format(value))
}

fn write_json_string(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    out.write_char('"')?;
    JsonEscape(out).write_str(value)?;
    out.write_char('"')
}

/// Escapes what JSON strings may not hold raw.
struct JsonEscape<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for JsonEscape<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut start = 0;
        for (i, c) in text.char_indices() {
            let escaped = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if (c as u32) < 0x20 => {
                    self.0.write_str(&text[start..i])?;
                    write!(self.0, "\\u{:04x}", c as u32)?;
                    start = i + c.len_utf8();
                    continue;
                }
                _ => continue,
            };
            self.0.write_str(&text[start..i])?;
            self.0.write_str(escaped)?;
            start = i + c.len_utf8();
        }
        self.0.write_str(&text[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        for value in [0u64, 7, 10, 12345, u64::MAX] {
            let mut out = String::new();
            write_u64(&mut out, value).unwrap();
            assert_eq!(out, value.to_string());
        }
    }

    #[test]
    fn json_escaping() {
        let mut out = String::new();
        write_json_string(&mut out, "a\"b\\c\nd\u{1}é").unwrap();
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }

    /// The request line written without an event is the line the event makes, byte for byte
    /// but the timestamp.
    #[test]
    fn fields_render_as_the_event_with_them_would() {
        use std::sync::{Arc, Mutex};

        let captured = Arc::new(Mutex::new(Vec::new()));
        for json in [false, true] {
            for repository in ["team/app", "", "two words"] {
                let sink = Arc::clone(&captured);
                let subscriber = tracing_subscriber::fmt()
                    .event_format(LineFormat { json })
                    .with_writer(move || Capture(Arc::clone(&sink)))
                    .finish();
                captured.lock().unwrap().clear();
                tracing::subscriber::with_default(subscriber, || {
                    tracing::info!(
                        target: "regkeeper::request",
                        method = "GET",
                        route = "manifest",
                        repository,
                        status = 200u16,
                        bytes_in = 0u64,
                        bytes_out = 527u64,
                        duration_us = 1234u64,
                        outcome = "complete",
                    );
                });
                let event = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
                let mut direct = String::new();
                LineFormat { json }
                    .render_fields(
                        &mut direct,
                        "regkeeper::request",
                        &[
                            ("method", Value::Str("GET")),
                            ("route", Value::Str("manifest")),
                            ("repository", Value::Str(repository)),
                            ("status", Value::U64(200)),
                            ("bytes_in", Value::U64(0)),
                            ("bytes_out", Value::U64(527)),
                            ("duration_us", Value::U64(1234)),
                            ("outcome", Value::Str("complete")),
                        ],
                    )
                    .unwrap();
                // `2026-12-01T19:00:00.123456Z`, after `{"timestamp":"` in JSON.
                let at = if json { 14 } else { 0 };
                let without_time = |line: &str| format!("{}{}", &line[..at], &line[at + 27..]);
                assert_eq!(
                    without_time(&direct),
                    without_time(&event),
                    "{json} {repository:?}"
                );
            }
        }
    }

    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_render_as_text_and_valid_json() {
        use std::sync::{Arc, Mutex};

        for json in [false, true] {
            let sink = Arc::new(Mutex::new(Vec::new()));
            let writer = Arc::clone(&sink);
            let subscriber = tracing_subscriber::fmt()
                .event_format(LineFormat { json })
                .with_writer(move || Capture(Arc::clone(&writer)))
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(
                    target: "regkeeper::request",
                    method = %"PUT",
                    repository = "team/app",
                    status = 201u64,
                    note = "two words",
                    "request done"
                );
                tracing::error!(target: "regkeeper::index", "failed");
            });
            let line = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
            if json {
                let first = line.lines().next().unwrap();
                let value: serde_json::Value = serde_json::from_str(first).unwrap();
                assert_eq!(value["level"], "INFO");
                assert_eq!(value["target"], "regkeeper::request");
                assert_eq!(value["message"], "request done");
                assert_eq!(value["repository"], "team/app");
                assert_eq!(value["status"], 201);
                assert_eq!(value["method"], "PUT");
            } else {
                assert!(
                    line.contains(" INFO regkeeper::request: request done method=PUT repository=team/app status=201 note=\"two words\""),
                    "{line}"
                );
                assert!(line.ends_with('\n'));
                // The widest level is still apart from the timestamp.
                assert!(line.contains("Z ERROR regkeeper::index: failed"), "{line}");
                assert!(line.contains("Z  INFO regkeeper::request"), "{line}");
            }
        }
    }
}
