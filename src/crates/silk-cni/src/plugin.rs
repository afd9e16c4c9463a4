//! The silk-cni plugin: ADD (network info, IPAM, veth, silk store), DEL (idempotent, works with
//! silk-daemon down), CHECK (the container interface still carries its addresses), STATUS, and
//! GC (sweeps attachments the runtime no longer lists).
//!
//! IPv6 follows silk-daemon, not the conflist: when the daemon announces `ipv6_prefix`, IPAM
//! gets the prefix as range set 1 and the container an IPv6 address behind `fe80::1` besides
//! its IPv4 one (upstream-delta §3.3.2).

use std::net::IpAddr;
use std::path::Path;

use ipnetwork::{IpNetwork, Ipv4Network};
use silk_cni_skel::{
    gc, CmdArgs, CniError, CniPlugin, CniResult, ErrorCode, Interface, IpConfig, Route,
};
use silk_dataplane::datastore::SilkStore;
use silk_dataplane::hostlocal::HostLocal;

use crate::config::{macs, veth_names, Config};
use crate::veth::{self, VethSpec, GATEWAY, GATEWAY6};

pub const LOG_FILE: &str = "/var/vcap/sys/log/silk-cni/silk-cni.stdout.log";
const SOURCE: &str = "cfnetworking.silk-cni";

pub struct SilkCni;

fn code100(msg: &str, details: impl std::fmt::Display) -> CniError {
    CniError::plugin(100, msg, details)
}

fn ipam(c: &Config) -> HostLocal {
    HostLocal::new(&Path::new(&c.data_dir).join("ipam"), &c.name)
}

fn store_key(netns: &str) -> String {
    Path::new(netns)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl CniPlugin for SilkCni {
    fn name(&self) -> &str {
        "silk-cni"
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let c: Config = args.decode_config()?;
        let info = c
            .net_info()
            .map_err(|e| code100("discover network info", e))?;
        let subnet = Ipv4Network::new(info.subnet.network(), info.subnet.prefix())
            .map_err(|e| code100("generate ipam config", e))?;
        let mut ranges = vec![IpNetwork::V4(subnet)];
        ranges.extend(info.ipv6_prefix.map(IpNetwork::V6));
        let pool = ipam(&c);
        let ips = pool
            .allocate(&ranges, &args.container_id, &args.ifname)
            .map_err(|e| code100("run ipam plugin", e))?;
        let ip = ips.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        let ip6 = ips.iter().find_map(|a| match a {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        });
        // From here on, a failure releases the address and removes the veth (upstream leaks both).
        let release = || {
            let _ = pool.release(&args.container_id, &args.ifname);
        };
        let Some(ip) = ip else {
            release();
            return Err(code100("run ipam plugin", "no IPv4 address in IPAM result"));
        };
        if args.ifname.len() > 15 {
            release();
            return Err(code100(
                "create config",
                "IfName cannot be longer than 15 characters",
            ));
        }
        // The peer is created under CNI_IFNAME directly, so the temporary `c-` name is unused.
        let (host_name, _temp_name) = veth_names(ip);
        let (host_mac, container_mac) = macs(ip);
        let spec = VethSpec {
            ip,
            ip6,
            host_name,
            ifname: args.ifname.clone(),
            host_mac,
            container_mac,
            mtu: info.mtu,
            netns: args.netns.clone(),
        };
        if let Err((msg, e)) = veth::set_up(&spec) {
            release();
            return Err(code100(msg, e));
        }
        let ip6_text = ip6.map(|v| v.to_string());
        if let Err(e) = SilkStore::new(&c.datastore).add(
            &store_key(&args.netns),
            &ip.to_string(),
            ip6_text.as_deref(),
        ) {
            let _ = veth::tear_down(&args.netns, &args.ifname);
            release();
            return Err(code100("write container metadata", e));
        }
        silk_cni_skel::filelog::append(
            LOG_FILE,
            SOURCE,
            "add",
            serde_json::json!({"container_id": args.container_id, "ip": ip.to_string(), "ipv6": ip6_text, "netns": args.netns}),
        );
        let mut result_ips = vec![IpConfig {
            address: format!("{ip}/32"),
            gateway: Some(GATEWAY.to_string()),
            interface: Some(1),
        }];
        if let Some(v6) = ip6 {
            result_ips.push(IpConfig {
                address: format!("{v6}/128"),
                gateway: Some(GATEWAY6.to_string()),
                interface: Some(1),
            });
        }
        Ok(CniResult {
            interfaces: vec![
                Interface {
                    name: spec.host_name,
                    mac: spec.host_mac,
                    ..Default::default()
                },
                Interface {
                    name: spec.ifname,
                    mac: spec.container_mac,
                    sandbox: args.netns.clone(),
                    mtu: None,
                },
            ],
            ips: result_ips,
            // Only the IPv4 default route, as upstream: the IPv6 one is in the container only.
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some(GATEWAY.to_string()),
            }],
            dns: Default::default(),
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let c: Config = args.decode_config()?;
        if let Err(e) = ipam(&c).release(&args.container_id, &args.ifname) {
            silk_cni_skel::filelog::append(
                LOG_FILE,
                SOURCE,
                "ipam-release-failed",
                serde_json::json!({"error": e.to_string()}),
            );
        }
        if !args.netns.is_empty() {
            veth::tear_down(&args.netns, &args.ifname)
                .map_err(|e| code100("teardown failed", e))?;
            // Unlike upstream, the store entry goes even when the namespace is already gone, so
            // the silk-daemon drain does not wait on a container that no longer exists.
            if let Err(e) = SilkStore::new(&c.datastore).delete(&store_key(&args.netns)) {
                silk_cni_skel::filelog::append(
                    LOG_FILE,
                    SOURCE,
                    "store-delete-failed",
                    serde_json::json!({"error": e.to_string()}),
                );
            }
        }
        silk_cni_skel::filelog::append(
            LOG_FILE,
            SOURCE,
            "del",
            serde_json::json!({"container_id": args.container_id, "netns": args.netns}),
        );
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let prev = args
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::internal("CHECK: missing prevResult"))?;
        let Some(ip) = prev.first_ipv4() else {
            return Err(CniError::internal("CHECK: prevResult has no IPv4 address"));
        };
        // The IPv6 address of prevResult and the one recorded in the silk store, if any.
        let mut expected: Vec<IpAddr> = vec![ip.into()];
        expected.extend(prev.first_ipv6().map(IpAddr::from));
        let c: Config = args.decode_config()?;
        let stored = SilkStore::new(&c.datastore)
            .get(&store_key(&args.netns))
            .map_err(|e| CniError::internal(format!("CHECK: reading silk store: {e}")))?;
        if let Some(v6) = stored.and_then(|e| e.ipv6).filter(|v| !v.is_empty()) {
            let v6: IpAddr = v6.parse().map_err(|_| {
                CniError::internal(format!("CHECK: silk store has a bad ipv6 {v6}"))
            })?;
            if !expected.contains(&v6) {
                expected.push(v6);
            }
        }
        for ip in expected {
            match veth::has_address(&args.netns, &args.ifname, ip) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(CniError::internal(format!(
                        "CHECK: {} has no address {ip}",
                        args.ifname
                    )))
                }
                Err(e) => return Err(CniError::internal(format!("CHECK: {e}"))),
            }
        }
        Ok(())
    }

    /// GC: releases the addresses of attachments the runtime no longer has, deletes their host
    /// veth ends and drops their silk store entries. Goes on after a failure and reports all.
    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        let c: Config = args.decode_config()?;
        let valid = gc::valid_attachments(args)?;
        let released = ipam(&c)
            .release_unless(|id, ifname| gc::keeps(&valid, id, ifname))
            .map_err(|e| CniError::new(ErrorCode::IoFailure, "GC: IPAM sweep", e.to_string()))?;
        let mut problems = Vec::new();
        for (ip, _) in &released {
            if let IpAddr::V4(v4) = ip {
                let (host, _) = veth_names(*v4);
                if let Err(e) = veth::delete_host_end(&host) {
                    problems.push(format!("delete {host}: {e}"));
                }
            }
        }
        let gone: Vec<String> = released.iter().map(|(ip, _)| ip.to_string()).collect();
        let dropped = SilkStore::new(&c.datastore)
            .retain(|e| !gone.contains(&e.ip))
            .unwrap_or_else(|e| {
                problems.push(format!("silk store: {e}"));
                vec![]
            });
        silk_cni_skel::filelog::append(
            LOG_FILE,
            SOURCE,
            "gc",
            serde_json::json!({
                "released": released.iter().map(|(ip, id)| serde_json::json!({"ip": ip.to_string(), "container_id": id})).collect::<Vec<_>>(),
                "store_entries_dropped": dropped.len(),
                "problems": problems,
            }),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                ErrorCode::IoFailure,
                "GC left something behind",
                problems.join("; "),
            ))
        }
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        let c: Config = args.decode_config()?;
        c.net_info().map(|_| ()).map_err(|e| {
            CniError::new(
                silk_cni_skel::ErrorCode::NotAvailable,
                "silk-daemon not available",
                e.to_string(),
            )
        })
    }
}
