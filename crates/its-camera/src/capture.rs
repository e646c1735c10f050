//! One connection attempt of a camera: open the source, pace it to the target fps, count
//! corrupt frames, and hand whole frames to the bounded queue.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use its_proto::CameraSpec;
use tokio::time::Instant;

use crate::actor::now_ns;
use crate::source::{Source, SourceError, SourceOptions};
use crate::stats::{
    Counters, DROP_BEHIND, DROP_CORRUPT, DROP_FPS_LIMIT, DROP_LATE, DROP_TOO_LARGE, FrameQueue,
};
use crate::synthetic::SceneCache;

/// Corrupt frames in a row after which the source counts as failed.
const MAX_CORRUPT_IN_A_ROW: u32 = 50;

/// What a capture task shares with its actor.
pub(crate) struct CaptureCtx {
    pub spec: CameraSpec,
    pub opts: SourceOptions,
    pub scenes: SceneCache,
    pub queue: Arc<FrameQueue>,
    pub counters: Arc<Counters>,
    /// Stop after this many captured frames (0 = never).
    pub max_frames: u64,
    /// Called once, when the first frame of this attempt arrives.
    pub on_streaming: Box<dyn FnOnce() + Send>,
}

/// Runs until the source ends (`Ok`) or fails (`Err`).
pub(crate) async fn run(ctx: CaptureCtx) -> Result<(), SourceError> {
    let CaptureCtx {
        spec,
        opts,
        scenes,
        queue,
        counters,
        max_frames,
        on_streaming,
    } = ctx;
    if let Err(e) = spec.validate() {
        return Err(SourceError::Config(e.to_string()));
    }
    let mut on_streaming = Some(on_streaming);
    // Opening a network source is bounded by the read timeout; rendering a synthetic scene is
    // CPU work that may take longer in a debug build and is not a stall.
    let mut source = if spec.scheme().as_deref() == Some("synthetic") {
        Source::open(&spec, &opts, &scenes).await?
    } else {
        tokio::time::timeout(
            opts.read_timeout + Duration::from_secs(1),
            Source::open(&spec, &opts, &scenes),
        )
        .await
        .map_err(|_| SourceError::Stalled(opts.read_timeout))??
    };
    let pull = source.is_pull();
    let interval = Duration::from_secs_f64(1.0 / spec.fps as f64);
    let mut next_due = Instant::now();
    let mut corrupt_in_a_row = 0u32;
    loop {
        if max_frames > 0 && counters.captured.load(Ordering::Relaxed) >= max_frames {
            return Ok(());
        }
        if pull {
            tokio::time::sleep_until(next_due).await;
            let now = Instant::now();
            next_due += interval;
            // A late wake-up is caught up on the next ticks; when more than two frame slots
            // behind, the missed slots are skipped and counted.
            if now > next_due + interval {
                let missed = ((now - next_due).as_secs_f64() / interval.as_secs_f64()) as u64;
                next_due += interval * missed as u32;
                counters.captured.fetch_add(missed, Ordering::Relaxed);
                counters.drop_frames(DROP_LATE, missed);
            }
        }
        let limit = if on_streaming.is_some() {
            opts.read_timeout + crate::ffmpeg::STARTUP_GRACE
        } else {
            opts.read_timeout
        };
        let got = tokio::time::timeout(limit, source.next(&opts))
            .await
            .unwrap_or(Err(SourceError::Stalled(limit)));
        match got {
            Ok(mut frame) => {
                corrupt_in_a_row = 0;
                if !pull {
                    let now = Instant::now();
                    // Admit a frame that is at most a quarter interval early.
                    if now + interval / 4 < next_due {
                        counters.captured.fetch_add(1, Ordering::Relaxed);
                        counters.drop_frame(DROP_FPS_LIMIT);
                        continue;
                    }
                    next_due = (next_due + interval).max(now);
                }
                frame.captured_at_ns = now_ns();
                counters.captured.fetch_add(1, Ordering::Relaxed);
                counters.set_resolution(frame.width, frame.height);
                if let Some(f) = on_streaming.take() {
                    f();
                }
                if queue.push(frame) {
                    counters.drop_frame(DROP_BEHIND);
                }
            }
            Err(SourceError::Ended) => return Ok(()),
            Err(e) if e.is_frame_error() => {
                counters.captured.fetch_add(1, Ordering::Relaxed);
                counters.drop_frame(if matches!(e, SourceError::TooLarge(_)) {
                    DROP_TOO_LARGE
                } else {
                    DROP_CORRUPT
                });
                counters.set_error(e.to_string());
                corrupt_in_a_row += 1;
                if corrupt_in_a_row >= MAX_CORRUPT_IN_A_ROW {
                    return Err(SourceError::Protocol(format!(
                        "{corrupt_in_a_row} unusable frames in a row, last: {e}"
                    )));
                }
            }
            Err(e) => return Err(e),
        }
    }
}
