//! When the periodic ASG cycle may skip the table read and the plan (pure).
//!
//! After a cycle whose outcome is known (the plan applied, no container failed, and the
//! backend's rule-set generation moved only by the cycle's own restores), the cycle remembers
//! what the kernel then holds: the generation, the inputs it planned from (security groups and
//! metadata entries) and, per family, the `asg-` rules of every container it planned. The next
//! cycle then:
//!
//! - skips the read and the plan when the generation and the inputs are unchanged;
//! - plans only the containers whose inputs changed when the generation is unchanged, against
//!   the remembered chains of those containers instead of a full `iptables-save`;
//! - reads and plans everything otherwise: the generation moved (someone else, cni-wrapper-plugin
//!   or another agent loop, changed a table), the backend has no generation (iptables-legacy),
//!   a container came or went, or a changed container is not remembered.
//!
//! The options are fixed for the life of the cycle, so they are not part of the inputs.

use std::collections::BTreeMap;

use silk_core::asg::SecurityGroup;
use silk_dataplane::datastore::Entries;
use silk_dataplane::iptables::{ChainName, Family};

use super::planner::{applicable, asg_containers, parent_rules, AsgContainer};

/// What the kernel holds after the last verified cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// The backend generation the memory is valid for.
    pub generation: u64,
    pub groups: Vec<SecurityGroup>,
    pub entries: Entries,
    /// Per family, the `asg-` rules of every container the cycle planned (its `netout--`
    /// chain holds the jump and the REJECT).
    pub chains: BTreeMap<FamilyKey, BTreeMap<String, Vec<String>>>,
}

/// [`Family`] as a map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FamilyKey {
    V4,
    V6,
}

impl From<Family> for FamilyKey {
    fn from(f: Family) -> Self {
        match f {
            Family::V4 => FamilyKey::V4,
            Family::V6 => FamilyKey::V6,
        }
    }
}

/// What the cycle does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changed: no read, no plan, no write.
    Skip,
    /// Only these containers' inputs changed and the kernel is known: plan them alone against
    /// their remembered chains.
    Containers(Vec<String>),
    /// Read the table and plan every container with the orphan sweep.
    Full,
}

/// The decision for a cycle with `groups` and `entries`, the backend at `generation`.
pub fn decide(
    last: Option<&Verified>,
    generation: Option<u64>,
    groups: &[SecurityGroup],
    entries: &Entries,
    families: &[Family],
) -> Decision {
    let Some(last) = last else {
        return Decision::Full;
    };
    if generation != Some(last.generation) {
        return Decision::Full;
    }
    if !entries.keys().eq(last.entries.keys()) {
        return Decision::Full;
    }
    let groups_changed = last.groups != groups;
    if !groups_changed && last.entries == *entries {
        return Decision::Skip;
    }
    let old: BTreeMap<String, AsgContainer> = asg_containers(&last.entries)
        .into_iter()
        .map(|c| (c.handle.clone(), c))
        .collect();
    let new: BTreeMap<String, AsgContainer> = asg_containers(entries)
        .into_iter()
        .map(|c| (c.handle.clone(), c))
        .collect();
    let mut changed = Vec::new();
    for (handle, entry) in entries {
        let entry_changed = last.entries.get(handle) != Some(entry);
        let (o, n) = (old.get(handle), new.get(handle));
        let groups_matter = groups_changed
            && n.is_some_and(|n| {
                let staging = n.workload == "staging";
                !applicable(&last.groups, &n.space_id, staging).eq(applicable(
                    groups,
                    &n.space_id,
                    staging,
                ))
            });
        if !entry_changed && !groups_matter {
            continue;
        }
        // A container that joins or leaves ASG syncing, or gains or loses IPv6, changes
        // which chains exist: a full cycle.
        let (Some(o), Some(n)) = (o, n) else {
            return Decision::Full;
        };
        if o.ipv6 != n.ipv6 {
            return Decision::Full;
        }
        for &family in families {
            if family == Family::V6 && !n.ipv6 {
                continue;
            }
            let known = last
                .chains
                .get(&family.into())
                .is_some_and(|c| c.contains_key(handle));
            if !known {
                return Decision::Full;
            }
        }
        changed.push(handle.clone());
    }
    if changed.is_empty() {
        Decision::Skip
    } else {
        Decision::Containers(changed)
    }
}

/// The filter table as the kernel holds it for `handles` after the verified cycle, in
/// `iptables-save` form: the input of the planner for those containers alone.
pub fn remembered_table(
    chains: &BTreeMap<String, Vec<String>>,
    handles: &[String],
    family: Family,
) -> String {
    let mut declare = String::from("*filter\n");
    let mut rules = String::new();
    for h in handles {
        let Some(asg_rules) = chains.get(h) else {
            continue;
        };
        let asg = ChainName::asg(h);
        let netout = ChainName::netout(h);
        declare.push_str(&format!(":{netout} - [0:0]\n:{asg} - [0:0]\n"));
        for r in parent_rules(&asg, family) {
            rules.push_str(&format!("-A {netout} {r}\n"));
        }
        for r in asg_rules {
            rules.push_str(&format!("-A {asg} {r}\n"));
        }
    }
    declare.push_str(&rules);
    declare.push_str("COMMIT\n");
    declare
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use silk_dataplane::datastore::Container;

    fn entry(handle: &str, space: &str, workload: &str, ipv6: bool) -> Container {
        serde_json::from_value(json!({
            "handle": handle,
            "ip": "10.255.1.2",
            "ipv6": if ipv6 { Some("fd00::2") } else { None },
            "metadata": {"policy_group_id": "g", "space_id": space, "container_workload": workload},
        }))
        .unwrap()
    }

    fn entries(list: &[(&str, &str)]) -> Entries {
        list.iter()
            .map(|(h, s)| (h.to_string(), entry(h, s, "app", false)))
            .collect()
    }

    fn group(guid: &str, spaces: &[&str], rules: &str) -> SecurityGroup {
        serde_json::from_value(json!({
            "guid": guid, "name": guid, "rules": rules,
            "running_space_guids": spaces, "staging_space_guids": [],
            "running_default": false, "staging_default": false,
        }))
        .unwrap()
    }

    fn verified(groups: Vec<SecurityGroup>, entries: Entries) -> Verified {
        let chains: BTreeMap<String, Vec<String>> = entries
            .keys()
            .map(|h| (h.clone(), vec!["-j ACCEPT".to_string()]))
            .collect();
        Verified {
            generation: 7,
            groups,
            entries,
            chains: [(FamilyKey::V4, chains)].into_iter().collect(),
        }
    }

    const V4: &[Family] = &[Family::V4];

    #[test]
    fn decisions() {
        let g1 = vec![group("a", &["s1"], "[]"), group("b", &["s2"], "[]")];
        let e = entries(&[("h1", "s1"), ("h2", "s2"), ("h3", "s2")]);
        let last = verified(g1.clone(), e.clone());
        let mut g_changed = g1.clone();
        g_changed[0].rules = r#"[{"protocol":"all","destination":"0.0.0.0/0"}]"#.into();
        let mut e_moved = e.clone();
        e_moved.insert("h3".into(), entry("h3", "s1", "app", false));
        let mut e_added = e.clone();
        e_added.insert("h4".into(), entry("h4", "s1", "app", false));
        let mut e_v6 = e.clone();
        e_v6.insert("h2".into(), entry("h2", "s2", "app", true));
        let mut e_left = e.clone();
        e_left.insert(
            "h2".into(),
            serde_json::from_value(json!({"handle": "h2", "ip": "10.255.1.3", "metadata": {}}))
                .unwrap(),
        );
        let mut forgotten = last.clone();
        forgotten
            .chains
            .get_mut(&FamilyKey::V4)
            .unwrap()
            .remove("h1");
        let g_other = [g1[0].clone(), g1[1].clone(), group("c", &["s9"], "[]")];
        use Decision::*;
        type Case<'a> = (
            &'a str,
            Option<&'a Verified>,
            Option<u64>,
            &'a [SecurityGroup],
            &'a Entries,
            Decision,
        );
        let cases: Vec<Case<'_>> = vec![
            ("nothing verified yet", None, Some(7), &g1, &e, Full),
            (
                "no generation (iptables-legacy)",
                Some(&last),
                None,
                &g1,
                &e,
                Full,
            ),
            (
                "someone else changed a table",
                Some(&last),
                Some(8),
                &g1,
                &e,
                Full,
            ),
            ("nothing changed", Some(&last), Some(7), &g1, &e, Skip),
            (
                "a group of s1 changed",
                Some(&last),
                Some(7),
                &g_changed,
                &e,
                Containers(vec!["h1".into()]),
            ),
            (
                "a container moved space",
                Some(&last),
                Some(7),
                &g1,
                &e_moved,
                Containers(vec!["h3".into()]),
            ),
            (
                "a container came",
                Some(&last),
                Some(7),
                &g1,
                &e_added,
                Full,
            ),
            (
                "a container left ASG syncing",
                Some(&last),
                Some(7),
                &g1,
                &e_left,
                Full,
            ),
            (
                "a container gained IPv6",
                Some(&last),
                Some(7),
                &g1,
                &e_v6,
                Full,
            ),
            (
                "a changed container is not remembered",
                Some(&forgotten),
                Some(7),
                &g_changed,
                &e,
                Full,
            ),
            (
                "a group change for no local space",
                Some(&last),
                Some(7),
                &g_other,
                &e,
                Skip,
            ),
        ];
        for (name, last, generation, groups, entries, want) in cases {
            assert_eq!(
                decide(last, generation, groups, entries, V4),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn an_ipv6_container_must_be_remembered_in_both_families() {
        let mut e = entries(&[("h1", "s1")]);
        e.insert("h1".into(), entry("h1", "s1", "app", true));
        let last = verified(vec![], e.clone());
        let mut moved = e.clone();
        moved.insert("h1".into(), entry("h1", "s2", "app", true));
        let both = &[Family::V4, Family::V6];
        assert_eq!(
            decide(Some(&last), Some(7), &[], &moved, both),
            Decision::Full
        );
        assert_eq!(
            decide(Some(&last), Some(7), &[], &moved, V4),
            Decision::Containers(vec!["h1".into()])
        );
    }

    #[test]
    fn the_remembered_table_holds_the_chains_of_the_handles_asked() {
        let chains: BTreeMap<String, Vec<String>> = [
            (
                "h1".to_string(),
                vec!["-d 10.0.0.0/8 -j ACCEPT".to_string()],
            ),
            ("h2".to_string(), vec!["-j ACCEPT".to_string()]),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            remembered_table(&chains, &["h1".into(), "gone".into()], Family::V4),
            "*filter\n:netout--h1 - [0:0]\n:asg-h1 - [0:0]\n-A netout--h1 -j asg-h1\n\
             -A netout--h1 -j REJECT --reject-with icmp-port-unreachable\n\
             -A asg-h1 -d 10.0.0.0/8 -j ACCEPT\nCOMMIT\n"
        );
    }
}
