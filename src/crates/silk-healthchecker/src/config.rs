//! healthchecker-release's `healthchecker.yml`: the same keys, defaults and checks
//! (code.cloudfoundry.org/healthchecker/config). Durations are written as Go writes them
//! (`10s`, `1m30s`, `250ms`) or as integer nanoseconds, as yaml.v2 decodes a `time.Duration`.

use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_START_RESPONSE_DELAY: Duration = Duration::from_secs(30);
pub const DEFAULT_STARTUP_DELAY_BUFFER: Duration = Duration::from_secs(5);

pub use silk_ops::config::ConfigError;

fn decode(text: &str) -> Result<Raw, ConfigError> {
    serde_norway::from_str(text)
        .map_err(|e: serde_norway::Error| ConfigError::Decode(e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    #[serde(default)]
    socket: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: u32,
    #[serde(default)]
    path: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    component_name: String,
    #[serde(default)]
    failure_counter_file: String,
    #[serde(default)]
    healthcheck_endpoint: RawEndpoint,
    #[serde(default)]
    healthcheck_poll_interval: Option<GoDuration>,
    #[serde(default)]
    healthcheck_timeout: Option<GoDuration>,
    #[serde(default)]
    start_response_delay_interval: Option<GoDuration>,
    #[serde(default)]
    startup_delay_buffer: Option<GoDuration>,
    #[serde(default)]
    log_level: String,
}

/// Where the endpoint is: `http://host:port<path>` or a unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp { host: String, port: u16 },
    Unix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub target: Target,
    /// Request path; `/` when the config leaves it empty.
    pub path: String,
    /// Basic-auth credentials when `user` is set.
    pub basic_auth: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub component_name: String,
    pub failure_counter_file: String,
    pub endpoint: Endpoint,
    pub poll_interval: Duration,
    pub timeout: Duration,
    /// start_response_delay_interval + startup_delay_buffer: the wait before the first poll
    /// interval starts.
    pub startup_delay: Duration,
    pub log_level: String,
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        // An empty file is an empty mapping, as yaml.v2 reads it; validation then names the keys.
        let raw = if text.trim().is_empty() {
            decode("{}")?
        } else {
            decode(text)?
        };
        Config::try_from(raw)
    }

    pub fn level_filter(&self) -> log::LevelFilter {
        silk_ops::log::parse_level(&self.log_level)
            .map(|(_, f)| f)
            .unwrap_or(log::LevelFilter::Info)
    }
}

fn or_default(d: Option<GoDuration>, default: Duration) -> Duration {
    match d {
        Some(GoDuration(d)) if !d.is_zero() => d,
        _ => default,
    }
}

impl TryFrom<Raw> for Config {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        if raw.component_name.is_empty() {
            errors.push("Missing component_name".to_string());
        }
        let e = raw.healthcheck_endpoint;
        let target = if e.socket.is_empty() {
            if e.host.is_empty() {
                errors.push("Missing healthcheck endpoint host or socket".to_string());
            }
            if e.port == 0 {
                errors.push("Missing healthcheck endpoint port or socket".to_string());
            }
            let port = match u16::try_from(e.port) {
                Ok(p) => p,
                Err(_) => {
                    errors.push(format!(
                        "healthcheck_endpoint.port: must be a port number 1-65535, got {}",
                        e.port
                    ));
                    0
                }
            };
            Target::Tcp { host: e.host, port }
        } else {
            if !e.host.is_empty() {
                errors.push("Cannot specify both healthcheck endpoint host and socket".to_string());
            }
            if e.port != 0 {
                errors.push("Cannot specify both healthcheck endpoint port and socket".to_string());
            }
            Target::Unix(e.socket)
        };
        if raw.failure_counter_file.is_empty() {
            errors.push("Missing failure_counter_file".to_string());
        }
        let log_level = if raw.log_level.is_empty() {
            "info".to_string()
        } else {
            raw.log_level
        };
        if silk_ops::log::parse_level(&log_level).is_none() {
            errors.push(format!(
                "log_level: must be one of debug, info, error, fatal, got {log_level:?}"
            ));
        }
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        let path = if e.path.is_empty() {
            "/".to_string()
        } else if e.path.starts_with('/') {
            e.path
        } else {
            format!("/{}", e.path)
        };
        Ok(Config {
            component_name: raw.component_name,
            failure_counter_file: raw.failure_counter_file,
            endpoint: Endpoint {
                target,
                path,
                basic_auth: (!e.user.is_empty()).then_some((e.user, e.password)),
            },
            poll_interval: or_default(raw.healthcheck_poll_interval, DEFAULT_POLL_INTERVAL),
            timeout: or_default(raw.healthcheck_timeout, DEFAULT_TIMEOUT),
            startup_delay: or_default(
                raw.start_response_delay_interval,
                DEFAULT_START_RESPONSE_DELAY,
            ) + or_default(raw.startup_delay_buffer, DEFAULT_STARTUP_DELAY_BUFFER),
            log_level,
        })
    }
}

/// A `time.Duration` as yaml.v2 reads it: a Go duration string or integer nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GoDuration(Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Nanos(u64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Nanos(n) => Ok(GoDuration(Duration::from_nanos(n))),
            Either::Text(t) => parse_go_duration(&t)
                .map(GoDuration)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses Go's duration syntax (`time.ParseDuration`) for non-negative values: a sequence of
/// decimal numbers with units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`; `0` alone is allowed.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration {text:?}");
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return Err(bad());
    }
    rest = rest.strip_prefix('+').unwrap_or(rest);
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += value * nanos_per;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SILK_DAEMON: &str = "---
component_name: silk-daemon-healthchecker
failure_counter_file: /var/vcap/data/silk-daemon/counters/consecutive_healthchecker_failures.count
log_level: info
healthcheck_endpoint:
  host: 127.0.0.1
  port: 23954
";

    #[test]
    fn the_silk_daemon_config_gets_upstream_defaults() {
        let c = Config::parse(SILK_DAEMON).unwrap();
        assert_eq!(c.component_name, "silk-daemon-healthchecker");
        assert_eq!(
            c.endpoint,
            Endpoint {
                target: Target::Tcp {
                    host: "127.0.0.1".into(),
                    port: 23954
                },
                path: "/".into(),
                basic_auth: None
            }
        );
        assert_eq!(c.poll_interval, Duration::from_secs(10));
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.startup_delay, Duration::from_secs(35));
    }

    #[test]
    fn durations_socket_path_and_credentials() {
        let c = Config::parse(
            "component_name: x\nfailure_counter_file: /f\nhealthcheck_endpoint: {socket: /run/x.sock, path: health, user: u, password: p}\n\
             healthcheck_poll_interval: 250ms\nhealthcheck_timeout: 1m30s\nstart_response_delay_interval: 1000000000\nstartup_delay_buffer: 0s\nlog_level: debug\n",
        )
        .unwrap();
        assert_eq!(c.endpoint.target, Target::Unix("/run/x.sock".into()));
        assert_eq!(c.endpoint.path, "/health");
        assert_eq!(c.endpoint.basic_auth, Some(("u".into(), "p".into())));
        assert_eq!(c.poll_interval, Duration::from_millis(250));
        assert_eq!(c.timeout, Duration::from_secs(90));
        // Zero means "default", as upstream's ApplyDefaults.
        assert_eq!(
            c.startup_delay,
            Duration::from_secs(1) + Duration::from_secs(5)
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::parse(
            "healthcheck_endpoint: {socket: /s, host: h, port: 1}\nlog_level: loud\n",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "Missing component_name",
            "Cannot specify both healthcheck endpoint host and socket",
            "Cannot specify both healthcheck endpoint port and socket",
            "Missing failure_counter_file",
            "log_level",
        ] {
            assert!(err.contains(want), "{err} lacks {want}");
        }
        let err = Config::parse("").unwrap_err().to_string();
        assert!(
            err.contains("Missing healthcheck endpoint host or socket"),
            "{err}"
        );
        assert!(Config::parse("component_name: [").is_err());
        assert!(Config::parse("component_name: x\nfailure_counter_file: /f\nhealthcheck_endpoint: {host: h, port: 1}\nhealthcheck_timeout: soon\n").is_err());
        assert!(Config::parse("component_name: x\nsurprise: 1\n").is_err());
    }

    #[test]
    fn go_duration_syntax() {
        for (text, want) in [
            ("0", Duration::ZERO),
            ("10s", Duration::from_secs(10)),
            ("1.5s", Duration::from_millis(1500)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("300us", Duration::from_micros(300)),
            ("7ns", Duration::from_nanos(7)),
        ] {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
        for text in ["", "10", "s", "-1s", "1x", "1.2.3s"] {
            assert!(parse_go_duration(text).is_err(), "{text}");
        }
    }
}
