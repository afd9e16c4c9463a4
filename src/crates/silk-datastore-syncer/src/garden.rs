//! A minimal garden API client over a unix socket or TCP: `/ping`, `/containers`,
//! `/containers/:handle/properties` (code.cloudfoundry.org/garden routes).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

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

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl Garden {
    fn connect(&self) -> Result<Box<dyn Stream>, GardenError> {
        let e = |err| GardenError::Connect(self.address.clone(), err);
        if self.network == "unix" {
            let s = std::os::unix::net::UnixStream::connect(&self.address).map_err(e)?;
            s.set_read_timeout(Some(self.timeout)).map_err(e)?;
            Ok(Box::new(s))
        } else {
            let s = std::net::TcpStream::connect(&self.address).map_err(e)?;
            s.set_read_timeout(Some(self.timeout)).map_err(e)?;
            Ok(Box::new(s))
        }
    }

    fn get(&self, path: &str) -> Result<String, GardenError> {
        let io = |source| GardenError::Io {
            path: path.into(),
            source,
        };
        let mut s = self.connect()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(io)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(io)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| GardenError::Malformed(path.into(), "no header end".into()))?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GardenError::Malformed(path.into(), "no status".into()))?;
        if status != 200 {
            return Err(GardenError::Status(path.into(), status, body.trim().into()));
        }
        Ok(body.to_string())
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
