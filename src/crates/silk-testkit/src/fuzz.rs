//! Generators for the property-based tests of every parser that takes outside input (CNI stdin,
//! request and response bodies, store files, iptables-save text, kernel log lines, configs):
//! arbitrary JSON, JSON objects built from a parser's own keys, real fixtures with mutated
//! fields, and fixture bytes truncated or with bytes flipped, inserted or removed; and the
//! fake local services ([`answer_once`], [`serve_unix`]) such parsers read their input from.
//!
//! Case counts come from `PROPTEST_CASES` (`scripts/test` keeps it modest, `scripts/fuzz`
//! raises it). A failure is reported with proptest's minimal input and becomes a plain unit
//! test beside the parser, so nothing is persisted to files.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value};

/// The configuration of every property test: proptest's defaults and environment
/// (`PROPTEST_CASES`, `PROPTEST_RNG_SEED`, ...), no regression files written into the tree.
pub fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::default()
    }
}

/// Strings a parser of ours is likely to treat specially, mixed with arbitrary text.
pub fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "[ -~]{0,24}",
        2 => "[a-z0-9 \t\n\r:/.=-]{0,16}",
        1 => prop::sample::select(vec![
            "", " ", "0", "-1", "1.0.0", "0.4.0", "1.1.0", "10.255.30.2", "10.255.0.0/16",
            "10.255.30.0/24", "0.0.0.0/0", "::1", "fd00::/64", "127.0.0.1:8080", "ee:ee:0a:ff:1e:00",
            "silk-cni", "eth0", "null", "true", "\u{0}", "é", "/", ":", "=", "%", "\\",
        ])
        .prop_map(str::to_string),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0i64, 1, -1, 65535, 65536, i64::from(u32::MAX) + 1])
            .prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        interesting_string().prop_map(Value::String),
    ]
}

/// Any JSON value up to a few levels deep, object keys drawn from `keys` half of the time.
pub fn json_value_with_keys(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        prop::sample::select(if keys.is_empty() { &["k"][..] } else { keys })
            .prop_map(str::to_string),
        interesting_string(),
    ];
    leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Any JSON value up to a few levels deep.
pub fn json_value() -> impl Strategy<Value = Value> {
    json_value_with_keys(&[])
}

/// Every object key of `doc`, sorted, each once: the field names a generator should hit. The
/// list is leaked (strategies hold `'static` data); tests call this once per property.
pub fn keys_of(doc: &Value) -> &'static [&'static str] {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    out.insert(k.clone());
                    walk(c, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut keys = BTreeSet::new();
    walk(doc, &mut keys);
    let keys: Vec<&'static str> = keys
        .into_iter()
        .map(|k| &*Box::leak(k.into_boxed_str()))
        .collect();
    Box::leak(keys.into_boxed_slice())
}

/// Reads one request head from `conn` and answers it with `status` and `body`, as the local
/// services whose answers a parser reads would; returns the request head as read.
pub fn answer_once<C: Read + Write>(mut conn: C, status: u16, body: &[u8]) -> String {
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).unwrap_or(0);
    respond(&mut conn, status, body);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Writes an HTTP/1.1 answer with `status` and `body` to `conn`, ignoring a peer that left.
pub fn respond<C: Write>(conn: &mut C, status: u16, body: &[u8]) {
    let mut resp = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(body);
    let _ = conn.write_all(&resp);
}

/// Serves HTTP/1.1 on the unix socket `listener` for the rest of the test process, a thread
/// per connection, as a local service (garden, the policy agent) would: each request's first
/// line (`GET /containers HTTP/1.1`) goes to `answer`, whose status and body are sent back.
pub fn serve_unix<F>(listener: std::os::unix::net::UnixListener, answer: F)
where
    F: Fn(&str) -> (u16, String) + Send + Sync + 'static,
{
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = conn.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = answer(head.lines().next().unwrap_or(""));
                respond(&mut conn, status, body.as_bytes());
            });
        }
    });
}

/// One edit of a JSON document; `path` picks children by index modulo their number.
#[derive(Debug, Clone)]
pub enum JsonEdit {
    /// The value at `path` replaced.
    Replace { path: Vec<usize>, with: Value },
    /// The value at `path` removed from its object or array.
    Remove { path: Vec<usize> },
    /// A key added to (or replaced in) the object at `path`.
    Insert {
        path: Vec<usize>,
        key: String,
        with: Value,
    },
    /// Text spliced into the `nth` string of the document (modulo their number; separators,
    /// whitespace, newlines), at byte `at` modulo its length, moved to a character boundary.
    Splice { nth: usize, at: usize, text: String },
}

fn has_children(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// Walks `path` as far as it goes; returns the node reached.
fn walk<'a>(v: &'a mut Value, path: &[usize]) -> &'a mut Value {
    match path.split_first() {
        Some((&pick, rest)) if has_children(v) => {
            let child = match v {
                Value::Object(m) => {
                    let n = m.len();
                    m.values_mut().nth(pick % n)
                }
                Value::Array(a) => {
                    let n = a.len();
                    a.get_mut(pick % n)
                }
                _ => None,
            };
            // has_children: a non-empty container has a child at every index modulo its size.
            walk(child.expect("non-empty container"), rest)
        }
        _ => v,
    }
}

/// Every string value of `v`, depth first.
fn collect_strings<'a>(v: &'a mut Value, out: &mut Vec<&'a mut String>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter_mut().for_each(|c| collect_strings(c, out)),
        Value::Object(m) => m.values_mut().for_each(|c| collect_strings(c, out)),
        _ => {}
    }
}

/// Applies `edits` to a copy of `doc`.
pub fn apply_edits(doc: &Value, edits: &[JsonEdit]) -> Value {
    let mut doc = doc.clone();
    for e in edits {
        match e {
            JsonEdit::Replace { path, with } => *walk(&mut doc, path) = with.clone(),
            JsonEdit::Remove { path } => {
                let Some((last, parent)) = path.split_last() else {
                    continue;
                };
                match walk(&mut doc, parent) {
                    Value::Object(m) if !m.is_empty() => {
                        let n = m.len();
                        if let Some(k) = m.keys().nth(last % n).cloned() {
                            m.remove(&k);
                        }
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let n = a.len();
                        a.remove(last % n);
                    }
                    _ => {}
                }
            }
            JsonEdit::Insert { path, key, with } => {
                if let Value::Object(m) = walk(&mut doc, path) {
                    m.insert(key.clone(), with.clone());
                }
            }
            JsonEdit::Splice { nth, at, text } => {
                let mut strings = Vec::new();
                collect_strings(&mut doc, &mut strings);
                let n = strings.len();
                if let Some(s) = strings.into_iter().nth(nth % n.max(1)) {
                    let mut at = at % (s.len() + 1);
                    while !s.is_char_boundary(at) {
                        at += 1;
                    }
                    s.insert_str(at, text);
                }
            }
        }
    }
    doc
}

/// What a splice inserts: a newline starting a line of its own half of the time (what would
/// smuggle a command into line-based text), otherwise separators and quotes.
fn splice_text() -> impl Strategy<Value = String> {
    prop_oneof!["\n[ -~]{0,12}", "[ \t\n\r;:/=,\\\"-]{1,3}[a-z0-9 -]{0,6}",]
}

fn json_edit(keys: &'static [&'static str]) -> impl Strategy<Value = JsonEdit> {
    let path = || prop::collection::vec(any::<usize>(), 0..5);
    let key = prop_oneof![
        prop::sample::select(if keys.is_empty() { &["k"][..] } else { keys })
            .prop_map(str::to_string),
        interesting_string(),
    ];
    prop_oneof![
        (path(), json_value_with_keys(keys))
            .prop_map(|(path, with)| JsonEdit::Replace { path, with }),
        (path(), leaf()).prop_map(|(path, with)| JsonEdit::Replace { path, with }),
        path().prop_map(|path| JsonEdit::Remove { path }),
        (path(), key, json_value_with_keys(keys)).prop_map(|(path, key, with)| JsonEdit::Insert {
            path,
            key,
            with
        }),
        (any::<usize>(), any::<usize>(), splice_text())
            .prop_map(|(nth, at, text)| JsonEdit::Splice { nth, at, text }),
    ]
}

/// `doc` (a real fixture) with one to four fields replaced by values of any type, removed,
/// or added; object keys come from `keys` half of the time.
pub fn mutated_json(doc: Value, keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::collection::vec(json_edit(keys), 1..5).prop_map(move |edits| apply_edits(&doc, &edits))
}

/// Generated bytes, shown as an escaped byte string (`b"{\"x\xb1"`) in failure reports, so a
/// minimal input can be pasted into a regression test.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let escaped: String = self
            .0
            .iter()
            .flat_map(|b| std::ascii::escape_default(*b))
            .map(char::from)
            .collect();
        write!(f, "b\"{escaped}\"")
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// One edit of a byte string; positions are taken modulo its length.
#[derive(Debug, Clone)]
pub enum ByteEdit {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
}

/// Applies `edits` to a copy of `bytes`.
pub fn apply_byte_edits(bytes: &[u8], edits: &[ByteEdit]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for e in edits {
        let n = b.len();
        match *e {
            ByteEdit::Truncate(at) => b.truncate(at % (n + 1)),
            ByteEdit::Flip(at, mask) if n > 0 => b[at % n] ^= mask.max(1),
            ByteEdit::Insert(at, byte) => b.insert(at % (n + 1), byte),
            ByteEdit::Remove(at) if n > 0 => {
                b.remove(at % n);
            }
            _ => {}
        }
    }
    b
}

/// `bytes` (a real fixture) truncated, or with bytes flipped, inserted or removed.
pub fn mutated_bytes(bytes: Vec<u8>) -> impl Strategy<Value = Bytes> {
    let edit = prop_oneof![
        any::<usize>().prop_map(ByteEdit::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(a, m)| ByteEdit::Flip(a, m)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, m)| ByteEdit::Insert(a, m)),
        (
            any::<usize>(),
            prop::sample::select(b" \t\n\r\"{}[]:,=/-.0".to_vec())
        )
            .prop_map(|(a, m)| ByteEdit::Insert(a, m)),
        any::<usize>().prop_map(ByteEdit::Remove),
    ];
    prop::collection::vec(edit, 1..8).prop_map(move |edits| Bytes(apply_byte_edits(&bytes, &edits)))
}

/// The input of a byte parser: arbitrary bytes, or a real fixture mutated.
pub fn bytes_or_mutated(fixture: &[u8]) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512).prop_map(Bytes),
        mutated_bytes(fixture.to_vec()),
    ]
}

/// The input of a text parser: arbitrary text, or a real fixture mutated (bytes decoded lossily).
pub fn text_or_mutated(fixture: &str) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        mutated_bytes(fixture.as_bytes().to_vec())
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// The input of a JSON parser: arbitrary bytes, arbitrary JSON, the fixture with mutated
/// fields, or the fixture's text truncated or byte-flipped.
pub fn json_input(fixture: Value, keys: &'static [&'static str]) -> impl Strategy<Value = Bytes> {
    let text = fixture.to_string().into_bytes();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Bytes),
        1 => json_value_with_keys(keys).prop_map(|v| Bytes(v.to_string().into_bytes())),
        3 => mutated_json(fixture, keys).prop_map(|v| Bytes(v.to_string().into_bytes())),
        2 => mutated_bytes(text),
    ]
}

/// Checks an `iptables-restore` payload planned from outside input: every line is a table,
/// chain declaration, rule command or `COMMIT` line, and its `-A` lines are exactly `appended`
/// (each `-A <chain> <spec>`), in order, so no input smuggled a line of its own in.
pub fn check_restore_text(text: &str, appended: &[String]) -> Result<(), String> {
    for line in text.lines() {
        let ok = line.starts_with('*')
            || line.starts_with(':')
            || line == "COMMIT"
            || ["-A ", "-D ", "-I ", "-X "]
                .iter()
                .any(|c| line.starts_with(c));
        if !ok {
            return Err(format!("stray line {line:?} in payload:\n{text}"));
        }
    }
    let got: Vec<&str> = text.lines().filter(|l| l.starts_with("-A ")).collect();
    if got != appended {
        return Err(format!(
            "payload appends {got:?}, planned {appended:?}; payload:\n{text}"
        ));
    }
    Ok(())
}

/// The text of a JSON config file (`fixture`, a real one): its fields mutated (keys from the
/// fixture itself), any JSON, any bytes, or its text truncated or byte-flipped.
pub fn config_text(fixture: &str) -> impl Strategy<Value = String> {
    let doc: Value = serde_json::from_str(fixture).unwrap_or(Value::Null);
    let keys = keys_of(&doc);
    prop_oneof![
        json_input(doc, keys).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        text_or_mutated(fixture),
    ]
}

#[cfg(test)]
mod tests {

    #[test]
    fn serve_unix_answers_each_request_by_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        serve_unix(
            std::os::unix::net::UnixListener::bind(&sock).unwrap(),
            |line| {
                (
                    if line.starts_with("GET /a ") {
                        200
                    } else {
                        404
                    },
                    line.to_string(),
                )
            },
        );
        for (path, want) in [
            (
                "/a",
                "HTTP/1.1 200 X\r\nContent-Length: 15\r\n\r\nGET /a HTTP/1.1",
            ),
            (
                "/b",
                "HTTP/1.1 404 X\r\nContent-Length: 15\r\n\r\nGET /b HTTP/1.1",
            ),
        ] {
            let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
            c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            let mut got = String::new();
            c.read_to_string(&mut got).unwrap();
            assert_eq!(got, want);
        }
    }
    use super::*;

    #[test]
    fn edits_reach_nested_fields_and_leave_the_fixture_alone() {
        let doc = serde_json::json!({"a": {"b": [1, 2]}, "c": "x"});
        let out = apply_edits(
            &doc,
            &[
                JsonEdit::Replace {
                    path: vec![0, 0, 1],
                    with: Value::Null,
                },
                JsonEdit::Remove { path: vec![1] },
                JsonEdit::Insert {
                    path: vec![],
                    key: "d".into(),
                    with: Value::Bool(true),
                },
            ],
        );
        assert_eq!(out, serde_json::json!({"a": {"b": [1, null]}, "d": true}));
        assert_eq!(doc["c"], "x");
        let splice = |at| JsonEdit::Splice {
            nth: 2,
            at,
            text: "\n-A".into(),
        };
        let doc = serde_json::json!({"a": ["x", 1, "y"], "s": "éb"});
        assert_eq!(
            apply_edits(&doc, &[splice(1)]),
            serde_json::json!({"a": ["x", 1, "y"], "s": "é\n-Ab"})
        );
        assert_eq!(
            apply_edits(&doc, &[splice(3)]),
            serde_json::json!({"a": ["x", 1, "y"], "s": "éb\n-A"})
        );
    }

    #[test]
    fn byte_edits_stay_in_bounds() {
        assert_eq!(
            apply_byte_edits(b"abc", &[ByteEdit::Truncate(2), ByteEdit::Flip(7, 0)]),
            b"ac"
        );
        assert_eq!(
            apply_byte_edits(b"", &[ByteEdit::Remove(3), ByteEdit::Flip(1, 9)]),
            b""
        );
        assert_eq!(
            apply_byte_edits(b"ab", &[ByteEdit::Insert(5, b'x')]),
            b"abx"
        );
    }
}
