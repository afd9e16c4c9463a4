//! `restart-monit-job <job> <failure counter file>`: run by monit when `<job>-healthchecker`
//! died (see the crate docs). One instance per job at a time (a pid file under the job's run
//! directory); lines go to `/var/vcap/sys/log/<job>/restart-<job>.log`.
//!
//! Environment (defaults are the BOSH paths): `MONIT` (/var/vcap/bosh/bin/monit),
//! `RESTART_MONIT_JOB_RUN_DIR` (/var/vcap/sys/run/<job>), `RESTART_MONIT_JOB_LOG`
//! (/var/vcap/sys/log/<job>/restart-<job>.log), `RESTART_MONIT_JOB_WAIT_SECONDS` (60).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use silk_healthchecker::counter::FailureCounter;
use silk_healthchecker::restart::{carry_out, decide, MonitCli, Outcome};

fn env_or(name: &str, default: String) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or(default)
}

/// Appends `<timestamp> - pid: <pid> - <line>` to the log file, as upstream's script does.
fn logger(path: PathBuf) -> impl FnMut(String) {
    move |line: String| {
        let entry = format!(
            "{} - pid: {} - {line}\n",
            silk_ops::log::timestamp_now(),
            std::process::id()
        );
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(entry.as_bytes()));
        if written.is_err() {
            eprint!("{entry}");
        }
    }
}

/// Another restart of this job still running (its pid file names a live process).
fn already_running(pidfile: &Path) -> Option<String> {
    let pid = std::fs::read_to_string(pidfile).ok()?.trim().to_string();
    let alive = pid
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
    alive.then_some(pid)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (job, counter_file) = match args.as_slice() {
        [_, job, file] if !job.is_empty() && !file.is_empty() => (job.clone(), file.clone()),
        _ => {
            eprintln!("usage: restart-monit-job <job> <failure counter file>");
            return ExitCode::from(64);
        }
    };
    let run_dir = PathBuf::from(env_or(
        "RESTART_MONIT_JOB_RUN_DIR",
        format!("/var/vcap/sys/run/{job}"),
    ));
    let log_file = PathBuf::from(env_or(
        "RESTART_MONIT_JOB_LOG",
        format!("/var/vcap/sys/log/{job}/restart-{job}.log"),
    ));
    let wait = env_or("RESTART_MONIT_JOB_WAIT_SECONDS", "60".into())
        .parse()
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(60));
    for dir in [Some(run_dir.as_path()), log_file.parent()]
        .into_iter()
        .flatten()
    {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut log = logger(log_file);

    // monit runs the exec every cycle while the condition holds: one restart at a time.
    let pidfile = run_dir.join(format!("restart-{job}.pid"));
    if let Some(pid) = already_running(&pidfile) {
        log(format!("Restart of {job} already in progress (pid {pid})"));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = std::fs::write(&pidfile, format!("{}\n", std::process::id())) {
        log(format!("cannot write {}: {e}", pidfile.display()));
        return ExitCode::from(1);
    }
    log("Monit triggered restart".into());

    let failures = FailureCounter::new(&counter_file).read();
    let mut monit = MonitCli {
        path: env_or("MONIT", "/var/vcap/bosh/bin/monit".into()),
    };
    let result = carry_out(
        &mut monit,
        &job,
        decide(failures),
        wait,
        Duration::from_secs(1),
        &mut log,
    );
    let _ = std::fs::remove_file(&pidfile);
    match result {
        Ok(Outcome::Restarted | Outcome::Unmonitored) => ExitCode::SUCCESS,
        Ok(Outcome::NotBackInTime) => ExitCode::from(1),
        Err(e) => {
            log(format!("monit failed: {e}"));
            ExitCode::from(1)
        }
    }
}
