//! healthchecker-release's watchdog in Rust, for jobs whose process can hang while still
//! running (silk-daemon). Two programs share one contract with monit:
//!
//! * `healthchecker -c <healthchecker.yml>` waits `start_response_delay_interval +
//!   startup_delay_buffer` (35 s), then GETs the endpoint every `healthcheck_poll_interval`
//!   (10 s) with a `healthcheck_timeout` (5 s). A 200 writes `0` to `failure_counter_file`; three
//!   failed polls in a row add one to it and make the process exit 1. SIGTERM, SIGINT and SIGUSR1
//!   end it with 0.
//! * monit sees the healthchecker die and, by the job's `if 1 restarts within 1 cycles then exec`
//!   rule, runs `restart-monit-job <job> <failure_counter_file>`: below 10 consecutive failures
//!   it runs `monit restart <job>` and waits for `monit summary` to show the job running; from
//!   10 on it runs `monit unmonitor <job>-healthchecker`, so a job that cannot recover is not
//!   restarted for ever.
//!
//! [`watchdog::Watchdog`] is the poll verdict as a pure state machine, [`restart::decide`] the
//! restart decision; the I/O around them is in [`counter`], [`probe`] and the binaries.

pub mod config;
pub mod counter;
pub mod probe;
pub mod restart;
pub mod watchdog;

/// Failed polls in a row that make the endpoint unhealthy (upstream's `numRetries`).
pub const FAILED_POLLS: u32 = 3;
/// Consecutive unhealthy exits after which restart-monit-job stops restarting the job.
pub const MAX_RESTARTS: u64 = 10;
