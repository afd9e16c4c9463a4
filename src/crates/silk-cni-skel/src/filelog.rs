//! Best-effort lager-style JSON lines appended to a plugin's log file. CNI plugins own stdout,
//! so logs go to a file; a missing log directory never fails a command (the line is dropped).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Appends `{"timestamp","source","message","log_level":1,"data":{...}}` to `path`.
pub fn append(path: &str, source: &str, event: &str, data: serde_json::Value) {
    let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) else {
        return;
    };
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let line = serde_json::json!({
        "timestamp": format!("{ts:.9}"),
        "source": source,
        "message": format!("{source}.{event}"),
        "log_level": 1,
        "data": data,
    });
    let _ = writeln!(f, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

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
