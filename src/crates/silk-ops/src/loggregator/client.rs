//! The Loggregator v2 ingress client: envelopes queued without blocking the caller, batched
//! (100 envelopes or 100 ms, as go-loggregator's ingress client), and streamed over
//! `loggregator.v2.Ingress/BatchSender` to the local agent on `127.0.0.1:<api_port>` with
//! mutual TLS (server name `metron`, as go-loggregator's `NewIngressTLSConfig`; ALPN `h2`).
//!
//! The sender runs on a thread of its own with a one-thread tokio runtime, so it works from
//! any caller (actix, tokio, plain threads). An agent that is down, refuses the connection or
//! fails the TLS handshake never stops the program: the failure is logged (warn, then at most
//! once a minute while it lasts), batches meanwhile are dropped and counted, and the stream is
//! opened again with a backoff of 0.5 s doubling to 10 s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use serde_json::json;
use silk_client::tls::ClientTls;
use tokio::sync::mpsc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint, Uri};

use super::config::LoggregatorV2;
use super::proto::{
    envelope, BatchSenderResponse, Counter, Envelope, EnvelopeBatch, Gauge, GaugeValue, Log,
    LogType, BATCH_SENDER_PATH,
};
use crate::metrics::Sink;

/// The name the agent's certificate carries (cf-deployment's `loggregator_tls_agent`).
pub const AGENT_SERVER_NAME: &str = "metron";

const MAX_BATCH: usize = 100;
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
const QUEUE: usize = 10_000;
const STREAM_QUEUE: usize = 64;
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum LoggregatorError {
    #[error("loggregator v2 tls: {0}")]
    Tls(#[from] silk_client::tls::TlsError),
    #[error("loggregator v2 sender thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// An app log line, sent only over v2 (upstream's vxlan-policy-agent sends its ASG update
/// notices this way): `source_id` is the app guid, `instance_id` the app instance.
#[derive(Debug, Clone, Default)]
pub struct AppLog {
    pub source_id: String,
    pub instance_id: String,
    pub source_type: String,
    pub message: String,
    pub tags: BTreeMap<String, String>,
}

/// The v2 [`Sink`]: builds envelopes with the configured identity and queues them for the
/// sender thread.
pub struct LoggregatorSink {
    source_id: String,
    instance_id: String,
    tags: BTreeMap<String, String>,
    queue: mpsc::Sender<Envelope>,
    dropped: Arc<AtomicU64>,
}

impl LoggregatorSink {
    /// Reads and checks the TLS files (an error here is a start-up error), then starts the
    /// sender thread. `origin` is the `source_id` when the config names none.
    pub fn start(origin: &str, cfg: &LoggregatorV2) -> Result<Self, LoggregatorError> {
        let tls = ClientTls::from_files(&cfg.ca_path, &cfg.cert_path, &cfg.key_path)?;
        let mut config = (*tls.client_config()?).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let agent = SocketAddr::from(([127, 0, 0, 1], cfg.api_port));
        let (queue, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let sender = Sender {
            agent,
            tls: Arc::new(config),
            dropped: Arc::clone(&dropped),
        };
        std::thread::Builder::new()
            .name("loggregator-v2".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(sender.run(rx)),
                    Err(e) => crate::log::error(
                        "loggregator-v2-runtime",
                        json!({ "error": e.to_string() }),
                    ),
                }
            })
            .map_err(LoggregatorError::Thread)?;
        crate::log::info(
            "loggregator-v2-client",
            json!({ "agent": agent.to_string(), "source_id": source_id(origin, cfg) }),
        );
        Ok(LoggregatorSink {
            source_id: source_id(origin, cfg),
            instance_id: cfg.instance_id.clone(),
            tags: cfg.tags.clone(),
            queue,
            dropped,
        })
    }

    fn envelope(&self, message: envelope::Message) -> Envelope {
        Envelope {
            timestamp: crate::dropsonde::now_nanos(),
            source_id: self.source_id.clone(),
            instance_id: self.instance_id.clone(),
            deprecated_tags: BTreeMap::new(),
            tags: self.tags.clone(),
            message: Some(message),
        }
    }

    fn queue(&self, env: Envelope) {
        // Never block the caller: a full queue (agent gone for a long time) drops the envelope.
        if self.queue.try_send(env).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn source_id(origin: &str, cfg: &LoggregatorV2) -> String {
    if cfg.source_id.is_empty() {
        origin.to_string()
    } else {
        cfg.source_id.clone()
    }
}

impl Sink for LoggregatorSink {
    fn counter(&self, name: &str, delta: u64, total: u64) {
        self.queue(self.envelope(envelope::Message::Counter(Counter {
            name: name.to_string(),
            delta,
            total,
        })));
    }

    fn gauge(&self, name: &str, value: f64, unit: &str) {
        self.queue(self.envelope(envelope::Message::Gauge(Gauge {
            metrics: BTreeMap::from([(
                name.to_string(),
                GaugeValue {
                    unit: unit.to_string(),
                    value,
                },
            )]),
        })));
    }

    fn app_log(&self, log: &AppLog) {
        // go-loggregator's EmitLog with WithSourceInfo, WithStdout and WithEnvelopeTags.
        let mut env = self.envelope(envelope::Message::Log(Log {
            payload: log.message.as_bytes().to_vec(),
            r#type: LogType::Out as i32,
        }));
        env.source_id = log.source_id.clone();
        env.instance_id = log.instance_id.clone();
        env.tags
            .insert("source_type".to_string(), log.source_type.clone());
        env.tags
            .extend(log.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.queue(env);
    }
}

// === impl Sender ===

struct Sender {
    agent: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    dropped: Arc<AtomicU64>,
}

/// One open `BatchSender` call: batches go into `tx`, the call runs as a task.
struct Stream {
    tx: mpsc::Sender<EnvelopeBatch>,
    call: tokio::task::JoinHandle<Result<(), tonic::Status>>,
    sent: u64,
}

struct Health {
    failing: bool,
    backoff: Duration,
    retry_at: Instant,
    last_warn: Option<Instant>,
}

impl Sender {
    fn channel(&self) -> Channel {
        let agent = self.agent;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls));
        let connector = tower::service_fn(move |_: Uri| {
            let tls = tls.clone();
            async move {
                let connect = async {
                    let tcp = tokio::net::TcpStream::connect(agent).await?;
                    let name = rustls::pki_types::ServerName::try_from(AGENT_SERVER_NAME)
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                    let stream = tls.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                };
                tokio::time::timeout(CONNECT_TIMEOUT, connect)
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                    })?
            }
        });
        // The URI only names the :authority; the connector above decides where to connect.
        Endpoint::from_shared(format!("http://{}", self.agent))
            .unwrap_or_else(|_| Endpoint::from_static("http://127.0.0.1:3458"))
            .connect_with_connector_lazy(connector)
    }

    async fn run(self, mut rx: mpsc::Receiver<Envelope>) {
        let channel = self.channel();
        let mut stream: Option<Stream> = None;
        let mut batch: Vec<Envelope> = Vec::new();
        let mut flush = tokio::time::interval(FLUSH_INTERVAL);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut health = Health {
            failing: false,
            backoff: MIN_BACKOFF,
            retry_at: Instant::now(),
            last_warn: None,
        };
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(env) => {
                        batch.push(env);
                        if batch.len() < MAX_BATCH {
                            continue;
                        }
                    }
                    None => {
                        // Every sink is gone: send what is left and end the call cleanly.
                        if !batch.is_empty() {
                            self.flush(&channel, &mut stream, &mut batch, &mut health).await;
                        }
                        if let Some(s) = stream.take() {
                            drop(s.tx);
                            let _ = tokio::time::timeout(Duration::from_secs(1), s.call).await;
                        }
                        return;
                    }
                },
                _ = flush.tick() => {
                    if batch.is_empty() {
                        continue;
                    }
                }
            }
            self.flush(&channel, &mut stream, &mut batch, &mut health)
                .await;
        }
    }

    async fn flush(
        &self,
        channel: &Channel,
        stream: &mut Option<Stream>,
        batch: &mut Vec<Envelope>,
        health: &mut Health,
    ) {
        if let Some(s) = stream.take_if(|s| s.call.is_finished()) {
            let error = match s.call.await {
                Ok(Ok(())) => "agent ended the stream".to_string(),
                Ok(Err(status)) => status_text(&status),
                Err(e) => e.to_string(),
            };
            self.failed(health, &error);
        }
        if stream.is_none() {
            if Instant::now() < health.retry_at {
                self.dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                return;
            }
            *stream = Some(open(channel.clone()));
        }
        let Some(s) = stream.as_mut() else { return };
        let out = EnvelopeBatch {
            batch: std::mem::take(batch),
        };
        match s.tx.try_send(out) {
            Ok(()) => {
                s.sent += 1;
                // A call still running after a second batch went in has a live connection.
                if s.sent >= 2 && !s.call.is_finished() {
                    self.healthy(health);
                }
            }
            Err(e) => {
                let lost = match e {
                    mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => {
                        b.batch.len()
                    }
                };
                self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
                if let Some(s) = stream.take() {
                    s.call.abort();
                }
                self.failed(health, "stream stalled or closed");
            }
        }
    }

    fn failed(&self, health: &mut Health, error: &str) {
        let now = Instant::now();
        let data = json!({
            "agent": self.agent.to_string(),
            "error": error,
            "retry-in-seconds": health.backoff.as_secs_f64(),
            "dropped-envelopes": self.dropped.load(Ordering::Relaxed),
        });
        if health
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            crate::log::warn("loggregator-v2-send-failed", data);
            health.last_warn = Some(now);
        } else {
            crate::log::debug("loggregator-v2-send-failed", data);
        }
        health.failing = true;
        health.retry_at = now + health.backoff;
        health.backoff = (health.backoff * 2).min(MAX_BACKOFF);
    }

    fn healthy(&self, health: &mut Health) {
        if health.failing {
            crate::log::info(
                "loggregator-v2-connected",
                json!({
                    "agent": self.agent.to_string(),
                    "dropped-envelopes": self.dropped.load(Ordering::Relaxed),
                }),
            );
        }
        health.failing = false;
        health.backoff = MIN_BACKOFF;
        health.last_warn = None;
    }
}

fn status_text(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = status.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

fn open(channel: Channel) -> Stream {
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let call = tokio::spawn(batch_sender(channel, rx));
    Stream { tx, call, sent: 0 }
}

/// `rpc BatchSender(stream EnvelopeBatch) returns (BatchSenderResponse)`: runs until the
/// batch channel closes or the connection fails.
async fn batch_sender(
    channel: Channel,
    rx: mpsc::Receiver<EnvelopeBatch>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let batches =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let codec = tonic_prost::ProstCodec::<EnvelopeBatch, BatchSenderResponse>::default();
    grpc.client_streaming(
        tonic::Request::new(batches),
        PathAndQuery::from_static(BATCH_SENDER_PATH),
        codec,
    )
    .await?;
    Ok(())
}
