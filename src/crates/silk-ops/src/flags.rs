//! Go-style command lines: BOSH start scripts invoke the jobs as `-config-file=<path>`, and Go's
//! flag package accepts one or two dashes. [`normalize`] rewrites single-dash long flags to the
//! double-dash form clap parses. [`config_path`] reads the one flag most jobs take, the path of
//! their rendered config.

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

/// The value of `--<flag> <path>` (also `-<flag>=<path>` and the other spellings Go's flag
/// package reads) in `args`, a command line whose first item is the program name; clap's
/// usage error when the flag is missing or another one is given.
pub fn config_path(
    program: &'static str,
    flag: &'static str,
    args: impl IntoIterator<Item = String>,
) -> Result<String, clap::Error> {
    let matches = clap::Command::new(program)
        .arg(
            clap::Arg::new(flag)
                .long(flag)
                .value_name("PATH")
                .required(true)
                .help("Path to the rendered config file"),
        )
        .try_get_matches_from(normalize(args))?;
    Ok(matches.get_one::<String>(flag).cloned().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_long_flags_become_double() {
        let got = normalize(["prog", "-config-file=/a.json", "--x", "y", "-v"].map(String::from));
        assert_eq!(got, vec!["prog", "--config-file=/a.json", "--x", "y", "-v"]);
    }

    #[test]
    fn config_path_reads_every_go_spelling_and_refuses_the_rest() {
        let argv = |a: &[&str]| {
            std::iter::once("prog")
                .chain(a.iter().copied())
                .map(String::from)
                .collect::<Vec<_>>()
        };
        for a in [
            &["-config-file=/a.json"][..],
            &["--config-file=/a.json"][..],
            &["-config-file", "/a.json"][..],
            &["--config-file", "/a.json"][..],
        ] {
            assert_eq!(
                config_path("prog", "config-file", argv(a)).unwrap(),
                "/a.json",
                "{a:?}"
            );
        }
        for a in [&[][..], &["-config", "/a.json"][..], &["-config-file"][..]] {
            assert!(
                config_path("prog", "config-file", argv(a)).is_err(),
                "{a:?}"
            );
        }
    }
}
