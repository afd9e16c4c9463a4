//! The lab's demo: apps placed on cells, two spaces, c2c policies and security groups, and what
//! they say the connectivity should be. Pure: no I/O.

use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

use crate::policy_server::data::{AsgRule, FilePolicy, FileRules, FileSecurityGroup, PolicyFile};

/// The port every app listens on (Diego's default `PORT`).
pub const APP_PORT: u16 = 8080;
/// The "outside" host on the underlay segment, reachable only through ASGs.
pub const OUTSIDE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 200), 80);
/// The organisation every demo space belongs to.
pub const ORG_GUID: &str = "0a900000-1ab0-4000-8000-000000000001";

const NAMES: [&str; 8] = [
    "frontend", "backend", "orders", "payments", "catalog", "search", "users", "mailer",
];

/// One space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    pub name: String,
    pub guid: String,
}

/// One app with one instance (one container).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    pub guid: String,
    pub space: Space,
    /// The cell its container runs on.
    pub cell: usize,
    pub port: u16,
}

/// The demo set for `cells` cells and `apps` apps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demo {
    pub apps: Vec<App>,
    pub spaces: Vec<Space>,
}

/// Apps take the names above, then `<name>-<k>`; app `i` runs on cell `i mod cells`, in space
/// `prod` when `i` is even and `dev` when odd.
pub fn demo(cells: usize, apps: usize) -> Demo {
    let spaces = vec![
        Space {
            name: "prod".into(),
            guid: "5ace0000-1ab0-4000-8000-000000000001".into(),
        },
        Space {
            name: "dev".into(),
            guid: "5ace0000-1ab0-4000-8000-000000000002".into(),
        },
    ];
    let apps = (0..apps)
        .map(|i| {
            let base = NAMES[i % NAMES.len()];
            let name = match i / NAMES.len() {
                0 => base.to_string(),
                k => format!("{base}-{}", k + 1),
            };
            App {
                name,
                guid: format!("a{i:07x}-1ab0-4000-8000-{i:012x}"),
                space: spaces[i % 2].clone(),
                cell: i % cells.max(1),
                port: APP_PORT,
            }
        })
        .collect();
    Demo { apps, spaces }
}

/// The demo's policies and groups: every app whose index is not 2 mod 3 may reach the next app
/// on its port; space `prod` may reach the outside host on tcp 80 (group `outside-web`).
pub fn demo_file(d: &Demo) -> PolicyFile {
    let n = d.apps.len();
    let policies = (0..n)
        .filter(|i| i % 3 != 2 && n > 1)
        .map(|i| {
            let (s, t) = (&d.apps[i], &d.apps[(i + 1) % n]);
            FilePolicy::new(&s.guid, &t.guid, "tcp", t.port.into(), t.port.into())
        })
        .collect();
    let security_groups = vec![FileSecurityGroup {
        guid: "6a4c0000-1ab0-4000-8000-000000000001".into(),
        name: "outside-web".into(),
        rules: FileRules::Rules(vec![AsgRule::new(
            "tcp",
            &OUTSIDE.ip().to_string(),
            &OUTSIDE.port().to_string(),
        )]),
        staging_default: false,
        running_default: false,
        staging_space_guids: vec![],
        running_space_guids: vec![d.spaces[0].guid.clone()],
    }];
    PolicyFile {
        policies,
        security_groups,
    }
}

/// Whether `file` lets `src` reach `dst` on tcp `dst.port`.
pub fn policy_allows(file: &PolicyFile, src: &App, dst: &App) -> bool {
    file.policies.iter().any(|p| {
        p.source.id == src.guid
            && p.destination.id == dst.guid
            && p.destination.protocol == "tcp"
            && (p.destination.ports.start..=p.destination.ports.end).contains(&u32::from(dst.port))
    })
}

/// Whether the running security groups of `app`'s space let it reach `to` over tcp.
pub fn asg_allows(file: &PolicyFile, app: &App, to: SocketAddrV4) -> bool {
    file.security_groups
        .iter()
        .filter(|g| g.running_default || g.running_space_guids.contains(&app.space.guid))
        .any(|g| match &g.rules {
            FileRules::Rules(rules) => rules.iter().any(|r| rule_allows(r, to)),
            FileRules::Raw(_) => false,
        })
}

/// Whether one Cloud Controller rule admits tcp to `to` (protocol `tcp` or `all`; destination a
/// comma-separated list of IPs, CIDRs and `a-b` ranges; ports `N` or `N-M`, comma-separated).
pub fn rule_allows(r: &AsgRule, to: SocketAddrV4) -> bool {
    let proto = matches!(r.protocol.as_str(), "tcp" | "all");
    let dest = r
        .destination
        .split(',')
        .any(|d| dest_contains(d.trim(), *to.ip()));
    let port = r.protocol == "all"
        || r.ports.split(',').any(|p| {
            let p = p.trim();
            match p.split_once('-') {
                Some((a, b)) => match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                    (Ok(a), Ok(b)) => (a..=b).contains(&to.port()),
                    _ => false,
                },
                None => p.parse::<u16>() == Ok(to.port()),
            }
        });
    proto && dest && port
}

fn dest_contains(d: &str, ip: Ipv4Addr) -> bool {
    let ip = u32::from(ip);
    if let Some((net, len)) = d.split_once('/') {
        let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
            return false;
        };
        if len > 32 {
            return false;
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        return ip & mask == u32::from(net) & mask;
    }
    if let Some((a, b)) = d.split_once('-') {
        return match (a.parse::<Ipv4Addr>(), b.parse::<Ipv4Addr>()) {
            (Ok(a), Ok(b)) => (u32::from(a)..=u32::from(b)).contains(&ip),
            _ => false,
        };
    }
    d.parse::<Ipv4Addr>().map(u32::from) == Ok(ip)
}

/// The app called `name`.
pub fn app<'a>(d: &'a Demo, name: &str) -> Option<&'a App> {
    d.apps.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_places_apps_round_robin_in_two_spaces() {
        let d = demo(3, 10);
        let names: Vec<_> = d.apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(&names[..3], ["frontend", "backend", "orders"]);
        assert_eq!(names[8], "frontend-2");
        assert_eq!(
            d.apps.iter().map(|a| a.cell).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
        );
        assert_eq!(d.apps[0].space.name, "prod");
        assert_eq!(d.apps[1].space.name, "dev");
        let mut guids: Vec<_> = d.apps.iter().map(|a| &a.guid).collect();
        guids.dedup();
        assert_eq!(guids.len(), 10);
    }

    #[test]
    fn demo_policies_chain_apps_and_the_expected_matrix_follows_them() {
        let d = demo(3, 6);
        let f = demo_file(&d);
        let allowed: Vec<(usize, usize)> = (0..6)
            .flat_map(|i| (0..6).map(move |j| (i, j)))
            .filter(|&(i, j)| policy_allows(&f, &d.apps[i], &d.apps[j]))
            .collect();
        assert_eq!(allowed, [(0, 1), (1, 2), (3, 4), (4, 5)]);
        let outside: Vec<bool> = d.apps.iter().map(|a| asg_allows(&f, a, OUTSIDE)).collect();
        assert_eq!(outside, [true, false, true, false, true, false]);
    }

    #[test]
    fn rules_match_destinations_ports_and_protocols() {
        let to = OUTSIDE;
        let r = |p: &str, d: &str, ports: &str| AsgRule::new(p, d, ports);
        assert!(rule_allows(&r("tcp", "192.0.2.200", "80"), to));
        assert!(rule_allows(&r("tcp", "192.0.2.0/24", "79-81"), to));
        assert!(rule_allows(
            &r("tcp", "10.0.0.1, 192.0.2.190-192.0.2.210", "443, 80"),
            to
        ));
        assert!(rule_allows(&r("all", "0.0.0.0/0", ""), to));
        assert!(!rule_allows(&r("udp", "192.0.2.200", "80"), to));
        assert!(!rule_allows(&r("tcp", "192.0.2.201", "80"), to));
        assert!(!rule_allows(&r("tcp", "192.0.2.200", "81"), to));
        assert!(!rule_allows(&r("tcp", "192.0.2.200/33", "80"), to));
    }
}
