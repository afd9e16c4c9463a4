//! The Loggregator v2 messages and the `loggregator.v2.Ingress` method paths, written by hand
//! with `prost` derives (no protoc at build time), field for field from
//! cloudfoundry/loggregator-api: v2/envelope.proto and v2/ingress.proto (package
//! `loggregator.v2`, proto3). Field numbers are the wire contract: never renumber them.

use std::collections::BTreeMap;

/// `loggregator.v2.Envelope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// Nanoseconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub timestamp: i64,
    #[prost(string, tag = "2")]
    pub source_id: String,
    #[prost(string, tag = "8")]
    pub instance_id: String,
    #[prost(btree_map = "string, message", tag = "3")]
    pub deprecated_tags: BTreeMap<String, Value>,
    #[prost(btree_map = "string, string", tag = "9")]
    pub tags: BTreeMap<String, String>,
    #[prost(oneof = "envelope::Message", tags = "4, 5, 6, 7, 10")]
    pub message: Option<envelope::Message>,
}

pub mod envelope {
    /// `Envelope.message` (oneof).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        #[prost(message, tag = "4")]
        Log(super::Log),
        #[prost(message, tag = "5")]
        Counter(super::Counter),
        #[prost(message, tag = "6")]
        Gauge(super::Gauge),
        #[prost(message, tag = "7")]
        Timer(super::Timer),
        #[prost(message, tag = "10")]
        Event(super::Event),
    }
}

/// `loggregator.v2.EnvelopeBatch`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EnvelopeBatch {
    #[prost(message, repeated, tag = "1")]
    pub batch: Vec<Envelope>,
}

/// `loggregator.v2.Value` (the deprecated typed tag value).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    #[prost(oneof = "value::Data", tags = "1, 2, 3")]
    pub data: Option<value::Data>,
}

pub mod value {
    /// `Value.data` (oneof).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        #[prost(string, tag = "1")]
        Text(String),
        #[prost(int64, tag = "2")]
        Integer(i64),
        #[prost(double, tag = "3")]
        Decimal(f64),
    }
}

/// `loggregator.v2.Log`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Log {
    #[prost(bytes = "vec", tag = "1")]
    pub payload: Vec<u8>,
    #[prost(enumeration = "LogType", tag = "2")]
    pub r#type: i32,
}

/// `loggregator.v2.Log.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum LogType {
    Out = 0,
    Err = 1,
}

/// `loggregator.v2.Counter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Counter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub delta: u64,
    #[prost(uint64, tag = "3")]
    pub total: u64,
}

/// `loggregator.v2.Gauge`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Gauge {
    #[prost(btree_map = "string, message", tag = "1")]
    pub metrics: BTreeMap<String, GaugeValue>,
}

/// `loggregator.v2.GaugeValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GaugeValue {
    #[prost(string, tag = "1")]
    pub unit: String,
    #[prost(double, tag = "2")]
    pub value: f64,
}

/// `loggregator.v2.Timer`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timer {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int64, tag = "2")]
    pub start: i64,
    #[prost(int64, tag = "3")]
    pub stop: i64,
}

/// `loggregator.v2.Event`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub body: String,
}

/// `loggregator.v2.IngressResponse` (answer to `Sender`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct IngressResponse {}

/// `loggregator.v2.BatchSenderResponse` (answer to `BatchSender`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchSenderResponse {}

/// `loggregator.v2.SendResponse` (answer to `Send`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SendResponse {}

/// The gRPC service name.
pub const INGRESS_SERVICE: &str = "loggregator.v2.Ingress";
/// `rpc Sender(stream Envelope) returns (IngressResponse)`.
pub const SENDER_PATH: &str = "/loggregator.v2.Ingress/Sender";
/// `rpc BatchSender(stream EnvelopeBatch) returns (BatchSenderResponse)`: what we use, as
/// go-loggregator's ingress client does.
pub const BATCH_SENDER_PATH: &str = "/loggregator.v2.Ingress/BatchSender";
/// `rpc Send(EnvelopeBatch) returns (SendResponse)`.
pub const SEND_PATH: &str = "/loggregator.v2.Ingress/Send";

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn gauge_envelope_has_envelope_proto_field_numbers() {
        let env = Envelope {
            timestamp: 1,
            source_id: "s".into(),
            instance_id: "i".into(),
            deprecated_tags: BTreeMap::new(),
            tags: BTreeMap::from([("k".to_string(), "v".to_string())]),
            message: Some(envelope::Message::Gauge(Gauge {
                metrics: BTreeMap::from([(
                    "m".to_string(),
                    GaugeValue {
                        unit: "ms".into(),
                        value: 2.0,
                    },
                )]),
            })),
        };
        let bytes = env.encode_to_vec();
        // timestamp: field 1 varint; source_id: field 2 bytes; gauge: field 6 bytes;
        // instance_id: field 8 bytes; tags: field 9 bytes (prost writes in tag order).
        assert_eq!(&bytes[..2], &[0x08, 1]);
        assert_eq!(&bytes[2..5], &[0x12, 1, b's']);
        assert_eq!(bytes[5], 0x32, "gauge is field 6, length-delimited");
        let rest = &bytes[6 + 1 + usize::from(bytes[6])..];
        assert_eq!(&rest[..3], &[0x42, 1, b'i']);
        assert_eq!(rest[3], 0x4a, "tags are field 9");
        assert_eq!(Envelope::decode(bytes.as_slice()).unwrap(), env);
    }

    #[test]
    fn counter_and_log_round_trip() {
        let batch = EnvelopeBatch {
            batch: vec![
                Envelope {
                    message: Some(envelope::Message::Counter(Counter {
                        name: "http_error".into(),
                        delta: 1,
                        total: 7,
                    })),
                    ..Default::default()
                },
                Envelope {
                    message: Some(envelope::Message::Log(Log {
                        payload: b"hello".to_vec(),
                        r#type: LogType::Out as i32,
                    })),
                    ..Default::default()
                },
            ],
        };
        let back = EnvelopeBatch::decode(batch.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, batch);
        // Counter: name field 1, delta field 2 = 0x10, total field 3 = 0x18.
        let c = Counter {
            name: "a".into(),
            delta: 1,
            total: 7,
        }
        .encode_to_vec();
        assert_eq!(c, vec![0x0a, 1, b'a', 0x10, 1, 0x18, 7]);
    }
}
