//! The CNI environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`,
//! `CNI_PATH`, validated per command as SPEC.md and the Go skel do (code 4 on any problem).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }
}

/// Everything a plugin command gets: the environment, the raw and parsed stdin config, the
/// config's spec version and the chained `prevResult` when present.
#[derive(Debug, Clone)]
pub struct CmdArgs {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs (`K=V;K=V`).
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
    /// The raw `CNI_PATH` value, passed on unchanged to delegates.
    pub path_raw: String,
    pub stdin: Vec<u8>,
    pub config: serde_json::Value,
    pub cni_version: String,
    pub prev_result: Option<CniResult>,
}

impl CmdArgs {
    /// The network configuration decoded as a plugin's config type `T`; a configuration that
    /// does not decode is CNI error 6 (decoding failure), "loading config".
    pub fn decode_config<T: serde::de::DeserializeOwned>(&self) -> Result<T, CniError> {
        serde_json::from_value(self.config.clone())
            .map_err(|e| CniError::new(ErrorCode::DecodingFailure, "loading config", e.to_string()))
    }
}

fn bad_env(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidEnvironment, msg, "")
}

/// Container IDs: alphanumeric first, then alphanumerics, `_`, `.`, `-` (libcni ValidateContainerID).
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(bad_env(format!(
            "invalid characters in containerID: {id:?}"
        )));
    }
    Ok(())
}

/// Interface names: 1-15 bytes, no `/`, `:` or whitespace, not `.` or `..` (libcni ValidateInterfaceName).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(bad_env("interface name is empty"));
    }
    if name.len() > 15 {
        return Err(bad_env(format!("interface name is too long: {name:?}")));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(bad_env(format!(
            "interface name contains an invalid character: {name:?}"
        )));
    }
    Ok(())
}

/// The environment of one invocation, read from a map so tests never touch `std::env`.
pub struct Env<'a>(pub &'a BTreeMap<String, String>);

impl Env<'_> {
    fn get(&self, k: &str) -> &str {
        self.0.get(k).map(String::as_str).unwrap_or("")
    }

    /// Validates the variables required by `command` and returns the partially filled args
    /// (config fields empty; the harness fills them after decoding stdin).
    pub fn parse(&self, command: Command) -> Result<CmdArgs, CniError> {
        let (need_id, need_netns, need_ifname, need_path) = match command {
            Command::Add | Command::Check => (true, true, true, true),
            Command::Del => (true, false, true, true),
            Command::Gc | Command::Status => (false, false, false, true),
            Command::Version => (false, false, false, false),
        };
        let mut missing = Vec::new();
        for (need, key) in [
            (need_id, "CNI_CONTAINERID"),
            (need_netns, "CNI_NETNS"),
            (need_ifname, "CNI_IFNAME"),
            (need_path, "CNI_PATH"),
        ] {
            if need && self.get(key).is_empty() {
                missing.push(key);
            }
        }
        if !missing.is_empty() {
            return Err(bad_env(format!(
                "required env variables [{}] missing",
                missing.join(",")
            )));
        }
        if need_id {
            validate_container_id(self.get("CNI_CONTAINERID"))?;
        }
        if need_ifname {
            validate_ifname(self.get("CNI_IFNAME"))?;
        }
        let mut args = Vec::new();
        for pair in self.get("CNI_ARGS").split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad_env(format!("invalid CNI_ARGS pair {pair:?}")))?;
            args.push((k.to_string(), v.to_string()));
        }
        let path_raw = self.get("CNI_PATH").to_string();
        Ok(CmdArgs {
            command,
            container_id: self.get("CNI_CONTAINERID").to_string(),
            netns: self.get("CNI_NETNS").to_string(),
            ifname: self.get("CNI_IFNAME").to_string(),
            args,
            path: std::env::split_paths(&path_raw)
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            path_raw,
            stdin: Vec::new(),
            config: serde_json::Value::Null,
            cni_version: String::new(),
            prev_result: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn add_lists_every_missing_variable() {
        let m = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]);
        let e = Env(&m).parse(Command::Add).unwrap_err();
        assert_eq!(e.code.as_u32(), 4);
        assert_eq!(
            e.msg,
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_PATH] missing"
        );
    }

    #[test]
    fn decode_config_reads_the_plugins_type_or_fails_with_code_6() {
        #[derive(Debug, serde::Deserialize)]
        struct Conf {
            name: String,
        }
        let m = env(&[
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/a"),
        ]);
        let mut a = Env(&m).parse(Command::Del).unwrap();
        a.config = serde_json::json!({"name": "silk", "type": "silk-cni"});
        assert_eq!(a.decode_config::<Conf>().unwrap().name, "silk");
        a.config = serde_json::json!({"name": 1});
        let e = a.decode_config::<Conf>().unwrap_err();
        assert_eq!(e.code.as_u32(), 6);
        assert_eq!(e.msg, "loading config");
        assert!(e.details.contains("invalid type"), "{}", e.details);
    }

    #[test]
    fn del_does_not_need_netns() {
        let m = env(&[
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/a:/b"),
            ("CNI_ARGS", "K=V;X=Y"),
        ]);
        let a = Env(&m).parse(Command::Del).unwrap();
        assert_eq!(a.path, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(
            a.args,
            vec![("K".into(), "V".into()), ("X".into(), "Y".into())]
        );
    }

    #[test]
    fn rejects_bad_ids_and_ifnames() {
        assert!(validate_container_id("-abc").is_err());
        assert!(validate_container_id("a b").is_err());
        assert!(validate_container_id("5f3c9a1e-7b2d_4c8e.x").is_ok());
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("0123456789abcdef").is_err());
        assert!(validate_ifname("a/b").is_err());
        assert!(validate_ifname("").is_err());
    }
}
