//! GC's input (CNI 1.1): `cni.dev/valid-attachments`, the attachments the runtime still has.
//! Everything else a plugin holds may be released.

use serde::Deserialize;

use crate::env::CmdArgs;
use crate::error::{CniError, ErrorCode};

pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// One attachment the runtime keeps.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The attachments to keep. A config without the key is an error, never "keep nothing": a
/// runtime that forgot it must not lose every container's network.
pub fn valid_attachments(args: &CmdArgs) -> Result<Vec<Attachment>, CniError> {
    let v = args.config.get(VALID_ATTACHMENTS).ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "GC needs cni.dev/valid-attachments",
            "the key is missing from the network configuration",
        )
    })?;
    serde_json::from_value(v.clone()).map_err(|e| {
        CniError::new(
            ErrorCode::DecodingFailure,
            "decoding cni.dev/valid-attachments",
            e.to_string(),
        )
    })
}

/// True when `id`/`ifname` is kept; an empty `ifname` (host-local's old one-line format)
/// matches any interface of the container.
pub fn keeps(valid: &[Attachment], id: &str, ifname: &str) -> bool {
    valid
        .iter()
        .any(|a| a.container_id == id && (ifname.is_empty() || a.ifname == ifname))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn args(config: serde_json::Value) -> CmdArgs {
        CmdArgs {
            command: crate::env::Command::Gc,
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
            args: vec![],
            path: vec![],
            path_raw: String::new(),
            stdin: config.to_string().into_bytes(),
            config,
            cni_version: "1.1.0".into(),
            prev_result: None,
        }
    }

    #[test]
    fn parses_attachments_and_refuses_a_missing_list() {
        let a = args(serde_json::json!({"cni.dev/valid-attachments":
            [{"containerID": "c1", "ifname": "eth0"}]}));
        let v = valid_attachments(&a).unwrap();
        assert!(keeps(&v, "c1", "eth0"));
        assert!(keeps(&v, "c1", ""));
        assert!(!keeps(&v, "c1", "eth1"));
        assert!(!keeps(&v, "c2", "eth0"));
        let e = valid_attachments(&args(serde_json::json!({}))).unwrap_err();
        assert_eq!(e.code.as_u32(), 7);
        let e = valid_attachments(&args(serde_json::json!({"cni.dev/valid-attachments": 3})))
            .unwrap_err();
        assert_eq!(e.code.as_u32(), 6);
    }
}
