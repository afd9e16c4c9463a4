//! The plugin trait and the harness that owns the process: reads the environment and stdin,
//! checks versions, dispatches, writes the result or the error JSON, returns the exit code.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde_json::Value;

use crate::env::{CmdArgs, Command, Env};
use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use crate::version::{self, SpecVersion, V0_4_0, V1_1_0};

/// One CNI plugin. `add` returns a version-neutral result; the harness converts it.
pub trait CniPlugin {
    /// Shown by the "about" text when `CNI_COMMAND` is absent, e.g. `silk-cni`.
    fn name(&self) -> &str;

    fn supported_versions(&self) -> &[&str] {
        version::SUPPORTED
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError>;
    fn del(&self, args: &CmdArgs) -> Result<(), CniError>;

    fn check(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Err(CniError::new(
            ErrorCode::Internal,
            "CHECK is not implemented",
            "",
        ))
    }

    /// GC: `cni.dev/valid-attachments` in the config lists what must be kept.
    fn gc(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }

    fn status(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
}

/// Runs `plugin` for this process and exits with its code.
pub fn run<P: CniPlugin>(plugin: &P) -> ! {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    let code = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run_with(
            plugin,
            &env,
            &stdin,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        ),
        Err(e) => {
            let err = CniError::new(ErrorCode::IoFailure, "reading from stdin", e.to_string());
            let _ = writeln!(std::io::stdout(), "{}", err.to_json(version::NEWEST));
            1
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// The harness with its inputs and outputs injected; returns the process exit code.
pub fn run_with<P: CniPlugin>(
    plugin: &P,
    env: &BTreeMap<String, String>,
    stdin: &[u8],
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let Some(cmd) = env.get("CNI_COMMAND").filter(|c| !c.is_empty()) else {
        let versions = plugin.supported_versions().join(", ");
        let _ = writeln!(stderr, "CNI Plugin {}", plugin.name());
        let _ = writeln!(stderr, "CNI protocol versions supported: {versions}");
        return 0;
    };
    let mut version_for_error = version::NEWEST.to_string();
    match dispatch(plugin, cmd, env, stdin, &mut version_for_error) {
        Ok(Some(out)) => {
            let _ = writeln!(stdout, "{out}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let _ = writeln!(stdout, "{}", e.to_json(&version_for_error));
            1
        }
    }
}

fn decode_config(stdin: &[u8]) -> Result<Value, CniError> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            ErrorCode::DecodingFailure,
            "decoding version from network config",
            e.to_string(),
        )
    })?;
    if !v.is_object() {
        return Err(CniError::new(
            ErrorCode::DecodingFailure,
            "decoding version from network config",
            "network config is not a JSON object",
        ));
    }
    Ok(v)
}

fn dispatch<P: CniPlugin>(
    plugin: &P,
    cmd: &str,
    env: &BTreeMap<String, String>,
    stdin: &[u8],
    version_for_error: &mut String,
) -> Result<Option<String>, CniError> {
    let command = Command::parse(cmd).ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("unknown CNI_COMMAND: {cmd}"),
            "",
        )
    })?;
    if command == Command::Version {
        // Answer with our newest version, as the Go library does; the input may be absent.
        let out = serde_json::json!({"cniVersion": version::NEWEST, "supportedVersions": plugin.supported_versions()});
        return Ok(Some(out.to_string()));
    }
    let mut args = Env(env).parse(command)?;
    let config = decode_config(stdin)?;
    let cni_version = config
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if SpecVersion::parse(&cni_version).is_some() {
        *version_for_error = cni_version.clone();
    }
    let parsed = version::check_supported(&cni_version, plugin.supported_versions())?;
    if config
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "missing network name",
            "",
        ));
    }
    let needed = match command {
        Command::Check => Some((V0_4_0, "CHECK")),
        Command::Gc => Some((V1_1_0, "GC")),
        Command::Status => Some((V1_1_0, "STATUS")),
        _ => None,
    };
    if let Some((min, name)) = needed {
        if !parsed.at_least(min) {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!("config version does not allow {name}"),
                "",
            ));
        }
    }
    if let Some(prev) = config.get("prevResult").filter(|v| !v.is_null()) {
        let r = CniResult::from_value(prev).map_err(|e| {
            CniError::new(
                ErrorCode::DecodingFailure,
                "decoding prevResult",
                e.to_string(),
            )
        })?;
        args.prev_result = Some(r);
    }
    args.stdin = stdin.to_vec();
    args.config = config;
    args.cni_version = cni_version.clone();
    match command {
        Command::Add => {
            let result = plugin.add(&args)?;
            Ok(Some(result.to_version_json(&cni_version)?))
        }
        Command::Del => plugin.del(&args).map(|_| None),
        Command::Check => plugin.check(&args).map(|_| None),
        Command::Gc => plugin.gc(&args).map(|_| None),
        Command::Status => plugin.status(&args).map(|_| None),
        Command::Version => Ok(None),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::result::IpConfig;
    use std::cell::RefCell;

    #[derive(Default)]
    pub(crate) struct Probe {
        seen: RefCell<Vec<(Command, String, Option<CniResult>)>>,
        fail: Option<CniError>,
    }

    impl CniPlugin for Probe {
        fn name(&self) -> &str {
            "probe"
        }
        fn add(&self, a: &CmdArgs) -> Result<CniResult, CniError> {
            self.seen
                .borrow_mut()
                .push((a.command, a.container_id.clone(), a.prev_result.clone()));
            if let Some(e) = &self.fail {
                return Err(e.clone());
            }
            Ok(CniResult {
                ips: vec![IpConfig {
                    address: "10.255.30.2/32".into(),
                    gateway: None,
                    interface: Some(1),
                }],
                ..Default::default()
            })
        }
        fn del(&self, a: &CmdArgs) -> Result<(), CniError> {
            self.seen
                .borrow_mut()
                .push((a.command, a.container_id.clone(), a.prev_result.clone()));
            Ok(())
        }
    }

    pub(crate) fn env(cmd: &str) -> BTreeMap<String, String> {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "h1"),
            ("CNI_NETNS", "/proc/1/ns/net"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn call(p: &Probe, env: &BTreeMap<String, String>, stdin: &str) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(p, env, stdin.as_bytes(), &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"silk","type":"probe"}"#;

    #[test]
    fn add_prints_result_in_config_version() {
        let p = Probe::default();
        let (code, out, _) = call(&p, &env("ADD"), r#"{"cniVersion":"0.4.0","name":"n"}"#);
        assert_eq!(code, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
    }

    #[test]
    fn errors_are_spec_json_with_exit_1() {
        let p = Probe::default();
        let (code, out, _) = call(&p, &env("ADD"), "{not json");
        assert_eq!(code, 1);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["code"], 6);
        let (_, out, _) = call(&p, &env("ADD"), r#"{"cniVersion":"9.9.9","name":"n"}"#);
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["code"], 1);
        let (_, out, _) = call(&p, &env("ADD"), r#"{"cniVersion":"1.0.0"}"#);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["code"].as_u64(), v["msg"].as_str()),
            (Some(7), Some("missing network name"))
        );
        let mut e = env("ADD");
        e.remove("CNI_NETNS");
        let (code, out, _) = call(&p, &e, CONF);
        assert_eq!(code, 1);
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["code"], 4);
        let (_, out, _) = call(&p, &env("FROB"), CONF);
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["code"], 4);
        assert!(
            p.seen.borrow().is_empty(),
            "no command may run after a harness error"
        );
    }

    #[test]
    fn plugin_error_keeps_code_and_details() {
        let p = Probe {
            fail: Some(CniError::plugin(100, "run ipam plugin", "exhausted")),
            ..Default::default()
        };
        let (code, out, _) = call(&p, &env("ADD"), CONF);
        assert_eq!(code, 1);
        assert_eq!(
            out.trim(),
            r#"{"cniVersion":"1.0.0","code":100,"msg":"run ipam plugin","details":"exhausted"}"#
        );
    }

    #[test]
    fn version_and_about() {
        let p = Probe::default();
        let (code, out, _) = call(&p, &env("VERSION"), "");
        assert_eq!(code, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert!(v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "1.0.0"));
        let (code, out, err) = call(&p, &BTreeMap::new(), "");
        assert_eq!((code, out.as_str()), (0, ""));
        assert!(err.starts_with("CNI Plugin probe\n"));
    }

    #[test]
    fn del_gets_prev_result_and_gc_needs_1_1_0() {
        let p = Probe::default();
        let conf = r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.255.30.9/32","interface":1}]}}"#;
        let (code, out, _) = call(&p, &env("DEL"), conf);
        assert_eq!((code, out.as_str()), (0, ""));
        let prev = p.seen.borrow()[0].2.clone().unwrap();
        assert_eq!(prev.first_ipv4(), Some("10.255.30.9".parse().unwrap()));
        let (code, out, _) = call(&p, &env("GC"), CONF);
        assert_eq!(code, 1);
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap()["msg"],
            "config version does not allow GC"
        );
        let (code, _, _) = call(&p, &env("STATUS"), r#"{"cniVersion":"1.1.0","name":"n"}"#);
        assert_eq!(code, 0);
        let (code, _, _) = call(&p, &env("CHECK"), r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(code, 1);
    }
}
