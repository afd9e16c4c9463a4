//! Go-style command lines: BOSH start scripts invoke the jobs as `-config-file=<path>`, and Go's
//! flag package accepts one or two dashes. [`normalize`] rewrites single-dash long flags to the
//! double-dash form clap parses. [`config_path`] reads the one flag most jobs take, the path of
//! their rendered config; [`parse`] reads the command line of a program configured by flags
//! alone into its raw flags struct, to be validated as a config ([`crate::config`]).

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

/// `args` (the program name first, Go's spellings accepted) read as the clap struct `F`. A
/// usage error (unknown flag, malformed number, missing value) is reported as
/// [`ConfigError::Invalid`](crate::config::ConfigError::Invalid) with clap's message, so a
/// program's main treats it like any other invalid config.
pub fn parse<F: clap::Parser>(
    args: impl IntoIterator<Item = String>,
) -> Result<F, crate::config::ConfigError> {
    F::try_parse_from(normalize(args))
        .map_err(|e| crate::config::ConfigError::Invalid(vec![e.to_string().trim().to_string()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `prog` followed by `a`, as a command line.
    fn argv(a: &[&str]) -> Vec<String> {
        std::iter::once("prog")
            .chain(a.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double() {
        let got = normalize(["prog", "-config-file=/a.json", "--x", "y", "-v"].map(String::from));
        assert_eq!(got, vec!["prog", "--config-file=/a.json", "--x", "y", "-v"]);
    }

    #[test]
    fn config_path_reads_every_go_spelling_and_refuses_the_rest() {
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

    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[arg(long = "intervalSeconds", default_value_t = 5)]
        interval_seconds: u64,
    }

    #[test]
    fn parse_reads_go_flags_and_reports_usage_errors_as_invalid_config() {
        assert_eq!(parse::<Flags>(argv(&[])).unwrap().interval_seconds, 5);
        assert_eq!(
            parse::<Flags>(argv(&["-intervalSeconds=7"]))
                .unwrap()
                .interval_seconds,
            7
        );
        for a in [&["-intervalSeconds", "x"][..], &["-other", "1"][..]] {
            let e = parse::<Flags>(argv(a)).unwrap_err();
            assert!(
                matches!(&e, crate::config::ConfigError::Invalid(v) if v.len() == 1),
                "{a:?}: {e}"
            );
        }
    }
}
