//! Delegation: executing another plugin found in `CNI_PATH` with the same environment, the
//! given command and stdin, and decoding its result or error (SPEC.md, "Delegated plugins").

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Proc, Stdio};

use crate::env::CmdArgs;
use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;

/// Finds `plugin_type` in the `CNI_PATH` directories.
pub fn find_plugin(plugin_type: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if plugin_type.is_empty() || plugin_type.contains('/') {
        return Err(CniError::internal(format!(
            "invalid plugin type {plugin_type:?}"
        )));
    }
    path.iter()
        .map(|d| d.join(plugin_type))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::internal(format!(
                "failed to find plugin \"{plugin_type}\" in path [{}]",
                path.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
        })
}

/// Runs `plugin_type` with `CNI_COMMAND=<command>`, the caller's CNI variables and `stdin`.
/// Returns the delegate's stdout on success; its error JSON (or stderr) otherwise.
pub fn exec(
    plugin_type: &str,
    command: &str,
    args: &CmdArgs,
    stdin: &[u8],
) -> Result<Vec<u8>, CniError> {
    let bin = find_plugin(plugin_type, &args.path)?;
    let mut attempts = 0;
    let child = loop {
        let spawned = Proc::new(&bin)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &args.container_id)
            .env("CNI_NETNS", &args.netns)
            .env("CNI_IFNAME", &args.ifname)
            .env(
                "CNI_ARGS",
                args.args
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(";"),
            )
            .env("CNI_PATH", &args.path_raw)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(c) => break c,
            // libcni retries "text file busy"; so do we, a bounded number of times.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 5 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(CniError::internal(format!("exec {}: {e}", bin.display()))),
        }
    };
    let mut child = child;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin)
            .map_err(|e| CniError::internal(format!("write stdin of {plugin_type}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::internal(format!("wait for {plugin_type}: {e}")))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(decode_error(&out.stdout, &out.stderr, plugin_type))
}

/// The error a failed plugin reported on stdout (or, when stdout is empty, its stderr).
pub fn decode_error(stdout: &[u8], stderr: &[u8], plugin_type: &str) -> CniError {
    #[derive(serde::Deserialize)]
    struct Wire {
        code: u32,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    if let Ok(w) = serde_json::from_slice::<Wire>(stdout) {
        return CniError::new(ErrorCode::from_u32(w.code), w.msg, w.details);
    }
    let text = if stdout.iter().all(u8::is_ascii_whitespace) {
        stderr
    } else {
        stdout
    };
    CniError::internal(format!(
        "netplugin failed: {plugin_type}: {}",
        String::from_utf8_lossy(text).trim()
    ))
}

/// Delegated ADD: runs the plugin and parses its result.
pub fn add(plugin_type: &str, args: &CmdArgs, stdin: &[u8]) -> Result<CniResult, CniError> {
    let out = exec(plugin_type, "ADD", args, stdin)?;
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
        CniError::new(
            ErrorCode::DecodingFailure,
            format!("decoding {plugin_type} result"),
            e.to_string(),
        )
    })?;
    CniResult::from_value(&v).map_err(|e| {
        CniError::new(
            ErrorCode::DecodingFailure,
            format!("decoding {plugin_type} result"),
            e.to_string(),
        )
    })
}

/// Delegated DEL.
pub fn del(plugin_type: &str, args: &CmdArgs, stdin: &[u8]) -> Result<(), CniError> {
    exec(plugin_type, "DEL", args, stdin).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_error_json_or_falls_back_to_stderr() {
        let e = decode_error(
            br#"{"code":100,"msg":"run ipam plugin","details":"x"}"#,
            b"",
            "silk-cni",
        );
        assert_eq!(
            (e.code.as_u32(), e.msg.as_str(), e.details.as_str()),
            (100, "run ipam plugin", "x")
        );
        let e = decode_error(b"", b"boom\n", "silk-cni");
        assert_eq!(e.msg, "netplugin failed: silk-cni: boom");
    }

    #[test]
    fn finds_plugins_only_in_cni_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p"), "").unwrap();
        assert!(find_plugin("p", &[dir.path().to_path_buf()]).is_ok());
        assert!(find_plugin("q", &[dir.path().to_path_buf()]).is_err());
        assert!(find_plugin("../p", &[dir.path().to_path_buf()]).is_err());
    }
}
