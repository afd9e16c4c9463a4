//! Chain names of the per-container chains, truncated exactly as upstream's `ChainNamer`
//! (silk-release: src/code.cloudfoundry.org/cni-wrapper-plugin/netrules; cni.md §4.4).

use std::fmt;

/// The kernel's chain-name limit as upstream applies it (29 bytes with the terminator).
pub const MAX_CHAIN_LEN: usize = 28;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainNameError {
    #[error("invalid chain name {0:?}")]
    Invalid(String),
}

/// A chain name of at most 28 bytes made of printable ASCII without spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainName(String);

fn cut(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl ChainName {
    /// Any name (builtin or foreign), validated.
    pub fn new(name: &str) -> Result<ChainName, ChainNameError> {
        if name.is_empty()
            || name.len() > MAX_CHAIN_LEN
            || !name.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ChainNameError::Invalid(name.into()));
        }
        Ok(ChainName(name.into()))
    }

    /// `Prefix`: `prefix--handle` cut to 28 bytes.
    fn prefixed(prefix: &str, handle: &str) -> ChainName {
        let full: String = format!("{prefix}--{handle}")
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .collect();
        ChainName(cut(&full, MAX_CHAIN_LEN).to_string())
    }

    pub fn netin(handle: &str) -> ChainName {
        Self::prefixed("netin", handle)
    }

    pub fn input(handle: &str) -> ChainName {
        Self::prefixed("input", handle)
    }

    pub fn netout(handle: &str) -> ChainName {
        Self::prefixed("netout", handle)
    }

    pub fn overlay(handle: &str) -> ChainName {
        Self::prefixed("overlay", handle)
    }

    /// `Postfix`: this name cut to `28 - len("--" + suffix)` then `--suffix`.
    pub fn postfix(&self, suffix: &str) -> ChainName {
        let keep = MAX_CHAIN_LEN.saturating_sub(suffix.len() + 2);
        ChainName(format!("{}--{suffix}", cut(&self.0, keep)))
    }

    /// The netout log chain, reached by `-g` from accepted ASG rules.
    pub fn netout_log(handle: &str) -> ChainName {
        Self::netout(handle).postfix("log")
    }

    /// The outbound rate-limit log chain.
    pub fn netout_rl_log(handle: &str) -> ChainName {
        Self::netout(handle).postfix("rl-log")
    }

    /// vxlan-policy-agent's dynamic ASG chain: `asg-` + handle without `check-`, no dashes, 20 chars.
    pub fn asg(handle: &str) -> ChainName {
        let h = handle
            .strip_prefix("check-")
            .unwrap_or(handle)
            .replace('-', "");
        ChainName(format!("asg-{}", cut(&h, 20)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A log prefix: `text` cut to 28 bytes, then one space (the kernel keeps 29). Quotes,
/// backslashes and control characters become `_`: the prefix is written quoted into a restore
/// payload, and parts of it (policy ids) come from outside.
pub fn log_prefix(text: &str) -> String {
    format!("{} ", cut(&quotable(text), MAX_CHAIN_LEN))
}

/// `text` with every character that would end or break a quoted restore argument (`"`, `\`,
/// control characters such as a newline) replaced by `_`.
pub fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "5f3c9a1e-7b2d-4c8e-6a91-0d4e";

    #[test]
    fn names_match_the_contract_table() {
        assert_eq!(ChainName::netin(H).as_str(), "netin--5f3c9a1e-7b2d-4c8e-6a");
        assert_eq!(ChainName::input(H).as_str(), "input--5f3c9a1e-7b2d-4c8e-6a");
        assert_eq!(
            ChainName::netout(H).as_str(),
            "netout--5f3c9a1e-7b2d-4c8e-6"
        );
        assert_eq!(
            ChainName::overlay(H).as_str(),
            "overlay--5f3c9a1e-7b2d-4c8e-"
        );
        assert_eq!(
            ChainName::netout_log(H).as_str(),
            "netout--5f3c9a1e-7b2d-4--log"
        );
        assert_eq!(
            ChainName::netout_rl_log(H).as_str(),
            "netout--5f3c9a1e-7b2--rl-log"
        );
        assert_eq!(ChainName::asg(H).as_str(), "asg-5f3c9a1e7b2d4c8e6a91");
        assert_eq!(
            ChainName::asg("7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e").as_str(),
            "asg-7b8c9d0e1f2a4b3c8d4e"
        );
        for n in [ChainName::netin(H), ChainName::netout_rl_log(H)] {
            assert!(n.as_str().len() <= MAX_CHAIN_LEN);
        }
    }

    #[test]
    fn short_handles_are_kept_whole_and_bad_names_rejected() {
        assert_eq!(ChainName::netout("abc").as_str(), "netout--abc");
        assert_eq!(ChainName::netout_log("abc").as_str(), "netout--abc--log");
        assert!(ChainName::new("with space").is_err());
        assert!(ChainName::new("").is_err());
        assert!(ChainName::new("INPUT").is_ok());
    }

    #[test]
    fn log_prefixes_cut_at_28() {
        assert_eq!(
            log_prefix(&format!("OK_{H}")),
            "OK_5f3c9a1e-7b2d-4c8e-6a91-0 "
        );
        assert_eq!(
            log_prefix(&format!("DENY_{H}")),
            "DENY_5f3c9a1e-7b2d-4c8e-6a91 "
        );
        assert_eq!(
            log_prefix("DENY_C2C_6a7b8c9d-0e1f-4a2b-7c3d-4e5f6a7b8c9d"),
            "DENY_C2C_6a7b8c9d-0e1f-4a2b- "
        );
    }
}
