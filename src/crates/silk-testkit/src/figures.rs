//! The benchmarks' machine-readable output: with `SILK_BENCH_FIGURES=<file>` in the
//! environment (set by `scripts/bench` when it runs every benchmark), each figure a benchmark
//! prints is also appended to that file as one JSON object per line, which the report tool
//! (`silk-bench-report`) reads:
//!
//! ```text
//! {"bench":"vpa","case":"first cycle","scale":1000,"unit":"policies","metric":"wall_ms","value":12.5}
//! ```
//!
//! `metric` names end in their unit: `_ms` (latency), `cpu_ms` (CPU time), `per_s`, `kib`,
//! `count`. Without the variable nothing is written.

use std::io::Write;

/// The environment variable naming the figures file.
pub const ENV: &str = "SILK_BENCH_FIGURES";

/// One figure.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Figure {
    pub bench: String,
    pub case: String,
    pub scale: f64,
    pub unit: String,
    pub metric: String,
    pub value: f64,
}

impl Figure {
    pub fn new(bench: &str, case: &str, scale: f64, unit: &str, metric: &str, value: f64) -> Self {
        Figure {
            bench: bench.into(),
            case: case.into(),
            scale,
            unit: unit.into(),
            metric: metric.into(),
            value,
        }
    }
}

/// Appends one figure to the file in [`ENV`], if set; a failure to write is reported on stderr
/// and does not stop the benchmark.
pub fn record(bench: &str, case: &str, scale: f64, unit: &str, metric: &str, value: f64) {
    let Ok(path) = std::env::var(ENV) else {
        return;
    };
    let figure = Figure::new(bench, case, scale, unit, metric, value);
    let line = match serde_json::to_string(&figure) {
        Ok(l) => l,
        Err(e) => return eprintln!("{ENV}: {e}"),
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = written {
        eprintln!("{ENV}={path}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_is_one_json_line() {
        let f = Figure::new("vpa", "first cycle", 1000.0, "policies", "wall_ms", 12.5);
        let line = serde_json::to_string(&f).unwrap();
        assert_eq!(
            line,
            r#"{"bench":"vpa","case":"first cycle","scale":1000.0,"unit":"policies","metric":"wall_ms","value":12.5}"#
        );
        assert_eq!(serde_json::from_str::<Figure>(&line).unwrap(), f);
    }
}
