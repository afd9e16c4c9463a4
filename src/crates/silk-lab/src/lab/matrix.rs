//! The connectivity matrix: every app to every app on its port, and every app to the outside
//! host, as tested live beside what the policies and ASGs say. Pure: probes are passed in.

use std::fmt::Write;

use super::demo::{asg_allows, policy_allows, Demo, OUTSIDE};
use crate::policy_server::data::PolicyFile;

/// What one live connection attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Connected, and the answer named the expected responder.
    Reached,
    /// Connected, but something else answered.
    Wrong(String),
    /// Rejected (RST or ICMP unreachable): the REJECT of a policy or ASG chain.
    Refused,
    /// No answer within the bounded timeout.
    Timeout,
    Error(String),
}

impl Probe {
    pub fn reached(&self) -> bool {
        matches!(self, Probe::Reached)
    }
}

/// Row `i`: app `i`'s probes to app `j` (`None` on the diagonal), then to the outside host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub to_apps: Vec<Option<Probe>>,
    pub to_outside: Probe,
}

/// One difference between the live matrix and the policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub from: String,
    pub to: String,
    pub expected: bool,
    pub got: Probe,
}

/// Live vs expected, cell by cell.
pub fn differences(d: &Demo, file: &PolicyFile, rows: &[Row]) -> Vec<Difference> {
    let mut out = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let src = &d.apps[i];
        for (j, probe) in row.to_apps.iter().enumerate() {
            let Some(probe) = probe else { continue };
            let expected = policy_allows(file, src, &d.apps[j]);
            if expected != probe.reached() {
                out.push(Difference {
                    from: src.name.clone(),
                    to: d.apps[j].name.clone(),
                    expected,
                    got: probe.clone(),
                });
            }
        }
        let expected = asg_allows(file, src, OUTSIDE);
        if expected != row.to_outside.reached() {
            out.push(Difference {
                from: src.name.clone(),
                to: "outside".into(),
                expected,
                got: row.to_outside.clone(),
            });
        }
    }
    out
}

fn mark(expected: bool, got: &Probe) -> &'static str {
    match (expected, got.reached()) {
        (true, true) => "+",
        (false, false) => ".",
        (true, false) => "!.",
        (false, true) => "!+",
    }
}

/// The matrix as text: a row per source app, a column per destination (numbered as the rows),
/// then the outside host; `+` reached as allowed, `.` blocked as denied, `!.` allowed but
/// blocked, `!+` denied but reached; then the differences spelt out.
pub fn render(d: &Demo, file: &PolicyFile, rows: &[Row]) -> String {
    let width = d
        .apps
        .iter()
        .map(|a| a.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let col = if d.apps.len() >= 10 { 3 } else { 2 };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "connectivity (row -> column, tcp to each app's port; outside = {OUTSIDE}), live vs policies/ASGs:"
    );
    let _ = write!(s, "  {:>3} {:<width$} {:<5}", "", "app", "space");
    for j in 0..d.apps.len() {
        let _ = write!(s, "{:>col$}", j + 1);
    }
    let _ = writeln!(s, "  outside");
    for (i, row) in rows.iter().enumerate() {
        let a = &d.apps[i];
        let _ = write!(s, "  {:>3} {:<width$} {:<5}", i + 1, a.name, a.space.name);
        for (j, p) in row.to_apps.iter().enumerate() {
            let m = match p {
                None => "-",
                Some(p) => mark(policy_allows(file, a, &d.apps[j]), p),
            };
            let _ = write!(s, "{m:>col$}");
        }
        let _ = writeln!(
            s,
            "  {}",
            mark(asg_allows(file, a, OUTSIDE), &row.to_outside)
        );
    }
    let diffs = differences(d, file, rows);
    let checks: usize = rows
        .iter()
        .map(|r| r.to_apps.iter().flatten().count() + 1)
        .sum();
    let _ = writeln!(
        s,
        "  + reached, allowed   . blocked, denied   !. allowed but blocked   !+ denied but reached"
    );
    if diffs.is_empty() {
        let _ = writeln!(
            s,
            "matrix equals policies and ASGs ({checks} connections tested)"
        );
    } else {
        let _ = writeln!(
            s,
            "DIFFERENCES: {} of {checks} connections differ from policies and ASGs:",
            diffs.len()
        );
        for x in &diffs {
            let want = if x.expected { "allowed" } else { "denied" };
            let _ = writeln!(s, "  {} -> {}: {want}, got {:?}", x.from, x.to, x.got);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::demo::{demo, demo_file};

    fn live(d: &Demo, f: &PolicyFile) -> Vec<Row> {
        (0..d.apps.len())
            .map(|i| Row {
                to_apps: (0..d.apps.len())
                    .map(|j| {
                        (i != j).then(|| {
                            if policy_allows(f, &d.apps[i], &d.apps[j]) {
                                Probe::Reached
                            } else {
                                Probe::Refused
                            }
                        })
                    })
                    .collect(),
                to_outside: if asg_allows(f, &d.apps[i], OUTSIDE) {
                    Probe::Reached
                } else {
                    Probe::Refused
                },
            })
            .collect()
    }

    #[test]
    fn a_matrix_that_follows_the_policies_has_no_differences() {
        let d = demo(3, 6);
        let f = demo_file(&d);
        let text = render(&d, &f, &live(&d, &f));
        assert!(
            text.contains("matrix equals policies and ASGs (36 connections tested)"),
            "{text}"
        );
        let frontend = text.lines().find(|l| l.contains("frontend")).unwrap();
        assert_eq!(
            frontend.split_whitespace().collect::<Vec<_>>(),
            ["1", "frontend", "prod", "-", "+", ".", ".", ".", ".", "+"]
        );
    }

    #[test]
    fn differences_are_marked_and_spelt_out() {
        let d = demo(3, 6);
        let f = demo_file(&d);
        let mut rows = live(&d, &f);
        rows[0].to_apps[1] = Some(Probe::Timeout);
        rows[1].to_outside = Probe::Reached;
        let diffs = differences(&d, &f, &rows);
        assert_eq!(diffs.len(), 2);
        assert_eq!(
            (
                diffs[0].from.as_str(),
                diffs[0].to.as_str(),
                diffs[0].expected
            ),
            ("frontend", "backend", true)
        );
        assert_eq!(
            (diffs[1].to.as_str(), diffs[1].expected),
            ("outside", false)
        );
        let text = render(&d, &f, &rows);
        assert!(text.contains("DIFFERENCES: 2 of 36"), "{text}");
        assert!(
            text.contains("frontend -> backend: allowed, got Timeout"),
            "{text}"
        );
        let backend = text.lines().find(|l| l.contains(" backend ")).unwrap();
        assert!(backend.ends_with("!+"), "{backend}");
    }
}
