//! The health server on `127.0.0.1:<health_check_port>` (control-plane §1.8): `GET /health`
//! runs `SELECT 1`; 200 with an empty body, or 500 `{"error": "check database failed"}`.

use actix_web::{web, App, HttpResponse, HttpServer};
use silk_ops::Metrics;

use crate::api::error::ApiError;
use crate::api::{method_not_allowed, not_found, observed};
use crate::db::Store;

#[derive(Clone)]
struct HealthState {
    store: Store,
    metrics: Metrics,
}

async fn health(state: web::Data<HealthState>) -> HttpResponse {
    observed(&state.metrics, "Health", async {
        state.store.ping().await.map_err(|e| {
            silk_ops::log::error(
                "check-database-failed",
                serde_json::json!({ "error": e.to_string() }),
            );
            ApiError::Internal("check database failed".into())
        })?;
        Ok(HttpResponse::Ok().finish())
    })
    .await
}

pub fn health_server(
    port: u16,
    store: Store,
    metrics: Metrics,
) -> std::io::Result<actix_web::dev::Server> {
    let state = HealthState { store, metrics };
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .service(
                web::resource("/health")
                    .route(web::get().to(health))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .bind(("127.0.0.1", port))?
    .run())
}
