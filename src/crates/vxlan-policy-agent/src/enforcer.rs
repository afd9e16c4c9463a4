//! Applying c2c rules (policy contract §3.6) without a window of denial, in one
//! `iptables-restore --noflush` under the shared lock:
//!
//! ```text
//! *filter
//! :vpa--<new> - [0:0]          create the new chain
//! :vpa--<old> - [0:0]          flush each old chain
//! -D FORWARD -j vpa--<old>     drop the old jumps
//! -I FORWARD 1 -j vpa--<new>   jump to the new chain first
//! -A vpa--<new> <rule>...      fill it
//! -X vpa--<old>                remove the old chains
//! COMMIT
//! ```
//!
//! The kernel swaps the whole table at COMMIT, so packets see either the old chain or the new
//! one, never neither; a payload that fails changes nothing. Upstream needs five separate
//! iptables calls (and an overlap of old and new chains) for the same result.

use silk_dataplane::iptables::{
    ChainName, ChainNameError, Family, Iptables, IptablesError, Payload, Rule, SavedTable, Table,
};

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

/// The new chain's name and the payload that swaps it in for every older `vpa--` chain
/// (jumped from FORWARD or left over). `now_us` is the current Unix time in microseconds; the
/// name is always newer than every existing one, even if the clock went back.
pub fn plan_swap(
    saved: &SavedTable,
    now_us: u64,
    head: &[String],
    rules: &[String],
) -> Result<(ChainName, Payload), EnforceError> {
    let mut old: Vec<&str> = saved
        .chains
        .iter()
        .map(String::as_str)
        .chain(saved.rules.iter().filter_map(|r| {
            let t = r.spec.split_whitespace().collect::<Vec<_>>();
            t.windows(2)
                .find(|w| w[0] == "-j" && chain_number(w[1]).is_some())
                .map(|w| w[1])
        }))
        .filter(|c| chain_number(c).is_some())
        .collect();
    old.sort_unstable();
    old.dedup();
    let newest = old
        .iter()
        .filter_map(|c| chain_number(c))
        .max()
        .unwrap_or(0);
    let chain = ChainName::new(&format!("{CHAIN_PREFIX}{}", now_us.max(newest + 1)))?;

    let mut payload = Payload::default();
    let f = payload.table(Table::Filter);
    f.declare.push(chain.clone());
    for c in &old {
        let name = ChainName::new(c)?;
        f.delete.extend(saved.references_to(c).cloned());
        if saved.has_chain(c) {
            f.declare.push(name.clone());
            f.remove.push(name);
        }
    }
    f.insert_first
        .push(Rule::new("FORWARD", format!("-j {chain}")));
    f.append.extend(
        head.iter()
            .chain(rules)
            .map(|spec| Rule::new(&chain, spec.as_str())),
    );
    Ok((chain, payload))
}

/// Reads the filter table and applies the swap, holding the lock from save to restore.
/// Returns the new chain's name.
pub fn enforce<I: Iptables + ?Sized>(
    iptables: &I,
    now_us: u64,
    head: &[String],
    rules: &[String],
) -> Result<ChainName, EnforceError> {
    let _lock = iptables.lock()?;
    let text = iptables.save(Family::V4, Some(Table::Filter))?;
    let saved = SavedTable::parse(&text, Table::Filter);
    let (chain, payload) = plan_swap(&saved, now_us, head, rules)?;
    iptables.restore(Family::V4, &payload.render())?;
    Ok(chain)
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
    }

    #[test]
    fn swap_is_one_payload_new_first_old_removed() {
        let saved = SavedTable::parse(SAVED, Table::Filter);
        let (chain, payload) = plan_swap(
            &saved,
            1729785230000000,
            &["-s 10.255.0.0/16 -d 10.255.0.0/16 -j ACCEPT".to_string()],
            &["-s 10.255.7.4/32 -j MARK --set-xmark 0x2/0xffffffff".to_string()],
        )
        .unwrap();
        assert_eq!(chain.as_str(), "vpa--1729785230000000");
        assert_eq!(
            payload.render(),
            "*filter\n\
             :vpa--1729785230000000 - [0:0]\n\
             :vpa--1729785226123456 - [0:0]\n\
             -D FORWARD -j vpa--1729785226123456\n\
             -I FORWARD 1 -j vpa--1729785230000000\n\
             -A vpa--1729785230000000 -s 10.255.0.0/16 -d 10.255.0.0/16 -j ACCEPT\n\
             -A vpa--1729785230000000 -s 10.255.7.4/32 -j MARK --set-xmark 0x2/0xffffffff\n\
             -X vpa--1729785226123456\n\
             COMMIT\n"
        );
    }

    #[test]
    fn first_run_on_a_clean_table_and_a_clock_that_went_back() {
        let empty = SavedTable::parse("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n", Table::Filter);
        let (chain, payload) = plan_swap(&empty, 1729785230000000, &[], &[]).unwrap();
        assert_eq!(
            payload.render(),
            format!("*filter\n:{chain} - [0:0]\n-I FORWARD 1 -j {chain}\nCOMMIT\n")
        );
        let saved = SavedTable::parse(SAVED, Table::Filter);
        let (chain, _) = plan_swap(&saved, 1000000000000000, &[], &[]).unwrap();
        assert_eq!(chain.as_str(), "vpa--1729785226123457");
    }

    #[test]
    fn enforce_saves_then_restores_once() {
        let ipt = RecordingIptables::default();
        *ipt.saved.lock().unwrap() = SAVED.to_string();
        let chain = enforce(&ipt, 1729785230000000, &[], &["-j ACCEPT".to_string()]).unwrap();
        let payloads = ipt.payloads();
        assert_eq!(payloads.len(), 1);
        assert!(payloads[0].1.contains(&format!("-A {chain} -j ACCEPT\n")));
    }
}
