//! restart-monit-job's decision and its monit calls, as healthchecker-release's
//! src/restart-monit-job script makes them: below [`MAX_RESTARTS`] consecutive failures,
//! `monit restart <job>` and wait for `monit summary` to show the job running again (then
//! `monit monitor <job>-healthchecker`, which upstream meant with its `monit reload`); from
//! [`MAX_RESTARTS`] on, `monit unmonitor <job>-healthchecker` only.

use std::time::{Duration, Instant};

use crate::MAX_RESTARTS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Restart,
    Unmonitor,
}

pub fn decide(consecutive_failures: u64) -> Action {
    if consecutive_failures < MAX_RESTARTS {
        Action::Restart
    } else {
        Action::Unmonitor
    }
}

/// The monit CLI (`/var/vcap/bosh/bin/monit` on a BOSH VM).
pub trait Monit {
    /// Runs `monit <args>`; the standard output on success.
    fn run(&mut self, args: &[&str]) -> Result<String, String>;
}

/// The real monit binary at `path`.
pub struct MonitCli {
    pub path: String,
}

impl Monit for MonitCli {
    fn run(&mut self, args: &[&str]) -> Result<String, String> {
        let out = std::process::Command::new(&self.path)
            .args(args)
            .output()
            .map_err(|e| format!("run {} {}: {e}", self.path, args.join(" ")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{} {}: {}: {}",
                self.path,
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// True when a `monit summary` line shows the job's process (not its healthchecker) running.
pub fn summary_shows_running(summary: &str, job: &str) -> bool {
    summary.lines().any(|line| {
        let quoted = format!("'{job}'");
        line.contains(&quoted) && !line.contains("healthchecker") && line.contains("running")
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Restarted,
    Unmonitored,
    /// The job did not show as running within the wait.
    NotBackInTime,
}

/// Carries out `action` for `job`; `log` receives the lines for restart-<job>.log.
pub fn carry_out(
    monit: &mut dyn Monit,
    job: &str,
    action: Action,
    wait: Duration,
    poll: Duration,
    log: &mut dyn FnMut(String),
) -> Result<Outcome, String> {
    let healthchecker = format!("{job}-healthchecker");
    match action {
        Action::Unmonitor => {
            log(format!(
                "{MAX_RESTARTS} consecutive failures in a row. Stopping healthcheck to avoid constantly bringing down the main service."
            ));
            monit.run(&["unmonitor", &healthchecker])?;
            Ok(Outcome::Unmonitored)
        }
        Action::Restart => {
            monit.run(&["restart", job])?;
            log(format!("Waiting for {job} to be restarted"));
            let deadline = Instant::now() + wait;
            loop {
                std::thread::sleep(poll);
                if let Ok(summary) = monit.run(&["summary"]) {
                    if summary_shows_running(&summary, job) {
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    log(format!(
                        "{job} did not show as running within {}s",
                        wait.as_secs()
                    ));
                    return Ok(Outcome::NotBackInTime);
                }
            }
            // Best effort: the healthchecker is restarted by monit with the job it depends on.
            if let Err(e) = monit.run(&["monitor", &healthchecker]) {
                log(format!("monitor {healthchecker}: {e}"));
            }
            log(format!("{job} was restarted"));
            Ok(Outcome::Restarted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_below_ten_then_unmonitors() {
        assert_eq!(decide(0), Action::Restart);
        assert_eq!(decide(9), Action::Restart);
        assert_eq!(decide(10), Action::Unmonitor);
        assert_eq!(decide(11), Action::Unmonitor);
    }

    #[test]
    fn reads_monit_summary_lines() {
        let summary = "The Monit daemon 5.2.5 uptime: 1h 2m\n\n\
                       Process 'silk-daemon'                 running\n\
                       Process 'silk-daemon-healthchecker'   not monitored\n";
        assert!(summary_shows_running(summary, "silk-daemon"));
        assert!(!summary_shows_running(
            "Process 'silk-daemon'  initializing\nProcess 'silk-daemon-healthchecker'  running\n",
            "silk-daemon"
        ));
        assert!(!summary_shows_running(
            "Process 'silk-daemon-x'  running\n",
            "silk-daemon"
        ));
    }

    /// Answers `summary` with "not running" `pending` times, then "running".
    struct Recorder {
        calls: Vec<String>,
        pending: u32,
    }

    impl Monit for Recorder {
        fn run(&mut self, args: &[&str]) -> Result<String, String> {
            self.calls.push(args.join(" "));
            if args == ["summary"] {
                if self.pending > 0 {
                    self.pending -= 1;
                    return Ok("Process 'silk-daemon'   Does not exist\n".into());
                }
                return Ok("Process 'silk-daemon'   running\n".into());
            }
            Ok(String::new())
        }
    }

    #[test]
    fn restart_waits_for_the_job_then_monitors_the_healthchecker() {
        let mut m = Recorder {
            calls: vec![],
            pending: 2,
        };
        let mut lines = vec![];
        let out = carry_out(
            &mut m,
            "silk-daemon",
            Action::Restart,
            Duration::from_secs(5),
            Duration::from_millis(1),
            &mut |l| lines.push(l),
        )
        .unwrap();
        assert_eq!(out, Outcome::Restarted);
        assert_eq!(
            m.calls,
            [
                "restart silk-daemon",
                "summary",
                "summary",
                "summary",
                "monitor silk-daemon-healthchecker"
            ]
        );
        assert_eq!(lines.last().unwrap(), "silk-daemon was restarted");
    }

    #[test]
    fn gives_up_waiting_and_unmonitors_without_restarting() {
        let mut m = Recorder {
            calls: vec![],
            pending: u32::MAX,
        };
        let out = carry_out(
            &mut m,
            "silk-daemon",
            Action::Restart,
            Duration::ZERO,
            Duration::from_millis(1),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(out, Outcome::NotBackInTime);
        let mut m = Recorder {
            calls: vec![],
            pending: 0,
        };
        let out = carry_out(
            &mut m,
            "silk-daemon",
            Action::Unmonitor,
            Duration::ZERO,
            Duration::ZERO,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(out, Outcome::Unmonitored);
        assert_eq!(m.calls, ["unmonitor silk-daemon-healthchecker"]);
    }
}
