//! The force server (policy contract §3.9): plain HTTP on
//! `force_policy_poll_cycle_host:force_policy_poll_cycle_port` (127.0.0.1:8722), exact paths,
//! any method. cni-wrapper-plugin calls it on every CNI ADD and DEL.
//!
//! - `/force-policy-poll-cycle` runs a full c2c cycle now: 200 with an empty body, or 500 with
//!   the error as text.
//! - `/force-asgs-for-container` and `/force-orphaned-asgs-cleanup` answer 405 when the config
//!   disables ASG syncing (the wrapper then installs the static egress rules itself). Dynamic
//!   ASG syncing is not implemented: with it enabled these paths are not served (404).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;
use silk_dataplane::iptables::Iptables;

use crate::cycle::{C2cCycle, PolicyApi};

pub const FORCE_POLICY_POLL_CYCLE: &str = "/force-policy-poll-cycle";
pub const FORCE_ASGS_FOR_CONTAINER: &str = "/force-asgs-for-container";
pub const FORCE_ORPHANED_ASGS_CLEANUP: &str = "/force-orphaned-asgs-cleanup";

/// What a request path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    PolicyCycle,
    /// An ASG endpoint while ASG syncing is disabled by config.
    AsgDisabled,
    NotFound,
}

pub fn route(path: &str, enable_asg_syncing: bool) -> Route {
    match path {
        FORCE_POLICY_POLL_CYCLE => Route::PolicyCycle,
        FORCE_ASGS_FOR_CONTAINER | FORCE_ORPHANED_ASGS_CLEANUP if !enable_asg_syncing => {
            Route::AsgDisabled
        }
        _ => Route::NotFound,
    }
}

struct State<A, I: ?Sized> {
    cycle: Arc<C2cCycle<A, I>>,
    enable_asg_syncing: bool,
}

async fn handle<A: PolicyApi, I: Iptables + ?Sized + 'static>(
    req: HttpRequest,
    state: web::Data<State<A, I>>,
) -> HttpResponse {
    match route(req.path(), state.enable_asg_syncing) {
        Route::PolicyCycle => match state.cycle.full().await {
            Ok(_) => HttpResponse::Ok().finish(),
            Err(e) => {
                silk_ops::log::error("force-policy-poll-cycle", json!({ "error": e.to_string() }));
                HttpResponse::InternalServerError()
                    .content_type("text/plain; charset=utf-8")
                    .body(format!("failed to force policy poll cycle: {e}"))
            }
        },
        Route::AsgDisabled => HttpResponse::build(StatusCode::METHOD_NOT_ALLOWED)
            .content_type("text/plain; charset=utf-8")
            .body("ASG syncing has been disabled administratively"),
        Route::NotFound => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("404 page not found\n"),
    }
}

/// Binds the listener and returns the server to spawn.
pub fn force_server<A: PolicyApi, I: Iptables + ?Sized + 'static>(
    host: &str,
    port: u16,
    cycle: Arc<C2cCycle<A, I>>,
    enable_asg_syncing: bool,
) -> std::io::Result<actix_web::dev::Server> {
    let state = web::Data::new(State {
        cycle,
        enable_asg_syncing,
    });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .default_service(web::to(handle::<A, I>))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .bind((host, port))?
    .run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_exact_and_405_only_when_asgs_are_disabled() {
        assert_eq!(route("/force-policy-poll-cycle", true), Route::PolicyCycle);
        assert_eq!(route("/force-policy-poll-cycle/", true), Route::NotFound);
        assert_eq!(
            route("/force-asgs-for-container", false),
            Route::AsgDisabled
        );
        assert_eq!(
            route("/force-orphaned-asgs-cleanup", false),
            Route::AsgDisabled
        );
        assert_eq!(route("/force-asgs-for-container", true), Route::NotFound);
        assert_eq!(route("/", false), Route::NotFound);
    }
}
