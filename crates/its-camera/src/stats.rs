//! Counters shared between a camera's tasks and its actor, the bounded frame queue between
//! capture and publication, and the process-wide count of live actors and tasks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use its_proto::Priority;
use tokio::sync::Notify;

use crate::source::SourceFrame;

/// Drop reason: the bus fell behind and the oldest queued frame was discarded.
pub const DROP_BEHIND: &str = "behind";
/// Drop reason: the frame was not a whole JPEG.
pub const DROP_CORRUPT: &str = "corrupt";
/// Drop reason: the frame was larger than the frame limit.
pub const DROP_TOO_LARGE: &str = "too_large";
/// Drop reason: publishing failed.
pub const DROP_PUBLISH_FAILED: &str = "publish_failed";
/// Drop reason: a frame slot of a paced source passed before the camera could take it (the
/// process was too busy to keep the target fps).
pub const DROP_LATE: &str = "late";
/// Drop reason: the source delivered faster than the camera's target fps.
pub const DROP_FPS_LIMIT: &str = "fps_limit";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters of one camera.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub captured: AtomicU64,
    pub published: AtomicU64,
    drops: Mutex<BTreeMap<String, u64>>,
    last_error: Mutex<Option<String>>,
    resolution: AtomicU64,
}

impl Counters {
    pub(crate) fn drop_frame(&self, reason: &str) {
        self.drop_frames(reason, 1);
    }
    pub(crate) fn drop_frames(&self, reason: &str, n: u64) {
        *lock(&self.drops).entry(reason.to_owned()).or_default() += n;
    }
    pub(crate) fn drops(&self) -> BTreeMap<String, u64> {
        lock(&self.drops).clone()
    }
    pub(crate) fn dropped(&self, reason: &str) -> u64 {
        lock(&self.drops).get(reason).copied().unwrap_or(0)
    }
    pub(crate) fn set_error(&self, e: String) {
        *lock(&self.last_error) = Some(e);
    }
    pub(crate) fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }
    pub(crate) fn set_resolution(&self, w: u32, h: u32) {
        self.resolution
            .store((w as u64) << 32 | h as u64, Ordering::Relaxed);
    }
    pub(crate) fn resolution(&self) -> (u32, u32) {
        let r = self.resolution.load(Ordering::Relaxed);
        ((r >> 32) as u32, r as u32)
    }
}

/// A camera's priority with an optional time-limited boost.
#[derive(Debug)]
pub(crate) struct PriorityCell {
    base: Priority,
    boost: Mutex<Option<(Priority, Instant)>>,
}

impl PriorityCell {
    pub(crate) fn new(base: Priority) -> Self {
        PriorityCell {
            base,
            boost: Mutex::new(None),
        }
    }
    /// A later boost replaces an earlier one.
    pub(crate) fn boost(&self, p: Priority, until: Instant) {
        *lock(&self.boost) = Some((p, until));
    }
    pub(crate) fn current(&self) -> Priority {
        let mut b = lock(&self.boost);
        match *b {
            Some((p, until)) if Instant::now() < until => p,
            Some(_) => {
                *b = None;
                self.base
            }
            None => self.base,
        }
    }
}

/// The bounded queue between a camera's capture and its publisher. When full, the oldest
/// frame is dropped and counted: a slow bus costs frames, never memory.
#[derive(Debug)]
pub(crate) struct FrameQueue {
    inner: Mutex<(VecDeque<SourceFrame>, bool)>,
    notify: Notify,
    capacity: usize,
}

impl FrameQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        FrameQueue {
            inner: Mutex::new((VecDeque::with_capacity(capacity), false)),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues a frame; returns true when the oldest frame had to be dropped to make room.
    pub(crate) fn push(&self, f: SourceFrame) -> bool {
        let dropped = {
            let mut g = lock(&self.inner);
            let dropped = if g.0.len() >= self.capacity {
                g.0.pop_front();
                true
            } else {
                false
            };
            g.0.push_back(f);
            dropped
        };
        self.notify.notify_one();
        dropped
    }

    /// No more frames will come; `pop` returns `None` once the queue is empty.
    pub(crate) fn close(&self) {
        lock(&self.inner).1 = true;
        self.notify.notify_one();
    }

    /// The oldest queued frame, waiting for one; `None` when closed and empty.
    pub(crate) async fn pop(&self) -> Option<SourceFrame> {
        loop {
            let notified = self.notify.notified();
            {
                let mut g = lock(&self.inner);
                if let Some(f) = g.0.pop_front() {
                    return Some(f);
                }
                if g.1 {
                    return None;
                }
            }
            notified.await;
        }
    }
}

/// Live camera actors and camera tasks in this process, for leak checks and the admin API.
#[derive(Debug, Default)]
pub struct LiveCounts {
    actors: AtomicUsize,
    tasks: AtomicUsize,
}

impl LiveCounts {
    /// Camera actors running now.
    pub fn actors(&self) -> usize {
        self.actors.load(Ordering::SeqCst)
    }
    /// Camera tasks (capture, publication) running now.
    pub fn tasks(&self) -> usize {
        self.tasks.load(Ordering::SeqCst)
    }
    pub(crate) fn actor_started(&self) {
        self.actors.fetch_add(1, Ordering::SeqCst);
    }
    pub(crate) fn actor_stopped(&self) {
        self.actors.fetch_sub(1, Ordering::SeqCst);
    }
    pub(crate) fn task(self: &Arc<Self>) -> TaskGuard {
        self.tasks.fetch_add(1, Ordering::SeqCst);
        TaskGuard(self.clone())
    }
}

/// Held by a running task; counts it down when dropped (also when aborted or panicking).
#[derive(Debug)]
pub(crate) struct TaskGuard(Arc<LiveCounts>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.tasks.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> SourceFrame {
        SourceFrame {
            jpeg: vec![n],
            width: 1,
            height: 1,
            captured_at_ns: 0,
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_its_oldest_frames() {
        let q = FrameQueue::new(3);
        let dropped = (0..10).filter(|n| q.push(frame(*n))).count();
        assert_eq!(dropped, 7);
        q.close();
        let mut left = Vec::new();
        while let Some(f) = q.pop().await {
            left.push(f.jpeg[0]);
        }
        assert_eq!(left, [7, 8, 9]);
    }

    #[test]
    fn a_boost_ends_by_itself_and_a_later_one_replaces_it() {
        let p = PriorityCell::new(Priority::Normal);
        p.boost(
            Priority::Emergency,
            Instant::now() + std::time::Duration::from_secs(60),
        );
        assert_eq!(p.current(), Priority::Emergency);
        p.boost(
            Priority::Urgent,
            Instant::now() + std::time::Duration::from_secs(60),
        );
        assert_eq!(p.current(), Priority::Urgent);
        p.boost(Priority::Urgent, Instant::now());
        assert_eq!(p.current(), Priority::Normal);
    }
}
