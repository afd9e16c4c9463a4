//! A PostgreSQL database per test on the cluster scripts/test starts: a random name, created on
//! [`TestDb::create`] and dropped (connections terminated) on drop. Connection settings come
//! from `SILK_TEST_PG_HOST` (socket directory), `SILK_TEST_PG_PORT` and `SILK_TEST_PG_USER`;
//! without them it panics, so a gated test never passes by skipping.

use rand::Rng;

/// Connection settings of the test cluster.
#[derive(Debug, Clone)]
pub struct PgCluster {
    pub socket_dir: String,
    pub port: u16,
    pub user: String,
}

impl PgCluster {
    /// From the environment; panics with the reason when it is missing.
    pub fn from_env() -> Self {
        const WHAT: &str = "PostgreSQL cluster";
        PgCluster {
            socket_dir: crate::server_env("SILK_TEST_PG_HOST", WHAT),
            port: crate::server_env_port("SILK_TEST_PG_PORT", WHAT),
            user: std::env::var("SILK_TEST_PG_USER").unwrap_or_else(|_| "postgres".into()),
        }
    }

    fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.socket_dir)
            .port(self.port)
            .user(&self.user)
            .dbname(dbname);
        c
    }

    /// A connected client to `dbname`; the connection task runs on the current runtime.
    pub async fn connect(
        &self,
        dbname: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = self.config(dbname).connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
}

/// A database that exists for the life of the value.
pub struct TestDb {
    pub cluster: PgCluster,
    pub name: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        TestDb::create_on(PgCluster::from_env()).await
    }

    /// A database on `cluster` (the scripts/test one, or a private one).
    pub async fn create_on(cluster: PgCluster) -> TestDb {
        let name = format!("silk_test_{:016x}", rand::rng().random::<u64>());
        let admin = cluster
            .connect("postgres")
            .await
            .expect("connect to the test cluster");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        TestDb { cluster, name }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        self.cluster
            .connect(&self.name)
            .await
            .expect("connect to the test database")
    }

    /// The `database` object of a silk-controller config pointing here over TCP 127.0.0.1.
    pub fn controller_database_json(&self) -> String {
        format!(
            r#"{{"type":"postgres","user":"{}","password":"","host":"127.0.0.1","port":{},"timeout":10,"database_name":"{}","require_ssl":false,"ca_cert":"","skip_hostname_validation":false}}"#,
            self.cluster.user, self.cluster.port, self.name
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let cluster = self.cluster.clone();
        let name = self.name.clone();
        crate::block_on_cleanup(async move {
            if let Ok(admin) = cluster.connect("postgres").await {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            }
        });
    }
}
