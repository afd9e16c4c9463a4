//! garden-external-networker's side of a cell: loads the cell's rendered conflist and runs its
//! plugins the way libcni does for garden (contract cni.md §2): inside the cell's namespace,
//! `CNI_COMMAND`/`CNI_CONTAINERID` (the handle)/`CNI_NETNS`/`CNI_IFNAME=eth0`/`CNI_ARGS=""`/
//! `CNI_PATH` in the environment; on ADD every plugin object gets the list's `name` and
//! `cniVersion`, garden's `metadata` (when there is any) and `runtimeConfig`
//! (`portMappings`, `netOutRules`), every plugin after the first the previous `prevResult`;
//! DEL runs the list in reverse without `metadata`/`runtimeConfig`, with the cached result as
//! `prevResult`. The final ADD result is cached per handle, as libcni caches it.
//!
//! [`conf_for`] is the pure part (conflist, call, index) -> stdin, table-tested.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use silk_testkit::cni::cni_command;
use silk_testkit::netns::output_with_stdin;

/// Why a garden call failed.
#[derive(Debug, thiserror::Error)]
pub enum GardenError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("conflist {path}: {reason}")]
    Conflist { path: String, reason: String },
    #[error("plugin {plugin} {command} for {handle} failed (exit {code}): {out}")]
    Plugin {
        plugin: String,
        command: &'static str,
        handle: String,
        code: i32,
        out: String,
    },
    #[error("{0}")]
    Result(String),
}

/// What garden passes for one container on ADD.
#[derive(Debug, Clone)]
pub struct Container {
    pub handle: String,
    /// The container's network namespace (garden's bind mount of `/proc/<pid>/ns/net`).
    pub netns: PathBuf,
    /// Garden's network properties (strings), `metadata` on stdin.
    pub metadata: Value,
    pub port_mappings: Value,
    pub net_out_rules: Value,
}

/// One call of the list: ADD with the container's injections, or DEL with the cached result.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    Add {
        metadata: &'a Value,
        runtime: &'a Value,
        prev: Option<&'a Value>,
    },
    Del {
        prev: Option<&'a Value>,
    },
}

/// The stdin of plugin `plugin` (one object of the list `list`) for `call`.
pub fn conf_for(list: &Value, plugin: &Value, call: Call<'_>) -> Value {
    let mut conf = plugin.clone();
    let Some(o) = conf.as_object_mut() else {
        return conf;
    };
    o.insert("name".into(), list["name"].clone());
    o.insert("cniVersion".into(), list["cniVersion"].clone());
    match call {
        Call::Add {
            metadata,
            runtime,
            prev,
        } => {
            if !metadata.is_null() {
                o.insert("metadata".into(), metadata.clone());
            }
            o.insert("runtimeConfig".into(), runtime.clone());
            if let Some(prev) = prev {
                o.insert("prevResult".into(), prev.clone());
            }
        }
        Call::Del { prev } => {
            if let Some(prev) = prev {
                o.insert("prevResult".into(), prev.clone());
            }
        }
    }
    conf
}

/// The first IPv4 address of a CNI result, as garden-external-networker takes it.
pub fn result_ipv4(result: &Value) -> Option<Ipv4Addr> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        ip["address"]
            .as_str()?
            .split('/')
            .next()?
            .parse::<Ipv4Addr>()
            .ok()
    })
}

/// One cell's external networker.
#[derive(Debug, Clone)]
pub struct Garden {
    /// The cell's namespace (`/run/netns/<name>`).
    pub cell_ns: PathBuf,
    pub conflist: PathBuf,
    /// `CNI_PATH`: where the plugins are.
    pub plugin_dir: PathBuf,
    /// libcni's result cache.
    pub cache_dir: PathBuf,
}

impl Garden {
    fn list(&self) -> Result<(Value, Vec<Value>), GardenError> {
        let path = self.conflist.display().to_string();
        let text = std::fs::read_to_string(&self.conflist).map_err(|source| GardenError::Io {
            what: format!("read {path}"),
            source,
        })?;
        let list: Value = serde_json::from_str(&text).map_err(|e| GardenError::Conflist {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let plugins = list["plugins"]
            .as_array()
            .filter(|p| !p.is_empty())
            .cloned()
            .ok_or_else(|| GardenError::Conflist {
                path,
                reason: "no plugins".into(),
            })?;
        Ok((list, plugins))
    }

    fn cache(&self, handle: &str) -> PathBuf {
        self.cache_dir.join(format!("cni-wrapper-{handle}-eth0"))
    }

    fn run(
        &self,
        command: &'static str,
        handle: &str,
        netns: &Path,
        conf: &Value,
    ) -> Result<String, GardenError> {
        let kind = conf["type"].as_str().unwrap_or_default().to_string();
        let bin = self.plugin_dir.join(&kind);
        let mut c = cni_command(
            &self.cell_ns,
            &bin,
            &self.plugin_dir,
            command,
            handle,
            netns,
        );
        let out = output_with_stdin(&mut c, conf.to_string().as_bytes()).map_err(|source| {
            GardenError::Io {
                what: format!("run {}", bin.display()),
                source,
            }
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let text = if stdout.trim().is_empty() {
                String::from_utf8_lossy(&out.stderr).into_owned()
            } else {
                stdout
            };
            return Err(GardenError::Plugin {
                plugin: kind,
                command,
                handle: handle.to_string(),
                code: out.status.code().unwrap_or(-1),
                out: text.trim().to_string(),
            });
        }
        Ok(stdout)
    }

    /// `up`: ADD through the whole list; the final result (also cached).
    pub fn up(&self, c: &Container) -> Result<Value, GardenError> {
        let (list, plugins) = self.list()?;
        let runtime = json!({"portMappings": c.port_mappings, "netOutRules": c.net_out_rules});
        let mut prev: Option<Value> = None;
        for plugin in &plugins {
            let conf = conf_for(
                &list,
                plugin,
                Call::Add {
                    metadata: &c.metadata,
                    runtime: &runtime,
                    prev: prev.as_ref(),
                },
            );
            let out = self.run("ADD", &c.handle, &c.netns, &conf)?;
            let result: Value = serde_json::from_str(&out).map_err(|e| {
                GardenError::Result(format!("ADD {}: not JSON ({e}): {out}", c.handle))
            })?;
            prev = Some(result);
        }
        let result = prev.unwrap_or(Value::Null);
        std::fs::create_dir_all(&self.cache_dir).map_err(|source| GardenError::Io {
            what: format!("create {}", self.cache_dir.display()),
            source,
        })?;
        let cached = json!({"kind": "cniCacheV1", "containerId": c.handle, "ifName": "eth0",
                            "networkName": list["name"], "netns": c.netns, "result": result});
        std::fs::write(self.cache(&c.handle), cached.to_string()).map_err(|source| {
            GardenError::Io {
                what: "write result cache".into(),
                source,
            }
        })?;
        Ok(result)
    }

    /// `down`: DEL through the list in reverse, then drops the cached result.
    pub fn down(&self, handle: &str, netns: &Path) -> Result<(), GardenError> {
        let (list, plugins) = self.list()?;
        let cache = self.cache(handle);
        let prev: Option<Value> = std::fs::read_to_string(&cache)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .map(|v| v["result"].clone());
        for plugin in plugins.iter().rev() {
            let conf = conf_for(
                &list,
                plugin,
                Call::Del {
                    prev: prev.as_ref(),
                },
            );
            self.run("DEL", handle, netns, &conf)?;
        }
        let _ = std::fs::remove_file(cache);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Value {
        json!({"name": "cni-wrapper", "cniVersion": "1.0.0", "disableCheck": true,
               "plugins": [{"type": "cni-wrapper-plugin", "datastore": "/d"},
                           {"type": "bandwidth", "name": "bandwidth-limit"}]})
    }

    #[test]
    fn add_injects_metadata_runtime_config_and_chains_prev_result() {
        let l = list();
        let meta = json!({"app_id": "a", "space_id": "s"});
        let runtime = json!({"portMappings": [], "netOutRules": null});
        let first = conf_for(
            &l,
            &l["plugins"][0],
            Call::Add {
                metadata: &meta,
                runtime: &runtime,
                prev: None,
            },
        );
        assert_eq!(
            first,
            json!({"type": "cni-wrapper-plugin", "datastore": "/d", "name": "cni-wrapper",
                   "cniVersion": "1.0.0", "metadata": meta, "runtimeConfig": runtime})
        );
        let prev = json!({"ips": []});
        let second = conf_for(
            &l,
            &l["plugins"][1],
            Call::Add {
                metadata: &Value::Null,
                runtime: &runtime,
                prev: Some(&prev),
            },
        );
        assert_eq!(second["name"], "cni-wrapper", "the list's name wins");
        assert_eq!(second["prevResult"], prev);
        assert!(
            second.get("metadata").is_none(),
            "no metadata when garden has none"
        );
        assert!(second.get("plugins").is_none() && second.get("disableCheck").is_none());
    }

    #[test]
    fn del_has_no_injections_and_the_cached_result() {
        let l = list();
        let prev = json!({"ips": [{"address": "10.255.1.2/32"}]});
        let conf = conf_for(&l, &l["plugins"][0], Call::Del { prev: Some(&prev) });
        assert!(conf.get("metadata").is_none() && conf.get("runtimeConfig").is_none());
        assert_eq!(conf["prevResult"], prev);
        assert_eq!(result_ipv4(&prev), Some(Ipv4Addr::new(10, 255, 1, 2)));
        assert_eq!(
            result_ipv4(&json!({"ips": [{"address": "fd00::1/128"}]})),
            None
        );
    }
}
