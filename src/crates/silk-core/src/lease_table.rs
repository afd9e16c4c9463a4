//! Many leases in two allocations: the strings of every lease back to back in one text, and
//! where each ends. The controller reads thousands of rows for every `GET /leases`; a
//! [`Lease`] per row costs three allocations to build and three to free, more than the
//! database takes to send the row.

use serde::Serialize;

use crate::Lease;

/// A lease borrowed from a [`LeaseTable`]; serializes exactly as [`Lease`] does (same keys, same
/// order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LeaseRef<'a> {
    pub underlay_ip: &'a str,
    pub overlay_subnet: &'a str,
    pub overlay_hardware_addr: &'a str,
}

impl LeaseRef<'_> {
    pub fn to_lease(&self) -> Lease {
        Lease {
            underlay_ip: self.underlay_ip.to_string(),
            overlay_subnet: self.overlay_subnet.to_string(),
            overlay_hardware_addr: self.overlay_hardware_addr.to_string(),
        }
    }
}

impl<'a> From<&'a Lease> for LeaseRef<'a> {
    fn from(l: &'a Lease) -> Self {
        LeaseRef {
            underlay_ip: &l.underlay_ip,
            overlay_subnet: &l.overlay_subnet,
            overlay_hardware_addr: &l.overlay_hardware_addr,
        }
    }
}

/// Leases in insertion order, stored as one string and the end offset of each field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTable {
    text: String,
    /// Three ends per lease: underlay IP, overlay subnet, hardware address.
    ends: Vec<usize>,
}

/// Bytes a lease's three strings take at most with IPv4 texts (15 + 18 + 17).
const LEASE_TEXT_BYTES: usize = 50;

impl LeaseTable {
    /// Room for `leases` leases of IPv4 texts without growing.
    pub fn with_capacity(leases: usize) -> Self {
        LeaseTable {
            text: String::with_capacity(leases * LEASE_TEXT_BYTES),
            ends: Vec::with_capacity(leases * 3),
        }
    }

    pub fn push(&mut self, lease: LeaseRef<'_>) {
        for field in [
            lease.underlay_ip,
            lease.overlay_subnet,
            lease.overlay_hardware_addr,
        ] {
            self.push_field(field);
        }
    }

    /// Appends one field; every third completes a lease. Lets a reader copy each field straight
    /// from its source (a decoded database row) without building the lease first.
    pub fn push_field(&mut self, field: &str) {
        self.text.push_str(field);
        self.ends.push(self.text.len());
    }

    /// Keeps the first `leases` leases; also drops a lease begun with
    /// [`push_field`](Self::push_field) but not completed.
    pub fn truncate(&mut self, leases: usize) {
        self.ends.truncate(3 * leases.min(self.len()));
        self.text.truncate(self.ends.last().copied().unwrap_or(0));
    }

    /// Complete leases.
    pub fn len(&self) -> usize {
        self.ends.len() / 3
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Option<LeaseRef<'_>> {
        if i >= self.len() {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[3 * i - 1] };
        let [a, b, c] = [self.ends[3 * i], self.ends[3 * i + 1], self.ends[3 * i + 2]];
        Some(LeaseRef {
            underlay_ip: &self.text[start..a],
            overlay_subnet: &self.text[a..b],
            overlay_hardware_addr: &self.text[b..c],
        })
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = LeaseRef<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i).expect("index below len"))
    }

    pub fn to_leases(&self) -> Vec<Lease> {
        self.iter().map(|l| l.to_lease()).collect()
    }

    /// Appends every lease of `other`.
    pub fn append(&mut self, other: &LeaseTable) {
        let base = self.text_len();
        self.text.push_str(&other.text);
        self.ends.extend(other.ends.iter().map(|e| e + base));
    }

    /// The summed length of every string: what a JSON rendering adds beyond its fixed parts.
    pub fn text_len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }
}

impl<'a> FromIterator<LeaseRef<'a>> for LeaseTable {
    fn from_iter<I: IntoIterator<Item = LeaseRef<'a>>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut table = LeaseTable::with_capacity(iter.size_hint().0);
        for lease in iter {
            table.push(lease);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(u: &str, s: &str, m: &str) -> Lease {
        Lease {
            underlay_ip: u.into(),
            overlay_subnet: s.into(),
            overlay_hardware_addr: m.into(),
        }
    }

    #[test]
    fn leases_come_back_in_order_and_whole() {
        let leases = vec![
            lease("10.0.0.1", "10.255.1.0/24", "ee:ee:0a:ff:01:00"),
            lease("", "", ""),
            lease("10.0.0.3", "10.255.3.7/32", "ee:ee:0a:ff:03:07"),
            lease("ü", "\"\\\t", "x"),
        ];
        let table: LeaseTable = leases.iter().map(LeaseRef::from).collect();
        assert_eq!(table.len(), 4);
        assert_eq!(table.to_leases(), leases);
        assert_eq!(table.get(4), None);
        assert_eq!(
            table.text_len(),
            leases
                .iter()
                .map(|l| l.underlay_ip.len()
                    + l.overlay_subnet.len()
                    + l.overlay_hardware_addr.len())
                .sum::<usize>()
        );
    }

    #[test]
    fn tables_append() {
        let a = lease("10.0.0.1", "10.255.1.0/24", "ee:ee:0a:ff:01:00");
        let b = lease("10.0.0.2", "10.255.2.0/24", "ee:ee:0a:ff:02:00");
        let mut table: LeaseTable = [LeaseRef::from(&a)].into_iter().collect();
        table.append(
            &[LeaseRef::from(&b), LeaseRef::from(&a)]
                .into_iter()
                .collect(),
        );
        table.append(&LeaseTable::default());
        assert_eq!(table.to_leases(), vec![a.clone(), b, a]);
        let mut empty = LeaseTable::default();
        empty.append(&table);
        assert_eq!(empty, table);
    }

    #[test]
    fn a_lease_ref_serializes_as_the_lease() {
        let l = lease("10.0.0.1", "10.255.1.0/24", "ee:ee:0a:ff:01:00");
        assert_eq!(
            serde_json::to_string(&LeaseRef::from(&l)).unwrap(),
            serde_json::to_string(&l).unwrap()
        );
    }

    #[test]
    fn a_partial_lease_is_dropped() {
        let mut table = LeaseTable::default();
        table.push_field("10.0.0.1");
        table.push_field("10.255.1.0/24");
        table.push_field("ee:ee:0a:ff:01:00");
        table.push_field("10.0.0.2");
        table.push_field("10.255.2.0/24");
        assert_eq!(table.len(), 1);
        table.truncate(1);
        assert_eq!(
            table.text_len(),
            "10.0.0.110.255.1.0/24ee:ee:0a:ff:01:00".len()
        );
        table.push_field("a");
        table.push_field("b");
        table.push_field("c");
        assert_eq!(table.get(1).unwrap().to_lease(), lease("a", "b", "c"));
        table.truncate(5);
        assert_eq!(table.len(), 2);
        table.truncate(0);
        assert!(table.is_empty());
        let mut empty = LeaseTable::default();
        empty.push_field("x");
        empty.truncate(0);
        assert!(empty.is_empty());
        assert_eq!(empty.text_len(), 0);
    }
}
