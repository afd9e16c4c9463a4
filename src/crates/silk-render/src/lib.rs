//! Renders the config files of silk's BOSH jobs from the tera templates in the repository's
//! `templates/` directory, so the binaries can run without a BOSH Director (the lab does).
//!
//! Each template renders the same file as the job's ERB template (`jobs/<job>/templates/*.erb`),
//! including the property defaults of the job spec and the simple render-time validations; a
//! parity spec (`spec/parity/`) renders both with the same inputs and compares the results.
//!
//! The context is one JSON object, shaped like what the Director hands an ERB template:
//!
//! ```json
//! {"properties": {"database": {"type": "postgres"}},
//!  "links": {"cf_network": {"properties": {"network": "10.255.0.0/16", "subnet_prefix_length": 24},
//!                           "instances": [{"address": "10.0.0.5"}]}},
//!  "spec": {"ip": "10.0.16.15", "id": "cell-guid", "networks": {"default": {"ip": "10.0.16.15"}}}}
//! ```
//!
//! `properties` holds the manifest properties only: defaults come from the templates. An optional
//! `"root"` (default `/var/vcap`) relocates every BOSH path the files name (`<root>/jobs/...`,
//! `<root>/data/...`), so a lab can run the jobs under a scratch directory.

use serde_json::Value;

/// Templates by name (`<job>/<rendered path under the job directory>`), embedded at build time.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "silk-controller/config/silk-controller.json",
        include_str!("../../../../templates/silk-controller/silk-controller.json.tera"),
    ),
    (
        "silk-daemon/config/client-config.json",
        include_str!("../../../../templates/silk-daemon/client-config.json.tera"),
    ),
    (
        "silk-daemon/config/bootstrap-config.json",
        include_str!("../../../../templates/silk-daemon/bootstrap-config.json.tera"),
    ),
    (
        "silk-daemon/config/healthchecker.yml",
        include_str!("../../../../templates/silk-daemon/healthchecker.yml.tera"),
    ),
    (
        "silk-cni/config/cni/cni-wrapper-plugin.conflist",
        include_str!("../../../../templates/silk-cni/cni-wrapper-plugin.conflist.tera"),
    ),
    (
        "silk-cni/config/teardown-config.json",
        include_str!("../../../../templates/silk-cni/teardown-config.json.tera"),
    ),
    (
        "vxlan-policy-agent/config/vxlan-policy-agent.json",
        include_str!("../../../../templates/vxlan-policy-agent/vxlan-policy-agent.json.tera"),
    ),
    (
        "iptables-logger/config/iptables-logger.json",
        include_str!("../../../../templates/iptables-logger/iptables-logger.json.tera"),
    ),
    (
        "netmon/config/netmon.json",
        include_str!("../../../../templates/netmon/netmon.json.tera"),
    ),
];

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("unknown template {0:?} (known: {known})", known = names().join(", "))]
    UnknownTemplate(String),
    #[error("context must be a JSON object with properties, links and spec")]
    BadContext,
    #[error("root {0:?} must be an absolute path without quotes, backslashes or a trailing slash")]
    BadRoot(String),
    #[error("load templates: {message}")]
    Load {
        message: String,
        #[source]
        source: tera::Error,
    },
    /// A render-time validation failed or the template hit an error; the message is the
    /// innermost cause, e.g. `subnet_prefix_length must be a value between 1-30`.
    #[error("{message}")]
    Render {
        message: String,
        #[source]
        source: tera::Error,
    },
}

/// Names of every template, in [`TEMPLATES`] order.
pub fn names() -> Vec<&'static str> {
    TEMPLATES.iter().map(|(name, _)| *name).collect()
}

/// Renders template `name` with `context` (see the module documentation for its shape).
pub fn render(name: &str, context: &Value) -> Result<String, RenderError> {
    if !TEMPLATES.iter().any(|(n, _)| *n == name) {
        return Err(RenderError::UnknownTemplate(name.to_owned()));
    }
    let Value::Object(map) = context else {
        return Err(RenderError::BadContext);
    };
    let mut full = serde_json::Map::new();
    let root = match map.get("root") {
        None => DEFAULT_ROOT.to_owned(),
        Some(Value::String(root)) if valid_root(root) => root.clone(),
        Some(other) => return Err(RenderError::BadRoot(other.to_string())),
    };
    full.insert("root".to_owned(), Value::String(root));
    for key in ["properties", "links", "spec"] {
        let value = map
            .get(key)
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        full.insert(key.to_owned(), value);
    }
    let tera_context =
        tera::Context::from_value(Value::Object(full)).map_err(|_| RenderError::BadContext)?;
    let mut tera = tera::Tera::default();
    tera.add_raw_templates(TEMPLATES.iter().copied())
        .map_err(|source| RenderError::Load {
            message: innermost_message(&source),
            source,
        })?;
    tera.render(name, &tera_context)
        .map_err(|source| RenderError::Render {
            message: innermost_message(&source),
            source,
        })
}

/// Where BOSH puts jobs, packages and data on a VM.
pub const DEFAULT_ROOT: &str = "/var/vcap";

/// The root is pasted into JSON strings and YAML scalars: keep it to plain absolute paths.
fn valid_root(root: &str) -> bool {
    root.starts_with('/')
        && (root.len() == 1 || !root.ends_with('/'))
        && !root
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control() || c == ' ')
}

/// The deepest error in the chain: for `throw(message=...)` that is the validation message.
fn innermost_message(err: &tera::Error) -> String {
    let mut current: &dyn std::error::Error = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_template_parses() {
        let mut tera = tera::Tera::default();
        tera.add_raw_templates(TEMPLATES.iter().copied())
            .unwrap_or_else(|e| panic!("{}", innermost_message(&e)));
    }

    #[test]
    fn renders_defaults_of_the_daemon_config() {
        let context = json!({
            "properties": {},
            "links": {"cf_network": {"properties": {"network": "10.255.0.0/16", "subnet_prefix_length": 24}}},
            "spec": {"ip": "10.0.16.15", "networks": {"default": {"ip": "10.0.16.15"}}}
        });
        let out = render("silk-daemon/config/client-config.json", &context).unwrap();
        let config: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(config["overlay_network"], json!(["10.255.0.0/16"]));
        assert_eq!(config["partition_tolerance_seconds"], json!(168 * 3600));
        assert_eq!(config["ipv6_prefix"], serde_json::Value::Null);
    }

    #[test]
    fn reports_the_validation_message() {
        let context = json!({"properties": {"poll_interval": 0}});
        let err = render("netmon/config/netmon.json", &context).unwrap_err();
        assert_eq!(err.to_string(), "poll_interval must be at least 1");
    }

    #[test]
    fn relocates_bosh_paths_under_root() {
        let context = json!({"root": "/tmp/lab/cell-1", "properties": {}});
        let out = render("silk-cni/config/teardown-config.json", &context).unwrap();
        let config: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            config["paths_to_delete"][0],
            json!("/tmp/lab/cell-1/data/container-metadata")
        );
        let err = render("netmon/config/netmon.json", &json!({"root": "lab\"x"})).unwrap_err();
        assert!(matches!(err, RenderError::BadRoot(_)));
    }

    #[test]
    fn rejects_unknown_templates() {
        let err = render("silk-daemon/bin/drain", &json!({})).unwrap_err();
        assert!(matches!(err, RenderError::UnknownTemplate(_)));
    }
}
