//! Property tests of what the syncer reads from garden: the container list and each
//! container's properties, served on a unix socket as garden serves them, whatever the
//! answer's status and body; and the handles from that list, which go back into request paths.
//! Every answer gets a value or an error, never a panic, and every request is one request line.
//! The command line, too: any argv gives a checked config or a config error.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use std::os::unix::net::UnixListener;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use silk_testkit::fuzz;

use crate::config::{Config, JOB_ARGV};
use crate::garden::Garden;

/// Serves one request on a fresh socket with `status` and `body`; returns the garden client
/// and a handle yielding the request line the server read.
fn serve_once(
    status: u16,
    body: Vec<u8>,
) -> (tempfile::TempDir, Garden, std::thread::JoinHandle<String>) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("garden.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let t = std::thread::spawn(move || fuzz::answer_once(l.accept().unwrap().0, status, &body));
    let g = Garden {
        network: "unix".into(),
        address: sock.display().to_string(),
        timeout: Duration::from_secs(5),
    };
    (dir, g, t)
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn any_command_line_is_a_config_or_an_error(
        edits in proptest::collection::vec((0usize..16, prop_oneof![fuzz::interesting_string(), "-{1,2}[a-zA-Z]{1,14}(=[a-z0-9]{0,4})?"]), 0..4),
    ) {
        let mut argv: Vec<String> = JOB_ARGV.iter().map(|a| a.to_string()).collect();
        for (at, text) in edits {
            // Index 0 stays the program name; the rest are replaced or appended.
            match argv.get_mut(at.max(1)) {
                Some(slot) => *slot = text,
                None => argv.push(text),
            }
        }
        if let Ok(c) = Config::from_args(argv) {
            prop_assert!(!c.interval.is_zero());
            prop_assert!(matches!(c.garden_network.as_str(), "unix" | "tcp"));
        }
    }

    #[test]
    fn any_garden_answer_is_a_value_or_an_error(
        status in prop_oneof![Just(200u16), 100u16..600],
        list in fuzz::json_input(json!({"Handles": ["h1", "5f3c9a1e-7b2d-4c8e-6a91-0d4e"]}), &["Handles"]),
        props in fuzz::json_input(json!({"log_config": "{\"guid\":\"app\"}", "network.app_id": "app"}), &["log_config"]),
    ) {
        let (_d, g, t) = serve_once(status, list.0.clone());
        let got = g.containers();
        t.join().unwrap();
        if got.is_ok() {
            prop_assert_eq!(status, 200);
        }
        let (_d, g, t) = serve_once(status, props.0.clone());
        let _ = g.properties("h1");
        t.join().unwrap();
    }

    #[test]
    fn any_handle_makes_one_request_line(handle in prop_oneof![fuzz::interesting_string(), "[a-z0-9-]{1,36}"]) {
        let (_d, g, t) = serve_once(200, b"{}".to_vec());
        let _ = g.properties(&handle);
        let head = t.join().unwrap();
        let line = head.split("\r\n").next().unwrap();
        let path = line.strip_prefix("GET ").and_then(|r| r.strip_suffix(" HTTP/1.1"));
        let Some(path) = path else {
            return Err(TestCaseError::fail(format!("request line {line:?}")));
        };
        prop_assert!(path.starts_with("/containers/") && path.ends_with("/properties"), "{}", line);
        prop_assert!(path.bytes().all(|b| b.is_ascii_graphic()), "{:?}", line);
        prop_assert_eq!(head.matches("\r\n\r\n").count(), 1, "{:?}", head);
    }
}

/// Plain unit tests with the minimal inputs the properties above found.
mod regressions {
    use super::*;

    /// A handle from garden's list went into the request path as written: one with a space or a
    /// CRLF ended the request line early or added headers. It is one percent-encoded segment now.
    #[test]
    fn handles_are_percent_encoded_in_the_path() {
        for (handle, want) in [
            ("ꟲ", "GET /containers/%EA%9F%B2/properties HTTP/1.1"),
            (
                "a b\r\nX: y",
                "GET /containers/a%20b%0D%0AX%3A%20y/properties HTTP/1.1",
            ),
            (
                "5f3c9a1e-7b2d-4c8e-6a91-0d4e",
                "GET /containers/5f3c9a1e-7b2d-4c8e-6a91-0d4e/properties HTTP/1.1",
            ),
        ] {
            let (_d, g, t) = serve_once(200, b"{}".to_vec());
            g.properties(handle).unwrap();
            let head = t.join().unwrap();
            assert_eq!(head.split("\r\n").next().unwrap(), want);
        }
    }
}
