//! The camera registry: what an operator declares about each camera.
//!
//! Entries live in the NATS KV bucket [`CAMERAS_BUCKET`], keyed by camera id, encoded like every
//! other message (MessagePack named map). Ingest processes watch the bucket and run one camera
//! actor per enabled entry; the admin API writes it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Priority, subjects::is_valid_id};

/// KV bucket holding one [`CameraSpec`] per camera id.
pub const CAMERAS_BUCKET: &str = "its_cameras";

/// Lowest accepted target frame rate.
pub const MIN_FPS: f32 = 0.1;
/// Highest accepted target frame rate.
pub const MAX_FPS: f32 = 120.0;
/// Longest accepted source URL, bytes.
pub const MAX_URL_LEN: usize = 2048;

/// URL schemes a camera source may use.
pub const URL_SCHEMES: [&str; 5] = ["rtsp", "http", "https", "file", "synthetic"];

/// RTSP transport for `rtsp://` sources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RtspTransport {
    /// RTP interleaved over the RTSP TCP connection (works through NAT and firewalls).
    #[default]
    Tcp,
    /// RTP over UDP.
    Udp,
}

/// How an `http(s)://` source is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpMode {
    /// A `multipart/x-mixed-replace` stream of JPEG parts.
    #[default]
    Mjpeg,
    /// One JPEG per GET, polled at the camera's fps.
    Snapshot,
}

fn default_true() -> bool {
    true
}
fn default_quality() -> u8 {
    85
}

/// One camera as the operator declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CameraSpec {
    /// Camera id: 1 to 64 ASCII letters, digits, `-`, `_`.
    pub id: String,
    /// Source: `rtsp://host[:port]/path`, `http(s)://…` (MJPEG stream or snapshot URL),
    /// `file:///path` (a video file or a directory of JPEG images), or `synthetic://road`.
    /// Credentials in the URL (`user:pass@`) are redacted wherever the URL is shown.
    pub url: String,
    /// Target frame rate; frames beyond it are skipped at the source.
    pub fps: f32,
    /// Scheduling class of the camera's frames.
    #[serde(default)]
    pub priority: Priority,
    /// Whether the camera should run.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Output width for decoded and synthetic sources (synthetic default 1280); JPEG sources
    /// pass through at their own size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Output height for decoded and synthetic sources (synthetic default 720).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// JPEG quality 1..=100 for sources that are decoded and re-encoded.
    #[serde(default = "default_quality")]
    pub jpeg_quality: u8,
    /// RTSP transport.
    #[serde(default)]
    pub rtsp_transport: RtspTransport,
    /// How an HTTP source is read.
    #[serde(default)]
    pub http_mode: HttpMode,
    /// Replay a file source from the start when it ends.
    #[serde(default)]
    pub loop_playback: bool,
    /// Seed of a synthetic scene.
    #[serde(default)]
    pub seed: u64,
}

/// A [`CameraSpec`] field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// Name of the field at fault (`url`, `fps`, …).
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl CameraSpec {
    /// A spec with defaults for everything but id, url and fps.
    pub fn new(id: impl Into<String>, url: impl Into<String>, fps: f32) -> Self {
        CameraSpec {
            id: id.into(),
            url: url.into(),
            fps,
            priority: Priority::Normal,
            enabled: true,
            width: None,
            height: None,
            jpeg_quality: default_quality(),
            rtsp_transport: RtspTransport::Tcp,
            http_mode: HttpMode::Mjpeg,
            loop_playback: false,
            seed: 0,
        }
    }

    /// The URL's scheme, lowercase, when it has one.
    pub fn scheme(&self) -> Option<String> {
        let (scheme, _) = self.url.split_once("://")?;
        Some(scheme.to_ascii_lowercase())
    }

    /// The URL with any `user:password@` part replaced by `***@`, for logs, events and API
    /// responses.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Checks every field; the first failure names the field.
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |field, message: String| Err(SpecError { field, message });
        if !is_valid_id(&self.id) {
            return err(
                "id",
                format!(
                    "{:?} is not a valid id: use 1 to 64 ASCII letters, digits, '-' or '_'",
                    self.id
                ),
            );
        }
        if self.url.len() > MAX_URL_LEN {
            return err("url", format!("longer than {MAX_URL_LEN} bytes"));
        }
        match self.scheme() {
            None => {
                return err(
                    "url",
                    format!(
                        "{:?} has no scheme: use one of {}",
                        self.redacted_url(),
                        URL_SCHEMES.join(", ")
                    ),
                );
            }
            Some(s) if !URL_SCHEMES.contains(&s.as_str()) => {
                return err(
                    "url",
                    format!(
                        "unsupported scheme {s:?}: use one of {}",
                        URL_SCHEMES.join(", ")
                    ),
                );
            }
            Some(_) => {}
        }
        let rest = self.url.split_once("://").map(|(_, r)| r).unwrap_or("");
        if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return err(
                "url",
                "the part after the scheme is empty or contains whitespace".into(),
            );
        }
        if !self.fps.is_finite() || self.fps < MIN_FPS || self.fps > MAX_FPS {
            return err(
                "fps",
                format!("{} is out of range: use {MIN_FPS} to {MAX_FPS}", self.fps),
            );
        }
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if let Some(v) = v
                && !(16..=crate::limits::MAX_FRAME_DIM).contains(&v)
            {
                return err(
                    field,
                    format!(
                        "{v} is out of range: use 16 to {}",
                        crate::limits::MAX_FRAME_DIM
                    ),
                );
            }
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return err(
                "jpeg_quality",
                format!("{} is out of range: use 1 to 100", self.jpeg_quality),
            );
        }
        Ok(())
    }
}

/// Replaces the `user[:password]@` part of a URL with `***@`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact_url("rtsp://admin:hunter2@10.0.0.5:554/stream1"),
            "rtsp://***@10.0.0.5:554/stream1"
        );
        assert_eq!(redact_url("http://cam/x@y"), "http://cam/x@y");
        assert_eq!(redact_url("file:///a/b"), "file:///a/b");
        // Found by the wire_msgs fuzz target: a path that repeats the credentials is path,
        // not authority, and is kept; the authority's credentials are still replaced.
        assert_eq!(
            redact_url("rtsp://usGr:pw@10//usGr:pw@10"),
            "rtsp://***@10//usGr:pw@10"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let ok = CameraSpec::new("cam-1", "rtsp://10.0.0.5/s", 15.0);
        assert_eq!(ok.validate(), Ok(()));
        let cases: [(CameraSpec, &str); 6] = [
            (CameraSpec::new("bad id", "rtsp://h/s", 15.0), "id"),
            (CameraSpec::new("c", "gopher://h/s", 15.0), "url"),
            (CameraSpec::new("c", "no-scheme", 15.0), "url"),
            (CameraSpec::new("c", "rtsp://", 15.0), "url"),
            (CameraSpec::new("c", "rtsp://h/s", 0.0), "fps"),
            (CameraSpec::new("c", "rtsp://h/s", f32::NAN), "fps"),
        ];
        for (spec, field) in cases {
            assert_eq!(spec.validate().unwrap_err().field, field, "{spec:?}");
        }
        let mut q = ok.clone();
        q.jpeg_quality = 0;
        assert_eq!(q.validate().unwrap_err().field, "jpeg_quality");
        let mut w = ok;
        w.width = Some(9000);
        assert_eq!(w.validate().unwrap_err().field, "width");
    }
}
