//! The rule half of an ADD, after the delegate (cni.md §4.2 steps 4-12), and the handover
//! between static and dynamic ASGs: which of the two owns the container's egress is decided by
//! vxlan-policy-agent's answer to `/force-asgs-for-container` for this ADD. The answer the cell
//! saw last is kept as a hint for what the first restore writes, so the usual ADD is one
//! restore in either mode; the hint never decides what stays.
//!
//! 1. One restore writes every chain. `netout--…` gets the static rules when the hint says
//!    static, else it is closed: only the default tail (the `DENY_` log line with ASG logging,
//!    then REJECT). The container's process does not run yet, so nothing uses either.
//! 2. The metadata store entry, then `/force-policy-poll-cycle` (c2c rules for the new IP).
//! 3. `/force-asgs-for-container`:
//!    - 200: dynamic ASGs; the agent has put its `asg-…` jump first in `netout--…` and owns the
//!      egress (cni.md §4.15 example B). If the first restore wrote static rules, the chain is
//!      read back and reduced, under the lock, to the agent's jump and REJECT, or to the closed
//!      tail when the agent wrote nothing for this container: no static ACCEPT outlives a 200.
//!    - 405: static ASGs (agent configured with `enable_asg_syncing: false`); if the first
//!      restore left the chain closed, one more restore writes it whole with Garden's
//!      `netOutRules` (cni.md §4.6).
//!    - anything else fails the ADD (rolled back by the caller).

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use serde_json::Value;
use silk_cni_skel::http::Response;
use silk_cni_skel::CniError;
use silk_dataplane::datastore::MetadataStore;
use silk_dataplane::iptables::{Family, Iptables};

use crate::netrules::{self, asg, Container, RuleOptions};

fn err(e: impl std::fmt::Display) -> CniError {
    CniError::internal(e.to_string())
}

/// vxlan-policy-agent's local endpoints.
pub trait PolicyAgent {
    /// `GET http://<force_poll_address><path>`.
    fn get(&self, path: &str) -> Result<Response, CniError>;
}

/// The agent over plain HTTP on the cell, with a bound on each call (upstream had none).
pub struct HttpAgent<'a> {
    pub addr: &'a str,
    pub timeout: Duration,
}

impl PolicyAgent for HttpAgent<'_> {
    fn get(&self, path: &str) -> Result<Response, CniError> {
        silk_cni_skel::http::get(self.addr, path, self.timeout).map_err(err)
    }
}

/// Who writes the container's ASG rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsgMode {
    /// The wrapper, from Garden's `netOutRules` (the agent answered 405).
    Static,
    /// vxlan-policy-agent, in its `asg-…` chain (the agent answered 200).
    Dynamic,
}

/// The mode the agent's answer to `/force-asgs-for-container` means.
pub fn asg_mode(r: &Response) -> Result<AsgMode, CniError> {
    match r.status {
        200 => Ok(AsgMode::Dynamic),
        405 => Ok(AsgMode::Static),
        s => Err(err(format!(
            "asg sync returned {s} with message: {}",
            r.body
        ))),
    }
}

/// What the ADD wires, all validated.
pub struct AddInput<'a> {
    pub opts: &'a RuleOptions,
    pub container: &'a Container,
    /// The container's IPv6 address when IPv6 is on.
    pub ipv6: Option<Ipv6Addr>,
    pub net_out_rules: &'a [asg::NetOutRule],
    /// The garden metadata for the store (`Value::Null` when there is none).
    pub metadata: Value,
}

fn apply(ipt: &dyn Iptables, family: Family, payload: &str) -> Result<(), CniError> {
    let _lock = ipt.lock().map_err(err)?;
    ipt.restore(family, payload)
        .map_err(|e| err(format!("bulk insert: {e}")))
}

/// Steps 1-3 above, then the IPv6 chains (static rules only in static mode). `hint` is the
/// mode of the cell's last answer (`None`: none seen, written closed). Returns the mode the
/// agent chose. On error the caller rolls back what was written.
pub fn wire(
    ipt: &dyn Iptables,
    agent: &dyn PolicyAgent,
    store: &MetadataStore,
    input: AddInput<'_>,
    hint: Option<AsgMode>,
) -> Result<AsgMode, CniError> {
    let AddInput {
        opts,
        container: c4,
        ipv6,
        net_out_rules,
        metadata,
    } = input;
    let handle = &c4.handle;
    let conv = asg::convert(net_out_rules, asg::Family::V4, opts.asg_logging).map_err(err)?;
    let first_static = hint == Some(AsgMode::Static);
    let first = first_static.then_some(conv.rules.as_slice());
    let v4 = netrules::plan_add(opts, c4, first).map_err(err)?;
    apply(ipt, Family::V4, &v4.render())?;
    let v6_text = ipv6.map(|a| a.to_string());
    store
        .add(handle, &c4.ip.to_string(), v6_text.as_deref(), metadata)
        .map_err(|e| err(format!("store add: {e}")))?;
    let r = agent.get("/force-policy-poll-cycle")?;
    if r.status != 200 {
        return Err(err(format!(
            "vpa response code: {} with message: {}",
            r.status, r.body
        )));
    }
    let mode = asg_mode(&agent.get(&format!("/force-asgs-for-container?container={handle}"))?)?;
    match (mode, first_static) {
        (AsgMode::Static, true) | (AsgMode::Dynamic, false) => {}
        (AsgMode::Static, false) => {
            let payload = netrules::plan_static_netout(opts, c4, &conv.rules);
            apply(ipt, Family::V4, &payload.render())?;
        }
        (AsgMode::Dynamic, true) => reduce_netout(ipt, Family::V4, opts, c4)?,
    }
    if mode == AsgMode::Static {
        for d in &conv.dropped {
            eprintln!("{d}");
        }
    }
    if let Some(ip6) = ipv6 {
        let c6 = Container {
            ip: IpAddr::V6(ip6),
            ..c4.clone()
        };
        let asgs = match mode {
            AsgMode::Static => Some(
                asg::convert(net_out_rules, asg::Family::V6, opts.asg_logging)
                    .map_err(err)?
                    .rules,
            ),
            AsgMode::Dynamic => None,
        };
        apply(
            ipt,
            Family::V6,
            &netrules::plan_add_v6(opts, &c6, asgs.as_deref()).render(),
        )?;
    }
    Ok(mode)
}

/// Reads the filter table and rewrites the netout chain of `c` as dynamic mode allows
/// ([`netrules::plan_reduce_netout`]), under one lock hold (the agent holds the same lock from
/// its read to its write).
fn reduce_netout(
    ipt: &dyn Iptables,
    family: Family,
    opts: &RuleOptions,
    c: &Container,
) -> Result<(), CniError> {
    let _lock = ipt.lock().map_err(err)?;
    let saved = ipt
        .save(family, Some(silk_dataplane::iptables::Table::Filter))
        .map_err(err)?;
    if let Some(p) = netrules::plan_reduce_netout(opts, c, &saved) {
        ipt.restore(family, &p.render())
            .map_err(|e| err(format!("bulk insert: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use silk_dataplane::iptables::RecordingIptables;

    use super::*;
    use crate::config::WrapperConfig;

    const HANDLE: &str = "7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e";
    const NETOUT: &str = "netout--7b8c9d0e-1f2a-4b3c-8";

    /// Answers from a script, recording the paths asked.
    struct ScriptedAgent {
        answers: RefCell<VecDeque<(u16, &'static str)>>,
        asked: RefCell<Vec<String>>,
    }

    impl ScriptedAgent {
        fn new(answers: &[(u16, &'static str)]) -> Self {
            ScriptedAgent {
                answers: RefCell::new(answers.iter().copied().collect()),
                asked: RefCell::new(Vec::new()),
            }
        }
    }

    impl PolicyAgent for ScriptedAgent {
        fn get(&self, path: &str) -> Result<Response, CniError> {
            self.asked.borrow_mut().push(path.to_string());
            let (status, body) = self
                .answers
                .borrow_mut()
                .pop_front()
                .expect("more agent calls than scripted");
            Ok(Response {
                status,
                body: body.to_string(),
            })
        }
    }

    fn config(asg_logging: bool) -> WrapperConfig {
        let text = serde_json::json!({
            "cniVersion": "1.0.0", "name": "cni-wrapper", "type": "cni-wrapper-plugin",
            "datastore": "/unused/store.json", "iptables_lock_file": "/unused/iptables.lock",
            "instance_address": "10.0.16.15", "underlay_ips": ["10.0.16.15"],
            "ingress_tag": "ffff0000", "vtep_name": "silk-vtep",
            "iptables_denied_logs_per_sec": 1, "iptables_accepted_udp_logs_per_sec": 100,
            "iptables_asg_logging": asg_logging,
            "policy_agent_force_poll_address": "127.0.0.1:8722",
            "dns_servers": ["169.254.0.53"],
            "outbound_connections": {"limit": false, "logging": false, "burst": 1000, "rate_per_sec": 100},
            "delegate": {"cniVersion": "1.0.0", "name": "silk", "type": "silk-cni"},
            "runtimeConfig": {"netOutRules": [
                {"protocol": 1, "networks": [{"start": "10.10.0.0", "end": "10.10.255.255"}], "ports": [{"start": 443, "end": 443}]}
            ]}
        });
        WrapperConfig::parse(text.to_string().as_bytes()).unwrap()
    }

    struct Run {
        result: Result<AsgMode, CniError>,
        payloads: Vec<(Family, String)>,
        asked: Vec<String>,
    }

    fn run(asg_logging: bool, answers: &[(u16, &'static str)]) -> Run {
        run_with(asg_logging, answers, None, "")
    }

    /// As [`run`], with a hint and what `iptables-save` answers.
    fn run_with(
        asg_logging: bool,
        answers: &[(u16, &'static str)],
        hint: Option<AsgMode>,
        saved: &str,
    ) -> Run {
        let cfg = config(asg_logging);
        let opts = RuleOptions::from_config(&cfg).unwrap();
        let c = Container {
            handle: HANDLE.into(),
            ip: "10.255.30.4".parse().unwrap(),
            underlay_ifs: vec!["eth0".into()],
            port_mappings: vec![],
            workload: "staging".into(),
            masq_exclude: Some("10.255.0.0/16".into()),
        };
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(dir.path().join("store.json"), None);
        let ipt = RecordingIptables::default();
        *ipt.saved.lock().unwrap() = saved.to_string();
        let agent = ScriptedAgent::new(answers);
        let input = AddInput {
            opts: &opts,
            container: &c,
            ipv6: None,
            net_out_rules: &cfg.runtime_config.net_out_rules,
            metadata: Value::Null,
        };
        let result = wire(&ipt, &agent, &store, input, hint);
        let asked = agent.asked.borrow().clone();
        Run {
            result,
            payloads: ipt.payloads(),
            asked,
        }
    }

    /// The `-A <netout> …` lines of a payload.
    fn netout_lines(payload: &str) -> Vec<&str> {
        payload
            .lines()
            .filter(|l| l.starts_with(&format!("-A {NETOUT} ")))
            .collect()
    }

    const REJECT: &str =
        "-A netout--7b8c9d0e-1f2a-4b3c-8 -j REJECT --reject-with icmp-port-unreachable";
    const DENY_LOG: &str = "-A netout--7b8c9d0e-1f2a-4b3c-8 -m limit --limit 1/sec --limit-burst 1 -j LOG --log-prefix \"DENY_7b8c9d0e-1f2a-4b3c-8d4e \"";

    #[test]
    fn dynamic_answer_leaves_netout_closed_and_writes_nothing_more() {
        let r = run(false, &[(200, ""), (200, "updated")]);
        assert_eq!(r.result.unwrap(), AsgMode::Dynamic);
        assert_eq!(r.payloads.len(), 1, "one restore in dynamic mode");
        assert_eq!(netout_lines(&r.payloads[0].1), [REJECT]);
        assert_eq!(
            r.asked,
            [
                "/force-policy-poll-cycle".to_string(),
                format!("/force-asgs-for-container?container={HANDLE}")
            ]
        );
    }

    #[test]
    fn dynamic_answer_with_asg_logging_keeps_the_deny_log_line() {
        let r = run(true, &[(200, ""), (200, "updated")]);
        assert_eq!(r.payloads.len(), 1);
        assert_eq!(netout_lines(&r.payloads[0].1), [DENY_LOG, REJECT]);
    }

    #[test]
    fn static_answer_rewrites_netout_whole_after_a_closed_first_restore() {
        let r = run(
            false,
            &[
                (200, ""),
                (405, "ASG syncing has been disabled administratively"),
            ],
        );
        assert_eq!(r.result.unwrap(), AsgMode::Static);
        assert_eq!(r.payloads.len(), 2);
        assert_eq!(netout_lines(&r.payloads[0].1), [REJECT]);
        let second = &r.payloads[1].1;
        // The chain is declared (flushed and refilled in the same commit) and nothing else is
        // touched.
        assert!(second.contains(&format!(":{NETOUT} - [0:0]")), "{second}");
        assert_eq!(
            netout_lines(second),
            [
                "-A netout--7b8c9d0e-1f2a-4b3c-8 -m state --state RELATED,ESTABLISHED -j ACCEPT",
                "-A netout--7b8c9d0e-1f2a-4b3c-8 -p tcp -m state --state INVALID -j DROP",
                "-A netout--7b8c9d0e-1f2a-4b3c-8 -p tcp -m iprange --dst-range 10.10.0.0-10.10.255.255 -m tcp --dport 443 -j ACCEPT",
                REJECT,
            ]
        );
        assert_eq!(
            second.lines().filter(|l| l.starts_with("-A ")).count(),
            4,
            "{second}"
        );
    }

    #[test]
    fn other_answers_fail_the_add_without_static_rules() {
        let r = run(false, &[(200, ""), (500, "failed to update asgs")]);
        assert_eq!(
            r.result.unwrap_err().msg,
            "asg sync returned 500 with message: failed to update asgs"
        );
        assert_eq!(r.payloads.len(), 1);
        assert_eq!(netout_lines(&r.payloads[0].1), [REJECT]);

        let r = run(false, &[(503, "busy")]);
        assert_eq!(
            r.result.unwrap_err().msg,
            "vpa response code: 503 with message: busy"
        );
        assert_eq!(r.asked, ["/force-policy-poll-cycle"]);
    }

    const STATIC_ACCEPT: &str = "-A netout--7b8c9d0e-1f2a-4b3c-8 -p tcp -m iprange --dst-range 10.10.0.0-10.10.255.255 -m tcp --dport 443 -j ACCEPT";

    #[test]
    fn static_hint_and_405_is_one_restore_with_the_static_rules() {
        let r = run_with(
            false,
            &[(200, ""), (405, "disabled")],
            Some(AsgMode::Static),
            "",
        );
        assert_eq!(r.result.unwrap(), AsgMode::Static);
        assert_eq!(r.payloads.len(), 1);
        assert!(netout_lines(&r.payloads[0].1).contains(&STATIC_ACCEPT));
    }

    #[test]
    fn static_hint_then_200_reduces_netout_to_the_closed_tail() {
        // The agent answered 200 but wrote nothing for the container (no space): what the first
        // restore wrote is read back and closed.
        let saved = format!(
            "*filter\n:{NETOUT} - [0:0]\n\
             -A {NETOUT} -m state --state RELATED,ESTABLISHED -j ACCEPT\n\
             -A {NETOUT} -p tcp -m state --state INVALID -j DROP\n\
             {STATIC_ACCEPT}\n{REJECT}\nCOMMIT\n"
        );
        let r = run_with(
            false,
            &[(200, ""), (200, "updated")],
            Some(AsgMode::Static),
            &saved,
        );
        assert_eq!(r.result.unwrap(), AsgMode::Dynamic);
        assert_eq!(r.payloads.len(), 2);
        assert!(netout_lines(&r.payloads[0].1).contains(&STATIC_ACCEPT));
        assert_eq!(netout_lines(&r.payloads[1].1), [REJECT]);
        assert!(r.payloads[1].1.contains(&format!(":{NETOUT} - [0:0]")));
    }

    #[test]
    fn static_hint_then_200_keeps_the_agents_jump_only() {
        // An agent that put its jump first but left the rest (as upstream's insert at 1 does
        // before its clean-up).
        let asg = "asg-7b8c9d0e1f2a4b3c8d4e";
        let saved = format!(
            "*filter\n:{NETOUT} - [0:0]\n:{asg} - [0:0]\n\
             -A {NETOUT} -j {asg}\n{STATIC_ACCEPT}\n{REJECT}\nCOMMIT\n"
        );
        let r = run_with(
            true,
            &[(200, ""), (200, "updated")],
            Some(AsgMode::Static),
            &saved,
        );
        assert_eq!(r.payloads.len(), 2);
        assert_eq!(
            netout_lines(&r.payloads[1].1),
            [format!("-A {NETOUT} -j {asg}").as_str(), REJECT]
        );
        // Already reduced by the agent: nothing more is written.
        let saved = format!("*filter\n:{NETOUT} - [0:0]\n-A {NETOUT} -j {asg}\n{REJECT}\nCOMMIT\n");
        let r = run_with(
            true,
            &[(200, ""), (200, "updated")],
            Some(AsgMode::Static),
            &saved,
        );
        assert_eq!(r.payloads.len(), 1);
    }
}
