//! `iptables-logger.json` (policy contract §5): Go's field names, every problem collected and
//! reported together. All keys but `log_timestamp_format` are required non-empty; that one
//! defaults to `rfc3339`.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::record::TimestampFormat;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub kernel_log_file: String,
    #[serde(default)]
    pub container_metadata_file: String,
    #[serde(default)]
    pub output_log_file: String,
    #[serde(default)]
    pub metron_address: String,
    #[serde(default)]
    pub host_ip: String,
    #[serde(default)]
    pub host_guid: String,
    #[serde(default)]
    pub log_timestamp_format: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub kernel_log_file: String,
    pub container_metadata_file: String,
    pub output_log_file: String,
    pub metron_address: SocketAddr,
    pub host_ip: String,
    pub host_guid: String,
    pub log_timestamp_format: TimestampFormat,
}

pub use silk_ops::config::ConfigError;

impl Config {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        silk_ops::config::parse::<RawConfig, Config>(text)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(r: RawConfig) -> Result<Self, ConfigError> {
        let mut e = Vec::new();
        for (name, v) in [
            ("kernel_log_file", &r.kernel_log_file),
            ("container_metadata_file", &r.container_metadata_file),
            ("output_log_file", &r.output_log_file),
            ("metron_address", &r.metron_address),
            ("host_ip", &r.host_ip),
            ("host_guid", &r.host_guid),
        ] {
            silk_ops::config::nonempty(&mut e, name, v);
        }
        let metron_address = match r.metron_address.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) if r.metron_address.trim().is_empty() => None,
            Err(_) => {
                e.push(format!(
                    "metron_address: not an ip:port address: {:?}",
                    r.metron_address
                ));
                None
            }
        };
        let log_timestamp_format = match r.log_timestamp_format.as_str() {
            "" | "rfc3339" => TimestampFormat::Rfc3339,
            "deprecated" => TimestampFormat::Epoch,
            other => {
                e.push(format!(
                    "log_timestamp_format: {other:?} is not 'rfc3339' or 'deprecated'"
                ));
                TimestampFormat::Rfc3339
            }
        };
        match (metron_address, e.is_empty()) {
            (Some(metron_address), true) => Ok(Config {
                kernel_log_file: r.kernel_log_file,
                container_metadata_file: r.container_metadata_file,
                output_log_file: r.output_log_file,
                metron_address,
                host_ip: r.host_ip,
                host_guid: r.host_guid,
                log_timestamp_format,
            }),
            _ => Err(ConfigError::Invalid(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What jobs/iptables-logger/templates/iptables-logger.json.erb renders with defaults.
    const RENDERED: &str = r#"{
      "kernel_log_file": "/var/log/kern.log",
      "container_metadata_file": "/var/vcap/data/container-metadata/store.json",
      "output_log_file": "/var/vcap/sys/log/iptables-logger/iptables.log",
      "metron_address": "127.0.0.1:3457",
      "host_ip": "10.0.16.12",
      "host_guid": "3f4e5a6b-0c1d-4e2f-8a9b-7c6d5e4f3a2b",
      "log_timestamp_format": "rfc3339"
    }"#;

    #[test]
    fn parses_the_rendered_file() {
        let c = Config::parse(RENDERED).unwrap();
        assert_eq!(c.metron_address, "127.0.0.1:3457".parse().unwrap());
        assert_eq!(c.log_timestamp_format, TimestampFormat::Rfc3339);
        assert_eq!(c.kernel_log_file, "/var/log/kern.log");
        let dep = RENDERED.replace("\"rfc3339\"", "\"deprecated\"");
        assert_eq!(
            Config::parse(&dep).unwrap().log_timestamp_format,
            TimestampFormat::Epoch
        );
    }

    #[test]
    fn reports_every_problem() {
        let err = Config::parse(
            r#"{"kernel_log_file": "", "metron_address": "nope", "log_timestamp_format": "unix"}"#,
        )
        .unwrap_err()
        .to_string();
        for want in [
            "kernel_log_file: must not be empty",
            "container_metadata_file: must not be empty",
            "output_log_file: must not be empty",
            "host_ip: must not be empty",
            "host_guid: must not be empty",
            "metron_address: not an ip:port",
            "log_timestamp_format: \"unix\"",
        ] {
            assert!(err.contains(want), "{want} missing from {err}");
        }
    }

    /// The file the job template renders (through the tera twin the parity spec keeps equal to
    /// the ERB template) parses, in both timestamp formats.
    #[test]
    fn parses_what_the_job_template_renders() {
        for (format, want) in [
            (None, TimestampFormat::Rfc3339),
            (Some("deprecated"), TimestampFormat::Epoch),
        ] {
            let mut props = serde_json::json!({"metron_port": 3458});
            if let Some(f) = format {
                props["logging"] = serde_json::json!({"format": {"timestamp": f}});
            }
            let text = silk_render::render(
                "iptables-logger/config/iptables-logger.json",
                &serde_json::json!({"properties": props, "spec": {"ip": "10.0.16.12", "id": "cell-guid"}}),
            )
            .unwrap();
            let c = Config::parse(&text).unwrap();
            assert_eq!(c.log_timestamp_format, want);
            assert_eq!(c.metron_address, "127.0.0.1:3458".parse().unwrap());
            assert_eq!(c.host_guid, "cell-guid");
            assert_eq!(
                c.output_log_file,
                "/var/vcap/sys/log/iptables-logger/iptables.log"
            );
        }
    }

    #[test]
    fn rejects_unknown_keys() {
        assert!(Config::parse(&RENDERED.replace("host_guid", "host_uuid")).is_err());
    }
}
