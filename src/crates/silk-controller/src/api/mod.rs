//! The lease API (control-plane §1): routes, Go-style 404/405 answers, per-request metrics and
//! logs. Handlers decode, call the [`Leaser`] and encode; they hold no SQL.

pub mod body;
pub mod error;
mod handlers;

use std::time::Instant;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use silk_ops::Metrics;

use crate::leaser::Leaser;
use error::ApiError;

/// Shared by every worker.
#[derive(Clone)]
pub struct ApiState {
    pub leaser: Leaser,
    pub metrics: Metrics,
}

/// Registers the four routes; used by the server and by in-process tests.
pub fn configure(state: ApiState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .service(
                web::resource("/leases")
                    .route(web::get().to(handlers::index))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource("/leases/acquire")
                    .route(web::put().to(handlers::acquire))
                    .default_service(web::to(|| method_not_allowed("PUT"))),
            )
            .service(
                web::resource("/leases/renew")
                    .route(web::put().to(handlers::renew))
                    .default_service(web::to(|| method_not_allowed("PUT"))),
            )
            .service(
                web::resource("/leases/release")
                    .route(web::put().to(handlers::release))
                    .default_service(web::to(|| method_not_allowed("PUT"))),
            )
            .default_service(web::to(not_found));
    }
}

/// Go's `http.NotFound`.
pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body("404 page not found\n")
}

/// The router's 405 with the registered method in `Allow`.
pub async fn method_not_allowed(allow: &'static str) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::ALLOW, allow))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body("Method Not Allowed\n")
}

/// Times the handler as `<name>RequestTime`/`<name>RequestCount`, counts and logs errors.
pub(crate) async fn observed<F>(metrics: &Metrics, name: &str, handler: F) -> HttpResponse
where
    F: std::future::Future<Output = Result<HttpResponse, ApiError>>,
{
    let start = Instant::now();
    let response = match handler.await {
        Ok(r) => r,
        Err(e) => {
            metrics.incr("http_error");
            silk_ops::log::error(
                "request-failed",
                serde_json::json!({ "handler": name, "status": e.status().as_u16(), "error": e.to_string() }),
            );
            e.response()
        }
    };
    metrics.request(name, start.elapsed());
    response
}
