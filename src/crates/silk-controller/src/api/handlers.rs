//! The four lease handlers.

use actix_web::{web, HttpResponse};
use serde_json::json;
use silk_core::Lease;

use super::body::{read_body, GoObject};
use super::error::ApiError;
use super::{observed, ApiState};
use crate::leaser::Acquired;

/// `{"leases":[...]}`; a struct keeps the lease keys in upstream order.
#[derive(serde::Serialize)]
struct LeaseList<'a> {
    leases: &'a [Lease],
}

/// A lease's JSON with the longest IPv4 texts, and its comma.
const LEASE_JSON_BYTES: usize = 116;

fn json_ok(body: Vec<u8>) -> HttpResponse {
    // No Content-Type, as upstream (Go sniffs text/plain); clients only parse the JSON.
    HttpResponse::Ok().body(body)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Internal(format!("marshal-response: {e}")))
}

/// `GET /leases`.
pub async fn index(state: web::Data<ApiState>) -> HttpResponse {
    observed(&state.metrics, "LeasesIndex", async {
        let leases = state.leaser.routable().await?;
        // Sized for the whole list up front: one allocation, no copies while it grows.
        let mut body = Vec::with_capacity(16 + leases.len() * LEASE_JSON_BYTES);
        serde_json::to_writer(&mut body, &LeaseList { leases: &leases })
            .map_err(|e| ApiError::Internal(format!("marshal-response: {e}")))?;
        Ok(json_ok(body))
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
