//! TCP endpoints inside network namespaces for data-path tests: a line echo server bound in a
//! namespace, one-line exchanges from a namespace, and connections kept open across rule
//! changes. Every connect and read has a short timeout.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

/// Connect and read timeout of every exchange.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Runs `f` on a thread that entered the network namespace at `ns`; sockets it creates belong
/// to that namespace for good.
pub fn in_netns<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let file = File::open(&ns)?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("netns thread panicked"))?
}

/// A server in a namespace answering every line `<payload>` with `<tag> <peer ip> <payload>`,
/// one thread per connection, until the peer closes. Stopped (socket closed) on drop.
pub struct EchoServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(ns: &Path, addr: SocketAddrV4, tag: &str) -> io::Result<EchoServer> {
        let listener = in_netns(ns, move || TcpListener::bind(addr))?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let tag = tag.to_string();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, peer)) => {
                        let (tag, flag) = (tag.clone(), Arc::clone(&flag));
                        std::thread::spawn(move || serve(s, peer, &tag, &flag));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(EchoServer {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

fn serve(s: TcpStream, peer: SocketAddr, tag: &str, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = BufReader::new(&s);
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with('\n') => {
                if (&s)
                    .write_all(format!("{tag} {} {line}", peer.ip()).as_bytes())
                    .is_err()
                {
                    return;
                }
                line.clear();
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection opened from a namespace, kept open across exchanges.
pub struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connects from namespace `ns` to `dst`.
    pub fn open(ns: &Path, dst: SocketAddrV4) -> io::Result<Conn> {
        let stream = in_netns(ns, move || TcpStream::connect_timeout(&dst.into(), TIMEOUT))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Conn { stream, reader })
    }

    /// Sends `payload` as one line; the answer line.
    pub fn exchange(&mut self, payload: &str) -> io::Result<String> {
        self.stream.write_all(format!("{payload}\n").as_bytes())?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed the connection",
            ));
        }
        Ok(answer)
    }
}

/// Connects from namespace `ns` to `dst`, sends `hello <dst>` and returns the answer line.
pub fn talk(ns: &Path, dst: SocketAddrV4) -> io::Result<String> {
    Conn::open(ns, dst)?.exchange(&format!("hello {dst}"))
}

/// What an [`EchoServer`] tagged `tag` answers [`talk`] from `seen_from`.
pub fn echo_answer(tag: &str, seen_from: std::net::Ipv4Addr, dst: SocketAddrV4) -> String {
    format!("{tag} {seen_from} hello {dst}\n")
}
