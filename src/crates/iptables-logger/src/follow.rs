//! Following the kernel log as `tail -F` does in poll mode (upstream uses hpcloud/tail with
//! `Follow`, `ReOpen`, `Poll`, starting at the end, the file required at start).
//!
//! Rotation is noticed by comparing the path's device and inode with the open file's:
//! - renamed or removed, then recreated: the rest of the old file is read to its end first, then
//!   the new file is read from its start, so no line is lost or read twice;
//! - truncated in place (copytruncate): reading starts again at offset 0 of the same file.
//!
//! Memory is bounded: a line longer than [`MAX_LINE`] bytes is cut there (the kernel's own LOG
//! lines are far shorter).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Longest line kept; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 64 * 1024;

const CHUNK: usize = 64 * 1024;

pub struct Follower {
    path: PathBuf,
    file: File,
    id: (u64, u64),
    offset: u64,
    partial: Vec<u8>,
    /// Dropping the rest of an over-long line until its newline.
    skipping: bool,
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

impl Follower {
    /// Opens `path` (which must exist) positioned at its end.
    pub fn open_at_end(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let mut file = File::open(&path)?;
        let id = file_id(&file.metadata()?);
        let offset = file.seek(SeekFrom::End(0))?;
        Ok(Follower {
            path,
            file,
            id,
            offset,
            partial: Vec::new(),
            skipping: false,
        })
    }

    /// Reads whatever was appended since the last call and hands every complete line (without
    /// its newline) to `line`. Returns the number of lines handed over.
    pub fn poll(&mut self, line: &mut dyn FnMut(&str)) -> io::Result<usize> {
        let mut n = 0;
        // Truncated in place: start over at the beginning of the same file.
        let size = self.file.metadata()?.len();
        if size < self.offset {
            self.file.seek(SeekFrom::Start(0))?;
            self.offset = 0;
            self.partial.clear();
            self.skipping = false;
        }
        n += self.drain(line)?;
        // Replaced: finish the old file (drained above), then switch to the new one. If the
        // path is missing for now, keep the old file and look again next time.
        if let Ok(m) = std::fs::metadata(&self.path) {
            if file_id(&m) != self.id {
                if let Ok(file) = File::open(&self.path) {
                    n += self.drain(line)?;
                    self.id = file_id(&file.metadata()?);
                    self.file = file;
                    self.offset = 0;
                    // A line left unfinished in the old file is complete now.
                    n += self.flush_partial(line);
                    n += self.drain(line)?;
                }
            }
        }
        Ok(n)
    }

    fn flush_partial(&mut self, line: &mut dyn FnMut(&str)) -> usize {
        self.skipping = false;
        if self.partial.is_empty() {
            return 0;
        }
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        line(&text);
        1
    }

    fn drain(&mut self, line: &mut dyn FnMut(&str)) -> io::Result<usize> {
        let mut n = 0;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let got = match self.file.read(&mut buf) {
                Ok(0) => return Ok(n),
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.offset += got as u64;
            let mut rest = &buf[..got];
            while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
                let (head, tail) = rest.split_at(pos);
                if !self.skipping {
                    self.push(head);
                }
                self.skipping = false;
                let text = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                line(text.trim_end_matches('\r'));
                n += 1;
                rest = &tail[1..];
            }
            if !self.skipping {
                self.push(rest);
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.partial.extend_from_slice(&bytes[..room]);
            self.skipping = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &std::path::Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn lines(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        f.poll(&mut |l| out.push(l.to_string())).unwrap();
        out
    }

    #[test]
    fn starts_at_the_end_and_keeps_partial_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kern.log");
        append(&p, "old line\n");
        let mut f = Follower::open_at_end(&p).unwrap();
        assert!(lines(&mut f).is_empty());
        append(&p, "a\nb");
        assert_eq!(lines(&mut f), ["a"]);
        append(&p, "c\n");
        assert_eq!(lines(&mut f), ["bc"]);
    }

    #[test]
    fn missing_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        assert!(Follower::open_at_end(d.path().join("nope")).is_err());
    }

    #[test]
    fn rename_rotation_reads_old_tail_then_new_file_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kern.log");
        append(&p, "");
        let mut f = Follower::open_at_end(&p).unwrap();
        append(&p, "1\n2\n");
        assert_eq!(lines(&mut f), ["1", "2"]);
        append(&p, "3\n");
        std::fs::rename(&p, d.path().join("kern.log.1")).unwrap();
        append(&d.path().join("kern.log.1"), "4\n");
        // Removed for now: keeps reading the old file.
        assert_eq!(lines(&mut f), ["3", "4"]);
        append(&p, "5\n");
        assert_eq!(lines(&mut f), ["5"]);
        assert!(lines(&mut f).is_empty());
        append(&p, "6\n");
        assert_eq!(lines(&mut f), ["6"]);
    }

    #[test]
    fn unfinished_last_line_of_a_rotated_file_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kern.log");
        append(&p, "");
        let mut f = Follower::open_at_end(&p).unwrap();
        append(&p, "whole\nhalf");
        assert_eq!(lines(&mut f), ["whole"]);
        std::fs::remove_file(&p).unwrap();
        append(&p, "next\n");
        assert_eq!(lines(&mut f), ["half", "next"]);
    }

    #[test]
    fn truncation_starts_over() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kern.log");
        append(&p, "");
        let mut f = Follower::open_at_end(&p).unwrap();
        append(&p, "first line\n");
        assert_eq!(lines(&mut f), ["first line"]);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        append(&p, "x\n");
        assert_eq!(lines(&mut f), ["x"]);
    }

    #[test]
    fn over_long_lines_are_cut() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kern.log");
        append(&p, "");
        let mut f = Follower::open_at_end(&p).unwrap();
        append(&p, &format!("{}\nshort\n", "x".repeat(MAX_LINE * 3)));
        let got = lines(&mut f);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE);
        assert_eq!(got[1], "short");
    }
}
