//! The one renderer of lager's JSON line, in both of lager's formats, for every silk program
//! and file that writes lager lines (daemon stdout, the CNI plugins' log files, netmon's
//! telemetry log, iptables-logger's `iptables.log`, cni-teardown, silk-datastore-syncer).
//!
//! - [`Format::Rfc3339`], lager's "pretty" format (`lager.NewPrettySink`):
//!   `{"timestamp":"2026-01-02T03:04:05.123456789Z","level":"info","source":S,"message":"S.event","data":{..}}`
//! - [`Format::Epoch`], lager's older `LogFormat` (`lager.NewWriterSink`):
//!   `{"timestamp":"1767323045.123456789","source":S,"message":"S.event","log_level":1,"data":{..}}`
//!
//! Keys stand in the order of lager's Go structs. Lager marshals with Go's `encoding/json`,
//! which escapes `<`, `>`, `&`, U+2028 and U+2029 inside strings; [`render`] does the same,
//! so a line is byte for byte what lager writes for the same values.

use serde::Serialize;

/// Lager's two line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 3339 UTC timestamp with nanoseconds and a `level` name.
    Rfc3339,
    /// Epoch seconds with nine decimals (a string) and a numeric `log_level`.
    Epoch,
}

/// Lager's four levels. `log`'s `warn` has no lager twin and is written as [`Level::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Error,
    Fatal,
}

impl Level {
    /// The name in [`Format::Rfc3339`] lines.
    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    /// lager's `LogLevel` number in [`Format::Epoch`] lines.
    pub fn number(self) -> u8 {
        match self {
            Level::Debug => 0,
            Level::Info => 1,
            Level::Error => 2,
            Level::Fatal => 3,
        }
    }
}

/// One lager line (no newline) for `event` of logger `source` at `now_nanos` (nanoseconds
/// since the Unix epoch). `data` is lager's `Data`: an object is written as it serialises
/// (struct fields in their order, maps sorted, as Go writes them), null as `{}`, anything
/// else as `{"value": ..}`.
pub fn render<D: Serialize + ?Sized>(
    format: Format,
    now_nanos: i128,
    level: Level,
    source: &str,
    event: &str,
    data: &D,
) -> String {
    let data = data_object(data);
    let source_json = json_string(source);
    let message = json_string(&format!("{source}.{event}"));
    let line = match format {
        Format::Rfc3339 => format!(
            "{{\"timestamp\":\"{}\",\"level\":\"{}\",\"source\":{source_json},\"message\":{message},\"data\":{data}}}",
            rfc3339_at(now_nanos),
            level.name(),
        ),
        Format::Epoch => format!(
            "{{\"timestamp\":\"{}\",\"source\":{source_json},\"message\":{message},\"log_level\":{},\"data\":{data}}}",
            epoch_at(now_nanos),
            level.number(),
        ),
    };
    go_escape(line)
}

/// [`render`] at the current time.
pub fn render_now<D: Serialize + ?Sized>(
    format: Format,
    level: Level,
    source: &str,
    event: &str,
    data: &D,
) -> String {
    render(format, now_nanos(), level, source, event, data)
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_nanos() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

/// RFC 3339 with nanoseconds in UTC, as newer lager writes (`2026-01-02T03:04:05.123456789Z`).
pub fn timestamp_now() -> String {
    rfc3339_at(now_nanos())
}

/// [`timestamp_now`]'s format for a time given in nanoseconds since the Unix epoch.
pub fn rfc3339_at(nanos: i128) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// Older lager's epoch timestamp (`1464388983.714202881`, seconds with nine decimals) for a
/// time given in nanoseconds since the Unix epoch.
pub fn epoch_at(nanos: i128) -> String {
    format!(
        "{}.{:09}",
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000)
    )
}

/// `data` as a JSON object text.
fn data_object<D: Serialize + ?Sized>(data: &D) -> String {
    // A value that cannot be serialised (a map with non-string keys) is written as lager
    // writes a failed marshal of its data: an object naming the problem.
    let text = serde_json::to_string(data).unwrap_or_else(|e| {
        format!(
            "{{\"lager serialisation error\":{}}}",
            json_string(&e.to_string())
        )
    });
    if text == "null" {
        "{}".to_string()
    } else if text.starts_with('{') {
        text
    } else {
        format!("{{\"value\":{text}}}")
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Go's `encoding/json` escapes of HTML characters and the JavaScript line separators. They
/// stand only inside strings of valid JSON text, so replacing them anywhere is safe.
fn go_escape(line: String) -> String {
    if !line.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return line;
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// 2026-01-02T03:04:05.000000001Z.
    const T: i128 = 1_767_323_045_000_000_001;

    #[derive(Serialize)]
    struct Packet {
        // Field order, not sorted: as Go writes a struct.
        src_ip: &'static str,
        allowed: bool,
    }

    #[test]
    fn rfc3339_lines_are_lagers_pretty_format() {
        let cases: [(Level, Value, &str); 4] = [
            (
                Level::Info,
                json!({"lease": {"underlay_ip": "10.0.0.1"}, "note": "a \"quoted\" word"}),
                r#"{"timestamp":"2026-01-02T03:04:05.000000001Z","level":"info","source":"cfnetworking.silk-controller","message":"cfnetworking.silk-controller.lease-acquired","data":{"lease":{"underlay_ip":"10.0.0.1"},"note":"a \"quoted\" word"}}"#,
            ),
            (
                Level::Debug,
                Value::Null,
                r#"{"timestamp":"2026-01-02T03:04:05.000000001Z","level":"debug","source":"cfnetworking.silk-controller","message":"cfnetworking.silk-controller.lease-acquired","data":{}}"#,
            ),
            (
                Level::Error,
                json!("plain"),
                r#"{"timestamp":"2026-01-02T03:04:05.000000001Z","level":"error","source":"cfnetworking.silk-controller","message":"cfnetworking.silk-controller.lease-acquired","data":{"value":"plain"}}"#,
            ),
            (
                Level::Fatal,
                json!({"b": 1, "a": [1, 2]}),
                r#"{"timestamp":"2026-01-02T03:04:05.000000001Z","level":"fatal","source":"cfnetworking.silk-controller","message":"cfnetworking.silk-controller.lease-acquired","data":{"a":[1,2],"b":1}}"#,
            ),
        ];
        for (level, data, want) in cases {
            let got = render(
                Format::Rfc3339,
                T,
                level,
                "cfnetworking.silk-controller",
                "lease-acquired",
                &data,
            );
            assert_eq!(got, want);
        }
    }

    #[test]
    fn epoch_lines_are_lagers_log_format_with_numeric_levels() {
        for (level, n) in [
            (Level::Debug, 0),
            (Level::Info, 1),
            (Level::Error, 2),
            (Level::Fatal, 3),
        ] {
            let got = render(
                Format::Epoch,
                T,
                level,
                "cfnetworking.cni-teardown",
                "complete",
                &json!({}),
            );
            assert_eq!(
                got,
                format!(
                    r#"{{"timestamp":"1767323045.000000001","source":"cfnetworking.cni-teardown","message":"cfnetworking.cni-teardown.complete","log_level":{n},"data":{{}}}}"#
                )
            );
        }
    }

    #[test]
    fn structs_keep_field_order_and_strings_are_escaped_as_go_does() {
        let got = render(
            Format::Epoch,
            1_000_000_005,
            Level::Info,
            "netmon",
            "x",
            &Packet {
                src_ip: "<a & b>\u{2028}\u{2029}\n\t\u{1}",
                allowed: true,
            },
        );
        assert_eq!(
            got,
            r#"{"timestamp":"1.000000005","source":"netmon","message":"netmon.x","log_level":1,"data":{"src_ip":"\u003ca \u0026 b\u003e\u2028\u2029\n\t\u0001","allowed":true}}"#
        );
        let v: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["data"]["src_ip"], "<a & b>\u{2028}\u{2029}\n\t\u{1}");
        // Source and event are escaped too.
        let got = render(Format::Rfc3339, 0, Level::Info, "a\"b", "c<d", &Value::Null);
        assert_eq!(
            got,
            r#"{"timestamp":"1970-01-01T00:00:00.000000000Z","level":"info","source":"a\"b","message":"a\"b.c\u003cd","data":{}}"#
        );
    }

    #[test]
    fn timestamps_in_both_formats() {
        assert_eq!(epoch_at(1_000_000_005), "1.000000005");
        assert_eq!(epoch_at(0), "0.000000000");
        assert_eq!(epoch_at(1_764_675_601_123_456_789), "1764675601.123456789");
        assert_eq!(
            rfc3339_at(1_764_675_601_123_456_789),
            "2025-12-02T11:40:01.123456789Z"
        );
        let ts = timestamp_now();
        assert_eq!(ts.len(), "2026-01-02T03:04:05.123456789Z".len());
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.');
    }

    #[test]
    fn unserialisable_data_still_gives_a_json_line() {
        let mut m = std::collections::BTreeMap::new();
        m.insert((1, 2), "x");
        let got = render(Format::Epoch, 0, Level::Info, "s", "e", &m);
        let v: Value = serde_json::from_str(&got).unwrap();
        assert!(v["data"]["lager serialisation error"].is_string(), "{got}");
    }
}

/// Whatever strings a line carries (kernel log text in iptables-logger's records, error texts),
/// it is one line of JSON that reads back to the same values.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    proptest! {
        #[test]
        fn any_strings_render_to_one_json_line_that_reads_back(
            source in ".{0,20}",
            event in ".{0,20}",
            text in prop_oneof![".{0,64}", "[<>&\u{2028}\u{2029}\\\"\n\t\u{0}-\u{1f}a]{0,32}"],
            nanos in any::<i64>(),
            epoch in any::<bool>(),
        ) {
            let format = if epoch { Format::Epoch } else { Format::Rfc3339 };
            let data = json!({"error": text, "nested": {"k": [text.clone()]}});
            let line = render(format, i128::from(nanos), Level::Error, &source, &event, &data);
            prop_assert!(!line.contains('\n') && !line.contains(['<', '>', '&']), "{}", line);
            let v: Value = serde_json::from_str(&line).unwrap();
            prop_assert_eq!(&v["data"], &data);
            prop_assert_eq!(v["source"].as_str(), Some(source.as_str()));
            let message = format!("{source}.{event}");
            prop_assert_eq!(v["message"].as_str(), Some(message.as_str()));
        }
    }
}
