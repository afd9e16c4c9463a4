//! The real healthchecker watches a fake endpoint on 127.0.0.1 that answers, then hangs; when it
//! gives up, the command silk-daemon's monit file execs (`if 1 restarts within 1 cycles then
//! exec ...`) is run as monit runs it, with a monit shim that records its calls.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HEALTHCHECKER: &str = env!("CARGO_BIN_EXE_healthchecker");
const RESTART_MONIT_JOB: &str = env!("CARGO_BIN_EXE_restart-monit-job");

/// Answers 200 while `healthy`; afterwards accepts connections and never answers (a stuck job).
fn fake_endpoint(healthy: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            if healthy.load(Ordering::SeqCst) {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            } else {
                held.push(conn);
            }
        }
    });
    port
}

/// A monit stand-in: appends its arguments to `calls`, reports silk-daemon running on `summary`.
fn monit_shim(dir: &Path) -> (String, std::path::PathBuf) {
    let calls = dir.join("monit-calls");
    let source = dir.join("monit.sh");
    let shim = dir.join("monit");
    std::fs::write(
        &source,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nif [ \"$1\" = summary ]; then\n  echo \"Process 'silk-daemon'                 running\"\n  echo \"Process 'silk-daemon-healthchecker'   not monitored\"\nfi\n",
            calls.display()
        ),
    )
    .unwrap();
    // Copied by another process: a file this multi-threaded test process had open for writing
    // could still be open in a child forked meanwhile, and exec would fail with ETXTBSY.
    let copied = Command::new("install")
        .arg("-m")
        .arg("0755")
        .arg(&source)
        .arg(&shim)
        .status()
        .unwrap();
    assert!(copied.success());
    (shim.display().to_string(), calls)
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("healthchecker still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The restart command silk-daemon's monit file execs, with the counter file property filled in.
fn monit_exec_command(counter_file: &str) -> Vec<String> {
    let monit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../jobs/silk-daemon/monit"
    ))
    .unwrap();
    let line = monit
        .lines()
        .find(|l| l.contains("then exec"))
        .expect("silk-daemon's monit file execs restart-monit-job");
    assert!(line.contains("if 1 restarts within 1 cycles"), "{line}");
    let start = line.find("exec \"").unwrap() + "exec \"".len();
    let command = &line[start..line.rfind('"').unwrap()];
    let command = command.replace(
        "<%= p(\"healthchecker.failure_counter_file\") %>",
        counter_file,
    );
    command.split_whitespace().map(String::from).collect()
}

fn config(port: u16, counter: &Path) -> String {
    format!(
        "---\ncomponent_name: silk-daemon-healthchecker\nfailure_counter_file: {}\nlog_level: debug\n\
         healthcheck_endpoint:\n  host: 127.0.0.1\n  port: {port}\n\
         healthcheck_poll_interval: 100ms\nhealthcheck_timeout: 300ms\n\
         start_response_delay_interval: 10ms\nstartup_delay_buffer: 10ms\n",
        counter.display()
    )
}

#[test]
fn a_stuck_job_is_restarted_through_monit_and_unmonitored_after_ten() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("consecutive_healthchecker_failures.count");
    std::fs::write(&counter, "4\n").unwrap();
    let healthy = Arc::new(AtomicBool::new(true));
    let port = fake_endpoint(healthy.clone());
    let config_path = dir.path().join("healthchecker.yml");
    std::fs::write(&config_path, config(port, &counter)).unwrap();

    let mut child = Command::new(HEALTHCHECKER)
        .arg("-c")
        .arg(&config_path)
        .stdout(std::fs::File::create(dir.path().join("healthchecker.log")).unwrap())
        .spawn()
        .unwrap();
    // A healthy poll resets the count left by earlier failures.
    wait_until(Duration::from_secs(30), "a healthy poll", || {
        std::fs::read_to_string(&counter).unwrap() == "0\n"
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "healthchecker exited while the endpoint was healthy"
    );

    healthy.store(false, Ordering::SeqCst);
    let status = wait_for_exit(&mut child, Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(1),
        "healthchecker gives up on a stuck endpoint with exit 1"
    );
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "1\n");
    let log = std::fs::read_to_string(dir.path().join("healthchecker.log")).unwrap();
    assert!(
        log.contains("\"source\":\"silk-daemon-healthchecker\""),
        "{log}"
    );
    assert!(
        log.contains("silk-daemon-healthchecker.endpoint-unhealthy"),
        "{log}"
    );

    // monit: the healthchecker died, so its exec rule runs.
    let (shim, calls) = monit_shim(dir.path());
    let command = monit_exec_command(&counter.display().to_string());
    assert_eq!(
        command[0],
        "/var/vcap/packages/silk-healthchecker/bin/restart-monit-job"
    );
    assert_eq!(command[1], "silk-daemon");
    let run = |args: &[String]| {
        Command::new(RESTART_MONIT_JOB)
            .args(args)
            .env("MONIT", &shim)
            .env("RESTART_MONIT_JOB_RUN_DIR", dir.path().join("run"))
            .env(
                "RESTART_MONIT_JOB_LOG",
                dir.path().join("restart-silk-daemon.log"),
            )
            .env("RESTART_MONIT_JOB_WAIT_SECONDS", "30")
            .status()
            .unwrap()
    };
    let ok = run(&command[1..]).success();
    let restart_log =
        std::fs::read_to_string(dir.path().join("restart-silk-daemon.log")).unwrap_or_default();
    assert!(ok, "restart-monit-job failed: {restart_log}");
    let recorded = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        recorded.lines().collect::<Vec<_>>(),
        [
            "restart silk-daemon",
            "summary",
            "monitor silk-daemon-healthchecker"
        ]
    );
    let restart_log = std::fs::read_to_string(dir.path().join("restart-silk-daemon.log")).unwrap();
    assert!(
        restart_log.contains("Monit triggered restart"),
        "{restart_log}"
    );
    assert!(
        restart_log.contains("silk-daemon was restarted"),
        "{restart_log}"
    );
    assert!(!dir.path().join("run/restart-silk-daemon.pid").exists());

    // Ten consecutive failures: no more restarts, the healthchecker is unmonitored.
    std::fs::write(&counter, "10\n").unwrap();
    std::fs::remove_file(&calls).unwrap();
    assert!(run(&command[1..]).success());
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "unmonitor silk-daemon-healthchecker\n"
    );
}

#[test]
fn signals_end_it_cleanly_and_bad_config_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("count");
    let config_path = dir.path().join("healthchecker.yml");
    let port = fake_endpoint(Arc::new(AtomicBool::new(true)));
    // Default start-up delay (35 s): the signal arrives while it waits.
    let text = config(port, &counter).replace(
        "start_response_delay_interval: 10ms\nstartup_delay_buffer: 10ms\n",
        "",
    );
    std::fs::write(&config_path, text).unwrap();
    for signal in ["TERM", "INT", "USR1"] {
        let mut child = Command::new(HEALTHCHECKER)
            .arg("-c")
            .arg(&config_path)
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(30), "the counter file", || {
            counter.exists()
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success());
        assert_eq!(
            wait_for_exit(&mut child, Duration::from_secs(30)).code(),
            Some(0),
            "SIG{signal}"
        );
        std::fs::remove_file(&counter).unwrap();
    }

    std::fs::write(&config_path, "component_name: x\n").unwrap();
    let out = Command::new(HEALTHCHECKER)
        .arg("-c")
        .arg(&config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Missing healthcheck endpoint host or socket")
            && err.contains("Missing failure_counter_file"),
        "{err}"
    );
    assert_eq!(
        Command::new(HEALTHCHECKER).output().unwrap().status.code(),
        Some(64)
    );
}
