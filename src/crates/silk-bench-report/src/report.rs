//! The pure part of the report: figures grouped into one table per benchmark and unit of
//! scale, the series each plot draws, and the markdown. Table-tested without files.

use silk_testkit::figures::Figure;

/// What a plot shows, from a metric's name ([`silk_testkit::figures`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Wall-clock times and latencies (`*_ms`).
    Latency,
    /// CPU time (`cpu_ms*`).
    Cpu,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Latency, Kind::Cpu];

    pub fn of(metric: &str) -> Option<Kind> {
        if metric.starts_with("cpu_ms") {
            Some(Kind::Cpu)
        } else if metric.ends_with("_ms") {
            Some(Kind::Latency)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Latency => "latency",
            Kind::Cpu => "cpu",
        }
    }

    pub fn axis(self) -> &'static str {
        match self {
            Kind::Latency => "wall time (ms)",
            Kind::Cpu => "CPU time (ms)",
        }
    }
}

/// One metric of one case at every scale measured, sorted by scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub case: String,
    pub metric: String,
    pub points: Vec<(f64, f64)>,
}

/// A benchmark's figures against one unit of scale (a benchmark may scale in several).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub bench: String,
    pub unit: String,
    /// Every scale measured, ascending.
    pub scales: Vec<f64>,
    /// In the order first seen.
    pub rows: Vec<Row>,
}

impl Table {
    pub fn title(&self) -> String {
        format!("{} against {}", self.bench, self.unit)
    }

    /// A file-name stem: the title's letters and digits, the rest as `-`.
    pub fn slug(&self) -> String {
        let raw: String = format!("{}-{}", self.bench, self.unit)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        raw.split('-')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// The series a plot of `kind` draws: (label, points); empty when there is none.
    pub fn series(&self, kind: Kind) -> Vec<(String, Vec<(f64, f64)>)> {
        self.rows
            .iter()
            .filter(|r| Kind::of(&r.metric) == Some(kind))
            .map(|r| (format!("{} {}", r.case, r.metric), r.points.clone()))
            .collect()
    }

    /// The markdown table: a row per (case, metric), a column per scale.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| case | metric |");
        for s in &self.scales {
            out.push_str(&format!(" {} {} |", number(*s), self.unit));
        }
        out.push_str("\n|---|---|");
        out.push_str(&"---:|".repeat(self.scales.len()));
        out.push('\n');
        for r in &self.rows {
            out.push_str(&format!("| {} | {} |", r.case, r.metric));
            for s in &self.scales {
                let cell = r
                    .points
                    .iter()
                    .find(|(x, _)| x == s)
                    .map_or_else(|| "-".to_string(), |(_, v)| number(*v));
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
        out
    }
}

/// A figure as the tables show it: whole numbers with thousands separators, others with
/// three significant digits at most.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let digits = format!("{}", v.abs() as u64);
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        return if v < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        };
    }
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Groups figures by (bench, unit) and (case, metric), in the order first seen; a figure
/// measured twice at one scale keeps the later value.
pub fn tables(figures: &[Figure]) -> Vec<Table> {
    let mut tables: Vec<Table> = Vec::new();
    for f in figures {
        let t = match tables
            .iter_mut()
            .position(|t| t.bench == f.bench && t.unit == f.unit)
        {
            Some(i) => &mut tables[i],
            None => {
                tables.push(Table {
                    bench: f.bench.clone(),
                    unit: f.unit.clone(),
                    scales: Vec::new(),
                    rows: Vec::new(),
                });
                tables.last_mut().expect("pushed above")
            }
        };
        if !t.scales.contains(&f.scale) {
            t.scales.push(f.scale);
            t.scales.sort_by(f64::total_cmp);
        }
        let row = match t
            .rows
            .iter_mut()
            .position(|r| r.case == f.case && r.metric == f.metric)
        {
            Some(i) => &mut t.rows[i],
            None => {
                t.rows.push(Row {
                    case: f.case.clone(),
                    metric: f.metric.clone(),
                    points: Vec::new(),
                });
                t.rows.last_mut().expect("pushed above")
            }
        };
        row.points.retain(|(x, _)| *x != f.scale);
        row.points.push((f.scale, f.value));
        row.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    tables
}

/// Parses the figures file: one JSON object per line, blank lines skipped; the line number
/// of the first bad line in the error.
pub fn parse(text: &str) -> anyhow::Result<Vec<Figure>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| anyhow::anyhow!("figures line {}: {e}", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use Figure as F;

    #[test]
    fn metrics_sort_into_latency_cpu_or_neither() {
        for (metric, kind) in [
            ("wall_ms", Some(Kind::Latency)),
            ("p99_ms", Some(Kind::Latency)),
            ("cpu_ms", Some(Kind::Cpu)),
            ("cpu_ms_per_req", Some(Kind::Cpu)),
            ("per_s", None),
            ("rss_kib", None),
        ] {
            assert_eq!(Kind::of(metric), kind, "{metric}");
        }
    }

    #[test]
    fn figures_group_by_bench_and_unit_with_sorted_scales() {
        let figs = vec![
            F::new("vpa", "first cycle", 1000.0, "policies", "wall_ms", 20.0),
            F::new("vpa", "first cycle", 100.0, "policies", "wall_ms", 5.0),
            F::new("vpa", "first cycle", 100.0, "policies", "cpu_ms", 4.0),
            F::new("controller-mysql", "acquire", 1.0, "clients", "p50_ms", 0.7),
            F::new(
                "controller-mysql",
                "GET /leases",
                5000.0,
                "leases",
                "p99_ms",
                9.0,
            ),
            F::new("vpa", "first cycle", 100.0, "policies", "wall_ms", 6.0),
        ];
        let t = tables(&figs);
        assert_eq!(
            t.iter().map(Table::title).collect::<Vec<_>>(),
            [
                "vpa against policies",
                "controller-mysql against clients",
                "controller-mysql against leases"
            ]
        );
        assert_eq!(t[0].scales, [100.0, 1000.0]);
        assert_eq!(t[0].rows[0].points, [(100.0, 6.0), (1000.0, 20.0)]);
        assert_eq!(
            t[0].series(Kind::Cpu),
            [("first cycle cpu_ms".into(), vec![(100.0, 4.0)])]
        );
        assert!(t[2].series(Kind::Cpu).is_empty());
        assert_eq!(t[2].slug(), "controller-mysql-leases");
    }

    #[test]
    fn the_markdown_table_has_a_column_per_scale_and_marks_gaps() {
        let figs = vec![
            F::new("daemon", "steady cycle", 1000.0, "leases", "wall_ms", 1.234),
            F::new("daemon", "steady cycle", 5000.0, "leases", "wall_ms", 12.34),
            F::new(
                "daemon",
                "resident memory",
                5000.0,
                "leases",
                "rss_kib",
                20480.0,
            ),
        ];
        assert_eq!(
            tables(&figs)[0].markdown(),
            "| case | metric | 1,000 leases | 5,000 leases |\n\
             |---|---|---:|---:|\n\
             | steady cycle | wall_ms | 1.23 | 12.3 |\n\
             | resident memory | rss_kib | - | 20,480 |\n"
        );
    }

    #[test]
    fn numbers_read_well() {
        for (v, s) in [
            (0.5, "0.50"),
            (12.345, "12.3"),
            (1234.5, "1234"),
            (3000.0, "3,000"),
            (7.0, "7"),
        ] {
            assert_eq!(number(v), s, "{v}");
        }
    }

    #[test]
    fn a_bad_line_is_named() {
        let text = "{\"bench\":\"a\",\"case\":\"c\",\"scale\":1,\"unit\":\"u\",\"metric\":\"m\",\"value\":2}\n\nnot json\n";
        let e = parse(text).unwrap_err().to_string();
        assert!(e.starts_with("figures line 3:"), "{e}");
        assert_eq!(parse(&text[..text.len() - 9]).unwrap().len(), 1);
    }
}
