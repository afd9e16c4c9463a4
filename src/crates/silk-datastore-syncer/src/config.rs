//! The syncer's command line (cni.md §5.2), upstream's Go flags read through silk-ops
//! (`-n 30 -gardenNetwork unix -gardenAddr <addr> -silkFile <path> -silkFileOwner vcap
//! -silkFileGroup vcap -logLevel info`, one or two dashes, `-flag value` or `-flag=value`),
//! then checked into a [`Config`] with every problem listed at once, before garden is
//! dialled or the store touched.

use std::time::Duration;

use clap::Parser;
use log::LevelFilter;
use silk_ops::config::{nonempty, ConfigError};

/// The flags as given; defaults are upstream's.
#[derive(Debug, Clone, Parser)]
#[command(name = "silk-datastore-syncer")]
pub struct Flags {
    /// Seconds between syncs.
    #[arg(short = 'n', long = "n", default_value_t = 30)]
    pub n: u64,
    /// `unix` or `tcp`.
    #[arg(long = "gardenNetwork", default_value = "unix")]
    pub garden_network: String,
    #[arg(
        long = "gardenAddr",
        default_value = "/var/vcap/data/garden/garden.sock"
    )]
    pub garden_addr: String,
    /// The container metadata store.
    #[arg(
        long = "silkFile",
        default_value = "/var/vcap/data/container-metadata/store.json"
    )]
    pub silk_file: String,
    /// Owner and group the store file is given after each write; both empty: left as is.
    #[arg(long = "silkFileOwner", default_value = "")]
    pub silk_file_owner: String,
    #[arg(long = "silkFileGroup", default_value = "")]
    pub silk_file_group: String,
    #[arg(long = "logLevel", default_value = "info")]
    pub log_level: String,
}

/// A checked syncer configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub interval: Duration,
    pub garden_network: String,
    pub garden_addr: String,
    pub silk_file: String,
    /// `(user, group)` names, resolved by the binary.
    pub silk_file_owner: Option<(String, String)>,
    pub log_level: LevelFilter,
}

impl Config {
    /// Reads `args` (argv, the program name first) as upstream's flags and checks them.
    /// Unknown flags and malformed numbers are clap's errors, reported as [`ConfigError::Invalid`].
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Config, ConfigError> {
        Config::try_from(silk_ops::flags::parse::<Flags>(args)?)
    }
}

impl TryFrom<Flags> for Config {
    type Error = ConfigError;

    fn try_from(f: Flags) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        if f.n == 0 {
            errors.push("-n: must be at least 1".to_string());
        }
        if !matches!(f.garden_network.as_str(), "unix" | "tcp") {
            errors.push(format!(
                "-gardenNetwork: must be unix or tcp, got {:?}",
                f.garden_network
            ));
        }
        nonempty(&mut errors, "-gardenAddr", &f.garden_addr);
        nonempty(&mut errors, "-silkFile", &f.silk_file);
        let owner = match (f.silk_file_owner.is_empty(), f.silk_file_group.is_empty()) {
            (true, true) => None,
            (false, false) => Some((f.silk_file_owner, f.silk_file_group)),
            _ => {
                errors.push("-silkFileOwner, -silkFileGroup: give both or neither".to_string());
                None
            }
        };
        let level = silk_ops::log::parse_level(&f.log_level).map(|(_, l)| l);
        if level.is_none() {
            errors.push(format!(
                "-logLevel: must be debug, info, warn, error or fatal, got {:?}",
                f.log_level
            ));
        }
        match level {
            Some(log_level) if errors.is_empty() => Ok(Config {
                interval: Duration::from_secs(f.n),
                garden_network: f.garden_network,
                garden_addr: f.garden_addr,
                silk_file: f.silk_file,
                silk_file_owner: owner,
                log_level,
            }),
            _ => Err(ConfigError::Invalid(errors)),
        }
    }
}

/// A command line as jobs/silk-datastore-syncer/templates/start.erb renders it.
#[cfg(test)]
pub(crate) const JOB_ARGV: [&str; 15] = [
    "silk-datastore-syncer",
    "-n",
    "5",
    "-gardenNetwork",
    "tcp",
    "-gardenAddr",
    "127.0.0.1:7777",
    "-silkFile",
    "/var/vcap/data/container-metadata/store.json",
    "-silkFileOwner",
    "vcap",
    "-silkFileGroup",
    "vcap",
    "-logLevel",
    "debug",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        std::iter::once("silk-datastore-syncer")
            .chain(a.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn reads_the_job_templates_command_line() {
        let c = Config::from_args(JOB_ARGV.map(String::from)).unwrap();
        assert_eq!(
            c,
            Config {
                interval: Duration::from_secs(5),
                garden_network: "tcp".into(),
                garden_addr: "127.0.0.1:7777".into(),
                silk_file: "/var/vcap/data/container-metadata/store.json".into(),
                silk_file_owner: Some(("vcap".into(), "vcap".into())),
                log_level: LevelFilter::Debug,
            }
        );
    }

    #[test]
    fn defaults_are_upstreams_and_go_spellings_are_accepted() {
        let c = Config::from_args(args(&[])).unwrap();
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.garden_network, "unix");
        assert_eq!(c.garden_addr, "/var/vcap/data/garden/garden.sock");
        assert_eq!(c.silk_file, "/var/vcap/data/container-metadata/store.json");
        assert_eq!(c.silk_file_owner, None);
        assert_eq!(c.log_level, LevelFilter::Info);
        let c = Config::from_args(args(&[
            "--n=7",
            "-gardenAddr=/run/g.sock",
            "--logLevel",
            "ERROR",
            "-silkFileOwner",
            "",
            "-silkFileGroup",
            "",
        ]))
        .unwrap();
        assert_eq!(c.interval, Duration::from_secs(7));
        assert_eq!(c.garden_addr, "/run/g.sock");
        assert_eq!(c.log_level, LevelFilter::Error);
        assert_eq!(c.silk_file_owner, None);
        assert_eq!(
            Config::from_args(args(&["-n=9"])).unwrap().interval,
            Duration::from_secs(9)
        );
    }

    #[test]
    fn lists_every_problem() {
        let err = Config::from_args(args(&[
            "-n",
            "0",
            "-gardenNetwork",
            "udp",
            "-gardenAddr",
            " ",
            "-silkFileOwner",
            "vcap",
            "-logLevel",
            "verbose",
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config: -n: must be at least 1; -gardenNetwork: must be unix or tcp, got \"udp\"; \
             -gardenAddr: must not be empty; -silkFileOwner, -silkFileGroup: give both or neither; \
             -logLevel: must be debug, info, warn, error or fatal, got \"verbose\""
        );
        for bad in [&["-n", "x"][..], &["-bogus", "1"][..], &["-n"][..]] {
            assert!(
                matches!(Config::from_args(args(bad)), Err(ConfigError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
