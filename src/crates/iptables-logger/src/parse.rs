//! The kernel LOG lines of silk's rules (policy contract §3.11: `OK_<tag>_<guid>`, `OK_<handle>`,
//! `DENY_<handle>`, `DENY_C2C_<handle>`, `DENY_ORL_<handle>`) and the packet fields read from
//! them, as upstream's `parser.KernelLogParser` does: every whitespace-separated `KEY=VALUE`
//! token, the first occurrence of a key winning (ICMP lines carry `ID=` twice, most lines `LEN=`).

use serde::Serialize;

/// `ingress` or `egress`, as written in the message and in `packet.direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// The `packet` object of an output line; field order is upstream's (`parser.ParsedData`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Packet {
    pub direction: Direction,
    pub allowed: bool,
    pub src_ip: String,
    pub dst_ip: String,
    pub src_port: u32,
    pub dst_port: u32,
    pub protocol: String,
    pub mark: String,
    pub icmp_type: u32,
    pub icmp_code: u32,
}

/// True for a line written by one of silk's LOG rules: it contains `OK_` or `DENY_` (every
/// prefix of §3.11 starts with one of them).
pub fn is_iptables_log(line: &str) -> bool {
    line.contains("OK_") || line.contains("DENY_")
}

/// Reads the packet fields of a LOG line. Missing keys give empty strings, missing or invalid
/// numbers 0. Direction is `ingress` when the output device is a silk host veth (`s-<12
/// digits>`), otherwise `egress`.
pub fn parse(line: &str) -> Packet {
    let field = |key: &str| -> &str {
        line.split_whitespace()
            .filter_map(|tok| tok.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .unwrap_or("")
    };
    let number = |key: &str| field(key).parse::<u32>().unwrap_or(0);
    let direction = if field("OUT").contains("s-") {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    Packet {
        direction,
        allowed: line.contains("OK_"),
        src_ip: field("SRC").to_string(),
        dst_ip: field("DST").to_string(),
        src_port: number("SPT"),
        dst_port: number("DPT"),
        protocol: field("PROTO").to_string(),
        mark: field("MARK").to_string(),
        icmp_type: number("TYPE"),
        icmp_code: number("CODE"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Lines as the kernel writes them for each prefix kind of §3.11 (rsyslog adds the header).
    pub const C2C_OK_TCP: &str = "May  3 23:35:07 localhost kernel: [87981.320056] OK_0002_e9e8959f-3828-4136-8 IN=s-010255015007 OUT=s-010255015013 MAC=aa:aa:0a:ff:0f:07:ee:ee:0a:ff:0f:07:08:00 SRC=10.255.15.7 DST=10.255.15.13 LEN=52 TOS=0x00 PREC=0x00 TTL=63 ID=43997 DF PROTO=TCP SPT=60012 DPT=8080 WINDOW=237 RES=0x00 ACK URGP=0 MARK=0x2";
    pub const C2C_DENY_TCP: &str = "May  3 23:34:07 localhost kernel: [87921.493829] DENY_C2C_cb40f81e-52ce-41c5- IN=s-010255015007 OUT=s-010255015013 MAC=aa:aa:0a:ff:0f:07:ee:ee:0a:ff:0f:07:08:00 SRC=10.255.15.7 DST=10.255.15.13 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=35889 DF PROTO=TCP SPT=36004 DPT=723 WINDOW=29200 RES=0x00 SYN URGP=0 MARK=0x2";
    pub const ASG_OK_UDP: &str = "Jun 28 18:21:24 localhost kernel: [100471.222018] OK_container-handle-1-longer IN=s-010255178004 OUT=eth0 MAC=aa:aa:0a:ff:b2:04:ee:ee:0a:ff:b2:04:08:00 SRC=10.255.0.1 DST=10.10.10.10 LEN=29 TOS=0x00 PREC=0x00 TTL=63 ID=2806 DF PROTO=UDP SPT=36556 DPT=11111 LEN=9 MARK=0x1";
    pub const ASG_DENY_TCP: &str = "May  3 23:35:58 localhost kernel: [88032.025828] DENY_d538d169-f2f6-4587-77b1 IN=s-010255015007 OUT=eth0 MAC=aa:aa:0a:ff:0f:07:ee:ee:0a:ff:0f:07:08:00 SRC=10.255.15.7 DST=10.10.10.1 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=61375 DF PROTO=TCP SPT=49466 DPT=80 WINDOW=29200 RES=0x00 SYN URGP=0 MARK=0x2";
    pub const ASG_DENY_ICMP: &str = "May 25 17:19:38 localhost kernel: [173756.041192] DENY_da966cab-6a60-49c4-4f90 IN=s-010247180118 OUT=eth0 MAC=aa:aa:0a:f7:b4:76:ee:ee:0a:f7:b4:76:08:00 SRC=10.247.180.118 DST=10.0.0.1 LEN=84 TOS=0x00 PREC=0x00 TTL=63 ID=58750 DF PROTO=ICMP TYPE=8 CODE=2 ID=172 SEQ=1";
    pub const ORL_DENY_TCP: &str = "2026-12-02T11:40:01.123456+00:00 cell-1 kernel: [ 9120.554410] DENY_ORL_6f1e4f5a-1b2c-4d3e- IN=s-010255007004 OUT=eth0 MAC=aa:aa:0a:ff:07:04:ee:ee:0a:ff:07:04:08:00 SRC=10.255.7.4 DST=10.0.11.7 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=4242 DF PROTO=TCP SPT=41000 DPT=443 WINDOW=64240 RES=0x00 SYN URGP=0";

    fn packet(
        direction: Direction,
        allowed: bool,
        ips: (&str, &str),
        ports: (u32, u32),
        protocol: &str,
        mark: &str,
    ) -> Packet {
        Packet {
            direction,
            allowed,
            src_ip: ips.0.into(),
            dst_ip: ips.1.into(),
            src_port: ports.0,
            dst_port: ports.1,
            protocol: protocol.into(),
            mark: mark.into(),
            icmp_type: 0,
            icmp_code: 0,
        }
    }

    #[test]
    fn recognises_every_silk_prefix_and_nothing_else() {
        for line in [
            C2C_OK_TCP,
            C2C_DENY_TCP,
            ASG_OK_UDP,
            ASG_DENY_TCP,
            ASG_DENY_ICMP,
            ORL_DENY_TCP,
        ] {
            assert!(is_iptables_log(line), "{line}");
        }
        assert!(!is_iptables_log(
            "May  3 23:35:07 localhost kernel: [87981.3] eth0: link up"
        ));
        assert!(!is_iptables_log(""));
    }

    #[test]
    fn c2c_allowed_is_ingress() {
        assert_eq!(
            parse(C2C_OK_TCP),
            packet(
                Direction::Ingress,
                true,
                ("10.255.15.7", "10.255.15.13"),
                (60012, 8080),
                "TCP",
                "0x2"
            )
        );
    }

    #[test]
    fn c2c_denied_is_ingress() {
        assert_eq!(
            parse(C2C_DENY_TCP),
            packet(
                Direction::Ingress,
                false,
                ("10.255.15.7", "10.255.15.13"),
                (36004, 723),
                "TCP",
                "0x2"
            )
        );
    }

    #[test]
    fn asg_allowed_and_denied_are_egress() {
        assert_eq!(
            parse(ASG_OK_UDP),
            packet(
                Direction::Egress,
                true,
                ("10.255.0.1", "10.10.10.10"),
                (36556, 11111),
                "UDP",
                "0x1"
            )
        );
        assert_eq!(
            parse(ASG_DENY_TCP),
            packet(
                Direction::Egress,
                false,
                ("10.255.15.7", "10.10.10.1"),
                (49466, 80),
                "TCP",
                "0x2"
            )
        );
    }

    #[test]
    fn rate_limit_deny_without_mark_has_empty_mark() {
        assert_eq!(
            parse(ORL_DENY_TCP),
            packet(
                Direction::Egress,
                false,
                ("10.255.7.4", "10.0.11.7"),
                (41000, 443),
                "TCP",
                ""
            )
        );
    }

    #[test]
    fn icmp_has_type_and_code_and_no_ports() {
        let p = parse(ASG_DENY_ICMP);
        assert_eq!(
            p,
            Packet {
                icmp_type: 8,
                icmp_code: 2,
                ..packet(
                    Direction::Egress,
                    false,
                    ("10.247.180.118", "10.0.0.1"),
                    (0, 0),
                    "ICMP",
                    ""
                )
            }
        );
    }

    #[test]
    fn first_occurrence_wins_and_bad_numbers_are_zero() {
        let p = parse("DENY_x OUT=eth0 SRC=1.1.1.1 SRC=2.2.2.2 SPT=abc DPT=70000 PROTO=TCP");
        assert_eq!(p.src_ip, "1.1.1.1");
        assert_eq!(p.src_port, 0);
        assert_eq!(p.dst_port, 70000);
    }

    #[test]
    fn unparseable_line_gives_empty_fields() {
        assert_eq!(
            parse("stuff"),
            packet(Direction::Egress, false, ("", ""), (0, 0), "", "")
        );
    }

    #[test]
    fn packet_json_has_upstream_keys_in_order() {
        let json = serde_json::to_string(&parse(ASG_DENY_ICMP)).unwrap();
        assert_eq!(
            json,
            r#"{"direction":"egress","allowed":false,"src_ip":"10.247.180.118","dst_ip":"10.0.0.1","src_port":0,"dst_port":0,"protocol":"ICMP","mark":"","icmp_type":8,"icmp_code":2}"#
        );
    }
}
