//! The four lease handlers.

use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use futures::StreamExt;
use serde_json::json;
use silk_core::Lease;

use super::body::{read_body, GoObject};
use super::error::ApiError;
use super::{observed, ApiState};
use crate::db::Batch;
use crate::leaser::Acquired;

/// What a lease's JSON adds to its three strings: keys, quotes, colons, commas, braces.
const LEASE_JSON_OVERHEAD: usize =
    r#"{"underlay_ip":"","overlay_subnet":"","overlay_hardware_addr":""},"#.len();

const LIST_OPEN: &[u8] = br#"{"leases":["#;
const LIST_CLOSE: &[u8] = b"]}";

/// The leases of `batch` as items of the list, comma-separated (a comma first unless `first`:
/// no item written yet), and the list's end after the last batch; in a buffer sized for them
/// up front (escapes aside). The same bytes as serde_json writes for a `Vec<Lease>`, without
/// its per-value overhead.
fn render(body: &mut Vec<u8>, batch: &Batch, first: bool) -> Result<(), ApiError> {
    let leases = &batch.leases;
    body.reserve(leases.text_len() + leases.len() * LEASE_JSON_OVERHEAD + LIST_CLOSE.len());
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
    if batch.last {
        body.extend_from_slice(LIST_CLOSE);
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
        let first = batches.next().await?;
        let mut body = LIST_OPEN.to_vec();
        render(&mut body, &first, true)?;
        if first.last {
            return Ok(json_ok(body));
        }
        // (batches, no item written yet) until the last batch is out or a read failed.
        let state = Some((batches, first.leases.is_empty()));
        let rest = futures::stream::unfold(state, |state| async move {
            let (mut batches, empty) = state?;
            let next = match batches.next().await {
                Ok(batch) => {
                    let mut chunk = Vec::new();
                    render(&mut chunk, &batch, empty)
                        .map(|()| (chunk, batch.last, empty && batch.leases.is_empty()))
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match next {
                Ok((chunk, true, _)) => Some((Ok(Bytes::from(chunk)), None)),
                Ok((chunk, false, empty)) => Some((Ok(Bytes::from(chunk)), Some((batches, empty)))),
                Err(e) => {
                    silk_ops::log::error(
                        "request-failed",
                        json!({ "handler": "LeasesIndex", "error": e }),
                    );
                    Some((Err(actix_web::error::ErrorInternalServerError(e)), None))
                }
            }
        });
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
    use std::sync::Arc;

    use actix_web::body::{to_bytes, BodySize, MessageBody};
    use actix_web::test::{call_service, init_service, TestRequest};
    use actix_web::App;
    use silk_core::{LeaseRef, LeaseTable, NetworkSpec, OverlayNetworks};

    use super::*;
    use crate::api::{configure, ApiState};
    use crate::db::memory::MemoryStore;
    use crate::db::LeaseStore;
    use crate::leaser::Leaser;
    use crate::pool::CidrPool;

    /// `{"leases":[...]}` of `leases` in one buffer.
    fn lease_list(leases: LeaseTable) -> Result<Vec<u8>, ApiError> {
        let mut body = LIST_OPEN.to_vec();
        render(&mut body, &Batch { leases, last: true }, true)?;
        Ok(body)
    }

    /// A store holding `n` leases, renewed now.
    async fn store_with(n: usize) -> (Arc<MemoryStore>, Vec<Lease>) {
        let store = Arc::new(MemoryStore::new(1_700_000_000));
        let mut leases = Vec::new();
        for i in 0..n {
            let (hi, lo) = ((i + 1) / 256, (i + 1) % 256);
            let lease = Lease {
                underlay_ip: format!("10.0.{}.{}", i / 256, i % 256),
                overlay_subnet: format!("10.{hi}.{lo}.0/24"),
                overlay_hardware_addr: format!("ee:ee:0a:{hi:02x}:{lo:02x}:00"),
            };
            store.insert(&lease).await.unwrap();
            leases.push(lease);
        }
        (store, leases)
    }

    async fn get_leases(store: Arc<MemoryStore>) -> actix_web::dev::ServiceResponse {
        let nets = OverlayNetworks::parse(&NetworkSpec::One("10.0.0.0/8".into())).unwrap();
        let state = ApiState {
            leaser: Leaser::new(store, CidrPool::new(&nets, 24).unwrap(), 1000),
            metrics: silk_ops::Metrics::new("silk-controller", 0),
        };
        let app = init_service(App::new().configure(configure(state))).await;
        call_service(&app, TestRequest::get().uri("/leases").to_request()).await
    }

    fn json_of(leases: &[Lease]) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct List<'a> {
            leases: &'a [Lease],
        }
        serde_json::to_vec(&List { leases }).unwrap()
    }

    #[actix_web::test]
    async fn a_list_of_one_batch_goes_whole_and_a_longer_one_as_a_stream() {
        for (n, streamed) in [(0, false), (1023, false), (1024, true), (2500, true)] {
            let (store, leases) = store_with(n).await;
            let resp = get_leases(store).await;
            assert_eq!(resp.status(), 200);
            let size = resp.response().body().size();
            assert_eq!(matches!(size, BodySize::Stream), streamed, "{n}: {size:?}");
            let body = to_bytes(resp.into_body()).await.unwrap();
            assert_eq!(body, json_of(&leases), "{n}");
        }
    }

    #[actix_web::test]
    async fn a_read_that_fails_before_its_first_batch_is_a_500() {
        let (store, _) = store_with(2500).await;
        *store.list_fails_after.lock().unwrap() = Some(0);
        let resp = get_leases(store).await;
        assert_eq!(resp.status(), 500);
        let body = to_bytes(resp.into_body()).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .starts_with("all-routable-leases"),
            "{v}"
        );
    }

    #[actix_web::test]
    async fn a_read_that_breaks_off_ends_the_response_in_an_error_never_a_shorter_list() {
        let (store, _) = store_with(2500).await;
        *store.list_fails_after.lock().unwrap() = Some(1);
        let resp = get_leases(store).await;
        assert_eq!(resp.status(), 200);
        assert!(to_bytes(resp.into_body()).await.is_err());
    }

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
            let body = lease_list(table).unwrap();
            assert_eq!(body, serde_json::to_vec(&List { leases: &leases }).unwrap());
        }
        assert_eq!(
            lease_list(LeaseTable::default()).unwrap(),
            br#"{"leases":[]}"#
        );
    }
}
