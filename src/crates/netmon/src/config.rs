//! `netmon.json` (policy contract §6): Go's field names, every problem collected and reported
//! together. `poll_interval` must be at least 1 s, `telemetry_interval` too when telemetry is
//! on, and `log_level` one of debug, info, error, fatal (any case), as upstream accepts.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub metron_address: String,
    #[serde(default)]
    pub poll_interval: u64,
    #[serde(default)]
    pub interface_name: String,
    #[serde(default)]
    pub log_level: String,
    #[serde(default)]
    pub log_prefix: String,
    #[serde(default)]
    pub iptables_lock_file: String,
    #[serde(default)]
    pub telemetry_enabled: bool,
    #[serde(default)]
    pub telemetry_interval: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub metron_address: SocketAddr,
    pub poll_interval: Duration,
    pub interface_name: String,
    /// Lowercase: `debug`, `info`, `error` or `fatal`.
    pub log_level: String,
    pub log_prefix: String,
    pub iptables_lock_file: String,
    /// `Some(interval)` when telemetry is enabled.
    pub telemetry: Option<Duration>,
}

pub use silk_ops::config::ConfigError;

impl Config {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        silk_ops::config::parse::<RawConfig, Config>(text)
    }

    /// The `log` filter for `log_level` (`fatal` keeps error records, the closest `log` has).
    pub fn level_filter(&self) -> log::LevelFilter {
        silk_ops::log::parse_level(&self.log_level)
            .map(|(_, l)| l)
            .unwrap_or(log::LevelFilter::Info)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(r: RawConfig) -> Result<Self, ConfigError> {
        let mut e = Vec::new();
        let metron_address = r.metron_address.parse::<SocketAddr>().ok();
        if metron_address.is_none() {
            e.push(format!(
                "metron_address: not an ip:port address: {:?}",
                r.metron_address
            ));
        }
        if r.poll_interval < 1 {
            e.push("poll_interval: must be at least 1".into());
        }
        if r.interface_name.trim().is_empty() {
            e.push("interface_name: must not be empty".into());
        }
        if r.iptables_lock_file.trim().is_empty() {
            e.push("iptables_lock_file: must not be empty".into());
        }
        let log_level = r.log_level.trim().to_ascii_lowercase();
        if !["debug", "info", "error", "fatal"].contains(&log_level.as_str()) {
            e.push(format!(
                "log_level: {:?} is not one of debug, info, error, fatal",
                r.log_level
            ));
        }
        if r.telemetry_enabled && r.telemetry_interval < 1 {
            e.push("telemetry_interval: must be at least 1 when telemetry_enabled is true".into());
        }
        match metron_address {
            Some(metron_address) if e.is_empty() => Ok(Config {
                metron_address,
                poll_interval: Duration::from_secs(r.poll_interval),
                interface_name: r.interface_name,
                log_level,
                log_prefix: if r.log_prefix.is_empty() {
                    "cfnetworking".into()
                } else {
                    r.log_prefix
                },
                iptables_lock_file: r.iptables_lock_file,
                telemetry: r
                    .telemetry_enabled
                    .then(|| Duration::from_secs(r.telemetry_interval)),
            }),
            _ => Err(ConfigError::Invalid(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What jobs/netmon/templates/netmon.json.erb renders with defaults.
    const RENDERED: &str = r#"{
      "metron_address": "127.0.0.1:3457",
      "poll_interval": 30,
      "interface_name": "silk-vtep",
      "log_level": "info",
      "log_prefix": "cfnetworking",
      "iptables_lock_file": "/var/vcap/data/garden-cni/iptables.lock",
      "telemetry_enabled": false,
      "telemetry_interval": 600
    }"#;

    #[test]
    fn parses_the_rendered_file() {
        let c = Config::parse(RENDERED).unwrap();
        assert_eq!(
            c,
            Config {
                metron_address: "127.0.0.1:3457".parse().unwrap(),
                poll_interval: Duration::from_secs(30),
                interface_name: "silk-vtep".into(),
                log_level: "info".into(),
                log_prefix: "cfnetworking".into(),
                iptables_lock_file: "/var/vcap/data/garden-cni/iptables.lock".into(),
                telemetry: None,
            }
        );
        let on = RENDERED.replace(
            "\"telemetry_enabled\": false",
            "\"telemetry_enabled\": true",
        );
        assert_eq!(
            Config::parse(&on).unwrap().telemetry,
            Some(Duration::from_secs(600))
        );
        let upper = RENDERED.replace("\"info\"", "\"DEBUG\"");
        let c = Config::parse(&upper).unwrap();
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.level_filter(), log::LevelFilter::Debug);
    }

    /// The file the job template renders (through the tera twin the parity spec keeps equal to
    /// the ERB template) parses.
    #[test]
    fn parses_what_the_job_template_renders() {
        let text = silk_render::render(
            "netmon/config/netmon.json",
            &serde_json::json!({"properties": {"telemetry_enabled": true, "log_level": "Debug"}}),
        )
        .unwrap();
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.telemetry, Some(Duration::from_secs(600)));
        assert_eq!(c.poll_interval, Duration::from_secs(30));
        assert_eq!(c.log_level, "debug");
        assert_eq!(
            c.iptables_lock_file,
            "/var/vcap/data/garden-cni/iptables.lock"
        );
    }

    #[test]
    fn reports_every_problem() {
        let err = Config::parse(
            r#"{"metron_address": "localhost", "poll_interval": 0, "log_level": "warn",
                "telemetry_enabled": true, "telemetry_interval": 0}"#,
        )
        .unwrap_err()
        .to_string();
        for want in [
            "metron_address: not an ip:port",
            "poll_interval: must be at least 1",
            "interface_name: must not be empty",
            "iptables_lock_file: must not be empty",
            "log_level: \"warn\"",
            "telemetry_interval: must be at least 1",
        ] {
            assert!(err.contains(want), "{want} missing from {err}");
        }
    }

    #[test]
    fn telemetry_interval_is_free_when_telemetry_is_off() {
        let c = RENDERED.replace("\"telemetry_interval\": 600", "\"telemetry_interval\": 0");
        assert_eq!(Config::parse(&c).unwrap().telemetry, None);
    }
}
