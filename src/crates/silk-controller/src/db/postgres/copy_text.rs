//! Rows of `COPY ... TO STDOUT` in PostgreSQL's text format, read into a [`LeaseTable`]: one
//! line per row, columns separated by a tab, `\` escapes (PostgreSQL's `COPY` documentation,
//! "Text Format"). `GET /leases` reads its rows this way: no row objects, no string per
//! column, and the lines arrive as the server writes them.

use silk_core::LeaseTable;

/// Lines split across the chunks of a `COPY` stream, appended to a table as they complete.
#[derive(Default)]
pub struct CopyReader {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// Scratch for a field with escapes.
    field: Vec<u8>,
}

impl CopyReader {
    /// Reads every complete line of `chunk` (after what earlier chunks left) into `table`.
    pub fn feed(&mut self, chunk: &[u8], table: &mut LeaseTable) -> Result<(), String> {
        let mut rest = chunk;
        if !self.partial.is_empty() {
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                self.partial.extend_from_slice(rest);
                return Ok(());
            };
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..nl]);
            self.row(&line, table)?;
            rest = &rest[nl + 1..];
        }
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.row(&rest[..nl], table)?;
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Fails when the stream ended inside a line.
    pub fn finish(self) -> Result<(), String> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "copy data ended inside a row of {} bytes",
                self.partial.len()
            ))
        }
    }

    /// One row of exactly three columns.
    fn row(&mut self, line: &[u8], table: &mut LeaseTable) -> Result<(), String> {
        let before = table.len();
        let mut columns = 0;
        for raw in line.split(|&b| b == b'\t') {
            columns += 1;
            if columns > 3 {
                break;
            }
            if let Err(e) = self.column(raw, table) {
                table.truncate(before);
                return Err(e);
            }
        }
        if columns != 3 {
            table.truncate(before);
            return Err(format!("copy row has {columns} columns, want 3"));
        }
        Ok(())
    }

    fn column(&mut self, raw: &[u8], table: &mut LeaseTable) -> Result<(), String> {
        if raw == b"\\N" {
            return Err("copy row has a NULL column".into());
        }
        let bytes = if raw.contains(&b'\\') {
            unescape(raw, &mut self.field);
            &self.field[..]
        } else {
            raw
        };
        let text = std::str::from_utf8(bytes).map_err(|e| format!("copy column: {e}"))?;
        table.push_field(text);
        Ok(())
    }
}

/// Undoes the text format's escapes into `out`: `\b \f \n \r \t \v`, `\` and 1-3 octal digits,
/// `\x` and 1-2 hex digits, and any other escaped byte as itself.
fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' || i == raw.len() {
            out.push(b);
            continue;
        }
        let c = raw[i];
        i += 1;
        out.push(match c {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                v as u8
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match raw.get(i).and_then(|&d| (d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                v as u8
            }
            other => other,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silk_core::Lease;

    fn lease(u: &str, s: &str, m: &str) -> Lease {
        Lease {
            underlay_ip: u.into(),
            overlay_subnet: s.into(),
            overlay_hardware_addr: m.into(),
        }
    }

    fn read(chunks: &[&[u8]]) -> Result<Vec<Lease>, String> {
        let (mut reader, mut table) = (CopyReader::default(), LeaseTable::default());
        for chunk in chunks {
            reader.feed(chunk, &mut table)?;
        }
        reader.finish()?;
        Ok(table.to_leases())
    }

    #[test]
    fn rows_are_read_whatever_the_chunking() {
        let text: &[u8] = b"10.0.0.1\t10.255.1.0/24\tee:ee:0a:ff:01:00\n10.0.0.2\t10.255.2.0/24\tee:ee:0a:ff:02:00\n";
        let want = vec![
            lease("10.0.0.1", "10.255.1.0/24", "ee:ee:0a:ff:01:00"),
            lease("10.0.0.2", "10.255.2.0/24", "ee:ee:0a:ff:02:00"),
        ];
        assert_eq!(read(&[text]).unwrap(), want);
        for cut in 0..text.len() {
            assert_eq!(
                read(&[&text[..cut], &text[cut..]]).unwrap(),
                want,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(read(&bytes).unwrap(), want);
        assert_eq!(read(&[]).unwrap(), vec![]);
    }

    #[test]
    fn escapes_are_undone() {
        // What PostgreSQL writes for a tab, a newline, a backslash and other control bytes,
        // and the forms it accepts on input (octal, hex, any other escaped byte).
        let cases: &[(&[u8], &str)] = &[
            (b"a\\tb", "a\tb"),
            (b"a\\nb\\rc", "a\nb\rc"),
            (b"\\\\", "\\"),
            (b"\\b\\f\\v", "\u{8}\u{c}\u{b}"),
            (b"\\101\\1010", "AA0"),
            (b"\\7", "\u{7}"),
            (b"\\x41\\x4a1\\xg", "AJ1xg"),
            (b"\\q", "q"),
            (b"tail\\", "tail\\"),
            ("ü".as_bytes(), "ü"),
        ];
        for (raw, want) in cases {
            let mut line = raw.to_vec();
            line.extend_from_slice(b"\ts\tm\n");
            assert_eq!(
                read(&[&line]).unwrap(),
                vec![lease(want, "s", "m")],
                "{raw:?}"
            );
        }
    }

    #[test]
    fn malformed_rows_fail_and_leave_no_partial_lease() {
        for bad in [
            &b"a\tb\n"[..],
            b"a\tb\tc\td\n",
            b"\\N\tb\tc\n",
            b"a\t\xff\tc\n",
        ] {
            let (mut reader, mut table) = (CopyReader::default(), LeaseTable::default());
            reader.feed(b"x\ty\tz\n", &mut table).unwrap();
            assert!(reader.feed(bad, &mut table).is_err(), "{bad:?}");
            assert_eq!(table.to_leases(), vec![lease("x", "y", "z")]);
        }
        let mut reader = CopyReader::default();
        reader.feed(b"a\tb\tc", &mut LeaseTable::default()).unwrap();
        assert!(reader.finish().is_err());
    }
}
