//! Runs the real `iptables-logger` binary on a temporary kernel log: lines appended are turned
//! into output lines; rotation of the kernel log (rename + new file, truncation) and of the
//! output log keep the processing going, without losing or repeating lines.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use silk_dataplane::datastore::MetadataStore;

const BIN: &str = env!("CARGO_BIN_EXE_iptables-logger");

const EGRESS_OK: &str = "Jun 28 18:21:24 localhost kernel: [100471.222018] OK_container-handle-1-longer IN=s-010255178004 OUT=eth0 MAC=aa:aa:0a:ff:b2:04:ee:ee:0a:ff:b2:04:08:00 SRC=10.255.0.1 DST=10.10.10.10 LEN=29 TOS=0x00 PREC=0x00 TTL=63 ID=2806 DF PROTO=UDP SPT=36556 DPT=11111 LEN=9 MARK=0x1";
const OTHER: &str = "Jun 28 18:21:25 localhost kernel: [100472.000001] eth0: renamed from veth1234";

/// An egress-denied line from 10.255.0.1 with a distinct source port, to tell lines apart.
fn denied(spt: u32) -> String {
    format!("Jun 30 16:07:06 localhost kernel: [265213.303412] DENY_container-handle-1-long IN=s-010255095010 OUT=eth0 MAC=aa:aa:0a:ff:5f:0a:ee:ee:0a:ff:5f:0a:08:00 SRC=10.255.0.1 DST=10.10.10.10 LEN=30 TOS=0x00 PREC=0x00 TTL=63 ID=2535 DF PROTO=UDP SPT={spt} DPT=25555 LEN=10 MARK=0x1")
}

struct Logger {
    child: Child,
    stdout: mpsc::Receiver<String>,
}

impl Drop for Logger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Logger {
    fn start(config: &Path) -> Logger {
        let mut child = Command::new(BIN)
            .arg(format!("-config-file={}", config.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let l = Logger { child, stdout: rx };
        l.wait_for_log("cfnetworking.iptables-logger.started tailing file");
        l
    }

    fn wait_for_log(&self, message: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.stdout.recv_timeout(left) else {
                break;
            };
            let v: Value = serde_json::from_str(&line).expect("stdout is lager JSON");
            if v["message"] == message {
                return v;
            }
        }
        panic!("no {message:?} on stdout");
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn append(path: &Path, lines: &[&str]) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn output_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("output line is JSON"))
        .collect()
}

/// Waits until `path` holds `n` lines, then a little longer to see that no more arrive.
fn wait_for_lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = output_lines(path);
        if got.len() >= n {
            std::thread::sleep(Duration::from_millis(600));
            let got = output_lines(path);
            assert_eq!(got.len(), n, "extra output lines: {got:#?}");
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "want {n} lines, have {}",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn src_ports(lines: &[Value]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| l["data"]["packet"]["src_port"].as_u64().unwrap())
        .collect()
}

struct Setup {
    _dir: tempfile::TempDir,
    kern: PathBuf,
    out: PathBuf,
    config: PathBuf,
    agent: UdpSocket,
}

fn setup(format: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let kern = dir.path().join("kern.log");
    let out = dir.path().join("iptables.log");
    let store = dir.path().join("store.json");
    std::fs::write(
        &kern,
        "Jun 28 18:00:00 localhost kernel: old OK_x SRC=1.1.1.1\n",
    )
    .unwrap();
    MetadataStore::new(&store, None)
        .add(
            "container-handle-1-longer-than-29-chars",
            "10.255.0.1",
            None,
            json!({"org_id": "organization_id_1", "space_id": "space_id_1", "app_id": "app_id_1", "policy_group_id": "pg1"}),
        )
        .unwrap();
    let agent = UdpSocket::bind("127.0.0.1:0").unwrap();
    agent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let config = dir.path().join("iptables-logger.json");
    std::fs::write(
        &config,
        json!({
            "kernel_log_file": kern,
            "container_metadata_file": store,
            "output_log_file": out,
            "metron_address": agent.local_addr().unwrap().to_string(),
            "host_ip": "1.2.3.4",
            "host_guid": "some-guid",
            "log_timestamp_format": format,
        })
        .to_string(),
    )
    .unwrap();
    Setup {
        _dir: dir,
        kern,
        out,
        config,
        agent,
    }
}

#[test]
fn writes_upstream_lines_and_survives_rotation_of_both_logs() {
    let s = setup("rfc3339");
    let mut logger = Logger::start(&s.config);

    // The line already in the file is not read (tailing starts at the end); other kernel
    // lines are skipped.
    append(&s.kern, &[OTHER, EGRESS_OK]);
    let got = wait_for_lines(&s.out, 1);
    let mut line = got[0].clone();
    assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    line["timestamp"] = json!("some-timestamp");
    assert_eq!(
        line,
        json!({
            "timestamp": "some-timestamp",
            "level": "info",
            "source": "cfnetworking.iptables",
            "message": "cfnetworking.iptables.egress-allowed",
            "data": {
                "source": {
                    "container_id": "container-handle-1-longer-than-29-chars",
                    "app_guid": "app_id_1",
                    "space_guid": "space_id_1",
                    "organization_guid": "organization_id_1",
                    "host_ip": "1.2.3.4",
                    "host_guid": "some-guid"
                },
                "packet": {
                    "direction": "egress", "allowed": true,
                    "src_ip": "10.255.0.1", "src_port": 36556,
                    "dst_ip": "10.10.10.10", "dst_port": 11111,
                    "protocol": "UDP", "mark": "0x1", "icmp_code": 0, "icmp_type": 0
                }
            }
        })
    );

    // Rename rotation: the end of the old file is still read, then the new file from its start.
    append(&s.kern, &[&denied(1)]);
    let rotated = s.kern.with_extension("log.1");
    std::fs::rename(&s.kern, &rotated).unwrap();
    append(&rotated, &[&denied(2)]);
    std::fs::write(&s.kern, format!("{}\n", denied(3))).unwrap();
    let got = wait_for_lines(&s.out, 4);
    assert_eq!(src_ports(&got[1..]), [1, 2, 3]);
    assert_eq!(got[1]["message"], "cfnetworking.iptables.egress-denied");

    // Truncation in place: reading starts over.
    append(&s.kern, &[&denied(4)]);
    wait_for_lines(&s.out, 5);
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&s.kern)
        .unwrap();
    append(&s.kern, &[&denied(5)]);
    let got = wait_for_lines(&s.out, 6);
    assert_eq!(src_ports(&got[1..]), [1, 2, 3, 4, 5]);

    // Output log moved away: after the once-a-second check, lines go to a new file.
    std::fs::rename(&s.out, s.out.with_extension("log.1")).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    append(&s.kern, &[&denied(6)]);
    let got = wait_for_lines(&s.out, 1);
    assert_eq!(src_ports(&got), [6]);
    assert_eq!(output_lines(&s.out.with_extension("log.1")).len(), 6);

    // uptime reaches the metron agent as a dropsonde value metric.
    let mut buf = [0u8; 2048];
    let n = s.agent.recv(&mut buf).unwrap();
    let env = <silk_ops::dropsonde::Envelope as prost::Message>::decode(&buf[..n]).unwrap();
    assert_eq!(env.origin, "iptables-logger");
    assert_eq!(env.value_metric.unwrap().name, "uptime");

    let status = logger.sigterm();
    assert!(status.success(), "{status}");
}

#[test]
fn deprecated_format_writes_epoch_timestamps_and_keeps_existing_output() {
    let s = setup("deprecated");
    std::fs::write(&s.out, "{\"earlier\":true}\n").unwrap();
    let _logger = Logger::start(&s.config);
    append(&s.kern, &[EGRESS_OK]);
    let got = wait_for_lines(&s.out, 2);
    let line = &got[1];
    let ts = line["timestamp"].as_str().unwrap();
    let (secs, frac) = ts.split_once('.').unwrap();
    assert!(
        secs.parse::<u64>().unwrap() > 1_700_000_000 && frac.len() == 9,
        "{ts}"
    );
    assert_eq!(line["log_level"], 1);
    assert!(line.get("level").is_none());
    assert_eq!(line["message"], "cfnetworking.iptables.egress-allowed");
}

#[test]
fn bad_config_exits_64_and_missing_kernel_log_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"kernel_log_file": ""}"#).unwrap();
    let out = Command::new(BIN)
        .arg(format!("-config-file={}", bad.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kernel_log_file: must not be empty"), "{err}");

    let s = setup("rfc3339");
    std::fs::remove_file(&s.kern).unwrap();
    let out = Command::new(BIN)
        .arg(format!("-config-file={}", s.config.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tail-input"));
}
