//! A Loggregator v2 agent for tests: a real tonic gRPC server on 127.0.0.1 serving
//! `loggregator.v2.Ingress` (`BatchSender`, `Sender`, `Send`) over mutual TLS with a
//! `metron` server certificate, as cf-deployment's loggregator agent. It records every
//! envelope it receives; tests wait for the ones they expect and check names, units, tags.
//!
//! It runs on a thread of its own (one-thread tokio runtime), so sync and async tests alike
//! can use it; dropping it stops the server and closes every connection at once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use silk_ops::loggregator::proto::{
    envelope, BatchSenderResponse, Envelope, EnvelopeBatch, IngressResponse, SendResponse,
    BATCH_SENDER_PATH, INGRESS_SERVICE, SENDER_PATH, SEND_PATH,
};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::certs::{path_str, CertsError, ServerKey, TestCerts};

/// The identity the test configs give a job, as a cf-deployment diego-cell would render it.
pub const DEPLOYMENT: &str = "cf";
pub const JOB: &str = "diego-cell";
pub const INSTANCE: &str = "cell-guid";
pub const IP: &str = "10.0.16.7";

/// Certificates as cf-deployment's `loggregator_tls_agent`: the agent's server certificate
/// for `metron` with an RSA key (as CredHub generates them), a client certificate from the
/// same CA, one from an unrelated CA.
pub fn agent_certs() -> Result<TestCerts, CertsError> {
    TestCerts::generate_for(ServerKey::Rsa, "metron", &["metron"])
}

/// The `loggregator` block vxlan-policy-agent's template renders with v2 on, for `origin`
/// and the agent on 127.0.0.1:`port`, with the client certificate of `certs`.
pub fn config_block(certs: &TestCerts, port: u16, origin: &str) -> serde_json::Value {
    serde_json::json!({
        "loggregator_use_v2_api": true,
        "loggregator_api_port": port,
        "loggregator_ca_path": path_str(&certs.ca_cert),
        "loggregator_cert_path": path_str(&certs.client_cert),
        "loggregator_key_path": path_str(&certs.client_key),
        "loggregator_job_deployment": DEPLOYMENT,
        "loggregator_job_name": JOB,
        "loggregator_job_index": INSTANCE,
        "loggregator_job_ip": IP,
        "loggregator_job_origin": origin,
        "loggregator_source_id": origin,
        "loggregator_instance_id": INSTANCE
    })
}

/// Panics unless `env` carries the identity of [`config_block`] for `origin`: source and
/// instance id, and exactly go-loggregator's client tags.
pub fn assert_identity(env: &Envelope, origin: &str) {
    assert_eq!(
        (env.source_id.as_str(), env.instance_id.as_str()),
        (origin, INSTANCE),
        "{env:?}"
    );
    let tags: Vec<String> = env.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(
        tags,
        [
            format!("deployment={DEPLOYMENT}"),
            format!("index={INSTANCE}"),
            format!("ip={IP}"),
            format!("job={JOB}"),
            format!("origin={origin}"),
        ],
        "{env:?}"
    );
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("read {0}: {1}")]
    Read(String, #[source] std::io::Error),
    #[error("bind test agent on 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    #[error("tls: {0}")]
    Tls(#[from] tonic::transport::Error),
}

/// The running test agent.
pub struct TestAgent {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Envelope>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestAgent {
    /// Serves on a free 127.0.0.1 port with `certs.server_cert`/`server_key` (generate them
    /// with `TestCerts::generate_for(.., "metron", &["metron"])`), requiring client
    /// certificates signed by `certs.ca_cert`.
    pub fn start(certs: &TestCerts) -> Result<Self, AgentError> {
        TestAgent::start_on(certs, 0)
    }

    /// [`TestAgent::start`] on 127.0.0.1:`port` (an agent that comes up late on the port a
    /// program was configured with).
    pub fn start_on(certs: &TestCerts, port: u16) -> Result<Self, AgentError> {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", port)).map_err(AgentError::Bind)?;
        TestAgent::serve(certs, listener)
    }

    /// [`TestAgent::start`] on a listener the caller bound (for example inside a cell's
    /// network namespace with `netns::in_netns`).
    pub fn serve(certs: &TestCerts, listener: std::net::TcpListener) -> Result<Self, AgentError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| AgentError::Read(p.display().to_string(), e))
        };
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                read(&certs.server_cert)?,
                read(&certs.server_key)?,
            ))
            .client_ca_root(Certificate::from_pem(read(&certs.ca_cert)?));
        listener.set_nonblocking(true).map_err(AgentError::Bind)?;
        let addr = listener.local_addr().map_err(AgentError::Bind)?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let ingress = Ingress {
            received: Arc::clone(&received),
        };
        let router = Server::builder().tls_config(tls)?.add_service(ingress);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-loggregator-agent".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("test agent runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("test agent listener");
                    let incoming = tonic::transport::server::TcpIncoming::from(listener);
                    // Stopping drops the server and, with the runtime, every connection: an
                    // agent that goes away, not one that drains its clients.
                    tokio::select! {
                        _ = router.serve_with_incoming(incoming) => {}
                        _ = stopped => {}
                    }
                });
                drop(rt);
            })
            .map_err(AgentError::Bind)?;
        Ok(TestAgent {
            addr,
            received,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Everything received so far.
    pub fn envelopes(&self) -> Vec<Envelope> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Waits (up to `within`) until `done` holds for the envelopes received so far, and
    /// returns them; on timeout returns `Err` with what did arrive.
    pub fn wait_until(
        &self,
        within: Duration,
        mut done: impl FnMut(&[Envelope]) -> bool,
    ) -> Result<Vec<Envelope>, Vec<Envelope>> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.envelopes();
            if done(&got) {
                return Ok(got);
            }
            if Instant::now() >= deadline {
                return Err(got);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The gauge value (value, unit) named `name` in `env`, if it is a gauge carrying it.
pub fn gauge<'a>(env: &'a Envelope, name: &str) -> Option<(f64, &'a str)> {
    match &env.message {
        Some(envelope::Message::Gauge(g)) => {
            g.metrics.get(name).map(|v| (v.value, v.unit.as_str()))
        }
        _ => None,
    }
}

/// The counter (delta, total) named `name` in `env`, if it is that counter.
pub fn counter(env: &Envelope, name: &str) -> Option<(u64, u64)> {
    match &env.message {
        Some(envelope::Message::Counter(c)) if c.name == name => Some((c.delta, c.total)),
        _ => None,
    }
}

/// The names of every gauge metric and counter in `envs`, sorted and deduplicated.
pub fn metric_names(envs: &[Envelope]) -> Vec<String> {
    let mut names: Vec<String> = envs
        .iter()
        .flat_map(|e| match &e.message {
            Some(envelope::Message::Gauge(g)) => g.metrics.keys().cloned().collect(),
            Some(envelope::Message::Counter(c)) => vec![c.name.clone()],
            _ => Vec::new(),
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

// === impl Ingress ===

/// `loggregator.v2.Ingress`, written out as tonic's generated server code would be.
#[derive(Clone)]
struct Ingress {
    received: Arc<Mutex<Vec<Envelope>>>,
}

impl Ingress {
    fn record(&self, envs: impl IntoIterator<Item = Envelope>) {
        if let Ok(mut v) = self.received.lock() {
            v.extend(envs);
        }
    }
}

impl tonic::server::NamedService for Ingress {
    const NAME: &'static str = INGRESS_SERVICE;
}

impl<B> Service<http::Request<B>> for Ingress
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let this = self.clone();
        match req.uri().path() {
            BATCH_SENDER_PATH => Box::pin(async move {
                let codec =
                    tonic_prost::ProstCodec::<BatchSenderResponse, EnvelopeBatch>::default();
                let mut grpc = tonic::server::Grpc::new(codec);
                Ok(grpc.client_streaming(BatchSender(this), req).await)
            }),
            SENDER_PATH => Box::pin(async move {
                let codec = tonic_prost::ProstCodec::<IngressResponse, Envelope>::default();
                let mut grpc = tonic::server::Grpc::new(codec);
                Ok(grpc.client_streaming(Sender(this), req).await)
            }),
            SEND_PATH => Box::pin(async move {
                let codec = tonic_prost::ProstCodec::<SendResponse, EnvelopeBatch>::default();
                let mut grpc = tonic::server::Grpc::new(codec);
                Ok(grpc.unary(SendOnce(this), req).await)
            }),
            _ => Box::pin(
                async move { Ok(tonic::Status::unimplemented("no such method").into_http()) },
            ),
        }
    }
}

struct BatchSender(Ingress);

impl tonic::server::ClientStreamingService<EnvelopeBatch> for BatchSender {
    type Response = BatchSenderResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<tonic::Streaming<EnvelopeBatch>>) -> Self::Future {
        let ingress = self.0.clone();
        Box::pin(async move {
            let mut stream = req.into_inner();
            while let Some(batch) = stream.message().await? {
                ingress.record(batch.batch);
            }
            Ok(tonic::Response::new(BatchSenderResponse {}))
        })
    }
}

struct Sender(Ingress);

impl tonic::server::ClientStreamingService<Envelope> for Sender {
    type Response = IngressResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<tonic::Streaming<Envelope>>) -> Self::Future {
        let ingress = self.0.clone();
        Box::pin(async move {
            let mut stream = req.into_inner();
            while let Some(env) = stream.message().await? {
                ingress.record([env]);
            }
            Ok(tonic::Response::new(IngressResponse {}))
        })
    }
}

struct SendOnce(Ingress);

impl tonic::server::UnaryService<EnvelopeBatch> for SendOnce {
    type Response = SendResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<EnvelopeBatch>) -> Self::Future {
        self.0.record(req.into_inner().batch);
        Box::pin(async { Ok(tonic::Response::new(SendResponse {})) })
    }
}
