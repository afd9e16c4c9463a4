//! A minimal garden API client over a unix socket or TCP: `/ping`, `/containers`,
//! `/containers/:handle/properties` (code.cloudfoundry.org/garden routes), through the blocking
//! face of silk-client (one deadline per request).

use std::collections::BTreeMap;
use std::time::Duration;

use silk_client::blocking::{BlockingClient, BlockingError, Target};

#[derive(Debug, thiserror::Error)]
pub enum GardenError {
    #[error("connect {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("garden {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("garden {0}: status {1}: {2}")]
    Status(String, u16, String),
    #[error("garden {0}: malformed response: {1}")]
    Malformed(String, String),
}

/// `s` as one URL path segment: every byte but RFC 3986's unreserved ones percent-encoded,
/// so a handle from garden's list can never end the request line or add a header.
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Garden {
    pub network: String,
    pub address: String,
    pub timeout: Duration,
}

impl Garden {
    fn client(&self) -> BlockingClient {
        let target = if self.network == "unix" {
            Target::Unix(self.address.clone().into())
        } else {
            Target::Tcp(self.address.clone())
        };
        BlockingClient::new(target, self.timeout).with_host_header("api")
    }

    fn get(&self, path: &str) -> Result<String, GardenError> {
        let response = self.client().get(path).map_err(|e| match e {
            BlockingError::Resolve { source, .. } | BlockingError::Connect { source, .. } => {
                GardenError::Connect(self.address.clone(), source)
            }
            BlockingError::Io(source) => GardenError::Io {
                path: path.into(),
                source,
            },
            BlockingError::Malformed(why) => GardenError::Malformed(path.into(), why),
            other => GardenError::Malformed(path.into(), other.to_string()),
        })?;
        let body = response.text();
        if response.status != 200 {
            return Err(GardenError::Status(
                path.into(),
                response.status,
                body.trim().into(),
            ));
        }
        Ok(body)
    }

    pub fn ping(&self) -> Result<(), GardenError> {
        self.get("/ping").map(|_| ())
    }

    pub fn containers(&self) -> Result<Vec<String>, GardenError> {
        #[derive(serde::Deserialize)]
        struct List {
            #[serde(rename = "Handles", default)]
            handles: Vec<String>,
        }
        let body = self.get("/containers")?;
        serde_json::from_str::<List>(&body)
            .map(|l| l.handles)
            .map_err(|e| GardenError::Malformed("/containers".into(), e.to_string()))
    }

    pub fn properties(&self, handle: &str) -> Result<BTreeMap<String, String>, GardenError> {
        let path = format!("/containers/{}/properties", path_segment(handle));
        let body = self.get(&path)?;
        serde_json::from_str(&body).map_err(|e| GardenError::Malformed(path, e.to_string()))
    }
}
