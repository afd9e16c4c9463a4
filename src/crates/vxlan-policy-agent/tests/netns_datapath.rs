//! Packets, not just rules: two containers (namespaces held by a process) routed through the
//! test's own namespace, which plays the cell with `FORWARD` rejecting by default. The real agent,
//! fed one policy by the fake policy server, lets the frontend reach the backend's policy port,
//! and nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure by design

mod common;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use nix::sched::{setns, CloneFlags};
use silk_testkit::certs::{ServerKey, TestCerts};
use silk_testkit::netns::{enter_root_test_netns, run_ok, NsHolder};

const FRONT_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 7, 3);
const BACK_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 7, 4);

/// Runs `f` on a thread inside the namespace at `ns`; sockets it creates stay there.
fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_path_buf();
    thread::spawn(move || {
        setns(File::open(&ns).unwrap(), CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// An echo server in a container: answers one line with `<peer ip> <line>`.
struct Echo {
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn start(ns: &Path, addr: SocketAddrV4) -> Echo {
        let listener = in_netns(ns, move || TcpListener::bind(addr)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, peer)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let mut line = String::new();
                        if BufReader::new(&s).read_line(&mut line).is_ok() {
                            let _ = (&s).write_all(format!("{} {line}", peer.ip()).as_bytes());
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Echo { stop }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn talk(ns: &Path, dst: SocketAddrV4) -> io::Result<String> {
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&dst.into(), Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"hello\n")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    })
}

fn assert_reaches(ns: &Path, dst: SocketAddrV4, from: Ipv4Addr) {
    assert_eq!(
        talk(ns, dst).unwrap(),
        format!("{from} hello\n"),
        "to {dst}"
    );
}

fn assert_rejected(ns: &Path, dst: SocketAddrV4) {
    match talk(ns, dst) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("expected {dst} to be rejected, got {other:?}"),
    }
}

/// A container: its namespace, a veth into the cell, `ip`/32 with a default route via
/// 169.254.0.1 (as silk-cni sets them up), and the cell's host route to it.
fn container(ip: Ipv4Addr, host_if: &str) -> NsHolder {
    let c = NsHolder::spawn().unwrap();
    let pid = c.pid().to_string();
    run_ok(&[
        "ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &pid,
    ])
    .unwrap();
    run_ok(&["ip", "addr", "add", "169.254.0.1/32", "dev", host_if]).unwrap();
    run_ok(&["ip", "link", "set", host_if, "up"]).unwrap();
    run_ok(&["ip", "route", "add", &format!("{ip}/32"), "dev", host_if]).unwrap();
    c.run_ok(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"])
        .unwrap();
    c.run_ok(&["ip", "link", "set", "eth0", "up"]).unwrap();
    c.run_ok(&[
        "ip",
        "route",
        "add",
        "169.254.0.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ])
    .unwrap();
    c.run_ok(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        "169.254.0.1",
        "dev",
        "eth0",
    ])
    .unwrap();
    c
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn policy_admits_exactly_the_policy_port() {
    enter_root_test_netns();
    run_ok(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]).unwrap();
    let front = container(FRONT_IP, "h-front");
    let back = container(BACK_IP, "h-back");
    // The cell: replies pass, everything else between containers is rejected.
    run_ok(&[
        "iptables",
        "-A",
        "FORWARD",
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "ACCEPT",
    ])
    .unwrap();
    run_ok(&[
        "iptables",
        "-A",
        "FORWARD",
        "-j",
        "REJECT",
        "--reject-with",
        "icmp-port-unreachable",
    ])
    .unwrap();

    let _servers = [
        Echo::start(back.path(), SocketAddrV4::new(BACK_IP, 8080)),
        Echo::start(back.path(), SocketAddrV4::new(BACK_IP, 8081)),
        Echo::start(front.path(), SocketAddrV4::new(FRONT_IP, 8080)),
    ];
    assert_rejected(front.path(), SocketAddrV4::new(BACK_IP, 8080));

    let certs = TestCerts::generate(ServerKey::Ecdsa).unwrap();
    let dir = tempfile::tempdir().unwrap();
    store_two_containers(dir.path());
    // frontend -> backend tcp 8080 only.
    let _server = FakeServer::start(&certs, example_policies()[..1].to_vec());
    let config = write_config(dir.path(), &certs, _server.port, free_port(), free_port());
    let mut agent = Agent::spawn(&config);
    wait_for("the vpa chain", Duration::from_secs(20), || {
        assert!(agent.running(), "agent exited");
        vpa_chain().is_some()
    });

    assert_reaches(front.path(), SocketAddrV4::new(BACK_IP, 8080), FRONT_IP);
    assert_rejected(front.path(), SocketAddrV4::new(BACK_IP, 8081));
    assert_rejected(back.path(), SocketAddrV4::new(FRONT_IP, 8080));
    assert_eq!(agent.terminate(), Some(0));
}
