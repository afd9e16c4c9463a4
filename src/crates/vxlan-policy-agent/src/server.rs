//! The force server (policy contract §3.9): plain HTTP on
//! `force_policy_poll_cycle_host:force_policy_poll_cycle_port` (127.0.0.1:8722), exact paths,
//! any method. cni-wrapper-plugin calls it on every CNI ADD and DEL.
//!
//! - `/force-policy-poll-cycle` runs a full c2c cycle now: 200 with an empty body, or 500 with
//!   the error as text.
//! - `/force-asgs-for-container?container=<handle>` syncs that container's `asg-` chain now:
//!   200 `updated container <handle>`; 400 `no container specified`; 500 with the error.
//! - `/force-orphaned-asgs-cleanup?container=<handle>` removes the handle's `asg-`/`casg-`
//!   chains and the log chains only they referenced: 200 `cleaned up ASGs for container
//!   <handle>`; 400 and 500 as above.
//! - Both answer 405 `ASG syncing has been disabled administratively` when the config disables
//!   ASG syncing; cni-wrapper-plugin then installs the static egress rules itself.
//!
//! Also here: the debug server's `/iptables-c2c-logging` route (§3.9), which switches the LOG
//! rules of accepted c2c traffic at runtime (applied at the next full cycle).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;
use silk_dataplane::iptables::Iptables;

use crate::asg::{AsgApi, AsgCycle};
use crate::cycle::{C2cCycle, PolicyApi};

pub const FORCE_POLICY_POLL_CYCLE: &str = "/force-policy-poll-cycle";
pub const FORCE_ASGS_FOR_CONTAINER: &str = "/force-asgs-for-container";
pub const FORCE_ORPHANED_ASGS_CLEANUP: &str = "/force-orphaned-asgs-cleanup";

/// What a request path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    PolicyCycle,
    AsgSync,
    AsgCleanup,
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
        FORCE_ASGS_FOR_CONTAINER => Route::AsgSync,
        FORCE_ORPHANED_ASGS_CLEANUP => Route::AsgCleanup,
        _ => Route::NotFound,
    }
}

struct State<A, I: ?Sized> {
    cycle: Arc<C2cCycle<A, I>>,
    /// `None` when the config disables ASG syncing.
    asg: Option<Arc<AsgCycle<A, I>>>,
}

fn text(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

/// The non-empty `container` query parameter.
pub fn container_param(query: &str) -> Option<String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(query)
        .ok()?
        .get("container")
        .filter(|c| !c.is_empty())
        .cloned()
}

async fn handle<A: PolicyApi + AsgApi, I: Iptables + ?Sized + 'static>(
    req: HttpRequest,
    state: web::Data<State<A, I>>,
) -> HttpResponse {
    let r = route(req.path(), state.asg.is_some());
    if let (Route::AsgSync | Route::AsgCleanup, Some(asg)) = (r, state.asg.as_ref()) {
        let Some(handle) = container_param(req.query_string()) else {
            return text(StatusCode::BAD_REQUEST, "no container specified".into());
        };
        let (event, result, done, failed) = if r == Route::AsgSync {
            (
                "force-asgs-for-container",
                asg.sync_container(&handle).await,
                "updated container",
                "failed to update asgs for container",
            )
        } else {
            (
                "force-orphaned-asgs-cleanup",
                asg.cleanup_container(&handle).await,
                "cleaned up ASGs for container",
                "failed to clean up asgs for container",
            )
        };
        return match result {
            Ok(_) => text(StatusCode::OK, format!("{done} {handle}")),
            Err(e) => {
                asg.count_failure();
                silk_ops::log::error(
                    event,
                    json!({ "container": handle, "error": e.to_string() }),
                );
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{failed} {handle}: {e}"),
                )
            }
        };
    }
    match r {
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
        Route::NotFound | Route::AsgSync | Route::AsgCleanup => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("404 page not found\n"),
    }
}

/// Binds the listener and returns the server to spawn.
pub fn force_server<A: PolicyApi + AsgApi, I: Iptables + ?Sized + 'static>(
    host: &str,
    port: u16,
    cycle: Arc<C2cCycle<A, I>>,
    asg: Option<Arc<AsgCycle<A, I>>>,
) -> std::io::Result<actix_web::dev::Server> {
    let state = web::Data::new(State { cycle, asg });
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

/// `/iptables-c2c-logging`: any method but PUT reads the switch; PUT with `{"enabled": <bool>}`
/// sets it. Answers `{"enabled":<bool>}` and a newline, or 400 with a JSON error.
pub fn c2c_logging_response(
    method: &Method,
    body: &[u8],
    flag: &AtomicBool,
) -> (StatusCode, String) {
    if method == Method::PUT {
        let parsed: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    r#"{"error": "decoding request body as json"}"#.to_string(),
                )
            }
        };
        match parsed.get("enabled").and_then(serde_json::Value::as_bool) {
            Some(v) => {
                flag.store(v, Ordering::SeqCst);
                silk_ops::log::info("set-iptables-c2c-logging", json!({ "enabled": v }));
            }
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    r#"{"error": "missing required property: enabled"}"#.to_string(),
                )
            }
        }
    }
    (
        StatusCode::OK,
        format!("{}\n", json!({ "enabled": flag.load(Ordering::SeqCst) })),
    )
}

/// The route for [`silk_ops::debug_server_with`].
pub fn c2c_logging_route(
    flag: Arc<AtomicBool>,
) -> impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static {
    move |cfg: &mut web::ServiceConfig| {
        let flag = Arc::clone(&flag);
        cfg.route(
            "/iptables-c2c-logging",
            web::route().to(move |req: HttpRequest, body: web::Bytes| {
                let flag = Arc::clone(&flag);
                async move {
                    let (status, text) = c2c_logging_response(req.method(), &body, &flag);
                    HttpResponse::build(status)
                        .content_type("application/json")
                        .body(text)
                }
            }),
        );
    }
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
        assert_eq!(route("/force-asgs-for-container", true), Route::AsgSync);
        assert_eq!(
            route("/force-orphaned-asgs-cleanup", true),
            Route::AsgCleanup
        );
        assert_eq!(route("/force-asgs-for-container/", true), Route::NotFound);
        assert_eq!(route("/", false), Route::NotFound);
    }

    #[test]
    fn the_container_parameter_is_required_and_decoded() {
        assert_eq!(container_param("container=abc-1").as_deref(), Some("abc-1"));
        assert_eq!(
            container_param("x=1&container=a%2Db").as_deref(),
            Some("a-b")
        );
        assert_eq!(container_param("container="), None);
        assert_eq!(container_param(""), None);
    }

    #[test]
    fn c2c_logging_switch() {
        let flag = AtomicBool::new(false);
        assert_eq!(
            c2c_logging_response(&Method::GET, b"", &flag),
            (StatusCode::OK, "{\"enabled\":false}\n".into())
        );
        assert_eq!(
            c2c_logging_response(&Method::PUT, br#"{"enabled": true}"#, &flag),
            (StatusCode::OK, "{\"enabled\":true}\n".into())
        );
        assert!(flag.load(Ordering::SeqCst));
        assert_eq!(
            c2c_logging_response(&Method::PUT, b"nope", &flag).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            c2c_logging_response(&Method::PUT, b"{}", &flag).0,
            StatusCode::BAD_REQUEST
        );
        assert!(flag.load(Ordering::SeqCst));
        assert_eq!(
            c2c_logging_response(&Method::POST, br#"{"enabled": false}"#, &flag).1,
            "{\"enabled\":true}\n"
        );
    }
}
