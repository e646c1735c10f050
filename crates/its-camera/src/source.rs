//! Camera sources: where frames come from. Each source yields whole JPEG frames; JPEG sources
//! (MJPEG streams, snapshots, image directories, synthetic loops) pass through untouched,
//! decoded sources (RTSP, video files) are re-encoded by an ffmpeg child.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use its_proto::{CameraSpec, HttpMode};

use crate::ffmpeg::FfmpegSource;
use crate::http::{self, HttpUrl, MultipartParser, Part};
use crate::jpeg;
use crate::synthetic::{SceneCache, SceneSpec, SyntheticScene};

/// One frame from a source.
#[derive(Debug, Clone)]
pub struct SourceFrame {
    /// The JPEG.
    pub jpeg: Vec<u8>,
    /// Width, pixels (from the JPEG header).
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Capture time, unix nanoseconds (set when the camera takes the frame).
    pub captured_at_ns: u64,
}

/// Why a source failed or a frame was not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// The spec cannot be served (scheme, URL form, missing file).
    #[error("unsupported source: {0}")]
    Config(String),
    /// The host could not be reached.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// A read failed.
    #[error("read failed: {0}")]
    Io(String),
    /// Nothing arrived within the read timeout.
    #[error("stalled: no data for {} ms", .0.as_millis())]
    Stalled(Duration),
    /// The peer spoke something other than what was expected.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// One frame was unusable; the stream goes on.
    #[error("corrupt frame: {0}")]
    Corrupt(String),
    /// One frame was larger than the frame limit; the stream goes on.
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
    /// The decoder child failed.
    #[error("decoder: {0}")]
    Decoder(String),
    /// The source has no more frames (a file without looping).
    #[error("end of stream")]
    Ended,
}

impl SourceError {
    /// Whether the stream can go on after this error (the frame is skipped and counted).
    pub fn is_frame_error(&self) -> bool {
        matches!(self, SourceError::Corrupt(_) | SourceError::TooLarge(_))
    }
}

/// Knobs that are not part of a camera's registry entry.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// No data for this long means the source stalled.
    pub read_timeout: Duration,
    /// Largest frame accepted, bytes.
    pub max_frame_bytes: usize,
    /// The ffmpeg executable.
    pub ffmpeg_bin: String,
    /// Frames pre-rendered per synthetic camera.
    pub synthetic_loop_frames: u32,
    /// CA certificates (PEM) that `https://` sources are verified against; the system's
    /// trust store when unset. Certificates are always verified.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            read_timeout: Duration::from_secs(10),
            max_frame_bytes: its_proto::limits::MAX_FRAME_BYTES - 4096,
            ffmpeg_bin: "ffmpeg".into(),
            synthetic_loop_frames: 30,
            tls_ca_file: None,
        }
    }
}

/// An open source.
pub(crate) enum Source {
    /// A pre-rendered loop.
    Synthetic {
        scene: Arc<SyntheticScene>,
        next: usize,
    },
    /// An MJPEG stream over HTTP.
    Mjpeg {
        resp: http::Response,
        parser: MultipartParser,
    },
    /// JPEG snapshots polled over HTTP.
    Snapshot { url: HttpUrl },
    /// A directory of JPEG files.
    Dir {
        files: Vec<PathBuf>,
        next: usize,
        looping: bool,
    },
    /// RTSP or a video file, decoded and re-encoded by ffmpeg; or an https MJPEG stream that
    /// ffmpeg passes through.
    Ffmpeg(FfmpegSource),
}

impl Source {
    /// Whether frames are pulled at the camera's pace (true) or arrive at the source's pace.
    pub(crate) fn is_pull(&self) -> bool {
        matches!(
            self,
            Source::Synthetic { .. } | Source::Snapshot { .. } | Source::Dir { .. }
        )
    }

    /// Opens the source of `spec`.
    pub(crate) async fn open(
        spec: &CameraSpec,
        opts: &SourceOptions,
        scenes: &SceneCache,
    ) -> Result<Source, SourceError> {
        let scheme = spec.scheme().unwrap_or_default();
        match scheme.as_str() {
            "synthetic" => {
                let scene_spec = SceneSpec {
                    width: spec.width.unwrap_or(1280),
                    height: spec.height.unwrap_or(720),
                    seed: spec.seed,
                    frames: opts.synthetic_loop_frames.max(1),
                    jpeg_quality: spec.jpeg_quality,
                };
                let scene = scenes
                    .get(scene_spec)
                    .await
                    .map_err(|e| SourceError::Config(e.to_string()))?;
                Ok(Source::Synthetic { scene, next: 0 })
            }
            "http" => {
                let url = HttpUrl::parse(&spec.url)?;
                match spec.http_mode {
                    HttpMode::Snapshot => Ok(Source::Snapshot { url }),
                    HttpMode::Mjpeg => {
                        let resp = http::get(&url, opts.read_timeout).await?;
                        let boundary = http::boundary(&resp.content_type).ok_or_else(|| {
                            SourceError::Protocol(format!(
                                "expected multipart/x-mixed-replace, got {:?}",
                                resp.content_type
                            ))
                        })?;
                        Ok(Source::Mjpeg {
                            resp,
                            parser: MultipartParser::new(&boundary, opts.max_frame_bytes),
                        })
                    }
                }
            }
            // MJPEG over TLS: ffmpeg reads the multipart stream and copies each JPEG untouched.
            "https" => match spec.http_mode {
                HttpMode::Mjpeg => Ok(Source::Ffmpeg(FfmpegSource::spawn(spec, opts, None)?)),
                HttpMode::Snapshot => Err(SourceError::Config(
                    "https snapshot polling is not supported: use an https MJPEG stream, or http"
                        .into(),
                )),
            },
            "rtsp" => Ok(Source::Ffmpeg(FfmpegSource::spawn(spec, opts, None)?)),
            "file" => {
                let path = PathBuf::from(spec.url.split_once("://").map(|x| x.1).unwrap_or(""));
                let meta = tokio::fs::metadata(&path)
                    .await
                    .map_err(|e| SourceError::Config(format!("{}: {e}", path.display())))?;
                if meta.is_dir() {
                    let mut files = Vec::new();
                    let mut rd = tokio::fs::read_dir(&path)
                        .await
                        .map_err(|e| SourceError::Config(format!("{}: {e}", path.display())))?;
                    while let Ok(Some(e)) = rd.next_entry().await {
                        let p = e.path();
                        let ext = p
                            .extension()
                            .and_then(|x| x.to_str())
                            .unwrap_or("")
                            .to_ascii_lowercase();
                        if ext == "jpg" || ext == "jpeg" {
                            files.push(p);
                        }
                    }
                    files.sort();
                    if files.is_empty() {
                        return Err(SourceError::Config(format!(
                            "{} holds no .jpg or .jpeg files",
                            path.display()
                        )));
                    }
                    Ok(Source::Dir {
                        files,
                        next: 0,
                        looping: spec.loop_playback,
                    })
                } else {
                    Ok(Source::Ffmpeg(FfmpegSource::spawn(
                        spec,
                        opts,
                        Some(&path),
                    )?))
                }
            }
            other => Err(SourceError::Config(format!(
                "unsupported url scheme {other:?}: use rtsp, http, file or synthetic"
            ))),
        }
    }

    /// The next frame. Pull sources return at once; stream sources wait for the source.
    pub(crate) async fn next(&mut self, opts: &SourceOptions) -> Result<SourceFrame, SourceError> {
        match self {
            Source::Synthetic { scene, next } => {
                let jpeg = scene.jpegs[*next % scene.jpegs.len()].clone();
                *next += 1;
                Ok(SourceFrame {
                    jpeg,
                    width: scene.width,
                    height: scene.height,
                    captured_at_ns: 0,
                })
            }
            Source::Mjpeg { resp, parser } => loop {
                match parser.next(&mut resp.buf) {
                    Some(Part::Body(body)) => return checked(body, opts),
                    Some(Part::Skipped(why)) => return Err(SourceError::Corrupt(why)),
                    Some(Part::End) => return Err(SourceError::Ended),
                    None => {
                        let n = http::read_more(&mut resp.stream, &mut resp.buf, opts.read_timeout)
                            .await?;
                        if n == 0 {
                            return Err(SourceError::Io("server closed the stream".into()));
                        }
                    }
                }
            },
            Source::Snapshot { url } => {
                let resp = http::get(url, opts.read_timeout).await?;
                let body = http::read_body(resp, opts.read_timeout, opts.max_frame_bytes).await?;
                checked(body, opts)
            }
            Source::Dir {
                files,
                next,
                looping,
            } => {
                if *next >= files.len() {
                    if !*looping {
                        return Err(SourceError::Ended);
                    }
                    *next = 0;
                }
                let path = &files[*next];
                *next += 1;
                let body = tokio::fs::read(path)
                    .await
                    .map_err(|e| SourceError::Io(format!("{}: {e}", path.display())))?;
                checked(body, opts)
            }
            Source::Ffmpeg(f) => f.next(opts).await,
        }
    }
}

/// Checks that `body` is one whole JPEG within the size limit.
fn checked(body: Vec<u8>, opts: &SourceOptions) -> Result<SourceFrame, SourceError> {
    if body.len() > opts.max_frame_bytes {
        return Err(SourceError::TooLarge(body.len()));
    }
    let (width, height) = jpeg::inspect(&body).map_err(|e| SourceError::Corrupt(e.to_string()))?;
    Ok(SourceFrame {
        jpeg: body,
        width,
        height,
        captured_at_ns: 0,
    })
}
