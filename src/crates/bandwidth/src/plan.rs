//! Config and the `ip`/`tc` commands for one container, as plain text (no I/O here).

use serde::Deserialize;
use sha2::{Digest, Sha512};

/// Rates in bits per second, bursts in bits, as the reference plugin takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Limits {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RuntimeConfig {
    pub bandwidth: Option<Limits>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub name: String,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(rename = "runtimeConfig")]
    pub runtime_config: Option<RuntimeConfig>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("if rate is set, burst must also be set")]
    RateWithoutBurst,
    #[error("if burst is set, rate must also be set")]
    BurstWithoutRate,
    #[error("burst cannot be more than 4GB")]
    BurstTooLarge,
}

impl Config {
    /// runtimeConfig.bandwidth wins over the static values (the reference plugin's capability).
    pub fn effective(&self) -> Limits {
        self.runtime_config
            .as_ref()
            .and_then(|r| r.bandwidth)
            .unwrap_or(self.limits)
    }
}

fn check(rate: u64, burst: u64) -> Result<(), LimitError> {
    match (rate, burst) {
        (r, 0) if r > 0 => Err(LimitError::RateWithoutBurst),
        (0, b) if b > 0 => Err(LimitError::BurstWithoutRate),
        (_, b) if b / 8 >= 1 << 32 => Err(LimitError::BurstTooLarge),
        _ => Ok(()),
    }
}

impl Limits {
    pub fn validate(&self) -> Result<(), LimitError> {
        check(self.ingress_rate, self.ingress_burst)?;
        check(self.egress_rate, self.egress_burst)
    }

    pub fn is_active(&self) -> bool {
        self.ingress_rate > 0 || self.egress_rate > 0
    }
}

/// `bwp` + the first 12 hex characters of SHA-512(network name + container ID).
pub fn ifb_name(network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("bwp{hex}")
}

/// A TBF root qdisc: rate in bits/s, burst in bytes (bits / 8), 25 ms latency.
fn tbf(dev: &str, rate: u64, burst_bits: u64) -> String {
    format!(
        "qdisc add dev {dev} root handle 1: tbf rate {rate}bit burst {} latency 25ms\n",
        (burst_bits / 8).max(1)
    )
}

/// `ip -batch` text creating the IFB (egress only).
pub fn ip_commands(l: &Limits, ifb: &str, mtu: u32) -> String {
    if l.egress_rate == 0 {
        return String::new();
    }
    format!("link add {ifb} mtu {mtu} type ifb\nlink set {ifb} up\n")
}

/// `tc -batch` text shaping both directions.
pub fn tc_commands(l: &Limits, host_veth: &str, ifb: &str) -> String {
    let mut out = String::new();
    if l.ingress_rate > 0 {
        out.push_str(&tbf(host_veth, l.ingress_rate, l.ingress_burst));
    }
    if l.egress_rate > 0 {
        out.push_str(&format!("qdisc add dev {host_veth} handle ffff: ingress\n"));
        out.push_str(&format!(
            "filter add dev {host_veth} parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev {ifb}\n"
        ));
        out.push_str(&tbf(ifb, l.egress_rate, l.egress_burst));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conflist_entry_and_runtime_override() {
        let c: Config = serde_json::from_str(
            r#"{"name":"cni-wrapper","type":"bandwidth","ingressRate":1024000,"ingressBurst":2048000,"egressRate":1024000,"egressBurst":2048000}"#,
        )
        .unwrap_or_default();
        assert_eq!(c.effective().ingress_rate, 1_024_000);
        let c: Config = serde_json::from_str(
            r#"{"name":"n","ingressRate":1,"ingressBurst":1,"runtimeConfig":{"bandwidth":{"egressRate":8000,"egressBurst":800}}}"#,
        )
        .unwrap_or_default();
        assert_eq!(
            c.effective(),
            Limits {
                egress_rate: 8000,
                egress_burst: 800,
                ..Default::default()
            }
        );
    }

    #[test]
    fn validation_matches_reference_messages() {
        let l = Limits {
            ingress_rate: 1,
            ..Default::default()
        };
        assert_eq!(l.validate(), Err(LimitError::RateWithoutBurst));
        let l = Limits {
            egress_burst: 1,
            ..Default::default()
        };
        assert_eq!(l.validate(), Err(LimitError::BurstWithoutRate));
        let l = Limits {
            ingress_rate: 1,
            ingress_burst: 8 << 32,
            ..Default::default()
        };
        assert_eq!(
            l.validate().map_err(|e| e.to_string()),
            Err("burst cannot be more than 4GB".into())
        );
        assert!(!Limits::default().is_active());
    }

    #[test]
    fn ifb_name_is_15_chars_from_network_and_id() {
        let n = ifb_name("cni-wrapper", "abc");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("bwp"));
        assert_ne!(n, ifb_name("bandwidth-limit", "abc"));
    }

    #[test]
    fn commands_shape_both_directions() {
        let l = Limits {
            ingress_rate: 8000,
            ingress_burst: 16000,
            egress_rate: 4000,
            egress_burst: 8000,
        };
        let tc = tc_commands(&l, "s-010255030002", "bwp123456789abc");
        assert!(tc.starts_with("qdisc add dev s-010255030002 root handle 1: tbf rate 8000bit burst 2000 latency 25ms\n"));
        assert!(tc.contains("action mirred egress redirect dev bwp123456789abc"));
        assert!(tc.ends_with("qdisc add dev bwp123456789abc root handle 1: tbf rate 4000bit burst 1000 latency 25ms\n"));
        assert_eq!(
            ip_commands(&l, "bwp1", 1450),
            "link add bwp1 mtu 1450 type ifb\nlink set bwp1 up\n"
        );
    }
}
