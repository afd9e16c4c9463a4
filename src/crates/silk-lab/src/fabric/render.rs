//! Every config file of the fabric, rendered from the release's own templates (`templates/`,
//! through silk-render) with the lab's properties (`manifests/lab/`): the property names an
//! operator sets in BOSH. Nothing here writes a config key by hand, with one exception that the
//! BOSH properties cannot express: tests that need a lease or partition tolerance shorter than an
//! hour ([`Timing`]) get the rendered seconds value replaced, and only when it is not a whole
//! number of hours.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::{json, Value};

/// The controller's DNS name, resolved through `/etc/netns/<ns>/hosts` inside the cells.
pub const CONTROLLER_NAME: &str = "silk-controller.service.cf.internal";
pub const CONTROLLER_PORT: u16 = 4103;
pub const CONTROLLER_HEALTH_PORT: u16 = 19683;
pub const CONTROLLER_DEBUG_PORT: u16 = 46455;
pub const DAEMON_PORT: u16 = 23954;
pub const DAEMON_DEBUG_PORT: u16 = 22233;
/// The lab policy server's DNS name (the vxlan-policy-agent job's default
/// `policy_server.hostname`), resolved like the controller's, and its internal port.
pub const POLICY_SERVER_NAME: &str = "policy-server.service.cf.internal";
pub const POLICY_SERVER_PORT: u16 = 4003;
/// The policy server's control listener inside the api namespace (loopback).
pub const POLICY_SERVER_CONTROL_PORT: u16 = 4004;
/// iptables-logger's kernel log, relative to the fabric's directory.
pub const KERNEL_LOG: &str = "kern.log";
/// vxlan-policy-agent's local ports (the job's defaults).
pub const AGENT_DEBUG_PORT: u16 = 8721;
pub const AGENT_FORCE_PORT: u16 = 8722;

/// What the bed's vxlan-policy-agents are run with.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub poll_interval_seconds: u64,
    pub asg_poll_interval_seconds: u64,
    pub enable_asg_syncing: bool,
    /// ASG logging (the `cni_config` link's `iptables_logging`); `None` keeps the lab's manifest.
    pub asg_logging: Option<bool>,
}

impl AgentSettings {
    /// The lab manifest's poll intervals (manifests/lab/vxlan-policy-agent.json), dynamic ASGs
    /// on and ASG logging as the manifest says.
    pub fn lab() -> AgentSettings {
        let ctx: Value = serde_json::from_str(AGENT_CONTEXT).unwrap_or(Value::Null);
        let p = &ctx["properties"];
        AgentSettings {
            poll_interval_seconds: p["policy_poll_interval_seconds"].as_u64().unwrap_or(5),
            asg_poll_interval_seconds: p["asg_poll_interval_seconds"].as_u64().unwrap_or(60),
            enable_asg_syncing: true,
            asg_logging: None,
        }
    }
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            poll_interval_seconds: 1,
            asg_poll_interval_seconds: 1,
            enable_asg_syncing: true,
            asg_logging: Some(false),
        }
    }
}

/// Knobs shared by the rendered configs.
#[derive(Debug, Clone)]
pub struct Timing {
    pub poll_interval_seconds: u64,
    pub lease_expiration_seconds: u64,
    pub partition_tolerance_seconds: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            poll_interval_seconds: 1,
            lease_expiration_seconds: 60,
            partition_tolerance_seconds: 600,
        }
    }
}

/// The lab's contexts (manifests/lab/), embedded at build time.
pub const CONTROLLER_CONTEXT: &str =
    include_str!("../../../../../manifests/lab/silk-controller.json");
pub const DAEMON_CONTEXT: &str = include_str!("../../../../../manifests/lab/silk-daemon.json");
pub const AGENT_CONTEXT: &str =
    include_str!("../../../../../manifests/lab/vxlan-policy-agent.json");
pub const CNI_CONTEXT: &str = include_str!("../../../../../manifests/lab/silk-cni.json");
pub const LOGGER_CONTEXT: &str = include_str!("../../../../../manifests/lab/iptables-logger.json");

/// Template names (silk-render's `TEMPLATES`).
pub const CONTROLLER_TEMPLATE: &str = "silk-controller/config/silk-controller.json";
pub const DAEMON_TEMPLATE: &str = "silk-daemon/config/client-config.json";
pub const AGENT_TEMPLATE: &str = "vxlan-policy-agent/config/vxlan-policy-agent.json";
pub const CNI_TEMPLATE: &str = "silk-cni/config/cni/cni-wrapper-plugin.conflist";
pub const LOGGER_TEMPLATE: &str = "iptables-logger/config/iptables-logger.json";

/// Why a config could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("lab context {name}: {source}")]
    Context {
        name: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("render {template}: {source}")]
    Render {
        template: &'static str,
        #[source]
        source: silk_render::RenderError,
    },
    #[error("rendered {template} is not JSON: {source}")]
    Output {
        template: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// A lab context with its placeholders filled: `root` set to `root` and, for a cell, `CELL_IP`
/// replaced by the cell's underlay address.
pub fn context(
    name: &'static str,
    text: &str,
    root: &Path,
    cell_ip: Option<Ipv4Addr>,
) -> Result<Value, RenderError> {
    let text = match cell_ip {
        Some(ip) => text.replace("CELL_IP", &ip.to_string()),
        None => text.to_owned(),
    };
    let mut ctx: Value =
        serde_json::from_str(&text).map_err(|source| RenderError::Context { name, source })?;
    ctx["root"] = Value::String(root.display().to_string());
    Ok(ctx)
}

/// Sets `value` at the `/`-separated `path` of `ctx`, creating objects on the way.
pub fn set(ctx: &mut Value, path: &str, value: Value) {
    let mut at = ctx;
    for key in path.split('/').filter(|k| !k.is_empty()) {
        if !at.is_object() {
            *at = Value::Object(Default::default());
        }
        at = at
            .as_object_mut()
            .expect("made an object above")
            .entry(key.to_owned())
            .or_insert(Value::Null);
    }
    *at = value;
}

/// Renders `template` with `ctx`.
pub fn render(template: &'static str, ctx: &Value) -> Result<String, RenderError> {
    silk_render::render(template, ctx).map_err(|source| RenderError::Render { template, source })
}

/// Whole hours, rounded up (BOSH properties in hours), and whether `seconds` was exact.
fn hours(seconds: u64) -> (u64, bool) {
    (
        seconds.div_ceil(3600).max(1),
        seconds.is_multiple_of(3600) && seconds > 0,
    )
}

/// Renders `template`, then replaces `key` with `seconds` unless the hours were exact.
fn render_with_seconds(
    template: &'static str,
    ctx: &Value,
    tuned: &[(&str, u64, bool)],
) -> Result<String, RenderError> {
    let text = render(template, ctx)?;
    if tuned.iter().all(|(_, _, exact)| *exact) {
        return Ok(text);
    }
    let mut v: Value =
        serde_json::from_str(&text).map_err(|source| RenderError::Output { template, source })?;
    for (key, seconds, exact) in tuned {
        if !exact {
            v[*key] = json!(seconds);
        }
    }
    Ok(serde_json::to_string_pretty(&v).expect("a JSON value serialises"))
}

/// The controller's database, as the template's `database.*` properties. With `require_ssl`,
/// the template names the CA file `certs/database_ca.crt` of the job (where BOSH writes the
/// `database.ca_cert` property); the caller puts it there.
#[derive(Debug, Clone)]
pub struct Database {
    pub kind: &'static str,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub name: String,
    pub require_ssl: bool,
}

/// silk-controller.json, rooted at `root`; listens on every address of its namespace.
pub fn controller_json(
    root: &Path,
    overlay: &str,
    prefix: u8,
    db: &Database,
    t: &Timing,
) -> Result<String, RenderError> {
    let mut ctx = context("silk-controller.json", CONTROLLER_CONTEXT, root, None)?;
    let (h, exact) = hours(t.lease_expiration_seconds);
    set(&mut ctx, "properties/listen_ip", json!("0.0.0.0"));
    set(&mut ctx, "properties/network", json!(overlay));
    set(&mut ctx, "properties/subnet_prefix_length", json!(prefix));
    set(
        &mut ctx,
        "properties/subnet_lease_expiration_hours",
        json!(h),
    );
    set(
        &mut ctx,
        "properties/database",
        json!({"type": db.kind, "username": db.user, "password": db.password,
               "host": db.host, "port": db.port, "name": db.name,
               "require_ssl": db.require_ssl, "connect_timeout_seconds": 10}),
    );
    render_with_seconds(
        CONTROLLER_TEMPLATE,
        &ctx,
        &[(
            "lease_expiration_seconds",
            t.lease_expiration_seconds,
            exact,
        )],
    )
}

/// client-config.json for the cell at `underlay_ip`, rooted at `root`.
pub fn daemon_json(
    root: &Path,
    underlay_ip: Ipv4Addr,
    overlay: &str,
    prefix: u8,
    t: &Timing,
    log_level: &str,
) -> Result<String, RenderError> {
    let mut ctx = context("silk-daemon.json", DAEMON_CONTEXT, root, Some(underlay_ip))?;
    let (h, exact) = hours(t.partition_tolerance_seconds);
    set(
        &mut ctx,
        "links/cf_network/properties",
        json!({"network": overlay, "subnet_prefix_length": prefix}),
    );
    set(
        &mut ctx,
        "properties/lease_poll_interval_seconds",
        json!(t.poll_interval_seconds),
    );
    set(&mut ctx, "properties/partition_tolerance_hours", json!(h));
    set(&mut ctx, "properties/logging/level", json!(log_level));
    render_with_seconds(
        DAEMON_TEMPLATE,
        &ctx,
        &[(
            "partition_tolerance_seconds",
            t.partition_tolerance_seconds,
            exact,
        )],
    )
}

/// vxlan-policy-agent.json for the cell at `underlay_ip`, rooted at `root` (the metadata store
/// and the iptables lock under `<root>/data/`, shared with the cell's CNI plugins).
pub fn agent_json(
    root: &Path,
    underlay_ip: Ipv4Addr,
    overlay: &str,
    s: &AgentSettings,
) -> Result<String, RenderError> {
    let mut ctx = context(
        "vxlan-policy-agent.json",
        AGENT_CONTEXT,
        root,
        Some(underlay_ip),
    )?;
    set(
        &mut ctx,
        "links/cf_network/properties/network",
        json!(overlay),
    );
    set(
        &mut ctx,
        "properties/policy_poll_interval_seconds",
        json!(s.poll_interval_seconds),
    );
    set(
        &mut ctx,
        "properties/asg_poll_interval_seconds",
        json!(s.asg_poll_interval_seconds),
    );
    set(
        &mut ctx,
        "properties/enable_asg_syncing",
        json!(s.enable_asg_syncing),
    );
    if let Some(logging) = s.asg_logging {
        set(
            &mut ctx,
            "links/cni_config/properties/iptables_logging",
            json!(logging),
        );
    }
    render(AGENT_TEMPLATE, &ctx)
}

/// cni-wrapper-plugin.conflist for the cell at `underlay_ip`, rooted at `root`.
pub fn cni_conflist(root: &Path, underlay_ip: Ipv4Addr) -> Result<String, RenderError> {
    cni_conflist_with(root, underlay_ip, &Value::Null)
}

/// [`cni_conflist`] with `overrides` (an object of `/`-separated paths into the job's context,
/// e.g. `properties/iptables_logging` or `links/vpa/properties/force_policy_poll_cycle_port`,
/// to values) set over the lab's: a job property or link value as BOSH would render it.
pub fn cni_conflist_with(
    root: &Path,
    underlay_ip: Ipv4Addr,
    overrides: &Value,
) -> Result<String, RenderError> {
    let mut ctx = context("silk-cni.json", CNI_CONTEXT, root, Some(underlay_ip))?;
    if let Some(o) = overrides.as_object() {
        for (path, value) in o {
            set(&mut ctx, path, value.clone());
        }
    }
    render(CNI_TEMPLATE, &ctx)
}

/// iptables-logger.json for the cell at `underlay_ip`, rooted at `root`; the kernel log it
/// tails is `<lab_root>/kern.log`.
pub fn logger_json(
    lab_root: &Path,
    root: &Path,
    underlay_ip: Ipv4Addr,
) -> Result<String, RenderError> {
    let text = LOGGER_CONTEXT.replace("LAB_ROOT", &lab_root.display().to_string());
    let ctx = context("iptables-logger.json", &text, root, Some(underlay_ip))?;
    render(LOGGER_TEMPLATE, &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("rendered JSON")
    }

    #[test]
    fn daemon_config_comes_from_the_template_with_lab_properties() {
        let root = Path::new("/lab/c0");
        let t = Timing {
            poll_interval_seconds: 2,
            lease_expiration_seconds: 3600,
            partition_tolerance_seconds: 7200,
        };
        let v = parse(
            &daemon_json(
                root,
                Ipv4Addr::new(192, 0, 2, 10),
                "10.255.0.0/16",
                24,
                &t,
                "debug",
            )
            .unwrap(),
        );
        assert_eq!(v["underlay_ip"], "192.0.2.10");
        assert_eq!(v["overlay_network"], json!(["10.255.0.0/16"]));
        assert_eq!(v["poll_interval"], 2);
        assert_eq!(v["partition_tolerance_seconds"], 7200);
        assert_eq!(v["datastore"], "/lab/c0/data/silk/store.json");
        assert_eq!(
            v["ca_cert_file"],
            "/lab/c0/jobs/silk-daemon/config/certs/ca.crt"
        );
        assert_eq!(
            v["connectivity_server_url"],
            format!("https://{CONTROLLER_NAME}:{CONTROLLER_PORT}")
        );
    }

    #[test]
    fn sub_hour_timings_replace_only_the_seconds_key() {
        let t = Timing {
            poll_interval_seconds: 1,
            lease_expiration_seconds: 6,
            partition_tolerance_seconds: 4,
        };
        let db = Database {
            kind: "postgres",
            host: "/run/pg".into(),
            port: 5433,
            user: "postgres".into(),
            password: String::new(),
            name: "silk_x".into(),
            require_ssl: false,
        };
        let c = parse(
            &controller_json(Path::new("/lab/controller"), "10.255.0.0/16", 24, &db, &t).unwrap(),
        );
        assert_eq!(c["lease_expiration_seconds"], 6);
        assert_eq!(c["listen_host"], "0.0.0.0");
        assert_eq!(c["database"]["host"], "/run/pg");
        assert_eq!(c["database"]["port"], 5433);
        assert_eq!(c["database"]["database_name"], "silk_x");
        assert_eq!(c["database"]["require_ssl"], false);
        let my = Database {
            kind: "mysql",
            host: "127.0.0.1".into(),
            port: 3306,
            user: "silk".into(),
            password: "secret".into(),
            name: "silk_y".into(),
            require_ssl: true,
        };
        let c = parse(
            &controller_json(Path::new("/lab/controller"), "10.255.0.0/16", 24, &my, &t).unwrap(),
        );
        assert_eq!(c["database"]["type"], "mysql");
        assert_eq!(c["database"]["require_ssl"], true);
        assert_eq!(c["database"]["skip_hostname_validation"], false);
        assert_eq!(
            c["database"]["ca_cert"],
            "/lab/controller/jobs/silk-controller/config/certs/database_ca.crt"
        );
        let d = parse(
            &daemon_json(
                Path::new("/lab/c1"),
                Ipv4Addr::new(192, 0, 2, 11),
                "10.255.0.0/16",
                24,
                &t,
                "info",
            )
            .unwrap(),
        );
        assert_eq!(d["partition_tolerance_seconds"], 4);
    }

    #[test]
    fn agent_cni_and_logger_configs_share_the_cell_paths() {
        let root = Path::new("/lab/c2");
        let ip = Ipv4Addr::new(192, 0, 2, 12);
        let a = parse(&agent_json(root, ip, "10.255.0.0/16", &AgentSettings::lab()).unwrap());
        let c = parse(&cni_conflist(root, ip).unwrap());
        let l = parse(&logger_json(Path::new("/lab"), root, ip).unwrap());
        let quiet = parse(
            &cni_conflist_with(
                root,
                ip,
                &json!({"properties/iptables_logging": false,
                        "properties/outbound_connections/limit": true,
                        "links/vpa/properties/force_policy_poll_cycle_port": 9999}),
            )
            .unwrap(),
        );
        assert_eq!(c["plugins"][0]["iptables_asg_logging"], true);
        assert_eq!(quiet["plugins"][0]["iptables_asg_logging"], false);
        assert_eq!(quiet["plugins"][0]["outbound_connections"]["limit"], true);
        assert_eq!(
            quiet["plugins"][0]["policy_agent_force_poll_address"],
            "127.0.0.1:9999"
        );
        let wrapper = &c["plugins"][0];
        assert_eq!(a["cni_datastore_path"], wrapper["datastore"]);
        assert_eq!(a["iptables_lock_file"], wrapper["iptables_lock_file"]);
        assert_eq!(l["container_metadata_file"], wrapper["datastore"]);
        assert_eq!(l["kernel_log_file"], "/lab/kern.log");
        assert_eq!(a["underlay_ips"], json!(["192.0.2.12"]));
        assert_eq!(a["enable_asg_syncing"], true);
        assert_eq!(wrapper["instance_address"], "192.0.2.12");
        assert_eq!(
            wrapper["policy_agent_force_poll_address"],
            format!("127.0.0.1:{AGENT_FORCE_PORT}")
        );
    }

    #[test]
    fn set_creates_the_path() {
        let mut v = json!({"a": 1});
        set(&mut v, "b/c/d", json!(true));
        set(&mut v, "a/x", json!(2));
        assert_eq!(v, json!({"a": {"x": 2}, "b": {"c": {"d": true}}}));
    }
}
