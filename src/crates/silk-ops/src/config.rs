//! Loading a job's rendered config, as every program of the release does it: the text
//! decoded into the crate's raw struct (JSON through [`parse`]; another format, such as the
//! healthchecker's YAML, reports its decode failure as [`ConfigError::Decode`]), then validated
//! into its config with every problem listed at once, before anything is bound or touched.
//! Programs configured by flags alone (silk-datastore-syncer) validate the same way, from a
//! raw struct of flags read through [`crate::flags`].

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("parse config: {0}")]
    Json(#[from] serde_json::Error),
    /// A config text in a format other than JSON that did not decode.
    #[error("parse config: {0}")]
    Decode(String),
    #[error("invalid config: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// A config file that could not be read, or whose contents are not a valid config.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Decodes `text` as `R` and validates it into `C`.
pub fn parse<R, C>(text: &str) -> Result<C, ConfigError>
where
    R: DeserializeOwned,
    C: TryFrom<R, Error = ConfigError>,
{
    C::try_from(serde_json::from_str::<R>(text)?)
}

/// Reads the file at `path` and hands its text to `parse`.
pub fn load<C>(
    path: &str,
    parse: impl FnOnce(&str) -> Result<C, ConfigError>,
) -> Result<C, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_string(),
        source,
    })?;
    Ok(parse(&text)?)
}

/// The exit status of a program whose config is invalid (BSD's `EX_USAGE`), before anything
/// is bound or touched.
pub const EXIT_INVALID: u8 = 64;

/// [`load`] for a program's main: on failure writes `<who>: load config <path>: <error>` to
/// stderr (logging is not set up before the config is read) and returns the exit status
/// [`EXIT_INVALID`] for main to return.
pub fn load_or_report<C>(
    who: &str,
    path: &str,
    parse: impl FnOnce(&str) -> Result<C, ConfigError>,
) -> Result<C, std::process::ExitCode> {
    load(path, parse).map_err(|e| {
        eprintln!("{}", report(who, path, &e));
        std::process::ExitCode::from(EXIT_INVALID)
    })
}

/// A job program's config, as its main starts: the path from the one flag `--<flag>`
/// ([`crate::flags::config_path`]; a usage error exits 2 with clap's message), then
/// [`load_or_report`].
pub fn from_command_line<C>(
    who: &str,
    program: &'static str,
    flag: &'static str,
    parse: impl FnOnce(&str) -> Result<C, ConfigError>,
) -> Result<C, std::process::ExitCode> {
    let path =
        crate::flags::config_path(program, flag, std::env::args()).unwrap_or_else(|e| e.exit());
    load_or_report(who, &path, parse)
}

/// [`load_or_report`]'s line; a read error already names the path.
fn report(who: &str, path: &str, e: &LoadError) -> String {
    match e {
        LoadError::Read { .. } => format!("{who}: load config: {e}"),
        LoadError::Config(_) => format!("{who}: load config {path}: {e}"),
    }
}

/// `v` as a port number 1-65535; otherwise a problem is recorded and 0 returned.
pub fn port(errors: &mut Vec<String>, name: &str, v: u32) -> u16 {
    match u16::try_from(v) {
        Ok(p) if p != 0 => p,
        _ => {
            errors.push(format!("{name}: must be a port number 1-65535, got {v}"));
            0
        }
    }
}

/// Records a problem when `v` is empty or blank.
pub fn nonempty(errors: &mut Vec<String>, name: &str, v: &str) {
    if v.trim().is_empty() {
        errors.push(format!("{name}: must not be empty"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Raw {
        port: u32,
        name: String,
    }

    #[derive(Debug)]
    struct Cfg {
        port: u16,
    }

    impl TryFrom<Raw> for Cfg {
        type Error = ConfigError;
        fn try_from(r: Raw) -> Result<Cfg, ConfigError> {
            let mut e = Vec::new();
            let port = port(&mut e, "port", r.port);
            nonempty(&mut e, "name", &r.name);
            if e.is_empty() {
                Ok(Cfg { port })
            } else {
                Err(ConfigError::Invalid(e))
            }
        }
    }

    #[test]
    fn lists_every_problem_and_reports_unreadable_files() {
        let ok: Cfg = parse::<Raw, Cfg>(r#"{"port": 80, "name": "x"}"#).unwrap();
        assert_eq!(ok.port, 80);
        let err = parse::<Raw, Cfg>(r#"{"port": 70000, "name": " "}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config: port: must be a port number 1-65535, got 70000; name: must not be empty"
        );
        assert!(matches!(parse::<Raw, Cfg>("{"), Err(ConfigError::Json(_))));
        let missing = load("/nonexistent/config.json", parse::<Raw, Cfg>).unwrap_err();
        assert!(missing
            .to_string()
            .starts_with("read /nonexistent/config.json: "));
        assert!(
            report("cfnetworking.netmon", "/nonexistent/config.json", &missing)
                .starts_with("cfnetworking.netmon: load config: read /nonexistent/config.json: ")
        );
        let invalid =
            LoadError::from(parse::<Raw, Cfg>(r#"{"port": 0, "name": "x"}"#).unwrap_err());
        assert_eq!(
            report("cfnetworking.netmon", "/c.json", &invalid),
            "cfnetworking.netmon: load config /c.json: invalid config: port: must be a port number 1-65535, got 0"
        );
        assert!(load_or_report("x", "/nonexistent/config.json", parse::<Raw, Cfg>).is_err());
    }
}
