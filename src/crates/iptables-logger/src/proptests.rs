//! Property tests of iptables-logger's outside inputs: kernel log lines (any text, and real
//! LOG lines of each prefix kind mutated), the kernel log file as it grows (any bytes, in any
//! chunks), the metadata store it looks containers up in, and its config file. Every input
//! gets a record or an error, never a panic; the follower hands over exactly the lines written.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use std::io::Write;

use proptest::prelude::*;
use silk_testkit::fuzz;

use crate::config::Config;
use crate::containers::find_by_ip;
use crate::follow::{Follower, MAX_LINE};
use crate::parse::{is_iptables_log, parse, tests as lines};
use crate::record::{lookup_ip, merge};

const CONFIG: &str = r#"{
  "kernel_log_file": "/var/log/kern.log",
  "container_metadata_file": "/var/vcap/data/container-metadata/store.json",
  "output_log_file": "/var/vcap/sys/log/iptables-logger/iptables.log",
  "metron_address": "127.0.0.1:3457", "host_ip": "10.0.16.12",
  "host_guid": "3f4e5a6b-0c1d-4e2f-8a9b-7c6d5e4f3a2b", "log_timestamp_format": "rfc3339"
}"#;

fn kernel_line() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::sample::select(vec![
            lines::C2C_OK_TCP,
            lines::C2C_DENY_TCP,
            lines::ASG_OK_UDP,
            lines::ASG_DENY_TCP,
            lines::ASG_DENY_ICMP,
            lines::ORL_DENY_TCP,
        ])
        .prop_flat_map(fuzz::text_or_mutated),
    ]
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn any_kernel_line_gives_a_record(line in kernel_line(), store in fuzz::json_value_with_keys(&["handle", "ip", "metadata", "app_id", "space_id", "org_id"])) {
        let _ = is_iptables_log(&line);
        let p = parse(&line);
        prop_assert_eq!(p.allowed, line.contains("OK_"));
        let entries = serde_json::from_value(store).unwrap_or_default();
        let info = find_by_ip(&entries, lookup_ip(&p));
        let (event, data) = merge(&p, info);
        prop_assert!(event.ends_with("-allowed") || event.ends_with("-denied"));
        serde_json::to_string(&data).unwrap();
    }

    #[test]
    fn the_follower_hands_over_exactly_the_lines_written(
        chunks in prop::collection::vec(fuzz::bytes_or_mutated(lines::ASG_DENY_ICMP.as_bytes()), 0..6),
        newline_after in prop::collection::vec(any::<bool>(), 6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kern.log");
        std::fs::write(&path, b"before start\n").unwrap();
        let mut f = Follower::open_at_end(&path).unwrap();
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        let mut written = Vec::new();
        let mut got = Vec::new();
        for (chunk, nl) in chunks.iter().zip(&newline_after) {
            file.write_all(chunk).unwrap();
            written.extend_from_slice(chunk);
            if *nl {
                file.write_all(b"\n").unwrap();
                written.push(b'\n');
            }
            f.poll(&mut |l| got.push(l.to_string())).unwrap();
        }
        // Every complete line, decoded lossily, cut at MAX_LINE, without a trailing \r.
        let mut want: Vec<String> = written
            .split(|b| *b == b'\n')
            .map(|l| {
                let l = &l[..l.len().min(MAX_LINE)];
                String::from_utf8_lossy(l).trim_end_matches('\r').to_string()
            })
            .collect();
        want.pop(); // the unfinished rest after the last newline
        prop_assert_eq!(got, want);
    }

    #[test]
    fn any_config_parses_or_fails(text in fuzz::config_text(CONFIG)) {
        let _ = Config::parse(&text);
    }
}
