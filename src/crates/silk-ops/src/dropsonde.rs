//! Dropsonde v1 envelopes, the protobuf messages metron agents accept on UDP `metron_port`
//! (cloudfoundry/sonde-go: definitions/events/{envelope,metric}.proto). Only the two event
//! kinds silk emits are modelled: `ValueMetric` and `CounterEvent`. [`DropsondeSink`] sends
//! them over UDP, fire and forget, as dropsonde's UDP emitter does.

use std::net::{SocketAddr, UdpSocket};

use prost::Message;

use crate::metrics::Sink;

/// `events.Envelope.EventType` values.
pub const EVENT_TYPE_VALUE_METRIC: i32 = 6;
pub const EVENT_TYPE_COUNTER_EVENT: i32 = 7;

/// `events.Envelope`, with only the fields silk fills in.
#[derive(Clone, PartialEq, Message)]
pub struct Envelope {
    #[prost(string, required, tag = "1")]
    pub origin: String,
    #[prost(int32, required, tag = "2")]
    pub event_type: i32,
    /// Nanoseconds since the Unix epoch.
    #[prost(int64, optional, tag = "6")]
    pub timestamp: Option<i64>,
    #[prost(message, optional, tag = "9")]
    pub value_metric: Option<ValueMetric>,
    #[prost(message, optional, tag = "10")]
    pub counter_event: Option<CounterEvent>,
}

/// `events.ValueMetric`.
#[derive(Clone, PartialEq, Message)]
pub struct ValueMetric {
    #[prost(string, required, tag = "1")]
    pub name: String,
    #[prost(double, required, tag = "2")]
    pub value: f64,
    #[prost(string, required, tag = "3")]
    pub unit: String,
}

/// `events.CounterEvent`.
#[derive(Clone, PartialEq, Message)]
pub struct CounterEvent {
    #[prost(string, required, tag = "1")]
    pub name: String,
    #[prost(uint64, required, tag = "2")]
    pub delta: u64,
    #[prost(uint64, optional, tag = "3")]
    pub total: Option<u64>,
}

pub(crate) fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// The encoded envelope for a value metric.
pub fn value_envelope(origin: &str, name: &str, value: f64, unit: &str) -> Vec<u8> {
    Envelope {
        origin: origin.to_string(),
        event_type: EVENT_TYPE_VALUE_METRIC,
        timestamp: Some(now_nanos()),
        value_metric: Some(ValueMetric {
            name: name.to_string(),
            value,
            unit: unit.to_string(),
        }),
        counter_event: None,
    }
    .encode_to_vec()
}

/// The encoded envelope for one counter increment.
pub fn counter_envelope(origin: &str, name: &str, delta: u64) -> Vec<u8> {
    Envelope {
        origin: origin.to_string(),
        event_type: EVENT_TYPE_COUNTER_EVENT,
        timestamp: Some(now_nanos()),
        value_metric: None,
        counter_event: Some(CounterEvent {
            name: name.to_string(),
            delta,
            total: None,
        }),
    }
    .encode_to_vec()
}

/// The dropsonde v1 [`Sink`]: one UDP datagram per event to the metron agent.
pub struct DropsondeSink {
    origin: String,
    socket: UdpSocket,
    agent: SocketAddr,
}

impl DropsondeSink {
    /// A sink sending to `agent`; `None` when no local UDP socket can be bound.
    pub fn new(origin: &str, agent: SocketAddr) -> Option<Self> {
        // Loopback agents (the usual 127.0.0.1) are reached from a loopback-bound socket.
        let local: SocketAddr = match (agent.is_ipv4(), agent.ip().is_loopback()) {
            (true, true) => ([127, 0, 0, 1], 0).into(),
            (true, false) => ([0, 0, 0, 0], 0).into(),
            (false, true) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
            (false, false) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).ok()?;
        let _ = socket.set_nonblocking(true);
        Some(DropsondeSink {
            origin: origin.to_string(),
            socket,
            agent,
        })
    }

    fn send(&self, bytes: Vec<u8>) {
        // Fire and forget, as dropsonde's UDP emitter: a missing agent loses metrics only.
        let _ = self.socket.send_to(&bytes, self.agent);
    }
}

impl Sink for DropsondeSink {
    fn counter(&self, name: &str, delta: u64, _total: u64) {
        // Upstream sends the delta only (cf-networking-helpers' IncrementCounter).
        self.send(counter_envelope(&self.origin, name, delta));
    }

    fn gauge(&self, name: &str, value: f64, unit: &str) {
        self.send(value_envelope(&self.origin, name, value, unit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_envelope_has_sonde_field_numbers() {
        let bytes = value_envelope("silk-controller", "uptime", 3.0, "seconds");
        // field 1 (origin, length-delimited) comes first: tag byte 0x0a, then the length.
        assert_eq!(&bytes[..2], &[0x0a, 15]);
        assert_eq!(&bytes[2..17], b"silk-controller");
        // field 2 (eventType, varint) = 6.
        assert_eq!(&bytes[17..19], &[0x10, 6]);
        let env = Envelope::decode(bytes.as_slice()).unwrap();
        let vm = env.value_metric.unwrap();
        assert_eq!(
            (vm.name.as_str(), vm.value, vm.unit.as_str()),
            ("uptime", 3.0, "seconds")
        );
    }

    #[test]
    fn counter_envelope_round_trips() {
        let env = Envelope::decode(counter_envelope("o", "http_error", 1).as_slice()).unwrap();
        assert_eq!(env.event_type, EVENT_TYPE_COUNTER_EVENT);
        assert_eq!(env.counter_event.unwrap().delta, 1);
        assert!(env.timestamp.unwrap() > 0);
    }
}
