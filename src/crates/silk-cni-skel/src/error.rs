//! The CNI error result and the well-known codes of the specification.

use serde::Serialize;

/// Error codes of containernetworking/cni SPEC.md ("Error") plus the Go library's 8 and 999.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion,
    UnsupportedField,
    UnknownContainer,
    InvalidEnvironment,
    IoFailure,
    DecodingFailure,
    InvalidNetworkConfig,
    InvalidNetns,
    TryAgainLater,
    NotAvailable,
    NotAvailableExisting,
    Internal,
    /// 100 and above are plugin specific (silk-cni uses 100).
    Plugin(u32),
}

impl ErrorCode {
    pub fn as_u32(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::IoFailure => 5,
            ErrorCode::DecodingFailure => 6,
            ErrorCode::InvalidNetworkConfig => 7,
            ErrorCode::InvalidNetns => 8,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::NotAvailableExisting => 51,
            ErrorCode::Internal => 999,
            ErrorCode::Plugin(c) => c,
        }
    }

    pub fn from_u32(code: u32) -> Self {
        match code {
            1 => ErrorCode::IncompatibleVersion,
            2 => ErrorCode::UnsupportedField,
            3 => ErrorCode::UnknownContainer,
            4 => ErrorCode::InvalidEnvironment,
            5 => ErrorCode::IoFailure,
            6 => ErrorCode::DecodingFailure,
            7 => ErrorCode::InvalidNetworkConfig,
            8 => ErrorCode::InvalidNetns,
            11 => ErrorCode::TryAgainLater,
            50 => ErrorCode::NotAvailable,
            51 => ErrorCode::NotAvailableExisting,
            999 => ErrorCode::Internal,
            c => ErrorCode::Plugin(c),
        }
    }
}

/// A CNI error: printed on stdout as `{"cniVersion","code","msg","details"}` with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!("; {details}") })]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Code 999 with the message only, as the Go skel reports a plain error.
    pub fn internal(msg: impl Into<String>) -> Self {
        CniError::new(ErrorCode::Internal, msg, "")
    }

    /// A plugin-specific code (>= 100) with `details` carrying the underlying error.
    pub fn plugin(code: u32, msg: impl Into<String>, details: impl std::fmt::Display) -> Self {
        CniError::new(ErrorCode::Plugin(code), msg, details.to_string())
    }

    /// The error JSON for `cni_version` (the config's version, or our newest when unknown).
    pub fn to_json(&self, cni_version: &str) -> String {
        let wire = Wire {
            cni_version,
            code: self.code.as_u32(),
            msg: &self.msg,
            details: &self.details,
        };
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_spec_keys_and_omits_empty_details() {
        let e = CniError::new(
            ErrorCode::InvalidEnvironment,
            "required env variables [CNI_NETNS] missing",
            "",
        );
        assert_eq!(
            e.to_json("1.0.0"),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"required env variables [CNI_NETNS] missing"}"#
        );
        let e = CniError::plugin(100, "run ipam plugin", "no IP addresses available");
        assert_eq!(
            e.to_json("1.0.0"),
            r#"{"cniVersion":"1.0.0","code":100,"msg":"run ipam plugin","details":"no IP addresses available"}"#
        );
        assert_eq!(e.to_string(), "run ipam plugin; no IP addresses available");
    }

    #[test]
    fn codes_round_trip() {
        for c in [1, 2, 3, 4, 5, 6, 7, 8, 11, 50, 51, 100, 999] {
            assert_eq!(ErrorCode::from_u32(c).as_u32(), c);
        }
    }
}
