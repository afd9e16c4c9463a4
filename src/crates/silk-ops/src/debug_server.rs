//! The debug server on `127.0.0.1:<debug_port>`: `/log-level` as newer upstream debugserver
//! (code.cloudfoundry.org/debugserver: POST only, 400 with its texts otherwise) and `/metrics`
//! in Prometheus text format. Plain HTTP; monit and post-start probe `/log-level` with
//! `POST error`.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::metrics::Metrics;

/// Builds (and binds) the server; the caller awaits or spawns the returned future and stops it
/// through its handle. Signals are left to the caller.
pub fn debug_server(port: u16, metrics: Metrics) -> std::io::Result<actix_web::dev::Server> {
    debug_server_with(port, metrics, |_| {})
}

/// As [`debug_server`], with the job's own routes added by `extra` (vxlan-policy-agent's
/// `/iptables-c2c-logging`).
pub fn debug_server_with<F>(
    port: u16,
    metrics: Metrics,
    extra: F,
) -> std::io::Result<actix_web::dev::Server>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(metrics.clone()))
            .route("/log-level", web::route().to(log_level))
            .route("/metrics", web::get().to(prometheus))
            .configure(extra.clone())
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .bind(("127.0.0.1", port))?
    .run();
    Ok(server)
}

/// Outcome of a `/log-level` request: status and text body. Pure, for tests.
pub fn log_level_response(method: &Method, body: &str) -> (StatusCode, String) {
    if method != Method::POST {
        return (
            StatusCode::BAD_REQUEST,
            "❌ method not allowed, use POST".into(),
        );
    }
    if body.trim().is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "❌ log level cannot be empty".into(),
        );
    }
    match crate::log::parse_level(body) {
        Some((name, filter)) => {
            log::set_max_level(filter);
            (
                StatusCode::OK,
                format!("/log-level was invoked with Level: {name}\n"),
            )
        }
        None => (
            StatusCode::BAD_REQUEST,
            format!("❌ invalid log level: {body}"),
        ),
    }
}

async fn log_level(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let text = String::from_utf8_lossy(&body);
    let (status, text) = log_level_response(req.method(), &text);
    if status == StatusCode::OK {
        crate::log::info(
            "log-level-changed",
            serde_json::json!({ "level": text.trim() }),
        );
    }
    HttpResponse::build(status)
        .content_type("text/plain")
        .body(text)
}

async fn prometheus(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render_prometheus())
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("404 page not found\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_level_follows_newer_debugserver() {
        let (s, b) = log_level_response(&Method::POST, " Error\n");
        assert_eq!(
            (s, b.as_str()),
            (StatusCode::OK, "/log-level was invoked with Level: error\n")
        );
        assert_eq!(log::max_level(), log::LevelFilter::Error);
        let (s, b) = log_level_response(&Method::POST, "debug");
        assert_eq!(
            (s, b.as_str()),
            (StatusCode::OK, "/log-level was invoked with Level: debug\n")
        );
        assert_eq!(log::max_level(), log::LevelFilter::Debug);
        assert_eq!(
            log_level_response(&Method::GET, "debug"),
            (
                StatusCode::BAD_REQUEST,
                "❌ method not allowed, use POST".into()
            )
        );
        assert_eq!(
            log_level_response(&Method::POST, "  "),
            (
                StatusCode::BAD_REQUEST,
                "❌ log level cannot be empty".into()
            )
        );
        assert_eq!(
            log_level_response(&Method::POST, "loud"),
            (StatusCode::BAD_REQUEST, "❌ invalid log level: loud".into())
        );
    }

    #[actix_web::test]
    async fn serves_metrics_and_log_level_over_http() {
        let metrics = Metrics::new("test", 0);
        metrics.incr("http_error");
        let app = actix_web::test::init_service(
            App::new()
                .app_data(web::Data::new(metrics.clone()))
                .route("/log-level", web::route().to(log_level))
                .route("/metrics", web::get().to(prometheus))
                .default_service(web::to(not_found)),
        )
        .await;
        let req = actix_web::test::TestRequest::get()
            .uri("/metrics")
            .to_request();
        let body = actix_web::test::call_and_read_body(&app, req).await;
        assert!(String::from_utf8_lossy(&body).contains("http_error 1"));
        let req = actix_web::test::TestRequest::get()
            .uri("/log-level")
            .to_request();
        let resp = actix_web::test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let req = actix_web::test::TestRequest::get()
            .uri("/nope")
            .to_request();
        let resp = actix_web::test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}

#[cfg(test)]
mod runtime_tests {
    use super::*;
    use std::io::{Read, Write};

    /// Daemons run on a plain multi-thread tokio runtime; the server must work there too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_a_plain_tokio_runtime() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = debug_server(port, Metrics::new("test", 0)).unwrap();
        let handle = server.handle();
        tokio::spawn(server);
        let reply = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"POST /log-level HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nerror")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(
            reply.ends_with("/log-level was invoked with Level: error\n"),
            "{reply}"
        );
        handle.stop(true).await;
    }
}
