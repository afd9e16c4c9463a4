//! One database per test on either engine, for tests that run against both: [`Engine::ALL`]
//! names them, [`TestDb::create`] makes a database with a random name on the servers
//! scripts/test starts (dropped on drop), and the helpers speak each engine's SQL so a test
//! body is written once.
//!
//! The silk-controller config it renders ([`TestDb::controller_database_json`]) reaches the
//! server over TCP with TLS, trusting `SILK_TEST_DB_CA`, as cf-deployment does.

use mysql_async::prelude::Queryable;

use crate::dbserver::PrivateServer;
use crate::mysql::MysqlDb;
use crate::postgres;

/// `database.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    pub const ALL: [Engine; 2] = [Engine::Postgres, Engine::Mysql];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }

    /// "now" in epoch seconds on this engine's clock.
    pub fn now_sql(self) -> &'static str {
        match self {
            Engine::Postgres => "EXTRACT(EPOCH FROM now())::bigint",
            Engine::Mysql => "UNIX_TIMESTAMP()",
        }
    }
}

/// TLS settings of the rendered `database` object.
#[derive(Debug, Clone)]
pub struct DbTls {
    pub require_ssl: bool,
    pub ca_cert: String,
    pub skip_hostname_validation: bool,
}

impl DbTls {
    /// TLS verified against `SILK_TEST_DB_CA`, the CA of the scripts/test servers.
    pub fn from_env() -> DbTls {
        DbTls {
            require_ssl: true,
            ca_cert: crate::server_env("SILK_TEST_DB_CA", "database servers"),
            skip_hostname_validation: false,
        }
    }

    pub fn off() -> DbTls {
        DbTls {
            require_ssl: false,
            ca_cert: String::new(),
            skip_hostname_validation: false,
        }
    }
}

enum Backend {
    Postgres(postgres::TestDb),
    Mysql(MysqlDb),
}

/// A database that exists for the life of the value.
pub struct TestDb {
    pub engine: Engine,
    backend: Backend,
    /// What [`TestDb::controller_database_json`] renders; tests may change it.
    pub tls: DbTls,
}

impl TestDb {
    /// On the server of `engine` that scripts/test started, reached over TLS.
    pub async fn create(engine: Engine) -> TestDb {
        TestDb::create_with(engine, DbTls::from_env()).await
    }

    /// On the server of `engine` that scripts/test started, rendering `tls` (a caller that
    /// reaches PostgreSQL over its unix socket renders [`DbTls::off`]).
    pub async fn create_with(engine: Engine, tls: DbTls) -> TestDb {
        let backend = match engine {
            Engine::Postgres => Backend::Postgres(postgres::TestDb::create().await),
            Engine::Mysql => Backend::Mysql(MysqlDb::create().await),
        };
        TestDb {
            engine,
            backend,
            tls,
        }
    }

    /// The PostgreSQL database, when this is one.
    pub fn postgres(&self) -> Option<&postgres::TestDb> {
        match &self.backend {
            Backend::Postgres(d) => Some(d),
            Backend::Mysql(_) => None,
        }
    }

    /// The MySQL database, when this is one.
    pub fn mysql(&self) -> Option<&MysqlDb> {
        match &self.backend {
            Backend::Mysql(d) => Some(d),
            Backend::Postgres(_) => None,
        }
    }

    /// On a private throwaway server; TLS as the server offers it, trusting its CA.
    pub async fn create_on(server: &PrivateServer) -> TestDb {
        let backend = match server.engine() {
            Engine::Postgres => {
                Backend::Postgres(postgres::TestDb::create_on(server.pg_cluster()).await)
            }
            Engine::Mysql => Backend::Mysql(MysqlDb::create_on(server.mysql_server()).await),
        };
        TestDb {
            engine: server.engine(),
            backend,
            tls: server.client_tls(),
        }
    }

    pub fn name(&self) -> &str {
        match &self.backend {
            Backend::Postgres(d) => &d.name,
            Backend::Mysql(d) => &d.name,
        }
    }

    /// (user, password, port) for TCP on 127.0.0.1.
    fn login(&self) -> (String, String, u16) {
        match &self.backend {
            Backend::Postgres(d) => (d.cluster.user.clone(), String::new(), d.cluster.port),
            Backend::Mysql(d) => (
                d.server.user.clone(),
                d.server.password.clone(),
                d.server.port,
            ),
        }
    }

    /// The `database` object of a silk-controller config pointing here.
    pub fn controller_database_json(&self) -> String {
        self.controller_database_json_at("127.0.0.1")
    }

    /// Same, dialling `host` (a name the server certificate may or may not carry).
    pub fn controller_database_json_at(&self, host: &str) -> String {
        let (user, password, port) = self.login();
        serde_json::json!({
            "type": self.engine.name(),
            "user": user,
            "password": password,
            "host": host,
            "port": port,
            "timeout": 5,
            "database_name": self.name(),
            "require_ssl": self.tls.require_ssl,
            "ca_cert": self.tls.ca_cert,
            "skip_hostname_validation": self.tls.skip_hostname_validation,
        })
        .to_string()
    }

    /// Runs `sql` (one or more statements separated by `;`).
    pub async fn execute(&self, sql: &str) {
        match &self.backend {
            Backend::Postgres(d) => d
                .client()
                .await
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Backend::Mysql(d) => {
                let mut c = d.conn().await;
                c.query_drop(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                let _ = c.disconnect().await;
            }
        }
    }

    /// The first column of every row of `sql`, as text (cast it to text on PostgreSQL).
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        match &self.backend {
            Backend::Postgres(d) => d
                .client()
                .await
                .query(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|r| {
                    r.get::<_, Option<String>>(0)
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect(),
            Backend::Mysql(d) => {
                let mut c = d.conn().await;
                let rows: Vec<Option<String>> =
                    c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                let _ = c.disconnect().await;
                rows.into_iter()
                    .map(|v| v.unwrap_or_else(|| "NULL".into()))
                    .collect()
            }
        }
    }

    /// Rows of `subnets` as (underlay_ip, overlay_subnet, overlay_hwaddr), sorted.
    pub async fn subnets(&self) -> Vec<(String, String, String)> {
        let mut rows: Vec<_> = self
            .strings(
                "SELECT CONCAT(underlay_ip, ' ', overlay_subnet, ' ', overlay_hwaddr) FROM subnets",
            )
            .await
            .into_iter()
            .map(|r| {
                let mut p = r.split(' ').map(str::to_string);
                (
                    p.next().unwrap_or_default(),
                    p.next().unwrap_or_default(),
                    p.next().unwrap_or_default(),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    /// Names of the tables in this database, sorted.
    pub async fn tables(&self) -> Vec<String> {
        let sql = match self.engine {
            Engine::Postgres => {
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                    .to_string()
            }
            Engine::Mysql => format!(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = '{}' ORDER BY 1",
                self.name()
            ),
        };
        self.strings(&sql).await
    }
}
