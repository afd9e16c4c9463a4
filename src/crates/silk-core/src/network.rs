//! Overlay networks: the `network` / `overlay_network` config value, which newer upstream
//! renders as one CIDR string or as a JSON array of CIDRs (upstream-delta §3.1).

use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetworkError {
    #[error("network must be provided")]
    Empty,
    #[error("parse overlay network CIDR: invalid CIDR address: {0}")]
    InvalidCidr(String),
    #[error("overlay networks {0} and {1} overlap")]
    Overlap(String, String),
}

/// The raw config value: a string or a list of strings, as rendered by either template shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NetworkSpec {
    One(String),
    Many(Vec<String>),
}

impl NetworkSpec {
    pub fn cidrs(&self) -> Vec<&str> {
        match self {
            NetworkSpec::One(s) => vec![s.as_str()],
            NetworkSpec::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A validated, non-empty set of non-overlapping IPv4 CIDRs, each masked to its network
/// address (Go's `ParseCIDR` masks: `10.255.0.1/12` behaves as `10.240.0.0/12`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayNetworks(Vec<Ipv4Network>);

impl OverlayNetworks {
    /// The required `overlay_network` key of a job config: parsed, or a problem recorded in
    /// `errors` (missing key, or an invalid CIDR list) and `None`.
    pub fn from_config_key(errors: &mut Vec<String>, spec: Option<&NetworkSpec>) -> Option<Self> {
        match spec.map(OverlayNetworks::parse) {
            Some(Ok(n)) => Some(n),
            Some(Err(err)) => {
                errors.push(format!("overlay_network: {err}"));
                None
            }
            None => {
                errors.push("overlay_network: must not be empty".into());
                None
            }
        }
    }

    pub fn parse(spec: &NetworkSpec) -> Result<Self, NetworkError> {
        let mut nets = Vec::new();
        for cidr in spec.cidrs() {
            let cidr = cidr.trim();
            let net = Ipv4Network::from_str(cidr)
                .ok()
                .filter(|_| cidr.contains('/'))
                .ok_or_else(|| NetworkError::InvalidCidr(cidr.to_string()))?;
            nets.push(Ipv4Network::new(net.network(), net.prefix()).expect("prefix already valid"));
        }
        if nets.is_empty() {
            return Err(NetworkError::Empty);
        }
        for (i, a) in nets.iter().enumerate() {
            for b in &nets[i + 1..] {
                if a.contains(b.network()) || b.contains(a.network()) {
                    return Err(NetworkError::Overlap(a.to_string(), b.to_string()));
                }
            }
        }
        Ok(OverlayNetworks(nets))
    }

    pub fn as_slice(&self) -> &[Ipv4Network] {
        &self.0
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The CIDR that contains `ip`, if any.
    pub fn which_contains(&self, ip: Ipv4Addr) -> Option<Ipv4Network> {
        self.0.iter().copied().find(|n| n.contains(ip))
    }
}

impl<'de> Deserialize<'de> for OverlayNetworks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spec = NetworkSpec::deserialize(d)?;
        OverlayNetworks::parse(&spec).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<OverlayNetworks, NetworkError> {
        OverlayNetworks::parse(&serde_json::from_str::<NetworkSpec>(json).unwrap())
    }

    #[test]
    fn accepts_a_string_or_a_list_and_masks() {
        let one = parse(r#""10.255.0.1/16""#).unwrap();
        assert_eq!(one.as_slice(), &["10.255.0.0/16".parse().unwrap()]);
        let many = parse(r#"["10.255.0.0/20","10.255.96.0/21"]"#).unwrap();
        assert_eq!(many.as_slice().len(), 2);
        assert!(many.contains("10.255.97.3".parse().unwrap()));
        assert!(!many.contains("10.255.16.1".parse().unwrap()));
        assert_eq!(
            many.which_contains("10.255.97.3".parse().unwrap()),
            Some("10.255.96.0/21".parse().unwrap())
        );
    }

    #[test]
    fn rejects_empty_invalid_and_overlapping() {
        assert_eq!(parse("[]"), Err(NetworkError::Empty));
        assert_eq!(
            parse(r#""banana""#),
            Err(NetworkError::InvalidCidr("banana".into()))
        );
        assert_eq!(
            parse(r#""10.255.0.0""#),
            Err(NetworkError::InvalidCidr("10.255.0.0".into()))
        );
        assert!(matches!(
            parse(r#"["10.255.0.0/16","10.255.7.0/24"]"#),
            Err(NetworkError::Overlap(_, _))
        ));
    }
}
