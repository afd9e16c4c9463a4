//! One output line of `iptables.log`: the parsed packet merged with the container it belongs
//! to (upstream's `merger.Merger`), rendered as the line lager writes from logger
//! `cfnetworking.iptables` in either timestamp format.
//!
//! ```text
//! {"timestamp":"2026-12-02T11:40:01.123456789Z","level":"info","source":"cfnetworking.iptables",
//!  "message":"cfnetworking.iptables.egress-denied","data":{"packet":{...},"source":{...}}}
//! ```
//!
//! `data` is a Go map, so its keys come sorted: `destination` before `packet` before `source`.

use serde::Serialize;

use crate::containers::ContainerInfo;
use crate::parse::{Direction, Packet};

pub const SOURCE: &str = "cfnetworking.iptables";

/// `log_timestamp_format`: lager's "pretty" format (`rfc3339`) or the deprecated epoch one.
pub use silk_ops::log::Format as TimestampFormat;

/// `data` of an output line. Go marshals lager's map with sorted keys and the structs in
/// field order; this struct gives the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Data {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<ContainerInfo>,
    pub packet: Packet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<ContainerInfo>,
}

/// The event name (`egress-allowed`, `ingress-denied`, ...) and `data` of one packet.
/// `container` is the source container for egress, the destination for ingress.
pub fn merge(packet: &Packet, container: ContainerInfo) -> (String, Data) {
    let event = format!(
        "{}-{}",
        packet.direction.as_str(),
        if packet.allowed { "allowed" } else { "denied" }
    );
    let (destination, source) = match packet.direction {
        Direction::Ingress => (Some(container), None),
        Direction::Egress => (None, Some(container)),
    };
    let data = Data {
        destination,
        packet: packet.clone(),
        source,
    };
    (event, data)
}

/// The IP whose container the line is about: the destination of ingress, the source of egress.
pub fn lookup_ip(packet: &Packet) -> &str {
    match packet.direction {
        Direction::Ingress => &packet.dst_ip,
        Direction::Egress => &packet.src_ip,
    }
}

/// Renders one info line (no newline) at `now` (nanoseconds since the epoch).
pub fn render(format: TimestampFormat, now_nanos: i128, event: &str, data: &Data) -> String {
    silk_ops::log::render(
        format,
        now_nanos,
        silk_ops::log::LagerLevel::Info,
        SOURCE,
        event,
        data,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse, tests::*};

    fn container() -> ContainerInfo {
        ContainerInfo {
            container_id: "container-handle-1-longer-than-29-chars".into(),
            app_guid: "app_id_1".into(),
            space_guid: "space_id_1".into(),
            organization_guid: "organization_id_1".into(),
            host_ip: "1.2.3.4".into(),
            host_guid: "some-guid".into(),
        }
    }

    const T: i128 = 1_764_675_601_123_456_789;

    #[test]
    fn egress_line_in_rfc3339_format_is_upstreams() {
        let p = parse(ASG_OK_UDP);
        assert_eq!(lookup_ip(&p), "10.255.0.1");
        let (event, data) = merge(&p, container());
        assert_eq!(
            render(TimestampFormat::Rfc3339, T, &event, &data),
            concat!(
                r#"{"timestamp":"2025-12-02T11:40:01.123456789Z","level":"info","source":"cfnetworking.iptables","message":"cfnetworking.iptables.egress-allowed","data":"#,
                r#"{"packet":{"direction":"egress","allowed":true,"src_ip":"10.255.0.1","dst_ip":"10.10.10.10","src_port":36556,"dst_port":11111,"protocol":"UDP","mark":"0x1","icmp_type":0,"icmp_code":0},"#,
                r#""source":{"container_id":"container-handle-1-longer-than-29-chars","app_guid":"app_id_1","space_guid":"space_id_1","organization_guid":"organization_id_1","host_ip":"1.2.3.4","host_guid":"some-guid"}}}"#
            )
        );
    }

    #[test]
    fn ingress_line_uses_destination_key_and_deprecated_format() {
        let p = parse(C2C_DENY_TCP);
        assert_eq!(lookup_ip(&p), "10.255.15.13");
        let (event, data) = merge(&p, ContainerInfo::default());
        let line = render(TimestampFormat::Epoch, T, &event, &data);
        assert!(
            line.starts_with(r#"{"timestamp":"1764675601.123456789","source":"cfnetworking.iptables","message":"cfnetworking.iptables.ingress-denied","log_level":1,"data":{"destination":{"container_id":"","#),
            "{line}"
        );
        assert!(
            line.ends_with(r#""host_ip":"","host_guid":""},"packet":{"direction":"ingress","allowed":false,"src_ip":"10.255.15.7","dst_ip":"10.255.15.13","src_port":36004,"dst_port":723,"protocol":"TCP","mark":"0x2","icmp_type":0,"icmp_code":0}}}"#),
            "{line}"
        );
    }
}
