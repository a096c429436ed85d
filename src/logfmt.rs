//! The text log's field formatter: every field value (the message included) is
//! written with its control characters escaped, so a value from outside (a domain
//! or message CAS returned, a file's content) can neither start a forged log line
//! nor drive the terminal that shows the log.
//!
//! Escaping here, where every value of every event and span passes, protects the
//! call sites nobody thought of; a wrapper at each site would miss the next one.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

use crate::domain::ControlsEscaped;

/// `tracing_subscriber::fmt`'s default `key=value` layout, with values escaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapingFields;

impl<'writer> FormatFields<'writer> for EscapingFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut v = Visitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct Visitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    fn write_field(&mut self, field: &Field, text: &str) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = match field.name() {
            "message" => write!(self.writer, "{sep}{}", ControlsEscaped(text)),
            name => write!(
                self.writer,
                "{sep}{}={}",
                name.trim_start_matches("r#"),
                ControlsEscaped(text)
            ),
        };
    }
}

impl Visit for Visitor<'_> {
    /// A string field is written as it is (escaped), like a `%` field: the
    /// default would quote it as Rust's `Debug` does (`action="ListInstances"`).
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write_field(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write_field(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `log` writes through this formatter.
    fn logged(log: impl FnOnce()) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .fmt_fields(EscapingFields)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(sub, log);
        String::from_utf8(buf.0.lock().expect("buffer lock").clone()).expect("utf8")
    }

    #[test]
    fn a_newline_in_a_value_or_message_cannot_forge_a_line() {
        let evil = "a.example.com\n2026-01-01T00:00:00Z  INFO forged=1 \x1b[2J";
        let out = logged(|| {
            let span = tracing::info_span!("renewal", domain = %evil);
            let _g = span.enter();
            tracing::warn!(domain = %evil, other = ?evil, "skipped {evil}");
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(!out.contains('\x1b'), "{out}");
        assert!(out.contains("domain=a.example.com\\n2026"), "{out}");
        assert!(out.contains("skipped a.example.com\\n2026"), "{out}");
        assert!(out.contains("renewal{domain=a.example.com\\n"), "{out}");
    }

    #[test]
    fn string_fields_are_plain_values_not_rust_debug_text() {
        let out = logged(|| {
            let bad = "a\nb";
            tracing::info!(action = "ListInstances", code = bad, n = 3, "call ok");
        });
        assert!(
            out.contains("call ok action=ListInstances code=a\\nb n=3"),
            "{out}"
        );
    }
}
