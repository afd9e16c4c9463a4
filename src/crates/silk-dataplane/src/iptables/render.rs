//! Rules and the `iptables-restore --noflush` payload.
//!
//! A payload names each table once. Within a table: chain declarations first (declaring a
//! chain we own creates it or flushes it, so its rules are rewritten in the same commit), then
//! deletions of parent rules, then rules inserted first in their chain, then appended rules,
//! then chain removals. A payload that fails
//! changes nothing in that table; the whole change is one process and one lock hold.

use std::fmt;

use super::chain::ChainName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Filter,
    Nat,
    Mangle,
    Raw,
}

impl Table {
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
            Table::Mangle => "mangle",
            Table::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Option<Table> {
        Some(match s {
            "filter" => Table::Filter,
            "nat" => Table::Nat,
            "mangle" => Table::Mangle,
            "raw" => Table::Raw,
            _ => return None,
        })
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule: its chain and its match/target text in canonical `iptables-save` form
/// (e.g. `-s 10.255.30.2/32 -j input--h`), so the payload reads like the saved tables.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub chain: String,
    pub spec: String,
}

impl Rule {
    pub fn new(chain: impl fmt::Display, spec: impl Into<String>) -> Rule {
        Rule {
            chain: chain.to_string(),
            spec: spec.into(),
        }
    }

    /// The rule as an `-A` line.
    pub fn append_line(&self) -> String {
        format!("-A {} {}", self.chain, self.spec)
    }

    /// True when the rule jumps or goes to `target`.
    pub fn targets(&self, target: &str) -> bool {
        let toks: Vec<&str> = self.spec.split_whitespace().collect();
        toks.windows(2)
            .any(|w| matches!(w[0], "-j" | "-g" | "--jump" | "--goto") && w[1] == target)
    }
}

/// The change to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub table: Table,
    /// Chains we own: created, or flushed when they exist.
    pub declare: Vec<ChainName>,
    /// Existing rules to delete (exact text as saved).
    pub delete: Vec<Rule>,
    /// Rules inserted at position 1 of their chain, after the deletions (the last one listed
    /// ends up first).
    pub insert_first: Vec<Rule>,
    pub append: Vec<Rule>,
    /// Chains to remove after the deletions (must be declared, i.e. flushed, first).
    pub remove: Vec<ChainName>,
}

impl TablePlan {
    pub fn new(table: Table) -> TablePlan {
        TablePlan {
            table,
            declare: vec![],
            delete: vec![],
            insert_first: vec![],
            append: vec![],
            remove: vec![],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.declare.is_empty()
            && self.delete.is_empty()
            && self.insert_first.is_empty()
            && self.append.is_empty()
            && self.remove.is_empty()
    }
}

/// A whole change: the text for one `iptables-restore --noflush` (or ip6tables-restore) call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    pub tables: Vec<TablePlan>,
}

impl Payload {
    /// The plan for `table`, created on first use (tables render in first-use order).
    pub fn table(&mut self, table: Table) -> &mut TablePlan {
        if let Some(i) = self.tables.iter().position(|t| t.table == table) {
            &mut self.tables[i]
        } else {
            self.tables.push(TablePlan::new(table));
            let last = self.tables.len() - 1;
            &mut self.tables[last]
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(TablePlan::is_empty)
    }

    /// Number of rule lines written (appends), for the benchmark's rules-per-container figure.
    pub fn rule_count(&self) -> usize {
        self.tables.iter().map(|t| t.append.len()).sum()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for t in self.tables.iter().filter(|t| !t.is_empty()) {
            out.push_str(&format!("*{}\n", t.table));
            for c in &t.declare {
                out.push_str(&format!(":{c} - [0:0]\n"));
            }
            for r in &t.delete {
                out.push_str(&format!("-D {} {}\n", r.chain, r.spec));
            }
            for r in &t.insert_first {
                out.push_str(&format!("-I {} 1 {}\n", r.chain, r.spec));
            }
            for r in &t.append {
                out.push_str(&r.append_line());
                out.push('\n');
            }
            for c in &t.remove {
                out.push_str(&format!("-X {c}\n"));
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_declarations_deletes_appends_and_removals_in_order() {
        let mut p = Payload::default();
        let chain = ChainName::netout("h");
        let f = p.table(Table::Filter);
        f.declare.push(chain.clone());
        f.delete
            .push(Rule::new("FORWARD", "-s 10.0.0.2/32 -o eth0 -j netout--h"));
        f.append.push(Rule::new(
            &chain,
            "-j REJECT --reject-with icmp-port-unreachable",
        ));
        f.remove.push(ChainName::new("old").unwrap());
        f.insert_first.push(Rule::new("FORWARD", "-j vpa--1"));
        p.table(Table::Nat);
        assert_eq!(
            p.render(),
            "*filter\n:netout--h - [0:0]\n-D FORWARD -s 10.0.0.2/32 -o eth0 -j netout--h\n\
             -I FORWARD 1 -j vpa--1\n-A netout--h -j REJECT --reject-with icmp-port-unreachable\n-X old\nCOMMIT\n"
        );
        assert_eq!(p.rule_count(), 1);
    }

    #[test]
    fn targets_matches_jump_and_goto_exactly() {
        let r = Rule::new("FORWARD", "-s 10.0.0.2/32 -o eth0 -j netout--h");
        assert!(r.targets("netout--h"));
        assert!(!r.targets("netout--"));
        assert!(Rule::new("x", "-p tcp -g netout--h--log").targets("netout--h--log"));
    }
}
