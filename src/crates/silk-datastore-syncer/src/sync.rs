//! The pure part of a sync: which store entries get which `log_config`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use silk_dataplane::datastore::Entries;

/// `{"guid","index","source_name","tags"}` as garden and the store carry it (as a JSON string).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    pub guid: String,
    pub index: i64,
    pub source_name: String,
    pub tags: BTreeMap<String, String>,
}

fn parse(s: Option<&str>) -> Option<LogConfig> {
    serde_json::from_str(s?).ok()
}

/// For every garden container present in the store whose `log_config` differs, the new
/// metadata value (the store's metadata with `log_config` replaced; `metadata` created when
/// null). Containers absent from the store are returned in the second list (logged, skipped).
pub fn plan(
    garden: &BTreeMap<String, BTreeMap<String, String>>,
    store: &Entries,
) -> (Vec<(String, Value)>, Vec<String>) {
    let mut updates = Vec::new();
    let mut missing = Vec::new();
    for (handle, props) in garden {
        let Some(entry) = store.get(handle) else {
            missing.push(handle.clone());
            continue;
        };
        let Some(want) = parse(props.get("log_config").map(String::as_str)) else {
            continue;
        };
        let have = parse(entry.metadata.get("log_config").and_then(Value::as_str));
        if have.as_ref() == Some(&want) {
            continue;
        }
        let mut meta = match &entry.metadata {
            Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        let text = serde_json::to_string(&want).unwrap_or_default();
        meta.insert("log_config".into(), Value::String(text));
        updates.push((handle.clone(), Value::Object(meta)));
    }
    (updates, missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use silk_dataplane::datastore::Container;

    #[test]
    fn updates_only_differing_entries_present_in_the_store() {
        let lc = r#"{"guid":"app","index":1,"source_name":"CELL","tags":{"a":"b"}}"#;
        let garden: BTreeMap<String, BTreeMap<String, String>> = [
            (
                "h1".to_string(),
                [("log_config".to_string(), lc.to_string())].into(),
            ),
            (
                "h2".to_string(),
                [("log_config".to_string(), lc.to_string())].into(),
            ),
            ("h3".to_string(), BTreeMap::new()),
        ]
        .into();
        let mut store = Entries::new();
        store.insert(
            "h1".into(),
            Container {
                handle: "h1".into(),
                ip: "10.255.30.2".into(),
                ipv6: None,
                metadata: Value::Null,
            },
        );
        store.insert(
            "h3".into(),
            Container {
                handle: "h3".into(),
                ip: "10.255.30.3".into(),
                ipv6: None,
                metadata: serde_json::json!({"x": "y"}),
            },
        );
        let (updates, missing) = plan(&garden, &store);
        assert_eq!(missing, vec!["h2"]);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].0, "h1");
        let written: LogConfig =
            serde_json::from_str(updates[0].1["log_config"].as_str().unwrap()).unwrap();
        assert_eq!(written.guid, "app");
        // Already equal: nothing to do.
        store.get_mut("h1").unwrap().metadata = updates[0].1.clone();
        assert!(plan(&garden, &store).0.is_empty());
    }
}
