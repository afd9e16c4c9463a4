//! Best-effort lager-style JSON lines appended to a plugin's log file. CNI plugins own stdout,
//! so logs go to a file, created on first use with mode 0644 as upstream opens it
//! (`O_RDWR|O_CREATE|O_APPEND`, silk-release: src/code.cloudfoundry.org/silk/cmd/silk-cni);
//! a log file that cannot be opened never fails a command (the line is dropped).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use silk_ops::log::{line, Format, LagerLevel};

/// Appends one lager line (`{"timestamp","source","message","log_level":1,"data":{...}}`,
/// lager's epoch format, level info, rendered by [`silk_ops::log::render`]) to `path`,
/// creating the file (0644) when its directory exists and it does not.
pub fn append(path: &str, source: &str, event: &str, data: serde_json::Value) {
    let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
    else {
        return;
    };
    let mut text = line::render_now(Format::Epoch, LagerLevel::Info, source, event, &data);
    text.push('\n');
    // One write, so lines of concurrent plugin runs do not interleave.
    let _ = f.write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_file_is_created_with_mode_0644() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("silk-cni.stdout.log");
        for id in ["h1", "h2"] {
            let data = serde_json::json!({ "container_id": id });
            append(p.to_str().unwrap(), "cfnetworking.silk-cni", "del", data);
        }
        let text = std::fs::read_to_string(&p).unwrap();
        // lager's epoch format, keys in lager's order.
        assert!(
            text.lines().all(|l| l.starts_with(r#"{"timestamp":""#)
                && l.contains(r#"","source":"cfnetworking.silk-cni","message":"cfnetworking.silk-cni.del","log_level":1,"data":{"container_id":"h"#)),
            "{text}"
        );
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "cfnetworking.silk-cni.del");
        assert_eq!(lines[1]["data"]["container_id"], "h2");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        // The process umask can only take bits away.
        assert_eq!(mode & !0o644, 0, "mode {mode:o}");
        assert_ne!(mode & 0o600, 0, "mode {mode:o}");
    }

    #[test]
    fn missing_directory_is_silently_ignored_and_existing_file_appended() {
        append(
            "/nonexistent-dir/x.log",
            "cfnetworking.silk-cni",
            "add",
            serde_json::json!({}),
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.log");
        std::fs::write(&p, "").unwrap();
        append(
            p.to_str().unwrap(),
            "cfnetworking.silk-cni",
            "add",
            serde_json::json!({"ip": "10.255.30.2"}),
        );
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"message\":\"cfnetworking.silk-cni.add\""));
    }
}
