//! `--log-format json`: one JSON object a line with the keys of etcd's zap logger — `level`,
//! `ts`, `caller`, `msg`, then the event's own fields — so log pipelines built for etcd
//! (filters on `level`, parsers of `ts`, alerts matching `msg`) keep working on keel.

use std::fmt;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as etcd's JSON log lines:
/// `{"level":"info","ts":"2026-12-05T10:00:00.123Z","caller":"net/src/server.rs:443","msg":"serving","name":"n1"}`.
#[derive(Clone, Copy, Debug, Default)]
pub struct EtcdJson;

impl<S, N> FormatEvent<S, N> for EtcdJson
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
        let metadata = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let caller = match (metadata.file(), metadata.line()) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            _ => metadata.target().to_string(),
        };
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let mut line = String::with_capacity(128);
        line.push('{');
        push_pair(
            &mut line,
            "level",
            &Value::from(level_name(*metadata.level())),
        );
        for (key, value) in [
            ("ts", Value::from(ts)),
            ("caller", Value::from(caller)),
            ("msg", Value::from(fields.message.unwrap_or_default())),
        ] {
            line.push(',');
            push_pair(&mut line, key, &value);
        }
        for (key, value) in &fields.others {
            line.push(',');
            push_pair(&mut line, key, value);
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// zap's level names.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

fn push_pair(line: &mut String, key: &str, value: &Value) {
    line.push_str(&Value::from(key).to_string());
    line.push(':');
    line.push_str(&value.to_string());
}

/// An event's message and other fields, in the order they were written.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    others: Vec<(&'static str, Value)>,
}

impl Fields {
    fn record(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(text) => text,
                other => other.to_string(),
            });
        } else {
            self.others.push((field.name(), value));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, Value::from(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record(field, Value::from(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("captured").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_logged(log: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .event_format(EtcdJson)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = captured.0.lock().expect("captured").clone();
        String::from_utf8(bytes)
            .expect("utf-8")
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_line_has_etcds_keys_first_then_the_events_fields() {
        let lines = lines_logged(|| {
            tracing::warn!(
                member = "n1",
                term = 7u64,
                quoted = "a\"b",
                "leader \"lost\""
            );
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        let parsed: serde_json::Map<String, Value> = serde_json::from_str(line).expect("json");
        let keys: Vec<&str> = parsed.keys().map(String::as_str).collect();
        assert_eq!(parsed["level"], "warn");
        assert_eq!(parsed["msg"], "leader \"lost\"");
        assert_eq!(parsed["member"], "n1");
        assert_eq!(parsed["term"], 7);
        assert_eq!(parsed["quoted"], "a\"b");
        assert!(parsed["caller"]
            .as_str()
            .is_some_and(|c| c.starts_with("net/src/log_format.rs:")));
        let ts = parsed["ts"].as_str().expect("ts");
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
        assert!(
            line.starts_with(r#"{"level":"warn","ts":""#),
            "etcd's key order: {line} ({keys:?})"
        );
    }
}
