//! A small HTTP/1.1 client on tokio for camera sources: MJPEG streams
//! (`multipart/x-mixed-replace`) and JPEG snapshots. JPEG parts pass through untouched.
//!
//! Only what cameras need: GET, basic authentication from the URL, `Content-Length` or
//! read-to-close bodies. Every read is bounded by the caller's timeout and by size limits.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::source::SourceError;

/// Longest response or part header block accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
    pub auth: Option<String>,
}

impl HttpUrl {
    pub(crate) fn parse(url: &str) -> Result<Self, SourceError> {
        let bad = |m: &str| SourceError::Config(format!("bad http url: {m}"));
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("HTTP://"))
            .ok_or_else(|| bad("expected http://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (auth, hostport) = match authority.rfind('@') {
            Some(i) => (
                Some(base64(&authority.as_bytes()[..i])),
                &authority[i + 1..],
            ),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h.trim_matches(|c| c == '[' || c == ']').to_owned(),
                p.parse::<u16>().map_err(|_| bad("port is not a number"))?,
            ),
            _ => (hostport.to_owned(), 80),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(HttpUrl {
            host,
            port,
            path: path.to_owned(),
            auth,
        })
    }
}

/// A response after its header block: the connection and any body bytes already read.
pub(crate) struct Response {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub content_type: String,
    pub content_length: Option<usize>,
}

async fn timed<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = std::io::Result<T>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(SourceError::Io(format!("{what}: {e}"))),
        Err(_) => Err(SourceError::Stalled(limit)),
    }
}

/// Connects, sends a GET and reads the response head. A status other than 200 is an error.
pub(crate) async fn get(url: &HttpUrl, timeout: Duration) -> Result<Response, SourceError> {
    let addr = format!("{}:{}", url.host, url.port);
    let mut stream = match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(SourceError::Connect(format!("{addr}: {e}"))),
        Err(_) => {
            return Err(SourceError::Connect(format!(
                "{addr}: no answer within {} ms",
                timeout.as_millis()
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: its-camera\r\nAccept: */*\r\nConnection: close\r\n",
        url.path, url.host, url.port
    );
    if let Some(a) = &url.auth {
        req.push_str(&format!("Authorization: Basic {a}\r\n"));
    }
    req.push_str("\r\n");
    timed(timeout, "send request", stream.write_all(req.as_bytes())).await?;
    let mut buf = Vec::with_capacity(8192);
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n", 0) {
            break p;
        }
        if buf.len() > MAX_HEAD {
            return Err(SourceError::Protocol("response header too long".into()));
        }
        let n = read_more(&mut stream, &mut buf, timeout).await?;
        if n == 0 {
            return Err(SourceError::Protocol(
                "connection closed before the response header".into(),
            ));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| SourceError::Protocol(format!("bad status line {status_line:?}")))?;
    if status != 200 {
        return Err(SourceError::Protocol(format!("http status {status}")));
    }
    let mut content_type = String::new();
    let mut content_length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-type") {
                content_type = v.to_owned();
            } else if k.eq_ignore_ascii_case("content-length") {
                content_length = v.parse().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                return Err(SourceError::Protocol(
                    "chunked transfer encoding is not supported".into(),
                ));
            }
        }
    }
    buf.drain(..head_end + 4);
    Ok(Response {
        stream,
        buf,
        content_type,
        content_length,
    })
}

/// Reads more bytes into `buf`; 0 means the peer closed.
pub(crate) async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<usize, SourceError> {
    let mut chunk = [0u8; 32 * 1024];
    let n = timed(timeout, "read", stream.read(&mut chunk)).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Reads a whole snapshot body (bounded by `max`).
pub(crate) async fn read_body(
    mut resp: Response,
    timeout: Duration,
    max: usize,
) -> Result<Vec<u8>, SourceError> {
    loop {
        if let Some(len) = resp.content_length {
            if len > max {
                return Err(SourceError::TooLarge(len));
            }
            if resp.buf.len() >= len {
                resp.buf.truncate(len);
                return Ok(resp.buf);
            }
        } else if resp.buf.len() > max {
            return Err(SourceError::TooLarge(resp.buf.len()));
        }
        let n = read_more(&mut resp.stream, &mut resp.buf, timeout).await?;
        if n == 0 {
            return match resp.content_length {
                Some(len) => Err(SourceError::Protocol(format!(
                    "body ended after {} of {len} bytes",
                    resp.buf.len()
                ))),
                None => Ok(resp.buf),
            };
        }
    }
}

/// The boundary parameter of a `multipart/x-mixed-replace` content type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let lower = content_type.to_ascii_lowercase();
    if !lower.starts_with("multipart/") {
        return None;
    }
    content_type.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.eq_ignore_ascii_case("boundary").then(|| {
            let v = v.trim().trim_matches('"');
            v.strip_prefix("--").unwrap_or(v).to_owned()
        })
    })
}

/// One step of the multipart parser.
#[derive(Debug, PartialEq)]
pub(crate) enum Part {
    /// A whole part body.
    Body(Vec<u8>),
    /// A part that was skipped (too large or malformed); counted as corrupt.
    Skipped(String),
    /// The closing boundary.
    End,
}

/// Parses the parts of a multipart stream out of a growing buffer.
#[derive(Debug)]
pub(crate) struct MultipartParser {
    delimiter: Vec<u8>,
    max_part: usize,
}

impl MultipartParser {
    pub(crate) fn new(boundary: &str, max_part: usize) -> Self {
        MultipartParser {
            delimiter: format!("--{boundary}").into_bytes(),
            max_part,
        }
    }

    /// Takes the next part from the front of `buf`, or `None` when more bytes are needed.
    pub(crate) fn next(&self, buf: &mut Vec<u8>) -> Option<Part> {
        let d = &self.delimiter;
        let Some(start) = find(buf, d, 0) else {
            // Keep only a tail that could still hold a delimiter.
            let keep = d.len();
            if buf.len() > self.max_part + MAX_HEAD {
                let cut = buf.len() - keep;
                buf.drain(..cut);
                return Some(Part::Skipped("no part boundary in the stream".into()));
            }
            return None;
        };
        let after = start + d.len();
        if buf.len() < after + 2 {
            return None;
        }
        if &buf[after..after + 2] == b"--" {
            buf.drain(..after + 2);
            return Some(Part::End);
        }
        let Some(head_end) = find(buf, b"\r\n\r\n", after) else {
            if buf.len() - after > MAX_HEAD {
                buf.drain(..after);
                return Some(Part::Skipped("part header too long".into()));
            }
            return None;
        };
        let head = String::from_utf8_lossy(&buf[after..head_end]).into_owned();
        let body_start = head_end + 4;
        let length = head.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        });
        match length {
            Some(len) if len > self.max_part => {
                buf.drain(..body_start);
                Some(Part::Skipped(format!("part of {len} bytes is too large")))
            }
            Some(len) => {
                if buf.len() < body_start + len {
                    return None;
                }
                let body = buf[body_start..body_start + len].to_vec();
                buf.drain(..body_start + len);
                Some(Part::Body(body))
            }
            None => {
                let mut delim = b"\r\n".to_vec();
                delim.extend_from_slice(d);
                match find(buf, &delim, body_start) {
                    Some(end) => {
                        let body = buf[body_start..end].to_vec();
                        buf.drain(..end + 2);
                        Some(Part::Body(body))
                    }
                    None if buf.len() - body_start > self.max_part => {
                        buf.drain(..body_start);
                        Some(Part::Skipped("part too large".into()))
                    }
                    None => None,
                }
            }
        }
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from >= hay.len() || needle.is_empty() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = HttpUrl::parse("http://admin:pw@cam.local:8080/video.mjpg?x=1").unwrap();
        assert_eq!(u.host, "cam.local");
        assert_eq!(u.port, 8080);
        assert_eq!(u.path, "/video.mjpg?x=1");
        assert_eq!(u.auth.as_deref(), Some("YWRtaW46cHc="));
        let u = HttpUrl::parse("http://10.0.0.1").unwrap();
        assert_eq!((u.port, u.path.as_str(), u.auth), (80, "/", None));
        assert!(HttpUrl::parse("http://h:port/").is_err());
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn boundary_forms() {
        assert_eq!(
            boundary("multipart/x-mixed-replace; boundary=--myb").as_deref(),
            Some("myb")
        );
        assert_eq!(
            boundary("multipart/x-mixed-replace;boundary=\"frame\"").as_deref(),
            Some("frame")
        );
        assert_eq!(boundary("image/jpeg"), None);
    }

    #[test]
    fn multipart_with_and_without_lengths() {
        let p = MultipartParser::new("b", 100);
        let mut buf = b"preamble\r\n--b\r\nContent-Type: image/jpeg\r\nContent-Length: 3\r\n\r\nabc\r\n--b\r\nContent-Type: image/jpeg\r\n\r\nxyz\r\n--b--".to_vec();
        assert_eq!(p.next(&mut buf), Some(Part::Body(b"abc".to_vec())));
        assert_eq!(p.next(&mut buf), Some(Part::Body(b"xyz".to_vec())));
        assert_eq!(p.next(&mut buf), Some(Part::End));
        let mut partial = b"--b\r\nContent-Length: 5\r\n\r\nab".to_vec();
        assert_eq!(p.next(&mut partial), None);
        let mut big = b"--b\r\nContent-Length: 500\r\n\r\n".to_vec();
        assert!(matches!(p.next(&mut big), Some(Part::Skipped(_))));
    }
}
