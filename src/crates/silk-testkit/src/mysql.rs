//! A MySQL database per test on the MariaDB server scripts/test starts: a random name, created
//! on [`MysqlDb::create`] and dropped on drop. Connection settings come from
//! `SILK_TEST_MYSQL_{HOST,PORT,USER,PASSWORD}`; without them it panics, so a gated test never
//! passes by skipping.

use mysql_async::prelude::Queryable;
use rand::Rng;

/// Connection settings of a MySQL server.
#[derive(Debug, Clone)]
pub struct MysqlServer {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl MysqlServer {
    /// The server scripts/test starts; panics with the reason when it is missing.
    pub fn from_env() -> Self {
        const WHAT: &str = "MariaDB server";
        MysqlServer {
            host: crate::server_env("SILK_TEST_MYSQL_HOST", WHAT),
            port: crate::server_env_port("SILK_TEST_MYSQL_PORT", WHAT),
            user: crate::server_env("SILK_TEST_MYSQL_USER", WHAT),
            password: std::env::var("SILK_TEST_MYSQL_PASSWORD").unwrap_or_default(),
        }
    }

    fn opts(&self, dbname: Option<&str>) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .db_name(dbname.map(str::to_string))
            .prefer_socket(false)
            .into()
    }

    /// One connection (plain TCP) to `dbname`, or to no database.
    pub async fn connect(&self, dbname: Option<&str>) -> mysql_async::Result<mysql_async::Conn> {
        mysql_async::Conn::new(self.opts(dbname)).await
    }
}

/// A database that exists for the life of the value.
pub struct MysqlDb {
    pub server: MysqlServer,
    pub name: String,
}

impl MysqlDb {
    pub async fn create() -> MysqlDb {
        MysqlDb::create_on(MysqlServer::from_env()).await
    }

    pub async fn create_on(server: MysqlServer) -> MysqlDb {
        let name = format!("silk_test_{:016x}", rand::rng().random::<u64>());
        let mut admin = server
            .connect(None)
            .await
            .expect("connect to the test mysql server");
        admin
            .query_drop(format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let _ = admin.disconnect().await;
        MysqlDb { server, name }
    }

    pub async fn conn(&self) -> mysql_async::Conn {
        self.server
            .connect(Some(&self.name))
            .await
            .expect("connect to the test database")
    }
}

impl Drop for MysqlDb {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        crate::block_on_cleanup(async move {
            if let Ok(mut admin) = server.connect(None).await {
                let _ = admin
                    .query_drop(format!("DROP DATABASE IF EXISTS {name}"))
                    .await;
                let _ = admin.disconnect().await;
            }
        });
    }
}
