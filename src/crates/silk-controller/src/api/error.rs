//! The one place that maps failures to HTTP (control-plane §1.2): status code plus the body
//! `{"error": "<description>"}`, with the description JSON-escaped so the body is always valid
//! JSON (upstream formats it unescaped; its clients accept both).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::leaser::LeaserError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn response(&self) -> HttpResponse {
        HttpResponse::build(self.status()).body(error_body(&self.to_string()))
    }
}

/// `{"error": "<description>"}` with the space upstream puts after the colon.
pub fn error_body(description: &str) -> String {
    format!("{{\"error\": {}}}", serde_json::Value::from(description))
}

impl From<LeaserError> for ApiError {
    fn from(e: LeaserError) -> Self {
        match e {
            LeaserError::InvalidUnderlayIp(_) => ApiError::BadRequest(e.to_string()),
            LeaserError::NoLeaseAvailable | LeaserError::RenewConflict(_) => {
                ApiError::Conflict(e.to_string())
            }
            LeaserError::Store { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_valid_json_with_upstream_spacing() {
        assert_eq!(
            error_body("no lease available"),
            r#"{"error": "no lease available"}"#
        );
        let quoted = error_body(
            r#"duplicate key value violates unique constraint "subnets_overlay_subnet_key""#,
        );
        let v: serde_json::Value = serde_json::from_str(&quoted).unwrap();
        assert!(v["error"]
            .as_str()
            .unwrap()
            .ends_with("\"subnets_overlay_subnet_key\""));
    }
}
