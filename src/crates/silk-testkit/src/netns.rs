//! Network namespaces for tests: the calling thread's own fresh namespace
//! ([`unshare_test_netns`]), an anonymous namespace held by a child process ([`NsHolder`], the
//! container side of CNI tests), named namespaces that the test bed wires together
//! ([`NamedNetns`]), and [`run_cmd`], which runs a command with a timeout and captured output.
//!
//! Every command spawned here has a timeout; every namespace is removed when its guard drops.
#![allow(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Timeout for the short commands (`ip`, `nsenter`, `iptables`) the helpers run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Moves the calling thread into a new, empty network namespace and brings `lo` up in it.
///
/// Only the calling thread moves: threads and processes it starts afterwards inherit the new
/// namespace, other test threads never see it, and the kernel frees it when the last user is
/// gone, so nothing needs cleaning. Open netlink sockets after calling this.
pub fn unshare_test_netns() -> io::Result<()> {
    // SAFETY: unshare(2) with CLONE_NEWNET only changes the network namespace of the calling
    // thread; it touches no memory of this process and takes no pointers.
    let rc = unsafe { nix::libc::unshare(nix::libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    check(
        run_cmd(&["ip", "link", "set", "lo", "up"], DEFAULT_TIMEOUT)?,
        "ip link set lo up",
    )?;
    Ok(())
}

/// The start of a root test: [`crate::require_root`] (fails unless run by `scripts/test` as
/// root), then [`unshare_test_netns`], panicking when the namespace cannot be made.
pub fn enter_root_test_netns() {
    crate::require_root();
    unshare_test_netns().expect("unshare a network namespace for the test");
}

/// Runs `f` on a new thread that first joins the network namespace at `ns` (a bind-mounted
/// netns file such as `NamedNetns::path`), and returns its result. Sockets `f` creates stay
/// in that namespace wherever they are used afterwards: a way to listen on a cell's
/// 127.0.0.1 from the test process.
pub fn in_netns<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let file = std::fs::File::open(ns)?;
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("in_netns: thread panicked"))?
}

/// Runs `argv` with stdin closed, stdout and stderr captured, killing it after `timeout`
/// (the error then has kind [`io::ErrorKind::TimedOut`]).
pub fn run_cmd(argv: &[&str], timeout: Duration) -> io::Result<Output> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "run_cmd: empty argv"))?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    output_with_timeout(cmd, timeout)
}

/// Like [`run_cmd`] with [`DEFAULT_TIMEOUT`], failing when the command exits non-zero;
/// returns stdout as text.
pub fn run_ok(argv: &[&str]) -> io::Result<String> {
    let out = check(run_cmd(argv, DEFAULT_TIMEOUT)?, &argv.join(" "))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Turns a non-zero exit into an error that carries the command and its stderr.
pub fn check(out: Output, what: &str) -> io::Result<Output> {
    if out.status.success() {
        return Ok(out);
    }
    Err(io::Error::other(format!(
        "{what}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Runs a prepared command with captured output and a timeout. Output is read on helper
/// threads so a chatty child cannot block on a full pipe.
pub fn output_with_timeout(mut cmd: Command, timeout: Duration) -> io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let out = child.stdout.take().map(drain_thread);
    let err = child.stderr.take().map(drain_thread);
    let status = wait_deadline(&mut child, timeout);
    let status = match status {
        Ok(Some(s)) => s,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{cmd:?}: no exit within {timeout:?}"),
            ));
        }
        Err(e) => return Err(e),
    };
    let join =
        |h: Option<thread::JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(Output {
        status,
        stdout: join(out),
        stderr: join(err),
    })
}

/// Runs `cmd` with `stdin` written to its standard input, capturing stdout and stderr (how a
/// CNI runtime or a restore batch is driven).
pub fn output_with_stdin(cmd: &mut Command, stdin: &[u8]) -> io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin)?;
    }
    child.wait_with_output()
}

/// Waits for `child` until `timeout`; `Ok(None)` when it is still running then.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn drain_thread<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// A command that runs `program` inside the network namespace at `ns` (through
/// `nsenter --net=<ns>`); the caller adds arguments and spawns it.
pub fn command_in(ns: &Path, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.display()))
        .arg("--")
        .arg(program);
    cmd
}

/// Runs `argv` inside the namespace at `ns` with [`DEFAULT_TIMEOUT`].
pub fn run_in(ns: &Path, argv: &[&str]) -> io::Result<Output> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "run_in: empty argv"))?;
    let mut cmd = command_in(ns, program);
    cmd.args(args);
    output_with_timeout(cmd, DEFAULT_TIMEOUT)
}

/// Like [`run_in`], failing on a non-zero exit; returns stdout as text.
pub fn run_in_ok(ns: &Path, argv: &[&str]) -> io::Result<String> {
    let out = check(run_in(ns, argv)?, &argv.join(" "))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A short random token (lowercase hex) for names that must not collide between concurrent
/// tests or with anything else on the host.
pub fn unique_token(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let s = format!("{:016x}", h.finish());
    s[..len.min(16)].to_string()
}

// === impl NsHolder ===

/// An anonymous network namespace held open by a child `unshare -n sleep infinity`, as a
/// container's namespace is held by its init process. Drop kills the child (by pid) and reaps
/// it, which frees the namespace.
#[derive(Debug)]
pub struct NsHolder {
    child: Child,
    path: PathBuf,
}

impl NsHolder {
    /// Starts the holder and waits until it has left our namespace; brings `lo` up inside.
    pub fn spawn() -> io::Result<Self> {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let path = PathBuf::from(format!("/proc/{}/ns/net", child.id()));
        let holder = NsHolder { child, path };
        let ours = std::fs::read_link("/proc/thread-self/ns/net")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        // `unshare` execs `sleep` only after unsharing, but the pid exists before either.
        loop {
            match std::fs::read_link(&holder.path) {
                Ok(l) if l != ours => break,
                _ if Instant::now() >= deadline => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "unshare -n: namespace not created within 10s",
                    ))
                }
                _ => thread::sleep(Duration::from_millis(2)),
            }
        }
        check(
            holder.run(&["ip", "link", "set", "lo", "up"])?,
            "ip link set lo up",
        )?;
        Ok(holder)
    }

    /// `/proc/<pid>/ns/net`, the value for `CNI_NETNS`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The holder process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `argv` inside the namespace (nsenter --net) with [`DEFAULT_TIMEOUT`].
    pub fn run(&self, argv: &[&str]) -> io::Result<Output> {
        run_in(&self.path, argv)
    }

    /// Like [`NsHolder::run`], failing on a non-zero exit; returns stdout.
    pub fn run_ok(&self, argv: &[&str]) -> io::Result<String> {
        run_in_ok(&self.path, argv)
    }
}

impl Drop for NsHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === impl NamedNetns ===

/// A named namespace (`ip netns add`), for the test bed where several namespaces are wired
/// together and processes are started in them. Drop runs `ip netns delete`, which also
/// destroys the veths that have an end inside it.
#[derive(Debug)]
pub struct NamedNetns {
    name: String,
    path: PathBuf,
}

impl NamedNetns {
    /// Creates `name` (callers prefix it with [`unique_token`]) and brings `lo` up inside.
    pub fn create(name: &str) -> io::Result<Self> {
        run_ok(&["ip", "netns", "add", name])?;
        let ns = NamedNetns {
            name: name.to_string(),
            path: PathBuf::from("/run/netns").join(name),
        };
        ns.run_ok(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Adopts an existing named namespace (the lab's `down` after `up` in another process).
    pub fn adopt(name: &str) -> Self {
        NamedNetns {
            name: name.to_string(),
            path: PathBuf::from("/run/netns").join(name),
        }
    }

    /// The namespace name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command running `program` inside this namespace; the caller adds args and spawns it.
    pub fn command(&self, program: &str) -> Command {
        command_in(&self.path, program)
    }

    /// Runs `argv` inside the namespace with [`DEFAULT_TIMEOUT`].
    pub fn run(&self, argv: &[&str]) -> io::Result<Output> {
        run_in(&self.path, argv)
    }

    /// Like [`NamedNetns::run`], failing on a non-zero exit; returns stdout.
    pub fn run_ok(&self, argv: &[&str]) -> io::Result<String> {
        run_in_ok(&self.path, argv)
    }

    /// Keeps the namespace after this guard is gone (the lab hands it to `down`).
    pub fn leak(self) -> String {
        let name = self.name.clone();
        std::mem::forget(self);
        name
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        if let Err(e) = run_ok(&["ip", "netns", "delete", &self.name]) {
            log::warn!("delete netns {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_cmd_captures_and_times_out() {
        let out = run_cmd(
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            DEFAULT_TIMEOUT,
        )
        .unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));
        let e = run_cmd(&["sleep", "5"], Duration::from_millis(100)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(run_ok(&["false"]).is_err());
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(unique_token(8), unique_token(8));
        assert_eq!(unique_token(6).len(), 6);
    }

    fn require_root() {
        assert_eq!(
            std::env::var("SILK_TEST_ROOT").as_deref(),
            Ok("1"),
            "this test needs root and SILK_TEST_ROOT=1: run it via scripts/test"
        );
    }

    #[test]
    #[ignore = "needs root: run via scripts/test"]
    fn unshare_gives_empty_namespace() {
        require_root();
        let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        unshare_test_netns().unwrap();
        let after = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_ne!(before, after);
        let links = run_ok(&["ip", "-j", "link", "show"]).unwrap();
        let v: Vec<&str> = links.matches("\"ifname\"").collect();
        assert_eq!(v.len(), 1, "only lo expected: {links}");
        assert!(links.contains("\"lo\"") && links.contains("UP"), "{links}");
    }

    #[test]
    #[ignore = "needs root: run via scripts/test"]
    fn holder_and_named_namespaces_are_removed() {
        require_root();
        let holder = NsHolder::spawn().unwrap();
        let pid = holder.pid();
        let out = holder.run_ok(&["ip", "-j", "link", "show", "lo"]).unwrap();
        assert!(out.contains("UP"), "{out}");
        drop(holder);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || {
                // a zombie would still show; we reaped it, so only pid reuse could get here
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .map(|c| !c.contains("sleep"))
                    .unwrap_or(true)
            }
        );

        let name = format!("tk{}", unique_token(8));
        let ns = NamedNetns::create(&name).unwrap();
        assert!(ns.path().exists());
        ns.run_ok(&["ip", "link", "add", "b0", "type", "bridge"])
            .unwrap();
        let path = ns.path().to_path_buf();
        drop(ns);
        assert!(!path.exists());
        let list = run_ok(&["ip", "netns", "list"]).unwrap();
        assert!(!list.contains(&name), "{list}");
    }
}
