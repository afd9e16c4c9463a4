//! Database connections live on a runtime of their own.
//!
//! actix-web runs every server worker on its own single-threaded runtime, and a pooled
//! connection is used by all of them. tokio-postgres drives each connection with a task; if
//! that task lived on the worker (or health server) runtime that happened to open it, stopping
//! that server would close the connection under requests still running on the other workers.
//! So the socket is opened and its task spawned on a process-wide runtime that is never shut
//! down. mysql_async binds its pool's tasks and sockets to the runtime that creates them, so
//! the MySQL store creates its pool and runs every statement there too ([`run`]).
//!
//! One worker thread: a read of thousands of rows arrives in hundreds of messages, and with
//! two workers the connection's task and the reader's bounced between them, a futex wake-up
//! and a context switch per message (in a profile of `GET /leases` at 5,000 leases, switching
//! fell from a fifth of the controller's CPU time to a twenty-fifth with one thread). One
//! thread keeps up with the TLS and protocol work of the busiest controller; the database
//! server is the bound long before it.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use deadpool_postgres::Connect;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Error, Socket};

static DB_RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Longest wait for a pooled connection before a request fails with 500.
pub const POOL_WAIT: Duration = Duration::from_secs(60);

fn handle() -> Handle {
    DB_RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("silk-db")
                .enable_all()
                .build()
                // Start-up cannot go on without threads; this only fails when the OS refuses them.
                .expect("start the database runtime")
        })
        .handle()
        .clone()
}

/// Runs `fut` on the database runtime and waits for it.
pub async fn run<F, T>(fut: F) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    match handle().spawn(fut).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Spawns `fut` on the database runtime without waiting for it.
pub fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
    drop(handle().spawn(fut));
}

/// deadpool's connector, opening connections on the database runtime.
pub struct OnDbRuntime<T> {
    pub tls: T,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl<T> Connect for OnDbRuntime<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn connect(
        &self,
        pg_config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), Error>> {
        let tls = self.tls.clone();
        let pg_config = pg_config.clone();
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let task = handle().spawn(async move {
                match pg_config.connect(tls).await {
                    Ok((client, connection)) => {
                        let _ = tx.send(Ok(client));
                        // Ends when the client is dropped or the server goes away.
                        let _ = connection.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
            // The sender is only dropped unsent if the runtime is gone; report it as a timeout,
            // the one error tokio-postgres lets callers build.
            let client = rx.await.map_err(|_| Error::__private_api_timeout())??;
            Ok((client, task))
        })
    }
}
