//! The four lease handlers.

use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use futures::StreamExt;
use serde_json::json;
use silk_core::{Lease, LeaseTable};

use super::body::{read_body, GoObject};
use super::error::ApiError;
use super::{observed, ApiState};
use crate::db::StoreError;
use crate::leaser::{Acquired, LeaserError};

/// What a lease's JSON adds to its three strings: keys, quotes, colons, commas, braces.
const LEASE_JSON_OVERHEAD: usize =
    r#"{"underlay_ip":"","overlay_subnet":"","overlay_hardware_addr":""},"#.len();

/// `{"leases":[...]}` of `leases` in one buffer.
#[cfg(test)]
fn lease_list(leases: &LeaseTable) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    body.extend_from_slice(LIST_OPEN);
    lease_items(&mut body, leases, true)?;
    body.extend_from_slice(LIST_CLOSE);
    Ok(body)
}

const LIST_OPEN: &[u8] = br#"{"leases":["#;
const LIST_CLOSE: &[u8] = b"]}";

/// The leases of `leases` as the items of the list, comma-separated, in a buffer sized for them
/// up front (escapes aside); a comma first unless `first`. The same bytes as serde_json writes
/// for a `Vec<Lease>`, without its per-value overhead.
fn lease_items(body: &mut Vec<u8>, leases: &LeaseTable, first: bool) -> Result<(), ApiError> {
    body.reserve(leases.text_len() + leases.len() * LEASE_JSON_OVERHEAD + LIST_OPEN.len() + 2);
    for (i, lease) in leases.iter().enumerate() {
        if i > 0 || !first {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"underlay_ip":"#);
        json_str(body, lease.underlay_ip)?;
        body.extend_from_slice(br#","overlay_subnet":"#);
        json_str(body, lease.overlay_subnet)?;
        body.extend_from_slice(br#","overlay_hardware_addr":"#);
        json_str(body, lease.overlay_hardware_addr)?;
        body.push(b'}');
    }
    Ok(())
}

/// A JSON string: copied between quotes when nothing in it needs an escape (what addresses
/// are), else written by serde_json.
fn json_str(body: &mut Vec<u8>, s: &str) -> Result<(), ApiError> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        body.push(b'"');
        body.extend_from_slice(s.as_bytes());
        body.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *body, s)
            .map_err(|e| ApiError::Internal(format!("marshal-response: {e}")))
    }
}

fn json_ok(body: Vec<u8>) -> HttpResponse {
    // No Content-Type, as upstream (Go sniffs text/plain); clients only parse the JSON.
    HttpResponse::Ok().body(body)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Internal(format!("marshal-response: {e}")))
}

/// `GET /leases`. The leases go out in batches as the database sends them (chunked, as
/// upstream's Go server sends any large body): the client receives the first while the
/// database still sends the rest. A list of one batch goes out whole, with a Content-Length.
/// A read that fails before the first batch is a 500; one that fails later can only end the
/// response early (the connection is closed, so no client takes it for the whole list).
pub async fn index(state: web::Data<ApiState>) -> HttpResponse {
    observed(&state.metrics, "LeasesIndex", async {
        let mut batches = state.leaser.routable_batches().await?;
        let first = batches.next().await.unwrap_or_else(|| {
            Err(LeaserError::Store {
                context: "all-routable-leases",
                source: StoreError::Connection(
                    "the lease read ended without its last batch".into(),
                ),
            })
        })?;
        let mut body = Vec::new();
        body.extend_from_slice(LIST_OPEN);
        lease_items(&mut body, &first.leases, true)?;
        if first.last {
            body.extend_from_slice(LIST_CLOSE);
            return Ok(json_ok(body));
        }
        let rest = futures::stream::unfold(
            Some((batches, first.leases.is_empty())),
            |state| async move {
                let (mut batches, mut empty_so_far) = state?;
                let item = match batches.next().await {
                    Some(Ok(batch)) => {
                        let mut chunk = Vec::new();
                        let rendered = lease_items(&mut chunk, &batch.leases, empty_so_far);
                        empty_so_far &= batch.leases.is_empty();
                        match rendered {
                            Ok(()) if batch.last => {
                                chunk.extend_from_slice(LIST_CLOSE);
                                return Some((Ok(Bytes::from(chunk)), None));
                            }
                            Ok(()) => Ok(Bytes::from(chunk)),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err("the lease read ended without its last batch".to_string()),
                };
                match item {
                    Ok(chunk) => Some((Ok(chunk), Some((batches, empty_so_far)))),
                    Err(e) => {
                        silk_ops::log::error(
                            "request-failed",
                            json!({ "handler": "LeasesIndex", "error": e }),
                        );
                        Some((Err(actix_web::error::ErrorInternalServerError(e)), None))
                    }
                }
            },
        );
        let head =
            futures::stream::once(async move { Ok::<_, actix_web::Error>(Bytes::from(body)) });
        Ok(HttpResponse::Ok().streaming(head.chain(rest)))
    })
    .await
}

/// `PUT /leases/acquire`.
pub async fn acquire(state: web::Data<ApiState>, payload: web::Payload) -> HttpResponse {
    observed(&state.metrics, "LeasesAcquire", async {
        let body = read_body(payload).await?;
        let req = GoObject::parse("AcquireRequest", &body)?;
        let underlay_ip = req.string("underlay_ip")?;
        let single = req.bool("single_overlay_ip")?;
        let (lease, how) = state.leaser.acquire(&underlay_ip, single).await?;
        let event = match how {
            Acquired::Existing => "lease-renewed",
            Acquired::New | Acquired::Recycled => "lease-acquired",
        };
        silk_ops::log::info(event, json!({ "lease": lease }));
        Ok(json_ok(encode(&lease)?))
    })
    .await
}

/// `PUT /leases/renew`.
pub async fn renew(state: web::Data<ApiState>, payload: web::Payload) -> HttpResponse {
    observed(&state.metrics, "LeasesRenew", async {
        let body = read_body(payload).await?;
        let req = GoObject::parse("Lease", &body)?;
        let lease = Lease {
            underlay_ip: req.string("underlay_ip")?,
            overlay_subnet: req.string("overlay_subnet")?,
            overlay_hardware_addr: req.string("overlay_hardware_addr")?,
        };
        state.leaser.renew(&lease).await?;
        silk_ops::log::debug("lease-renewed", json!({ "lease": lease }));
        Ok(json_ok(b"{}".to_vec()))
    })
    .await
}

/// `PUT /leases/release`.
pub async fn release(state: web::Data<ApiState>, payload: web::Payload) -> HttpResponse {
    observed(&state.metrics, "LeasesRelease", async {
        let body = read_body(payload).await?;
        let req = GoObject::parse("ReleaseRequest", &body)?;
        let underlay_ip = req.string("underlay_ip")?;
        if state.leaser.release(&underlay_ip).await? {
            silk_ops::log::info("lease-released", json!({ "underlay_ip": underlay_ip }));
        } else {
            silk_ops::log::debug("lease-not-found", json!({ "underlay_ip": underlay_ip }));
        }
        Ok(json_ok(b"{}".to_vec()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use silk_core::LeaseRef;

    #[test]
    fn the_lease_list_is_the_json_of_the_leases() {
        #[derive(serde::Serialize)]
        struct List<'a> {
            leases: &'a [Lease],
        }
        let lease = |u: &str, s: &str, m: &str| Lease {
            underlay_ip: u.into(),
            overlay_subnet: s.into(),
            overlay_hardware_addr: m.into(),
        };
        for leases in [
            vec![],
            vec![lease("10.0.0.1", "10.255.1.0/24", "ee:ee:0a:ff:01:00")],
            vec![
                lease("10.0.0.1", "10.255.1.0/24", "ee:ee:0a:ff:01:00"),
                lease("10.0.0.2", "10.255.2.5/32", "ee:ee:0a:ff:02:05"),
                lease("\"\\\u{1}ü", "", "</>"),
            ],
        ] {
            let table: LeaseTable = leases.iter().map(LeaseRef::from).collect();
            let body = lease_list(&table).unwrap();
            assert_eq!(body, serde_json::to_vec(&List { leases: &leases }).unwrap());
        }
        assert_eq!(
            lease_list(&LeaseTable::default()).unwrap(),
            br#"{"leases":[]}"#
        );
    }
}
