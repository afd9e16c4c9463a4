//! `silk-daemon-bootstrap` (contract §6.3), for single-IP VMs (Istio routers): ask the policy
//! server for the `INGRESS_ROUTER` tag, then mark traffic leaving through `silk-vtep` with it
//! in the filter chain `istio-ingress`, jumped to first from `OUTPUT`. A no-op unless the
//! config's `single_ip_only` is true.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use silk_client::ClientTls;
use silk_dataplane::filelock::FileLock;

/// `bootstrap-config.json` (contract §5.3).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    #[serde(default)]
    pub policy_server_url: String,
    #[serde(default)]
    pub policy_server_ca_cert_file: String,
    #[serde(default)]
    pub policy_client_cert_file: String,
    #[serde(default)]
    pub policy_client_key_file: String,
    #[serde(default)]
    pub iptables_lock_file: String,
    #[serde(default)]
    pub single_ip_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("parse config: {0}")]
    Config(#[from] serde_json::Error),
    #[error("invalid policy server url {0}")]
    Url(String),
    #[error("policy server tls: {0}")]
    Tls(#[from] silk_client::TlsError),
    #[error("policy server request: {0}")]
    Request(String),
    #[error("policy server response: http status {0}: {1}")]
    Status(u16, String),
    #[error("policy server response has no tag: {0}")]
    NoTag(String),
    #[error("iptables: {0}")]
    Iptables(String),
}

/// The tag from a `PUT /networking/v1/internal/tags` response; keys match case-insensitively
/// as Go's JSON decoder does.
pub fn parse_tag(body: &str) -> Option<String> {
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(body).ok()?;
    v.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("tag"))
        .and_then(|(_, v)| v.as_str().map(str::to_string))
        .filter(|t| !t.is_empty())
}

/// Requests the `INGRESS_ROUTER` tag over mutual TLS (5 s deadline).
pub async fn fetch_tag(cfg: &BootstrapConfig) -> Result<String, BootstrapError> {
    let url = cfg.policy_server_url.as_str();
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| BootstrapError::Url(url.into()))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse().map_err(|_| BootstrapError::Url(url.into()))?,
        ),
        None => (hostport.to_string(), 443u16),
    };
    let tls = ClientTls::from_files(
        &cfg.policy_server_ca_cert_file,
        &cfg.policy_client_cert_file,
        &cfg.policy_client_key_file,
    )?;
    let name = ServerName::try_from(host.clone()).map_err(|_| BootstrapError::Url(url.into()))?;
    let req = async {
        let req_err = |e: &dyn std::fmt::Display| BootstrapError::Request(e.to_string());
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| req_err(&e))?;
        let stream = tokio_rustls::TlsConnector::from(tls.client_config()?)
            .connect(name, tcp)
            .await
            .map_err(|e| req_err(&e))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| req_err(&e))?;
        tokio::spawn(conn);
        let body = r#"{"ID":"INGRESS_ROUTER","Type":"router"}"#;
        let request = Request::put("/networking/v1/internal/tags")
            .header("Host", hostport)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .map_err(|e| req_err(&e))?;
        let resp = send.send_request(request).await.map_err(|e| req_err(&e))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| req_err(&e))?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !(200..300).contains(&status) {
            return Err(BootstrapError::Status(status, text));
        }
        parse_tag(&text).ok_or(BootstrapError::NoTag(text))
    };
    tokio::time::timeout(Duration::from_secs(5), req)
        .await
        .map_err(|_| BootstrapError::Request("timed out after 5s".into()))?
}

fn iptables(args: &[&str]) -> Result<(bool, String), BootstrapError> {
    let out = Command::new("iptables")
        .args(["-w", "-t", "filter"])
        .args(args)
        .output()
        .map_err(|e| BootstrapError::Iptables(format!("run iptables: {e}")))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

/// Creates `istio-ingress` and its rules if missing, under the shared iptables lock.
pub fn install_istio_chain(tag: &str, lock_file: Option<&Path>) -> Result<(), BootstrapError> {
    let _lock = match lock_file {
        Some(p) => Some(
            FileLock::exclusive(p, 0o600).map_err(|e| BootstrapError::Iptables(e.to_string()))?,
        ),
        None => None,
    };
    let (ok, err) = iptables(&["-N", "istio-ingress"])?;
    if !ok && !err.contains("already exists") {
        return Err(BootstrapError::Iptables(format!(
            "create chain istio-ingress: {err}"
        )));
    }
    let mark = format!("0x{tag}");
    let ensure = |chain: &str, rule: &[&str], insert: bool| -> Result<(), BootstrapError> {
        let mut check = vec!["-C", chain];
        check.extend_from_slice(rule);
        if iptables(&check)?.0 {
            return Ok(());
        }
        let mut add = if insert {
            vec!["-I", chain, "1"]
        } else {
            vec!["-A", chain]
        };
        add.extend_from_slice(rule);
        match iptables(&add)? {
            (true, _) => Ok(()),
            (false, e) => Err(BootstrapError::Iptables(format!("{}: {e}", add.join(" ")))),
        }
    };
    ensure("OUTPUT", &["-j", "istio-ingress"], true)?;
    ensure(
        "istio-ingress",
        &["-o", "silk-vtep", "-j", "MARK", "--set-mark", &mark],
        false,
    )?;
    ensure("istio-ingress", &["-o", "silk-vtep", "-j", "ACCEPT"], false)?;
    Ok(())
}

/// The whole program: no-op unless `single_ip_only`.
pub async fn bootstrap(cfg: &BootstrapConfig) -> Result<(), BootstrapError> {
    if !cfg.single_ip_only {
        return Ok(());
    }
    let tag = fetch_tag(cfg).await?;
    let lock = Some(Path::new(&cfg.iptables_lock_file)).filter(|p| !p.as_os_str().is_empty());
    install_istio_chain(&tag, lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_key_is_case_insensitive() {
        assert_eq!(
            parse_tag(r#"{"id":"INGRESS_ROUTER","type":"router","tag":"0004"}"#).as_deref(),
            Some("0004")
        );
        assert_eq!(
            parse_tag(r#"{"ID":"INGRESS_ROUTER","Tag":"00ff"}"#).as_deref(),
            Some("00ff")
        );
        assert_eq!(parse_tag(r#"{"ID":"INGRESS_ROUTER"}"#), None);
    }
}
