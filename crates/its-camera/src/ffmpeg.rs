//! Decoded sources through an `ffmpeg` child process: RTSP (H.264 and anything else ffmpeg
//! reads, over TCP or UDP) and video files. ffmpeg decodes, applies the frame-rate (and
//! optional scale) filter and writes JPEGs to its stdout, which we split on JPEG markers.
//!
//! The child is killed when the source is dropped, so stopping or restarting a camera never
//! leaves a process behind.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use its_proto::{CameraSpec, RtspTransport};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::jpeg;
use crate::source::{SourceError, SourceFrame, SourceOptions};

/// Extra time for the first frame: ffmpeg probes the stream and waits for a key frame.
pub(crate) const STARTUP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Lines of ffmpeg's stderr kept for error messages.
const STDERR_LINES: usize = 4;

/// A running ffmpeg child and the bytes read from it.
pub(crate) struct FfmpegSource {
    // Held for kill-on-drop.
    _child: Child,
    stdout: ChildStdout,
    buf: Vec<u8>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    looping: bool,
    live: bool,
    started: bool,
}

/// ffmpeg's MJPEG quantiser (2 best, 31 worst) for a JPEG quality 1..=100.
fn qscale(quality: u8) -> u32 {
    let q = quality.clamp(1, 100) as u32;
    2 + (100 - q) * 29 / 99
}

impl FfmpegSource {
    /// Decode, filter to the target fps (and size), encode JPEG at the spec's quality.
    fn decode_args(cmd: &mut Command, spec: &CameraSpec) {
        let mut filter = format!("fps={}", spec.fps);
        match (spec.width, spec.height) {
            (Some(w), Some(h)) => filter.push_str(&format!(",scale={w}:{h}")),
            (Some(w), None) => filter.push_str(&format!(",scale={w}:-2")),
            (None, Some(h)) => filter.push_str(&format!(",scale=-2:{h}")),
            (None, None) => {}
        }
        cmd.args(["-an", "-sn", "-dn", "-vf", &filter, "-c:v", "mjpeg"]);
        cmd.args(["-q:v", &qscale(spec.jpeg_quality).to_string()]);
        cmd.args(["-f", "image2pipe", "pipe:1"]);
    }

    /// Starts ffmpeg for an `rtsp://` or `https://` URL (`file = None`) or a video file.
    pub(crate) fn spawn(
        spec: &CameraSpec,
        opts: &SourceOptions,
        file: Option<&Path>,
    ) -> Result<Self, SourceError> {
        let mut cmd = Command::new(&opts.ffmpeg_bin);
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"]);
        let tls = file.is_none() && spec.scheme().as_deref() == Some("https");
        match file {
            None if tls => {
                cmd.args(["-tls_verify", "1"]);
                if let Some(ca) = &opts.tls_ca_file {
                    cmd.arg("-ca_file").arg(ca);
                }
                let us = opts.read_timeout.as_micros().to_string();
                cmd.args(["-rw_timeout", &us, "-f", "mpjpeg"]);
                cmd.arg("-i").arg(&spec.url);
            }
            None => {
                let transport = match spec.rtsp_transport {
                    RtspTransport::Tcp => "tcp",
                    RtspTransport::Udp => "udp",
                };
                // -timeout: socket I/O timeout in microseconds (ffmpeg 5: rtsp option).
                let us = opts.read_timeout.as_micros().to_string();
                cmd.args(["-rtsp_transport", transport, "-timeout", &us]);
                // Probe briefly: live streams carry their parameters in the first packets.
                cmd.args(["-analyzeduration", "1000000", "-probesize", "500000"]);
                cmd.arg("-i").arg(&spec.url);
            }
            Some(path) => {
                cmd.arg("-re");
                if spec.loop_playback {
                    cmd.args(["-stream_loop", "-1"]);
                }
                cmd.arg("-i").arg(path);
            }
        }
        if tls {
            // Pass the JPEGs through; the camera's fps limit applies as for any stream.
            cmd.args([
                "-an",
                "-sn",
                "-dn",
                "-c:v",
                "copy",
                "-f",
                "image2pipe",
                "pipe:1",
            ]);
        } else {
            Self::decode_args(&mut cmd, spec);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| SourceError::Decoder(format!("cannot start {}: {e}", opts.ffmpeg_bin)))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| SourceError::Decoder("no stdout".into()))?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(err) = child.stderr.take() {
            let keep = stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut k = keep.lock().unwrap_or_else(|p| p.into_inner());
                    if k.len() == STDERR_LINES {
                        k.pop_front();
                    }
                    k.push_back(line);
                }
            });
        }
        Ok(FfmpegSource {
            _child: child,
            stdout,
            buf: Vec::with_capacity(256 * 1024),
            stderr,
            looping: spec.loop_playback,
            live: file.is_none(),
            started: false,
        })
    }

    fn stderr_text(&self) -> String {
        let k = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        k.iter().cloned().collect::<Vec<_>>().join("; ")
    }

    /// The next JPEG written by ffmpeg.
    pub(crate) async fn next(&mut self, opts: &SourceOptions) -> Result<SourceFrame, SourceError> {
        loop {
            // Resynchronise on a start-of-image marker.
            if !self.buf.is_empty() && !self.buf.starts_with(&[0xFF, 0xD8]) {
                match jpeg::find_start(&self.buf, 0) {
                    Some(p) => {
                        self.buf.drain(..p);
                    }
                    None => self.buf.clear(),
                }
            }
            if let Some(len) = jpeg::next_frame_len(&self.buf) {
                let frame: Vec<u8> = self.buf.drain(..len).collect();
                if frame.len() > opts.max_frame_bytes {
                    return Err(SourceError::TooLarge(frame.len()));
                }
                let (width, height) =
                    jpeg::inspect(&frame).map_err(|e| SourceError::Corrupt(e.to_string()))?;
                self.started = true;
                return Ok(SourceFrame {
                    jpeg: frame,
                    width,
                    height,
                    captured_at_ns: 0,
                });
            }
            if self.buf.len() > 4 * opts.max_frame_bytes {
                self.buf.clear();
                return Err(SourceError::TooLarge(4 * opts.max_frame_bytes));
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let limit = if self.started {
                opts.read_timeout
            } else {
                opts.read_timeout + STARTUP_GRACE
            };
            let n = match tokio::time::timeout(limit, self.stdout.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(SourceError::Io(format!("ffmpeg stdout: {e}"))),
                Err(_) => {
                    let why = self.stderr_text();
                    return Err(if why.is_empty() {
                        SourceError::Stalled(opts.read_timeout)
                    } else {
                        SourceError::Decoder(format!(
                            "no frame for {} ms: {why}",
                            opts.read_timeout.as_millis()
                        ))
                    });
                }
            };
            if n == 0 {
                // Give the stderr reader a moment to collect the last words.
                tokio::task::yield_now().await;
                let why = self.stderr_text();
                return Err(if why.is_empty() && !self.looping && !self.live {
                    SourceError::Ended
                } else if why.is_empty() {
                    SourceError::Io("the stream ended".into())
                } else {
                    SourceError::Decoder(why)
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
