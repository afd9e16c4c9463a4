//! The local API on `127.0.0.1:<health_check_port>` (contract §5.9): any method, any path,
//! any headers → 200 with `{"overlay_subnet":"..","mtu":N}` (plus `ipv6_prefix` when IPv6 is
//! enabled), compact, no trailing newline. The body is fixed at start-up, so the listener
//! never depends on the controller and never blocks on the poll loop (own worker thread).

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct NetworkInfo {
    pub overlay_subnet: String,
    pub mtu: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_prefix: Option<String>,
}

/// The response body, rendered once.
pub fn render(info: &NetworkInfo) -> String {
    // Invariant: a struct of strings and integers always serializes.
    serde_json::to_string(info).unwrap_or_default()
}

/// Binds the listener and returns the server to spawn.
pub fn local_api(port: u16, body: String) -> std::io::Result<actix_web::dev::Server> {
    let body = web::Data::new(body);
    Ok(HttpServer::new(move || {
        App::new().app_data(body.clone()).default_service(web::to(
            |b: web::Data<String>| async move {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(b.get_ref().clone())
            },
        ))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(("127.0.0.1", port))?
    .run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_upstream_shape() {
        let mut info = NetworkInfo {
            overlay_subnet: "10.255.7.0/24".into(),
            mtu: 1450,
            ipv6_prefix: None,
        };
        assert_eq!(
            render(&info),
            r#"{"overlay_subnet":"10.255.7.0/24","mtu":1450}"#
        );
        info.ipv6_prefix = Some("2001:db8::/64".into());
        assert_eq!(
            render(&info),
            r#"{"overlay_subnet":"10.255.7.0/24","mtu":1450,"ipv6_prefix":"2001:db8::/64"}"#
        );
    }
}
