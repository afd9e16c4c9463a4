//! The wire format of the blocking face: request targets, URLs, and parsing an answer that
//! may still be arriving (head, then a body framed by `Content-Length`, by chunks, or by the
//! close), bounded by [`MAX_HEAD`] and [`MAX_BODY`].

use super::Response;

/// The longest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// The longest response body accepted.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Parses a whole answer already read (the server closed after it); `None` when it is not one.
pub fn parse_response(raw: &[u8]) -> Option<Response> {
    match parse(raw, true) {
        Parsed::Done(r) => Some(r),
        _ => None,
    }
}

pub(crate) enum Parsed {
    Done(Response),
    NeedMore,
    Malformed(String),
}

enum Framing {
    Length(usize),
    Chunked,
    ToEnd,
}

/// One answer from `raw`; `eof` says the server closed (so a body without framing ends here).
pub(crate) fn parse(raw: &[u8], eof: bool) -> Parsed {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return if raw.len() > MAX_HEAD {
            Parsed::Malformed("response head too long".into())
        } else if eof {
            Parsed::Malformed("no end of head".into())
        } else {
            Parsed::NeedMore
        };
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let status = match (words.next(), words.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/") && (100..1000).contains(&code) => code,
        _ => return Parsed::Malformed(format!("status line {status_line:?}")),
    };
    let mut framing = Framing::ToEnd;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("content-length")
            && !matches!(framing, Framing::Chunked)
        {
            match value.parse::<usize>() {
                Ok(n) if n <= MAX_BODY => framing = Framing::Length(n),
                Ok(_) => return Parsed::Malformed("body too long".into()),
                Err(_) => return Parsed::Malformed(format!("content-length {value:?}")),
            }
        }
    }
    // Without framing headers these answers have no body (RFC 9112 §6.3); with one, it rules.
    if matches!(framing, Framing::ToEnd) && (status < 200 || status == 204 || status == 304) {
        framing = Framing::Length(0);
    }
    let body = match framing {
        Framing::Length(n) if body.len() >= n => body[..n].to_vec(),
        Framing::Length(_) if eof => {
            return Parsed::Malformed("body shorter than its length".into())
        }
        Framing::Length(_) => return Parsed::NeedMore,
        Framing::Chunked => match dechunk(body) {
            Ok(Some(b)) => b,
            Ok(None) if eof => return Parsed::Malformed("chunked body cut short".into()),
            Ok(None) => return Parsed::NeedMore,
            Err(why) => return Parsed::Malformed(why),
        },
        Framing::ToEnd if body.len() > MAX_BODY => {
            return Parsed::Malformed("body too long".into())
        }
        Framing::ToEnd if eof => body.to_vec(),
        Framing::ToEnd => return Parsed::NeedMore,
    };
    Parsed::Done(Response { status, body })
}

/// The body of a chunked encoding; `Ok(None)` until the last chunk has arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(rest, b"\r\n") else {
            return if rest.len() > 1024 {
                Err("chunk size line too long".into())
            } else {
                Ok(None)
            };
        };
        let line = String::from_utf8_lossy(&rest[..eol]);
        let size = line.split(';').next().unwrap_or_default().trim();
        let n = usize::from_str_radix(size, 16).map_err(|_| format!("chunk size {size:?}"))?;
        rest = &rest[eol + 2..];
        if n == 0 {
            return Ok(Some(out));
        }
        if n > MAX_BODY || out.len() + n > MAX_BODY {
            return Err("body too long".into());
        }
        if rest.len() < n + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&rest[..n]);
        if &rest[n..n + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        rest = &rest[n + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `path` as a request target: bytes outside visible ASCII percent-encoded, a leading `/` added.
pub(crate) fn request_target(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push('/');
    }
    for b in path.bytes() {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `http[s]://hostport[/path]` to (https, hostport, path).
pub(crate) fn split_url(url: &str) -> Option<(bool, String, String)> {
    let (https, rest) = match url.strip_prefix("https://") {
        Some(r) => (true, r),
        None => (false, url.strip_prefix("http://")?),
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if hostport.is_empty() || hostport.starts_with(':') || hostport.contains('@') {
        return None;
    }
    if has_port(hostport) {
        let (_, port) = hostport.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
    }
    Some((https, hostport.to_string(), path))
}

/// True when `hostport` ends in `:port` (an IPv6 literal's colons are inside brackets).
pub(crate) fn has_port(hostport: &str) -> bool {
    match hostport.rsplit_once(':') {
        Some((host, _)) => !host.contains(':') || host.ends_with(']'),
        None => false,
    }
}

/// The host of `host:port`, brackets of an IPv6 literal removed.
pub(crate) fn host_of(addr: &str) -> &str {
    let host = if has_port(addr) {
        addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr)
    } else {
        addr
    };
    host.trim_start_matches('[').trim_end_matches(']')
}
