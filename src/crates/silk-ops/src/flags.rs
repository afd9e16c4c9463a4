//! Go-style command lines: BOSH start scripts invoke the jobs as `-config-file=<path>`, and Go's
//! flag package accepts one or two dashes. [`normalize`] rewrites single-dash long flags to the
//! double-dash form clap parses.

/// Rewrites `-name[=v]` (more than one letter after the dash) to `--name[=v]`.
pub fn normalize(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let long_single = i > 0
                && a.starts_with('-')
                && !a.starts_with("--")
                && a.split('=').next().is_some_and(|n| n.len() > 2);
            if long_single {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_long_flags_become_double() {
        let got = normalize(["prog", "-config-file=/a.json", "--x", "y", "-v"].map(String::from));
        assert_eq!(got, vec!["prog", "--config-file=/a.json", "--x", "y", "-v"]);
    }
}
