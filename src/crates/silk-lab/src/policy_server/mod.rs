//! The lab policy server: the internal API of cf-networking's `policy-server-internal` (policy
//! contract §1) over mutual TLS, served from a policies-and-ASGs file that may change while it
//! runs, with faults a test can switch on. A lab and test part, not a release job: it stands in
//! for the policy server that cf-networking-release deploys, for vxlan-policy-agent's tests, the
//! end-to-end test and the lab (docs/lab.md).
//!
//! - [`data`]: the file format and the reload rule (last-updated values move only when their
//!   part of the content changed);
//! - [`routes`]: request to response, upstream's exact bytes, the faults;
//! - this module: the HTTPS listener (actix-web on a thread of its own, so sync and async
//!   callers alike can use it), file change detection, the fault switch, the request log and a
//!   plain-HTTP control listener for when the server runs as a process.

pub mod data;
pub mod routes;

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;

use data::{DataError, Loaded, PolicyFile, TagRegistry};
pub use routes::{Fault, FaultKind, Route, Settings};

/// Request lines kept for [`LabPolicyServer::requests`] (oldest dropped first).
const REQUEST_LOG_CAP: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Data {
        path: String,
        #[source]
        source: DataError,
    },
    #[error("tls: {0}")]
    Tls(#[from] silk_controller::tls::TlsError),
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server thread: {0}")]
    Thread(String),
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where the HTTPS listener binds (in the network namespace of the calling thread).
    pub listen: SocketAddr,
    /// The policies-and-ASGs file ([`data`]).
    pub file: PathBuf,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Tag length in bytes (policy server `tag_length`, default 2).
    pub tag_length: u32,
    pub page_size: Option<usize>,
}

impl ServerOptions {
    /// A server for a test: `127.0.0.1`, a free port, the test certificates, tag length 2, no
    /// paging.
    pub fn loopback(certs: &silk_testkit::certs::TestCerts, file: &Path) -> ServerOptions {
        ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            file: file.to_path_buf(),
            ca_cert: certs.ca_cert.clone(),
            server_cert: certs.server_cert.clone(),
            server_key: certs.server_key.clone(),
            tag_length: 2,
            page_size: None,
        }
    }
}

/// What identifies one version of the file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

struct State {
    content: Loaded,
    tags: TagRegistry,
    stamp: Option<Stamp>,
    raw: Vec<u8>,
    settings: Settings,
    requests: std::collections::VecDeque<String>,
    /// The last reload problem, cleared by a good reload.
    load_error: Option<String>,
}

struct Shared {
    file: PathBuf,
    state: Mutex<State>,
    link: Mutex<Link>,
}

/// The way to the server thread, and what `Down` and back needs.
struct Link {
    cmds: tokio::sync::mpsc::UnboundedSender<Cmd>,
    /// The network namespace the listener was bound in, for binding again after `Down`.
    netns: File,
    addr: SocketAddr,
    down: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the file when its stamp changed; a file that cannot be read or parsed leaves
    /// the content as it was (and says so in the log).
    fn refresh(&self, st: &mut State) {
        let now = stamp(&self.file);
        if now == st.stamp {
            return;
        }
        st.stamp = now;
        let bytes = match std::fs::read(&self.file) {
            Ok(b) => b,
            Err(e) => return self.keep(st, format!("read: {e}")),
        };
        if bytes == st.raw {
            st.load_error = None;
            return;
        }
        let text = String::from_utf8_lossy(&bytes);
        let loaded = data::parse(&text)
            .and_then(|f| data::load(&f, Some(&st.content), &mut st.tags, now_ns()));
        match loaded {
            Ok(content) => {
                silk_ops::log::info(
                    "policies-file-loaded",
                    json!({
                        "file": self.file.display().to_string(),
                        "policies": content.policies.len(),
                        "security_groups": content.security_groups.len(),
                        "policies_last_updated": content.policies_last_updated,
                        "security_groups_last_updated": content.security_groups_last_updated,
                    }),
                );
                st.content = content;
                st.raw = bytes;
                st.load_error = None;
            }
            Err(e) => self.keep(st, e.to_string()),
        }
    }

    /// Installs `settings`; a `Down` fault closes the API listener (connections are refused;
    /// `routes` do not apply), anything else opens it again on the same address.
    fn apply(&self, settings: Settings) -> Result<(), ServerError> {
        let down = settings.fault.kind == FaultKind::Down;
        self.lock().settings = settings;
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        if down == link.down {
            return Ok(());
        }
        if down {
            let (tx, rx) = mpsc::channel();
            send(&link.cmds, Cmd::Down(tx))?;
            rx.recv().map_err(|e| ServerError::Thread(e.to_string()))?;
        } else {
            let l = bind_in(&link.netns, link.addr)?;
            let (tx, rx) = mpsc::channel();
            send(&link.cmds, Cmd::Up(l, tx))?;
            rx.recv()
                .map_err(|e| ServerError::Thread(e.to_string()))?
                .map_err(ServerError::Thread)?;
        }
        link.down = down;
        Ok(())
    }

    fn keep(&self, st: &mut State, error: String) {
        silk_ops::log::error(
            "policies-file-not-loaded",
            json!({"file": self.file.display().to_string(), "error": error, "kept": "previous content"}),
        );
        st.load_error = Some(error);
    }
}

enum Cmd {
    Down(mpsc::Sender<()>),
    Up(TcpListener, mpsc::Sender<Result<(), String>>),
    Control(TcpListener, mpsc::Sender<Result<(), String>>),
    Stop(mpsc::Sender<()>),
}

/// A running lab policy server. Dropping it stops it.
pub struct LabPolicyServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cmds: tokio::sync::mpsc::UnboundedSender<Cmd>,
    thread: Option<thread::JoinHandle<()>>,
}

fn send(cmds: &tokio::sync::mpsc::UnboundedSender<Cmd>, cmd: Cmd) -> Result<(), ServerError> {
    cmds.send(cmd)
        .map_err(|_| ServerError::Thread("server thread gone".into()))
}

fn api_server(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    shared: Arc<Shared>,
) -> std::io::Result<ServerHandle> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(Arc::clone(&shared)))
            .default_service(web::to(handle))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(1)
    .listen_rustls_0_23(listener, tls)?
    .run();
    let h = server.handle();
    actix_web::rt::spawn(server);
    Ok(h)
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> HttpResponse {
    let r = {
        let mut guard = shared.lock();
        let st = &mut *guard;
        shared.refresh(st);
        let line = match req.query_string() {
            "" => format!("{} {}", req.method(), req.path()),
            q => format!("{} {}?{q}", req.method(), req.path()),
        };
        if st.requests.len() == REQUEST_LOG_CAP {
            st.requests.pop_front();
        }
        st.requests.push_back(line);
        let request = routes::Request {
            method: req.method().as_str(),
            path: req.path(),
            query: req.query_string(),
            body: &body,
        };
        routes::respond(&st.content, &mut st.tags, &st.settings, request)
    };
    let status = actix_web::http::StatusCode::from_u16(r.status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = HttpResponse::build(status);
    if r.hsts {
        out.insert_header(("Strict-Transport-Security", "max-age=31536000"));
    }
    if r.json {
        out.insert_header(("Content-Type", "application/json"));
    } else {
        out.insert_header(("Content-Type", "text/plain; charset=utf-8"));
    }
    out.body(r.body)
}

impl LabPolicyServer {
    /// Loads the file, binds the listener in the calling thread's network namespace and serves
    /// on a thread of its own.
    pub fn start(opts: ServerOptions) -> Result<LabPolicyServer, ServerError> {
        let path = opts.file.display().to_string();
        let raw = std::fs::read(&opts.file).map_err(|source| ServerError::Read {
            path: path.clone(),
            source,
        })?;
        let mut tags = TagRegistry::new(opts.tag_length);
        let content = data::parse(&String::from_utf8_lossy(&raw))
            .and_then(|f: PolicyFile| data::load(&f, None, &mut tags, now_ns()))
            .map_err(|source| ServerError::Data { path, source })?;
        let tls = silk_controller::tls::server_config(
            &opts.ca_cert.display().to_string(),
            &opts.server_cert.display().to_string(),
            &opts.server_key.display().to_string(),
        )?;
        let netns = File::open("/proc/thread-self/ns/net").map_err(|source| ServerError::Read {
            path: "/proc/thread-self/ns/net".into(),
            source,
        })?;
        let listener = TcpListener::bind(opts.listen).map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
        let (cmds, mut rx) = tokio::sync::mpsc::unbounded_channel::<Cmd>();
        let shared = Arc::new(Shared {
            link: Mutex::new(Link {
                cmds: cmds.clone(),
                netns,
                addr,
                down: false,
            }),
            state: Mutex::new(State {
                content,
                tags,
                stamp: stamp(&opts.file),
                raw,
                settings: Settings {
                    fault: Fault::none(),
                    page_size: opts.page_size,
                },
                requests: Default::default(),
                load_error: None,
            }),
            file: opts.file.clone(),
        });
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("lab-policy-server".into())
                .spawn(move || {
                    actix_web::rt::System::new().block_on(async move {
                        let mut api = match api_server(listener, tls.clone(), Arc::clone(&shared)) {
                            Ok(h) => {
                                let _ = ready_tx.send(Ok(()));
                                Some(h)
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e.to_string()));
                                return;
                            }
                        };
                        let mut control: Option<ServerHandle> = None;
                        while let Some(cmd) = rx.recv().await {
                            match cmd {
                                Cmd::Down(ack) => {
                                    if let Some(h) = api.take() {
                                        h.stop(false).await;
                                    }
                                    let _ = ack.send(());
                                }
                                Cmd::Up(l, ack) => {
                                    let r = api_server(l, tls.clone(), Arc::clone(&shared));
                                    let _ = ack.send(match r {
                                        Ok(h) => {
                                            api = Some(h);
                                            Ok(())
                                        }
                                        Err(e) => Err(e.to_string()),
                                    });
                                }
                                Cmd::Control(l, ack) => {
                                    let r = control_server(l, Arc::clone(&shared));
                                    let _ = ack.send(match r {
                                        Ok(h) => {
                                            control = Some(h);
                                            Ok(())
                                        }
                                        Err(e) => Err(e.to_string()),
                                    });
                                }
                                Cmd::Stop(ack) => {
                                    if let Some(h) = api.take() {
                                        h.stop(false).await;
                                    }
                                    if let Some(h) = control.take() {
                                        h.stop(false).await;
                                    }
                                    let _ = ack.send(());
                                    break;
                                }
                            }
                        }
                    })
                })
                .map_err(|e| ServerError::Thread(e.to_string()))?
        };
        ready_rx
            .recv()
            .map_err(|e| ServerError::Thread(e.to_string()))?
            .map_err(ServerError::Thread)?;
        silk_ops::log::info(
            "lab-policy-server-started",
            json!({"listen": addr.to_string(), "file": opts.file.display().to_string()}),
        );
        Ok(LabPolicyServer {
            addr,
            shared,
            cmds,
            thread: Some(thread),
        })
    }

    /// The bound address (the port when `listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<host>:<port>` for a client's `policy_server_url`.
    pub fn url(&self, host: &str) -> String {
        format!("https://{host}:{}", self.addr.port())
    }

    /// Switches a fault on (or off with [`Fault::none`]). `Down` closes the listener, so
    /// connections are refused (whatever its `routes`); any other kind (or none) opens it again
    /// on the same address.
    pub fn set_fault(&self, fault: Fault) -> Result<(), ServerError> {
        let page_size = self.shared.lock().settings.page_size;
        self.shared.apply(Settings { fault, page_size })
    }

    /// The `security_groups` page size for requests without `limit`.
    pub fn set_page_size(&self, size: Option<usize>) {
        self.shared.lock().settings.page_size = size;
    }

    /// The request lines served so far (`GET /path?query`), oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.iter().cloned().collect()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// What is served now (the file is re-read first if it changed).
    pub fn content(&self) -> Loaded {
        let mut st = self.shared.lock();
        self.shared.refresh(&mut st);
        st.content.clone()
    }

    /// The last reload error, if the file on disk is not what is served.
    pub fn load_error(&self) -> Option<String> {
        let mut st = self.shared.lock();
        self.shared.refresh(&mut st);
        st.load_error.clone()
    }

    /// Serves the control API (plain HTTP, [`control_server`]) on `addr`, which must be a
    /// loopback address.
    pub fn serve_control(&self, addr: SocketAddr) -> Result<SocketAddr, ServerError> {
        if !addr.ip().is_loopback() {
            return Err(ServerError::Bind {
                addr,
                source: std::io::Error::other("the control listener binds loopback only"),
            });
        }
        let l = TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
        let bound = l
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let (tx, rx) = mpsc::channel();
        self.send(Cmd::Control(l, tx))?;
        rx.recv()
            .map_err(|e| ServerError::Thread(e.to_string()))?
            .map_err(ServerError::Thread)?;
        Ok(bound)
    }

    fn send(&self, cmd: Cmd) -> Result<(), ServerError> {
        send(&self.cmds, cmd)
    }

    /// Stops serving and joins the server thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            let (tx, rx) = mpsc::channel();
            if self.cmds.send(Cmd::Stop(tx)).is_ok() {
                let _ = rx.recv();
            }
            let _ = t.join();
        }
    }
}

/// Binds `addr` inside the network namespace `netns`, on a short-lived thread (setns changes
/// only the calling thread's namespace).
fn bind_in(netns: &File, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let ns = netns
        .try_clone()
        .map_err(|e| ServerError::Thread(e.to_string()))?;
    thread::spawn(move || -> std::io::Result<TcpListener> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        TcpListener::bind(addr)
    })
    .join()
    .map_err(|_| ServerError::Thread("bind thread panicked".into()))?
    .map_err(|source| ServerError::Bind { addr, source })
}

impl Drop for LabPolicyServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// === control API ===

/// The control API of a server run as a process (plain HTTP on loopback):
/// `GET /state` (settings, last-updated values, counts, last reload error),
/// `PUT /settings` (a [`Settings`] body: `{"fault": {"kind": "error500", "routes": []},
/// "page_size": 2}`; `down` closes the API listener), `GET /requests` (the request lines as a
/// JSON array) and `DELETE /requests`.
fn control_server(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<ServerHandle> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(Arc::clone(&shared)))
            .route("/state", web::get().to(control_state))
            .route("/requests", web::get().to(control_requests))
            .route("/settings", web::put().to(control_settings))
            .route("/requests", web::delete().to(control_clear))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    let h = server.handle();
    actix_web::rt::spawn(server);
    Ok(h)
}

async fn control_state(shared: web::Data<Arc<Shared>>) -> HttpResponse {
    let mut st = shared.lock();
    shared.refresh(&mut st);
    HttpResponse::Ok().json(json!({
        "settings": st.settings,
        "policies": st.content.policies.len(),
        "security_groups": st.content.security_groups.len(),
        "policies_last_updated": st.content.policies_last_updated,
        "security_groups_last_updated": st.content.security_groups_last_updated,
        "load_error": st.load_error,
    }))
}

async fn control_settings(shared: web::Data<Arc<Shared>>, body: web::Bytes) -> HttpResponse {
    let settings: Settings = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return HttpResponse::BadRequest().json(json!({"error": e.to_string()})),
    };
    // Down and back wait for the server thread: off this worker's async context.
    let shared = Arc::clone(&shared);
    let applied = web::block(move || shared.apply(settings)).await;
    match applied {
        Ok(Ok(())) => HttpResponse::NoContent().finish(),
        Ok(Err(e)) => HttpResponse::InternalServerError().json(json!({"error": e.to_string()})),
        Err(e) => HttpResponse::InternalServerError().json(json!({"error": e.to_string()})),
    }
}

async fn control_requests(shared: web::Data<Arc<Shared>>) -> HttpResponse {
    let st = shared.lock();
    HttpResponse::Ok().json(st.requests.iter().collect::<Vec<_>>())
}

async fn control_clear(shared: web::Data<Arc<Shared>>) -> HttpResponse {
    shared.lock().requests.clear();
    HttpResponse::NoContent().finish()
}

/// Writes `file` to `path` atomically (temporary file and rename), as writers of a file the
/// server watches should: the rename gives the server one consistent new version.
pub fn write_file(path: &Path, file: &PolicyFile) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(file).map_err(std::io::Error::other)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
