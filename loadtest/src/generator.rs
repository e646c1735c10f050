//! Simulated cameras: one task per camera, publishing on a fixed schedule.
//!
//! A camera's frames leave at `start + k * period` whether or not the system keeps up, like a
//! real camera. When this process itself falls behind, frames go out late (and are counted as
//! generator lag) rather than being skipped, so the offered load is what was asked for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use its_bus::Bus;
use its_proto::{Encoding, Priority, SCHEMA_VERSION, subjects};
use serde::Serialize;
use tokio::sync::watch;

use crate::ledger::Ledger;
use crate::payload::Jpeg;

/// A FrameMsg that borrows its payload: the same MessagePack map as `its_proto::FrameMsg`
/// (same field names, `deadline_ns` omitted), written without copying the JPEG first.
#[derive(Serialize)]
struct FrameRef<'a> {
    v: u16,
    camera_id: &'a str,
    seq: u64,
    captured_at_ns: u64,
    priority: Priority,
    width: u32,
    height: u32,
    encoding: Encoding,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
}

/// Encodes one frame as a FrameMsg.
pub fn encode_frame(
    camera_id: &str,
    seq: u64,
    captured_at_ns: u64,
    priority: Priority,
    jpeg: &Jpeg,
) -> Vec<u8> {
    its_proto::encode(&FrameRef {
        v: SCHEMA_VERSION,
        camera_id,
        seq,
        captured_at_ns,
        priority,
        width: jpeg.width,
        height: jpeg.height,
        encoding: Encoding::Jpeg,
        data: &jpeg.data,
    })
    .expect("a FrameMsg always encodes")
}

/// Which ramp step frames belong to, and when its measuring window opens.
#[derive(Debug, Default)]
pub struct StepClock {
    step: AtomicU32,
    window_from_ns: AtomicU64,
}

impl StepClock {
    /// Moves to `step`, measuring from `window_from_ns` (ledger clock).
    pub fn set(&self, step: u32, window_from_ns: u64) {
        self.window_from_ns.store(window_from_ns, Relaxed);
        self.step.store(step, Relaxed);
    }

    fn at(&self, now_ns: u64) -> (u32, bool) {
        let step = self.step.load(Relaxed);
        (step, now_ns >= self.window_from_ns.load(Relaxed))
    }
}

/// One simulated camera.
#[derive(Debug, Clone)]
pub struct CameraPlan {
    /// Index in the ledger.
    pub index: usize,
    /// Camera id.
    pub id: String,
    /// Priority class.
    pub priority: Priority,
    /// The frames it replays.
    pub frames: Arc<Vec<Jpeg>>,
    /// Time of its first frame.
    pub start: Instant,
    /// Frame interval.
    pub period: Duration,
}

/// Publishes the frames of `plan` until `stop` turns true.
pub async fn run_camera(
    plan: CameraPlan,
    bus: Bus,
    ledger: Ledger,
    steps: Arc<StepClock>,
    mut stop: watch::Receiver<bool>,
) {
    let clock = ledger.clock();
    let subject = subjects::frames(&plan.id);
    let mut next = plan.start;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        let now = Instant::now();
        let lag = now.saturating_duration_since(next);
        if lag > plan.period {
            ledger.late_send();
        }
        let (step, in_window) = steps.at(clock.since_ns(now));
        let seq = ledger.register(plan.index, now, lag, step, in_window);
        let jpeg = &plan.frames[(seq % plan.frames.len() as u64) as usize];
        let bytes = encode_frame(&plan.id, seq, clock.unix_ns(now), plan.priority, jpeg);
        if let Err(e) = bus.publish_raw(subject.clone(), Bytes::from(bytes)).await {
            tracing::warn!(camera = %plan.id, seq, error = %e, "publish failed");
            ledger.send_failed(plan.index, seq);
        }
        next += plan.period;
    }
}

/// Start offset of camera `i` within one frame period, spread evenly (golden-ratio sequence),
/// so cameras added later do not line up with the earlier ones.
pub fn phase(i: usize, period: Duration) -> Duration {
    let frac = (i as f64 * 0.618_033_988_749_895).fract();
    period.mul_f64(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_frames_decode_as_frame_msg() {
        let jpeg = Jpeg {
            width: 64,
            height: 48,
            data: Arc::new(vec![0xff, 0xd8, 1, 2, 3]),
        };
        let bytes = encode_frame("cam-1", 7, 123, Priority::Urgent, &jpeg);
        let f = its_proto::decode_frame(&bytes, "its.frames.cam-1", 1 << 20).unwrap();
        assert_eq!(f.camera_id, "cam-1");
        assert_eq!(
            (f.seq, f.captured_at_ns, f.width, f.height),
            (7, 123, 64, 48)
        );
        assert_eq!(f.priority, Priority::Urgent);
        assert_eq!(f.deadline_ns, None);
        assert_eq!(f.data, *jpeg.data);
    }

    #[test]
    fn phases_stay_within_one_period() {
        let p = Duration::from_millis(33);
        for i in 0..100 {
            assert!(phase(i, p) < p);
        }
        assert_ne!(phase(1, p), phase(2, p));
    }
}
