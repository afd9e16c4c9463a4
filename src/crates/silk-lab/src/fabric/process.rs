//! Long-running processes of the test bed (controller, daemons) started inside a named
//! namespace with `ip netns exec` (which also bind-mounts `/etc/netns/<ns>/hosts` over
//! `/etc/hosts`, so the controller's DNS name resolves inside the namespace only). Output goes
//! to a log file; stop and kill act on the pid we started, never on a name.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use silk_testkit::netns::wait_deadline;

/// A process the test bed started; killed and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    /// The namespace it runs in and its command line, to start it again.
    pub ns: String,
    pub argv: Vec<String>,
    child: Child,
}

impl Proc {
    /// Starts `argv` in namespace `ns` (the caller's own when `ns` is empty), stdout and stderr
    /// appended to `log`. With `detach`, the process gets its own session so it outlives the
    /// caller's terminal (the lab).
    pub fn spawn(
        name: &str,
        ns: &str,
        argv: &[String],
        log: &Path,
        detach: bool,
    ) -> io::Result<Self> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let mut cmd = if ns.is_empty() {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).args(argv);
            c
        };
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        if detach {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let child = cmd.spawn()?;
        Ok(Proc {
            name: name.to_string(),
            log: log.to_path_buf(),
            ns: ns.to_string(),
            argv: argv.to_vec(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// SIGTERM, then wait up to `grace`; SIGKILL if still running. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        if let Some(s) = self.child.try_wait()? {
            return Ok(s);
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        if let Some(s) = wait_deadline(&mut self.child, grace)? {
            return Ok(s);
        }
        self.child.kill()?;
        self.child.wait()
    }

    /// SIGKILL (a crash: no clean-up by the process).
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait()
    }

    /// The log written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Leaves the process running after this value is dropped (the lab); returns its pid.
    pub fn detach(self) -> u32 {
        let pid = self.child.id();
        std::mem::forget(self);
        pid
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
