//! Applying c2c rules (policy contract §3.6) against the kernel's actual chains, without a
//! window of denial, in one `iptables-restore --noflush` under the shared lock.
//!
//! The desired state is a [`C2cPlan`]: the main chain `vpa--<µs>` (jumped from `FORWARD`
//! position 1) and one `vpa-d-<group>` chain per local destination group. The actual state is
//! read from `iptables-save -t filter` ([`Actual`]). [`plan_kernel`] compares the two chain
//! by chain and writes only what differs:
//!
//! ```text
//! *filter
//! :vpa-d-<changed group> - [0:0]      flush a chain whose rules differ ...
//! -A vpa-d-<changed group> <rule>...  ... and refill it
//! :vpa-d-<gone group> - [0:0]         flush a chain no longer wanted
//! -D FORWARD -j vpa--<other>          drop jumps that are not ours or not first
//! -I FORWARD 1 -j vpa--<main>         (only when the jump is not already first and alone)
//! -X vpa-d-<gone group>               remove it
//! COMMIT
//! ```
//!
//! The kernel swaps the table at COMMIT (one nf_tables transaction, or one table replace with
//! iptables-legacy): packets see the old rules or the new ones, never a flushed chain, and a
//! payload that fails changes nothing. A policy change therefore rewrites one group's chain,
//! not the whole rule set; a chain flushed or deleted by someone else, or a removed jump, is
//! rewritten at the next cycle because the actual state no longer equals the desired one.
//!
//! Reading the table is the expensive part at scale (iptables-nft prints about ten thousand
//! rules a second). [`Enforcer`] keeps the actual state it last read or wrote together with
//! the backend's generation ([`Iptables::generation`], the nf_tables generation) and reads the
//! table again only when that number moved, i.e. when anything at all changed the rule set.

use std::collections::BTreeMap;

use silk_dataplane::iptables::{
    ChainName, ChainNameError, Family, Iptables, IptablesError, Payload, Rule, SavedTable, Table,
};

use crate::planner::{C2cPlan, GROUP_CHAIN_PREFIX};

pub const CHAIN_PREFIX: &str = "vpa--";

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("iptables: {0}")]
    Iptables(#[from] IptablesError),
    #[error("chain name: {0}")]
    Chain(#[from] ChainNameError),
}

/// The timestamp of a `vpa--<µs>` chain name (10 to 16 digits, as upstream's cleanup matches).
pub fn chain_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHAIN_PREFIX)?;
    if !(10..=16).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The chains this agent owns: `vpa--<µs>` (also upstream's) and `vpa-d-<group>`.
pub fn is_ours(chain: &str) -> bool {
    chain_number(chain).is_some() || chain.starts_with(GROUP_CHAIN_PREFIX)
}

fn target(spec: &str) -> Option<&str> {
    let t: Vec<&str> = spec.split_whitespace().collect();
    t.windows(2)
        .find(|w| matches!(w[0], "-j" | "-g" | "--jump" | "--goto"))
        .map(|w| w[1])
}

/// The part of the filter table the c2c rules live in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    /// `FORWARD`'s first rule.
    pub forward_first: Option<String>,
    /// `FORWARD` rules jumping to one of our chains, in order.
    pub forward_jumps: Vec<String>,
    /// Our chains and their rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Rules of chains that are neither `FORWARD` nor ours jumping to one of ours.
    pub foreign_refs: Vec<Rule>,
}

impl Actual {
    pub fn from_saved(saved: &SavedTable) -> Actual {
        let mut a = Actual::default();
        for c in saved.chains.iter().filter(|c| is_ours(c)) {
            a.chains.insert(c.clone(), Vec::new());
        }
        for r in &saved.rules {
            if r.chain == "FORWARD" {
                if a.forward_first.is_none() {
                    a.forward_first = Some(r.spec.clone());
                }
                if target(&r.spec).is_some_and(is_ours) {
                    a.forward_jumps.push(r.spec.clone());
                }
            } else if let Some(rules) = a.chains.get_mut(&r.chain) {
                rules.push(r.spec.clone());
            } else if target(&r.spec).is_some_and(is_ours) {
                a.foreign_refs.push(r.clone());
            }
        }
        a
    }

    /// The state after [`plan_kernel`]'s payload for `desired` was applied to `self`.
    fn after(&self, main: &ChainName, head: &[String], desired: &C2cPlan) -> Actual {
        let jump = format!("-j {main}");
        let mut chains = desired.groups.clone();
        chains.insert(main.to_string(), main_rules(head, desired));
        // Foreign jumps to chains that stay are left alone by the payload.
        let foreign_refs = self
            .foreign_refs
            .iter()
            .filter(|r| target(&r.spec).is_some_and(|t| chains.contains_key(t)))
            .cloned()
            .collect();
        Actual {
            forward_first: Some(jump.clone()),
            forward_jumps: vec![jump],
            chains,
            foreign_refs,
        }
    }
}

fn main_rules(head: &[String], desired: &C2cPlan) -> Vec<String> {
    head.iter().chain(&desired.main).cloned().collect()
}

/// The main chain to use: the newest existing `vpa--<µs>` chain (ours from before a restart,
/// or upstream's on an upgrade, rewritten in place), else a new one named after `now_us`.
pub fn main_chain(actual: &Actual, now_us: u64) -> Result<ChainName, EnforceError> {
    let newest = actual
        .chains
        .keys()
        .filter_map(|c| chain_number(c).map(|n| (n, c)))
        .max();
    Ok(match newest {
        Some((_, c)) => ChainName::new(c)?,
        None => ChainName::new(&format!("{CHAIN_PREFIX}{now_us}"))?,
    })
}

/// The payload turning `actual` into `desired` (empty when they are equal) and the main
/// chain's name. `head` goes first in the main chain (`disable_container_network_policy`).
pub fn plan_kernel(
    desired: &C2cPlan,
    head: &[String],
    actual: &Actual,
    now_us: u64,
) -> Result<(ChainName, Payload), EnforceError> {
    let main = main_chain(actual, now_us)?;
    let main_text = main_rules(head, desired);
    let mut want: BTreeMap<&str, &[String]> = desired
        .groups
        .iter()
        .map(|(c, r)| (c.as_str(), r.as_slice()))
        .collect();
    want.insert(main.as_str(), &main_text);

    let mut payload = Payload::default();
    let f = payload.table(Table::Filter);
    for (chain, rules) in &want {
        if actual.chains.get(*chain).map(Vec::as_slice) != Some(*rules) {
            let name = ChainName::new(chain)?;
            f.declare.push(name.clone());
            f.append
                .extend(rules.iter().map(|r| Rule::new(&name, r.as_str())));
        }
    }
    let jump = format!("-j {main}");
    if actual.forward_first.as_deref() != Some(jump.as_str())
        || actual.forward_jumps != std::slice::from_ref(&jump)
    {
        f.delete.extend(
            actual
                .forward_jumps
                .iter()
                .map(|s| Rule::new("FORWARD", s.as_str())),
        );
        f.insert_first.push(Rule::new("FORWARD", jump));
    }
    for chain in actual
        .chains
        .keys()
        .filter(|c| !want.contains_key(c.as_str()))
    {
        let name = ChainName::new(chain)?;
        f.delete.extend(
            actual
                .foreign_refs
                .iter()
                .filter(|r| target(&r.spec) == Some(chain.as_str()))
                .cloned(),
        );
        if !actual.chains[chain].is_empty() {
            f.declare.push(name.clone());
        }
        f.remove.push(name);
    }
    if f.is_empty() {
        payload.tables.clear();
    }
    Ok((main, payload))
}

/// What one enforcement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforced {
    pub chain: String,
    /// Chains written (flushed and refilled, or created).
    pub rewritten: usize,
    /// Rules written.
    pub rules: usize,
    /// Whether the table was read (`iptables-save`) in this enforcement.
    pub read: bool,
}

/// The kernel side of the c2c cycle: the actual state last seen, keyed by the backend
/// generation it is valid for.
#[derive(Debug, Default)]
pub struct Enforcer {
    known: Option<(u64, Actual)>,
}

impl Enforcer {
    /// Forgets the cached actual state (the next enforcement reads the table).
    pub fn forget(&mut self) {
        self.known = None;
    }

    /// Reads the actual state (from the cache while the generation has not moved), plans,
    /// applies the payload when it is not empty, all under the lock.
    pub fn enforce<I: Iptables + ?Sized>(
        &mut self,
        iptables: &I,
        now_us: u64,
        head: &[String],
        desired: &C2cPlan,
    ) -> Result<Enforced, EnforceError> {
        let _lock = iptables.lock()?;
        let generation = iptables.generation(Family::V4);
        let cached = match (self.known.take(), generation) {
            (Some((g, a)), Some(now)) if g == now => Some(a),
            _ => None,
        };
        let read = cached.is_none();
        let actual = match cached {
            Some(a) => a,
            None => {
                let text = iptables.save(Family::V4, Some(Table::Filter))?;
                Actual::from_saved(&SavedTable::parse(&text, Table::Filter))
            }
        };
        let (chain, payload) = plan_kernel(desired, head, &actual, now_us)?;
        let enforced = Enforced {
            chain: chain.to_string(),
            rewritten: payload
                .tables
                .iter()
                .map(|t| t.declare.len())
                .sum::<usize>(),
            rules: payload.rule_count(),
            read,
        };
        if payload.is_empty() {
            self.known = generation.map(|g| (g, actual));
            return Ok(enforced);
        }
        iptables.restore(Family::V4, &payload.render())?;
        // One restore is one commit: when the generation moved by exactly one, nobody else
        // changed the rule set in between and the state is known without reading it.
        if let (Some(before), Some(after)) = (generation, iptables.generation(Family::V4)) {
            if after == before.wrapping_add(1) {
                self.known = Some((after, actual.after(&chain, head, desired)));
            }
        }
        Ok(enforced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silk_dataplane::iptables::RecordingIptables;

    const SAVED: &str =
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        :overlay--h - [0:0]\n:vpa--1729785226123456 - [0:0]\n\
        -A FORWARD -j vpa--1729785226123456\n-A FORWARD -j overlay--h\n\
        -A vpa--1729785226123456 -s 10.255.7.3/32 -j MARK --set-xmark 0x1/0xffffffff\nCOMMIT\n";

    fn plan(main: &[&str], groups: &[(&str, &[&str])]) -> C2cPlan {
        C2cPlan {
            main: main.iter().map(|s| s.to_string()).collect(),
            groups: groups
                .iter()
                .map(|(c, r)| (c.to_string(), r.iter().map(|s| s.to_string()).collect()))
                .collect(),
            problems: vec![],
        }
    }

    fn actual(text: &str) -> Actual {
        Actual::from_saved(&SavedTable::parse(text, Table::Filter))
    }

    #[test]
    fn chain_numbers_follow_upstream_pattern() {
        assert_eq!(
            chain_number("vpa--1729785226123456"),
            Some(1729785226123456)
        );
        assert_eq!(chain_number("vpa--1729785226"), Some(1729785226));
        assert_eq!(chain_number("vpa--123"), None);
        assert_eq!(chain_number("vpa--17297852261234567"), None);
        assert_eq!(chain_number("vpa--abc"), None);
        assert_eq!(chain_number("asg-1729785226"), None);
        assert!(is_ours("vpa-d-c3f1a2b477e04d2f9a615e") && !is_ours("overlay--h"));
    }

    #[test]
    fn first_run_on_a_clean_table_creates_everything_in_one_payload() {
        let empty = actual("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n");
        let desired = plan(
            &[
                "-s 10.255.7.3/32 -j MARK --set-xmark 0x1/0xffffffff",
                "-d 10.255.7.4/32 -j vpa-d-back",
            ],
            &[(
                "vpa-d-back",
                &["-p tcp -m tcp --dport 8080 -m mark --mark 0x1 -j ACCEPT"],
            )],
        );
        let (chain, payload) = plan_kernel(&desired, &[], &empty, 1729785230000000).unwrap();
        assert_eq!(chain.as_str(), "vpa--1729785230000000");
        assert_eq!(
            payload.render(),
            "*filter\n\
             :vpa--1729785230000000 - [0:0]\n\
             :vpa-d-back - [0:0]\n\
             -I FORWARD 1 -j vpa--1729785230000000\n\
             -A vpa--1729785230000000 -s 10.255.7.3/32 -j MARK --set-xmark 0x1/0xffffffff\n\
             -A vpa--1729785230000000 -d 10.255.7.4/32 -j vpa-d-back\n\
             -A vpa-d-back -p tcp -m tcp --dport 8080 -m mark --mark 0x1 -j ACCEPT\n\
             COMMIT\n"
        );
    }

    #[test]
    fn an_existing_chain_is_adopted_and_only_what_differs_is_written() {
        // Upstream's chain (or ours before a restart) holds the old mark rule: rewritten in
        // place, the jump stays, nothing else is touched.
        let a = actual(SAVED);
        let desired = plan(
            &["-s 10.255.7.4/32 -j MARK --set-xmark 0x2/0xffffffff"],
            &[],
        );
        let head = vec!["-s 10.255.0.0/16 -d 10.255.0.0/16 -j ACCEPT".to_string()];
        let (chain, payload) = plan_kernel(&desired, &head, &a, 1729785230000000).unwrap();
        assert_eq!(chain.as_str(), "vpa--1729785226123456");
        assert_eq!(
            payload.render(),
            "*filter\n\
             :vpa--1729785226123456 - [0:0]\n\
             -A vpa--1729785226123456 -s 10.255.0.0/16 -d 10.255.0.0/16 -j ACCEPT\n\
             -A vpa--1729785226123456 -s 10.255.7.4/32 -j MARK --set-xmark 0x2/0xffffffff\n\
             COMMIT\n"
        );
        // Applied, the same plan is empty.
        let after = a.after(&chain, &head, &desired);
        let (_, again) = plan_kernel(&desired, &head, &after, 1729785240000000).unwrap();
        assert!(again.is_empty(), "{}", again.render());
    }

    #[test]
    fn a_group_change_rewrites_only_that_group_and_a_gone_group_is_removed() {
        let text = "*filter\n:FORWARD ACCEPT [0:0]\n:vpa--1729785226123456 - [0:0]\n\
            :vpa-d-a - [0:0]\n:vpa-d-b - [0:0]\n:vpa-d-c - [0:0]\n\
            -A FORWARD -j vpa--1729785226123456\n\
            -A vpa--1729785226123456 -d 10.255.7.4/32 -j vpa-d-a\n\
            -A vpa--1729785226123456 -d 10.255.7.5/32 -j vpa-d-b\n\
            -A vpa--1729785226123456 -d 10.255.7.6/32 -j vpa-d-c\n\
            -A vpa-d-a -p tcp -m tcp --dport 1 -m mark --mark 0x1 -j ACCEPT\n\
            -A vpa-d-b -p tcp -m tcp --dport 2 -m mark --mark 0x1 -j ACCEPT\n\
            -A vpa-d-c -p tcp -m tcp --dport 3 -m mark --mark 0x1 -j ACCEPT\nCOMMIT\n";
        let a = actual(text);
        // b changes port; the same main chain: only b is written.
        let desired = plan(
            &[
                "-d 10.255.7.4/32 -j vpa-d-a",
                "-d 10.255.7.5/32 -j vpa-d-b",
                "-d 10.255.7.6/32 -j vpa-d-c",
            ],
            &[
                (
                    "vpa-d-a",
                    &["-p tcp -m tcp --dport 1 -m mark --mark 0x1 -j ACCEPT"],
                ),
                (
                    "vpa-d-b",
                    &["-p tcp -m tcp --dport 22 -m mark --mark 0x1 -j ACCEPT"],
                ),
                (
                    "vpa-d-c",
                    &["-p tcp -m tcp --dport 3 -m mark --mark 0x1 -j ACCEPT"],
                ),
            ],
        );
        let (_, payload) = plan_kernel(&desired, &[], &a, 0).unwrap();
        assert_eq!(
            payload.render(),
            "*filter\n:vpa-d-b - [0:0]\n\
             -A vpa-d-b -p tcp -m tcp --dport 22 -m mark --mark 0x1 -j ACCEPT\nCOMMIT\n"
        );
        // c's container is gone: the main chain loses the jump, c is flushed and removed in
        // the same payload.
        let desired = plan(
            &["-d 10.255.7.4/32 -j vpa-d-a", "-d 10.255.7.5/32 -j vpa-d-b"],
            &[
                (
                    "vpa-d-a",
                    &["-p tcp -m tcp --dport 1 -m mark --mark 0x1 -j ACCEPT"],
                ),
                (
                    "vpa-d-b",
                    &["-p tcp -m tcp --dport 2 -m mark --mark 0x1 -j ACCEPT"],
                ),
            ],
        );
        let (_, payload) = plan_kernel(&desired, &[], &a, 0).unwrap();
        assert_eq!(
            payload.render(),
            "*filter\n:vpa--1729785226123456 - [0:0]\n:vpa-d-c - [0:0]\n\
             -A vpa--1729785226123456 -d 10.255.7.4/32 -j vpa-d-a\n\
             -A vpa--1729785226123456 -d 10.255.7.5/32 -j vpa-d-b\n\
             -X vpa-d-c\nCOMMIT\n"
        );
    }

    #[test]
    fn a_missing_jump_a_flushed_chain_and_stray_jumps_are_repaired() {
        let desired = plan(
            &["-s 10.255.7.3/32 -j MARK --set-xmark 0x1/0xffffffff"],
            &[],
        );
        // Jump removed by someone else: re-inserted first, chain untouched.
        let a = actual(
            "*filter\n:FORWARD ACCEPT [0:0]\n:vpa--1729785226123456 - [0:0]\n\
             -A vpa--1729785226123456 -s 10.255.7.3/32 -j MARK --set-xmark 0x1/0xffffffff\nCOMMIT\n",
        );
        let (_, p) = plan_kernel(&desired, &[], &a, 0).unwrap();
        assert_eq!(
            p.render(),
            "*filter\n-I FORWARD 1 -j vpa--1729785226123456\nCOMMIT\n"
        );
        // Jump not first, a second old chain jumped too, our chain flushed.
        let a = actual(
            "*filter\n:FORWARD ACCEPT [0:0]\n:vpa--1729785226123456 - [0:0]\n:vpa--1729785000000000 - [0:0]\n\
             -A FORWARD -j other\n-A FORWARD -j vpa--1729785226123456\n-A FORWARD -j vpa--1729785000000000\n\
             -A vpa--1729785000000000 -j ACCEPT\nCOMMIT\n",
        );
        let (_, p) = plan_kernel(&desired, &[], &a, 0).unwrap();
        assert_eq!(
            p.render(),
            "*filter\n:vpa--1729785226123456 - [0:0]\n:vpa--1729785000000000 - [0:0]\n\
             -D FORWARD -j vpa--1729785226123456\n-D FORWARD -j vpa--1729785000000000\n\
             -I FORWARD 1 -j vpa--1729785226123456\n\
             -A vpa--1729785226123456 -s 10.255.7.3/32 -j MARK --set-xmark 0x1/0xffffffff\n\
             -X vpa--1729785000000000\nCOMMIT\n"
        );
    }

    #[test]
    fn a_foreign_jump_to_a_gone_group_is_deleted_before_the_chain() {
        let a = actual(
            "*filter\n:FORWARD ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:vpa--1729785226123456 - [0:0]\n\
             :vpa-d-a - [0:0]\n-A FORWARD -j vpa--1729785226123456\n-A INPUT -j vpa-d-a\n\
             -A vpa--1729785226123456 -d 10.255.7.4/32 -j vpa-d-a\n\
             -A vpa-d-a -p tcp -m tcp --dport 1 -m mark --mark 0x1 -j ACCEPT\nCOMMIT\n",
        );
        let keep = plan(
            &["-d 10.255.7.4/32 -j vpa-d-a"],
            &[(
                "vpa-d-a",
                &["-p tcp -m tcp --dport 1 -m mark --mark 0x1 -j ACCEPT"],
            )],
        );
        let main = main_chain(&a, 0).unwrap();
        // The modelled state after a write keeps the foreign jump, so removing the group
        // later deletes it first, as from a freshly read table.
        let after = a.after(&main, &[], &keep);
        let gone = plan(&[], &[]);
        for state in [&a, &after] {
            let (_, p) = plan_kernel(&gone, &[], state, 0).unwrap();
            assert_eq!(
                p.render(),
                "*filter\n:vpa--1729785226123456 - [0:0]\n:vpa-d-a - [0:0]\n\
                 -D INPUT -j vpa-d-a\n-X vpa-d-a\nCOMMIT\n"
            );
        }
    }

    #[test]
    fn the_table_is_read_again_only_when_the_generation_moved() {
        let ipt = RecordingIptables::default();
        *ipt.saved.lock().unwrap() = SAVED.to_string();
        *ipt.generation.lock().unwrap() = Some(7);
        let desired = plan(&["-j MARK --set-xmark 0x9/0xffffffff"], &[]);
        let mut e = Enforcer::default();
        let first = e.enforce(&ipt, 0, &[], &desired).unwrap();
        assert!(first.read && first.rewritten == 1);
        // Generation 8 is our own restore: nothing to read, nothing to write.
        let second = e.enforce(&ipt, 0, &[], &desired).unwrap();
        assert!(!second.read && second.rewritten == 0);
        assert_eq!(ipt.saves.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(ipt.payloads().len(), 1);
        // Someone else changed the rule set: read again (the canned text still shows the old
        // chain, so it is rewritten).
        *ipt.generation.lock().unwrap() = Some(20);
        let third = e.enforce(&ipt, 0, &[], &desired).unwrap();
        assert!(third.read && third.rewritten == 1);
        // Without a generation every enforcement reads.
        *ipt.generation.lock().unwrap() = None;
        let mut e = Enforcer::default();
        e.enforce(&ipt, 0, &[], &desired).unwrap();
        e.enforce(&ipt, 0, &[], &desired).unwrap();
        assert_eq!(ipt.saves.load(std::sync::atomic::Ordering::SeqCst), 4);
    }
}
