//! `silk-controller.json` as the job template renders it (control-plane §4.2): the raw
//! document with the exact upstream keys, and the validated [`Config`]. Every problem is
//! collected and reported together; nothing here reads files or opens sockets.

use std::time::Duration;

use serde::Deserialize;
use silk_core::{NetworkSpec, OverlayNetworks};

use crate::pool::CidrPool;

pub use silk_ops::config::ConfigError;

/// The rendered JSON document, field for field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub debug_server_port: i64,
    #[serde(default)]
    pub health_check_port: i64,
    #[serde(default)]
    pub listen_host: String,
    #[serde(default)]
    pub listen_port: i64,
    #[serde(default)]
    pub ca_cert_file: String,
    #[serde(default)]
    pub server_cert_file: String,
    #[serde(default)]
    pub server_key_file: String,
    pub network: Option<NetworkSpec>,
    #[serde(default)]
    pub subnet_prefix_length: i64,
    pub database: Option<RawDatabase>,
    #[serde(default)]
    pub lease_expiration_seconds: i64,
    #[serde(default)]
    pub metron_port: i64,
    #[serde(default)]
    pub staleness_threshold_seconds: i64,
    #[serde(default)]
    pub metrics_emit_seconds: i64,
    #[serde(default)]
    pub log_prefix: String,
    #[serde(default)]
    pub max_idle_connections: i64,
    #[serde(default)]
    pub max_open_connections: i64,
    #[serde(default)]
    pub connections_max_lifetime_seconds: i64,
    /// Not rendered by the job (upstream's silk-controller has no loggregator properties);
    /// the same block as vxlan-policy-agent's, for sending metrics over Loggregator v2.
    #[serde(default)]
    pub loggregator: silk_ops::loggregator::RawLoggregator,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: i64,
    #[serde(default)]
    pub timeout: i64,
    #[serde(default)]
    pub database_name: String,
    #[serde(default)]
    pub require_ssl: bool,
    #[serde(default)]
    pub ca_cert: String,
    #[serde(default)]
    pub skip_hostname_validation: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub debug_server_port: u16,
    pub health_check_port: u16,
    pub listen_host: String,
    pub listen_port: u16,
    pub ca_cert_file: String,
    pub server_cert_file: String,
    pub server_key_file: String,
    pub networks: OverlayNetworks,
    pub pool: CidrPool,
    pub database: DatabaseConfig,
    pub lease_expiration_seconds: i64,
    pub metron_port: u16,
    pub staleness_threshold_seconds: i64,
    pub metrics_emit: Duration,
    pub log_prefix: String,
    pub max_idle_connections: usize,
    /// 0 means unlimited upstream; the pool then uses [`DEFAULT_MAX_OPEN`].
    pub max_open_connections: usize,
    /// `None`: connections live forever.
    pub connections_max_lifetime: Option<Duration>,
    /// Loggregator v2 target; `None`: dropsonde v1 to `metron_port`.
    pub loggregator: Option<silk_ops::loggregator::LoggregatorV2>,
}

/// Pool size when `max_open_connections` is 0 (unlimited in Go's database/sql).
pub const DEFAULT_MAX_OPEN: usize = 200;

/// `database.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub engine: Engine,
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
    pub database_name: String,
    pub require_ssl: bool,
    pub ca_cert: String,
    pub skip_hostname_validation: bool,
}

impl Config {
    /// Parses and validates the rendered JSON text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_json::from_str(text)?;
        Config::try_from(raw)
    }
}

/// Collects problems instead of stopping at the first.
struct Problems(Vec<String>);

impl Problems {
    fn port(&mut self, key: &str, v: i64) -> u16 {
        match u16::try_from(v) {
            Ok(p) if p >= 1 => p,
            _ => {
                self.0.push(format!(
                    "{key}: must be a port between 1 and 65535, got {v}"
                ));
                0
            }
        }
    }

    fn non_empty(&mut self, key: &str, v: &str) {
        if v.trim().is_empty() {
            self.0.push(format!("{key}: must be set"));
        }
    }

    fn at_least(&mut self, key: &str, v: i64, min: i64) -> i64 {
        if v < min {
            self.0
                .push(format!("{key}: must be at least {min}, got {v}"));
        }
        v
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let mut p = Problems(Vec::new());
        let debug_server_port = p.port("debug_server_port", raw.debug_server_port);
        let health_check_port = p.port("health_check_port", raw.health_check_port);
        let listen_port = p.port("listen_port", raw.listen_port);
        p.non_empty("listen_host", &raw.listen_host);
        if !raw.listen_host.trim().is_empty()
            && raw.listen_host.parse::<std::net::IpAddr>().is_err()
        {
            p.0.push(format!(
                "listen_host: not an IP address: {}",
                raw.listen_host
            ));
        }
        p.non_empty("ca_cert_file", &raw.ca_cert_file);
        p.non_empty("server_cert_file", &raw.server_cert_file);
        p.non_empty("server_key_file", &raw.server_key_file);
        let networks = match &raw.network {
            None => {
                p.0.push("network: must be set".into());
                None
            }
            Some(spec) => OverlayNetworks::parse(spec)
                .map_err(|e| p.0.push(format!("network: {e}")))
                .ok(),
        };
        let prefix = u8::try_from(raw.subnet_prefix_length).unwrap_or(0);
        let pool = networks.as_ref().and_then(|nets| {
            CidrPool::new(nets, prefix)
                .map_err(|e| p.0.push(format!("subnet_prefix_length: {e}")))
                .ok()
        });
        let database = match &raw.database {
            None => {
                p.0.push("database: must be set".into());
                None
            }
            Some(db) => Some(database(&mut p, db)),
        };
        let lease_expiration_seconds =
            p.at_least("lease_expiration_seconds", raw.lease_expiration_seconds, 1);
        let metron_port = p.port("metron_port", raw.metron_port);
        let staleness_threshold_seconds = p.at_least(
            "staleness_threshold_seconds",
            raw.staleness_threshold_seconds,
            1,
        );
        let metrics_emit = p.at_least("metrics_emit_seconds", raw.metrics_emit_seconds, 1);
        p.non_empty("log_prefix", &raw.log_prefix);
        let max_idle = p.at_least("max_idle_connections", raw.max_idle_connections, 0);
        let max_open = p.at_least("max_open_connections", raw.max_open_connections, 0);
        let lifetime = raw.connections_max_lifetime_seconds;
        let loggregator = raw.loggregator.validate(&mut p.0);
        if !p.0.is_empty() {
            return Err(ConfigError::Invalid(p.0));
        }
        let (Some(networks), Some(pool), Some(database)) = (networks, pool, database) else {
            unreachable!("a missing part always records a problem");
        };
        Ok(Config {
            debug_server_port,
            health_check_port,
            listen_host: raw.listen_host,
            listen_port,
            ca_cert_file: raw.ca_cert_file,
            server_cert_file: raw.server_cert_file,
            server_key_file: raw.server_key_file,
            networks,
            pool,
            database,
            lease_expiration_seconds,
            metron_port,
            staleness_threshold_seconds,
            metrics_emit: Duration::from_secs(metrics_emit as u64),
            log_prefix: raw.log_prefix,
            max_idle_connections: max_idle as usize,
            max_open_connections: if max_open == 0 {
                DEFAULT_MAX_OPEN
            } else {
                max_open as usize
            },
            connections_max_lifetime: (lifetime > 0).then(|| Duration::from_secs(lifetime as u64)),
            loggregator,
        })
    }
}

fn database(p: &mut Problems, db: &RawDatabase) -> DatabaseConfig {
    let engine = match db.kind.as_str() {
        "postgres" => Engine::Postgres,
        "mysql" => Engine::Mysql,
        "" => {
            p.0.push("database.type: must be set".into());
            Engine::Postgres
        }
        other => {
            p.0.push(format!("database.type: unknown driver {other}"));
            Engine::Postgres
        }
    };
    p.non_empty("database.user", &db.user);
    p.non_empty("database.host", &db.host);
    let port = p.port("database.port", db.port);
    let timeout = p.at_least("database.timeout", db.timeout, 1);
    // PostgreSQL verifies nothing with skip_hostname_validation; MySQL always verifies the chain.
    let verifies = !db.skip_hostname_validation || engine == Engine::Mysql;
    if db.require_ssl && verifies && db.ca_cert.trim().is_empty() {
        p.0.push("database.ca_cert: must be set when require_ssl verifies the server".into());
    }
    DatabaseConfig {
        engine,
        user: db.user.clone(),
        password: db.password.clone(),
        host: db.host.clone(),
        port,
        timeout: Duration::from_secs(timeout.max(1) as u64),
        database_name: db.database_name.clone(),
        require_ssl: db.require_ssl,
        ca_cert: db.ca_cert.clone(),
        skip_hostname_validation: db.skip_hostname_validation,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The document the job template renders with its defaults.
    pub const RENDERED: &str = r#"{
      "debug_server_port": 46455, "health_check_port": 19683,
      "listen_host": "0.0.0.0", "listen_port": 4103,
      "ca_cert_file": "/var/vcap/jobs/silk-controller/config/certs/ca.crt",
      "server_cert_file": "/var/vcap/jobs/silk-controller/config/certs/server.crt",
      "server_key_file": "/var/vcap/jobs/silk-controller/config/certs/server.key",
      "network": "10.255.0.0/16", "subnet_prefix_length": 24,
      "database": {"type": "postgres", "user": "silk", "password": "", "host": "sql-db", "port": 5524,
        "timeout": 120, "database_name": "silk", "require_ssl": false,
        "ca_cert": "/var/vcap/jobs/silk-controller/config/certs/database_ca.crt",
        "skip_hostname_validation": false},
      "lease_expiration_seconds": 604800, "metron_port": 3457, "staleness_threshold_seconds": 3600,
      "metrics_emit_seconds": 30, "log_prefix": "cfnetworking", "max_idle_connections": 10,
      "max_open_connections": 200, "connections_max_lifetime_seconds": 3600
    }"#;

    #[test]
    fn parses_the_rendered_template() {
        let c = Config::parse(RENDERED).unwrap();
        assert_eq!(c.listen_port, 4103);
        assert_eq!(c.pool.size(crate::pool::Kind::Block), 255);
        assert_eq!(c.database.port, 5524);
        assert_eq!(c.connections_max_lifetime, Some(Duration::from_secs(3600)));
        let list = RENDERED.replace(
            r#""10.255.0.0/16""#,
            r#"["10.255.0.0/20","10.255.96.0/21"]"#,
        );
        assert_eq!(
            Config::parse(&list)
                .unwrap()
                .pool
                .size(crate::pool::Kind::Block),
            22
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let bad = RENDERED
            .replace("46455", "0")
            .replace(r#""10.255.0.0/16""#, r#""banana""#)
            .replace(r#""type": "postgres""#, r#""type": "oracle""#)
            .replace("604800", "0");
        let ConfigError::Invalid(problems) = Config::parse(&bad).unwrap_err() else {
            panic!("want Invalid");
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("debug_server_port"));
        assert!(problems
            .iter()
            .any(|p| p.contains("invalid CIDR address: banana")));
        assert!(problems.iter().any(|p| p.contains("unknown driver oracle")));
        assert!(problems
            .iter()
            .any(|p| p.starts_with("lease_expiration_seconds")));
    }

    #[test]
    fn both_engines_are_accepted() {
        let c = Config::parse(RENDERED).unwrap();
        assert_eq!(c.database.engine, Engine::Postgres);
        let mysql = RENDERED.replace(r#""type": "postgres""#, r#""type": "mysql""#);
        assert_eq!(
            Config::parse(&mysql).unwrap().database.engine,
            Engine::Mysql
        );
        // MySQL verifies the chain even without hostname validation, so it needs the CA.
        let tls = mysql
            .replace(r#""require_ssl": false"#, r#""require_ssl": true"#)
            .replace(
                r#""skip_hostname_validation": false"#,
                r#""skip_hostname_validation": true"#,
            )
            .replace(
                "/var/vcap/jobs/silk-controller/config/certs/database_ca.crt",
                "",
            );
        assert!(Config::parse(&tls)
            .unwrap_err()
            .to_string()
            .contains("database.ca_cert"));
        let pg = tls.replace(r#""type": "mysql""#, r#""type": "postgres""#);
        assert!(Config::parse(&pg).is_ok());
    }

    #[test]
    fn rejects_prefix_not_smaller_than_network_and_unknown_keys() {
        let bad = RENDERED.replace(
            r#""subnet_prefix_length": 24"#,
            r#""subnet_prefix_length": 16"#,
        );
        assert!(Config::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("must be smaller than the network"));
        let typo = RENDERED.replace("listen_port", "listen_prot");
        assert!(matches!(Config::parse(&typo), Err(ConfigError::Json(_))));
    }
}
