//! `silk-bench-report`: the report of a `scripts/bench` run (docs/lab.md). Reads the figures
//! the benchmarks wrote (`silk_testkit::figures` lines), writes `report.md` into `--out` with
//! the machine (CPU model, cores, memory, kernel, load), the commit and the date, then per
//! benchmark and unit of scale a markdown table and PNG plots of latency and CPU time against
//! the scale.
//!
//! ```text
//! silk-bench-report --figures FILE --out DIR --commit C --date D
//!                   [--font TTF] [--load-start "1.0 0.8 0.5"] [--failed NAME]... [--note TEXT]
//! ```

mod plot;
mod report;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use report::{tables, Kind};

#[derive(Parser)]
#[command(
    name = "silk-bench-report",
    about = "The benchmark report: tables and PNG plots"
)]
struct Cli {
    /// The figures file the benchmarks appended to (SILK_BENCH_FIGURES).
    #[arg(long)]
    figures: PathBuf,
    /// Where report.md and the plots go (the benchmarks' outputs are expected there as NAME.txt).
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    commit: String,
    #[arg(long)]
    date: String,
    /// The TrueType font of the plots' text (Debian's fonts-dejavu-core).
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
    /// /proc/loadavg's first three fields when the run began.
    #[arg(long)]
    load_start: Option<String>,
    /// Benchmarks that failed (their output is in NAME.txt).
    #[arg(long)]
    failed: Vec<String>,
    /// A line of context for the reader (e.g. what else ran on the machine).
    #[arg(long)]
    note: Option<String>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// CPU model, cores, memory, kernel, from /proc.
fn machine() -> Vec<(&'static str, String)> {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown")
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    vec![
        ("CPU", model),
        ("cores", cores.to_string()),
        ("memory", format!("{:.1} GiB", mem_kib / 1024.0 / 1024.0)),
        (
            "kernel",
            read("/proc/sys/kernel/osrelease").trim().to_string(),
        ),
    ]
}

fn load_now() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(cli: &Cli) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(&cli.figures)
        .with_context(|| format!("read {}", cli.figures.display()))?;
    let figures = report::parse(&text)?;
    plot::register_font(&cli.font)?;
    std::fs::create_dir_all(&cli.out).with_context(|| format!("create {}", cli.out.display()))?;
    let mut md = String::from("# Benchmark report\n\n");
    writeln!(md, "- date: {}", cli.date)?;
    writeln!(md, "- commit: {}", cli.commit)?;
    for (k, v) in machine() {
        writeln!(md, "- {k}: {v}")?;
    }
    if let Some(l) = &cli.load_start {
        writeln!(md, "- load average (1, 5, 15 min) at the start: {l}")?;
    }
    writeln!(
        md,
        "- load average (1, 5, 15 min) at the end: {}",
        load_now()
    )?;
    if let Some(n) = &cli.note {
        writeln!(md, "- note: {n}")?;
    }
    if !cli.failed.is_empty() {
        writeln!(md, "- FAILED: {} (see their output)", cli.failed.join(", "))?;
    }
    let mut outputs: Vec<String> = std::fs::read_dir(&cli.out)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    outputs.sort();
    if !outputs.is_empty() {
        let links: Vec<String> = outputs.iter().map(|n| format!("[{n}]({n})")).collect();
        writeln!(md, "- each benchmark's own output: {}", links.join(", "))?;
    }
    md.push('\n');
    for t in tables(&figures) {
        writeln!(md, "## {}\n", t.title())?;
        for kind in Kind::ALL {
            let series = t.series(kind);
            if series.is_empty() {
                continue;
            }
            let file = format!("{}-{}.png", t.slug(), kind.name());
            let title = format!("{}: {}", t.title(), kind.name());
            plot::line_chart(&cli.out.join(&file), &title, &t.unit, kind.axis(), &series)
                .with_context(|| format!("plot {file}"))?;
            writeln!(md, "![{title}]({file})\n")?;
        }
        writeln!(md, "{}", t.markdown())?;
    }
    let path = cli.out.join("report.md");
    std::fs::write(&path, md).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

fn main() {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(path) => println!("{}", Path::new(&path).display()),
        Err(e) => {
            eprintln!("silk-bench-report: {e:#}");
            std::process::exit(1);
        }
    }
}
