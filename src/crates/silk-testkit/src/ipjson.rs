//! Kernel state as `ip -j` and `bridge -j` print it: the lookups and the checks of the silk
//! VTEP that the dataplane's netlink tests and the daemon's cell tests share.

use serde_json::Value;

/// The entries of a JSON list (`ip -j route show ...`); panics, naming the value, on anything
/// else.
pub fn items(list: &Value) -> &[Value] {
    list.as_array()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("not a JSON list: {list}"))
}

/// The first entry of `list` whose `key` is `value`; panics, naming the list, when none is.
pub fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    items(list)
        .iter()
        .find(|e| e[key] == value)
        .unwrap_or_else(|| panic!("no entry with {key} = {value:?} in {list}"))
}

/// True when the JSON list `flags` holds `flag` (`"UP"`, `"onlink"`).
pub fn has_flag(flags: &Value, flag: &str) -> bool {
    items(flags).iter().any(|f| f == flag)
}

/// Checks one `ip -d -j link show silk-vtep` entry against upstream's VTEP: VXLAN with VNI 1
/// on port 4789, group-based policy on, learning off, sourced from `local` over `lower`.
pub fn assert_silk_vtep(link: &Value, local: &str, lower: &str) {
    let data = &link["linkinfo"]["info_data"];
    assert_eq!(link["linkinfo"]["info_kind"], "vxlan", "{link}");
    assert_eq!(data["id"], 1, "{link}");
    assert_eq!(data["port"], 4789, "{link}");
    assert_eq!(data["gbp"], true, "{link}");
    assert_eq!(data["learning"], false, "{link}");
    assert_eq!(data["local"], local, "{link}");
    assert_eq!(data["link"], lower, "{link}");
}

/// Checks that `addr_info` (of `ip -j addr show silk-vtep`) holds exactly one IPv4 address,
/// `ip/prefixlen` with link scope.
pub fn assert_vtep_v4(addr_info: &Value, ip: &str, prefixlen: u64) {
    let v4: Vec<&Value> = items(addr_info)
        .iter()
        .filter(|a| a["family"] == "inet")
        .collect();
    assert_eq!(v4.len(), 1, "{addr_info}");
    assert_eq!(v4[0]["local"], ip, "{addr_info}");
    assert_eq!(v4[0]["prefixlen"], prefixlen, "{addr_info}");
    assert_eq!(v4[0]["scope"], "link", "{addr_info}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_entries_and_flags_and_checks_the_vtep() {
        let routes = json!([{"dst": "10.255.8.0/24", "flags": ["onlink"]}, {"dst": "10.255.0.5"}]);
        assert_eq!(
            find(&routes, "dst", "10.255.0.5"),
            &json!({"dst": "10.255.0.5"})
        );
        assert!(has_flag(
            &find(&routes, "dst", "10.255.8.0/24")["flags"],
            "onlink"
        ));
        assert!(!has_flag(&json!(["UP"]), "onlink"));
        assert!(std::panic::catch_unwind(|| find(&routes, "dst", "10.0.0.0/8").clone()).is_err());
        let link = json!({"linkinfo": {"info_kind": "vxlan", "info_data": {
            "id": 1, "port": 4789, "gbp": true, "learning": false, "local": "192.0.2.1", "link": "u0"}}});
        assert_silk_vtep(&link, "192.0.2.1", "u0");
        assert!(std::panic::catch_unwind(|| assert_silk_vtep(&link, "192.0.2.1", "eth0")).is_err());
        let addrs = json!([{"family": "inet", "local": "10.255.7.0", "prefixlen": 16, "scope": "link"},
                           {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"}]);
        assert_vtep_v4(&addrs, "10.255.7.0", 16);
        assert!(std::panic::catch_unwind(|| assert_vtep_v4(&addrs, "10.255.7.0", 24)).is_err());
    }
}
