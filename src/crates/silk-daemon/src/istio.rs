//! The single-IP `istio-ingress` chain (contract §6.2 step 5, §6.3 step 2): what
//! silk-daemon-bootstrap installs and the drain removes, planned as one `iptables-restore`
//! payload from one save of the filter table and applied through the [`Iptables`] port under
//! the shared lock.
//!
//! Upstream runs one `iptables -C`/`-A` per rule. Its end state is kept (`OUTPUT` jumps to the
//! chain first; the chain marks traffic leaving through `silk-vtep` with the router tag, then
//! accepts it) with two fixes: a chain holding anything else (a stale tag after the policy
//! server renumbered, or an ACCEPT before the MARK) is rewritten in order instead of appended
//! to, where the new MARK would sit behind the ACCEPT and never apply; and removal also drops
//! jumps from chains other than `OUTPUT`, so deleting the chain cannot fail on them.

use silk_dataplane::iptables::{
    ChainName, Family, Iptables, IptablesError, Payload, Rule, SavedTable, Table,
};

/// The chain's name.
pub const ISTIO_CHAIN: &str = "istio-ingress";
/// The device whose traffic is marked.
const VTEP: &str = "silk-vtep";

#[derive(Debug, thiserror::Error)]
pub enum IstioError {
    #[error("tag {0:?} is not a hexadecimal mark")]
    BadTag(String),
    #[error(transparent)]
    Iptables(#[from] IptablesError),
}

/// The mark a tag sets: the tag read as hexadecimal (`0004` is mark 4), as upstream passes
/// `0x<tag>` to `--set-mark`.
pub fn tag_mark(tag: &str) -> Result<u32, IstioError> {
    if tag.is_empty() || tag.len() > 8 {
        return Err(IstioError::BadTag(tag.to_string()));
    }
    u32::from_str_radix(tag, 16).map_err(|_| IstioError::BadTag(tag.to_string()))
}

/// The chain's rules in order, in the form `iptables-save` prints them (`--set-mark 0x<m>` is
/// saved as `--set-xmark 0x<m>/0xffffffff`), so saved and desired rules compare as text.
pub fn istio_rules(mark: u32) -> Vec<Rule> {
    vec![
        Rule::new(
            ISTIO_CHAIN,
            format!("-o {VTEP} -j MARK --set-xmark {mark:#x}/0xffffffff"),
        ),
        Rule::new(ISTIO_CHAIN, format!("-o {VTEP} -j ACCEPT")),
    ]
}

fn jump() -> Rule {
    Rule::new("OUTPUT", format!("-j {ISTIO_CHAIN}"))
}

fn chain() -> ChainName {
    // Invariant: a constant, valid chain name.
    ChainName::new(ISTIO_CHAIN).expect("istio-ingress is a valid chain name")
}

fn normalized(spec: &str) -> String {
    spec.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What installs the chain for `mark` on top of `saved` (the filter table); empty when it is
/// in place.
pub fn plan_install(saved: &SavedTable, mark: u32) -> Payload {
    let mut payload = Payload::default();
    let plan = payload.table(Table::Filter);
    let want = istio_rules(mark);
    let have: Vec<String> = saved
        .rules
        .iter()
        .filter(|r| r.chain == ISTIO_CHAIN)
        .map(|r| normalized(&r.spec))
        .collect();
    let in_place = saved.has_chain(ISTIO_CHAIN)
        && have.iter().eq(want
            .iter()
            .map(|r| normalized(&r.spec))
            .collect::<Vec<_>>()
            .iter());
    if !in_place {
        // Declaring the chain creates it, or flushes it for the refill below in one commit.
        plan.declare.push(chain());
        plan.append = want;
    }
    let jump = jump();
    if !saved
        .rules
        .iter()
        .any(|r| r.chain == jump.chain && normalized(&r.spec) == jump.spec)
    {
        plan.insert_first.push(jump);
    }
    payload
}

/// What removes the chain and every rule jumping or going to it from `saved` (the filter
/// table); empty when none is left.
pub fn plan_remove(saved: &SavedTable) -> Payload {
    let mut payload = Payload::default();
    let plan = payload.table(Table::Filter);
    plan.delete = saved
        .references_to(ISTIO_CHAIN)
        .filter(|r| r.chain != ISTIO_CHAIN)
        .cloned()
        .collect();
    if saved.has_chain(ISTIO_CHAIN) {
        plan.declare.push(chain());
        plan.remove.push(chain());
    }
    payload
}

/// Saves the filter table (under the iptables lock when `lock`), plans with `plan` and
/// restores the payload once; returns whether anything was written.
pub fn apply(
    iptables: &dyn Iptables,
    lock: bool,
    plan: impl FnOnce(&SavedTable) -> Payload,
) -> Result<bool, IptablesError> {
    let _guard = if lock { Some(iptables.lock()?) } else { None };
    let text = iptables.save(Family::V4, Some(Table::Filter))?;
    let payload = plan(&SavedTable::parse(&text, Table::Filter));
    if payload.is_empty() {
        return Ok(false);
    }
    iptables.restore(Family::V4, &payload.render())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use silk_dataplane::iptables::RecordingIptables;

    const EMPTY: &str =
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
    const INSTALLED: &str =
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        :istio-ingress - [0:0]\n-A OUTPUT -j istio-ingress\n\
        -A istio-ingress -o silk-vtep -j MARK --set-xmark 0xff/0xffffffff\n\
        -A istio-ingress -o silk-vtep -j ACCEPT\nCOMMIT\n";
    const FULL: &str = ":istio-ingress - [0:0]\n-I OUTPUT 1 -j istio-ingress\n\
        -A istio-ingress -o silk-vtep -j MARK --set-xmark 0xff/0xffffffff\n\
        -A istio-ingress -o silk-vtep -j ACCEPT\n";
    const REFILL: &str = ":istio-ingress - [0:0]\n\
        -A istio-ingress -o silk-vtep -j MARK --set-xmark 0xff/0xffffffff\n\
        -A istio-ingress -o silk-vtep -j ACCEPT\n";

    fn saved(text: &str) -> SavedTable {
        SavedTable::parse(text, Table::Filter)
    }

    fn wrap(body: &str) -> String {
        if body.is_empty() {
            String::new()
        } else {
            format!("*filter\n{body}COMMIT\n")
        }
    }

    #[test]
    fn tags_are_hex_marks() {
        assert_eq!(tag_mark("00ff").unwrap(), 0xff);
        assert_eq!(tag_mark("0004").unwrap(), 4);
        assert_eq!(tag_mark("ffffffff").unwrap(), u32::MAX);
        for bad in ["", "xyz", "0x04", "-1", "123456789", " 01"] {
            assert!(tag_mark(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            tag_mark("g").unwrap_err().to_string(),
            "tag \"g\" is not a hexadecimal mark"
        );
    }

    #[test]
    fn install_plans() {
        let with = |extra: &str| EMPTY.replace("COMMIT\n", &format!("{extra}COMMIT\n"));
        let cases: Vec<(&str, String, String)> = vec![
            ("nothing yet", EMPTY.into(), wrap(FULL)),
            ("in place", INSTALLED.into(), String::new()),
            (
                "chain without the jump",
                with(":istio-ingress - [0:0]\n-A istio-ingress -o silk-vtep -j MARK --set-xmark 0xff/0xffffffff\n-A istio-ingress -o silk-vtep -j ACCEPT\n"),
                wrap("-I OUTPUT 1 -j istio-ingress\n"),
            ),
            (
                "empty chain with the jump",
                with(":istio-ingress - [0:0]\n-A OUTPUT -j istio-ingress\n"),
                wrap(REFILL),
            ),
            (
                "only the accept: the mark must come first",
                with(":istio-ingress - [0:0]\n-A OUTPUT -j istio-ingress\n-A istio-ingress -o silk-vtep -j ACCEPT\n"),
                wrap(REFILL),
            ),
            (
                "stale tag",
                INSTALLED.replace("0xff/", "0x4/"),
                wrap(REFILL),
            ),
            (
                "jump elsewhere in OUTPUT still counts",
                with(":istio-ingress - [0:0]\n-A OUTPUT -o lo -j ACCEPT\n-A OUTPUT -j istio-ingress\n-A istio-ingress -o silk-vtep -j MARK --set-xmark 0xff/0xffffffff\n-A istio-ingress -o silk-vtep -j ACCEPT\n"),
                String::new(),
            ),
        ];
        for (name, text, want) in cases {
            assert_eq!(plan_install(&saved(&text), 0xff).render(), want, "{name}");
        }
    }

    #[test]
    fn remove_plans() {
        let cases: Vec<(&str, String, String)> = vec![
            ("nothing there", EMPTY.into(), String::new()),
            (
                "installed",
                INSTALLED.into(),
                wrap(":istio-ingress - [0:0]\n-D OUTPUT -j istio-ingress\n-X istio-ingress\n"),
            ),
            (
                "a second jump from another chain",
                INSTALLED.replace(
                    "-A OUTPUT -j istio-ingress\n",
                    "-A OUTPUT -j istio-ingress\n-A FORWARD -o eth0 -j istio-ingress\n",
                ),
                wrap(":istio-ingress - [0:0]\n-D OUTPUT -j istio-ingress\n-D FORWARD -o eth0 -j istio-ingress\n-X istio-ingress\n"),
            ),
            (
                "chain without the jump",
                EMPTY.replace("COMMIT", ":istio-ingress - [0:0]\nCOMMIT"),
                wrap(":istio-ingress - [0:0]\n-X istio-ingress\n"),
            ),
        ];
        for (name, text, want) in cases {
            assert_eq!(plan_remove(&saved(&text)).render(), want, "{name}");
        }
    }

    #[test]
    fn apply_saves_once_and_restores_only_a_change() {
        let ipt = RecordingIptables::default();
        *ipt.saved.lock().unwrap() = INSTALLED.to_string();
        assert!(!apply(&ipt, true, |s| plan_install(s, 0xff)).unwrap());
        assert!(ipt.payloads().is_empty());
        assert!(apply(&ipt, false, plan_remove).unwrap());
        assert_eq!(
            ipt.payloads(),
            vec![(
                Family::V4,
                wrap(":istio-ingress - [0:0]\n-D OUTPUT -j istio-ingress\n-X istio-ingress\n")
            )]
        );
        assert_eq!(ipt.saves.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
