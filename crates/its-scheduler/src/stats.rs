//! Frame accounting and latency windows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use its_bus::Bus;
use its_proto::{DropReason, EventKind, EventMsg, NodeStatus, Priority, SCHEMA_VERSION, subjects};
use tokio::sync::Notify;

use crate::breaker::BreakerState;

/// Now, unix nanoseconds.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

struct Inner {
    node_id: String,
    bus: Bus,
    received: AtomicU64,
    published: AtomicU64,
    /// Results settled without publication because another node publishes them (handover) or
    /// this node already did (duplicate).
    not_published: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    queue_depth: [AtomicU64; 4],
    latency: Mutex<Histogram<u64>>,
    settled: Notify,
    breaker: AtomicU8,
    /// Batches dispatched, indexed by size (sizes are at most 256).
    batch_sizes: Box<[AtomicU64]>,
}

/// Largest batch size counted in the batch-size histogram (larger ones count here).
const MAX_COUNTED_BATCH: usize = 256;

/// The node's frame ledger: received, published, dropped by reason. Cheap to clone.
#[derive(Clone)]
pub struct Accounting(Arc<Inner>);

impl std::fmt::Debug for Accounting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounting")
            .field("node_id", &self.0.node_id)
            .finish()
    }
}

const BREAKER_STATES: [BreakerState; 4] = [
    BreakerState::Closed,
    BreakerState::SheddingBackground,
    BreakerState::SheddingNormal,
    BreakerState::HalfOpen,
];

fn breaker_code(s: BreakerState) -> u8 {
    BREAKER_STATES.iter().position(|b| *b == s).unwrap_or(0) as u8
}

fn drop_index(reason: DropReason) -> usize {
    DropReason::ALL
        .iter()
        .position(|r| *r == reason)
        .expect("listed")
}

impl Accounting {
    /// A ledger for `node_id` that reports drops as error events on `bus`.
    pub fn new(node_id: &str, bus: Bus) -> Self {
        Accounting(Arc::new(Inner {
            node_id: node_id.to_owned(),
            bus,
            received: AtomicU64::new(0),
            published: AtomicU64::new(0),
            not_published: AtomicU64::new(0),
            drops: Default::default(),
            queue_depth: Default::default(),
            latency: Mutex::new(
                Histogram::new_with_bounds(1_000, 600_000_000_000, 2).expect("bounds"),
            ),
            settled: Notify::new(),
            breaker: AtomicU8::new(0),
            batch_sizes: (0..=MAX_COUNTED_BATCH).map(|_| AtomicU64::new(0)).collect(),
        }))
    }

    /// A batch of `n` frames was dispatched.
    pub fn batch_dispatched(&self, n: usize) {
        self.0.batch_sizes[n.min(MAX_COUNTED_BATCH)].fetch_add(1, Relaxed);
    }

    /// The overload breaker changed state: kept for NodeStatus, logged, and reported as a
    /// `breaker` event on `its.events.breaker.<node_id>`.
    pub fn breaker_changed(&self, state: BreakerState, message: String) {
        self.0.breaker.store(breaker_code(state), Relaxed);
        tracing::warn!(node = %self.0.node_id, state = state.as_str(), %message, "overload breaker");
        let event = EventMsg {
            v: SCHEMA_VERSION,
            kind: EventKind::Breaker,
            camera_id: self.0.node_id.clone(),
            node_id: self.0.node_id.clone(),
            at_ns: now_ns(),
            seq: None,
            reason: None,
            message: format!("{}: {message}", state.as_str()),
        };
        let bus = self.0.bus.clone();
        let subject = subjects::events(EventKind::Breaker, &self.0.node_id);
        actix::spawn(async move {
            if let Err(e) = bus.publish_msg(subject, &event).await {
                tracing::warn!(error = %e, "cannot publish breaker event");
            }
        });
    }

    /// The breaker's state as last reported.
    pub fn breaker(&self) -> BreakerState {
        BREAKER_STATES[self.0.breaker.load(Relaxed) as usize % BREAKER_STATES.len()]
    }

    /// The node id.
    pub fn node_id(&self) -> &str {
        &self.0.node_id
    }

    /// The bus results and events go to.
    pub fn bus(&self) -> &Bus {
        &self.0.bus
    }

    /// A message arrived on a frame subject.
    pub fn received(&self) {
        self.0.received.fetch_add(1, Relaxed);
    }

    /// A result was published; `latency_ns` is capture to publication.
    pub fn published(&self, latency_ns: u64) {
        if let Ok(mut h) = self.0.latency.lock() {
            let _ = h.record(latency_ns.clamp(1_000, 600_000_000_000));
        }
        self.0.published.fetch_add(1, Relaxed);
        self.0.settled.notify_waiters();
    }

    /// A result was settled without publication: another node of a cluster handover publishes
    /// this frame, or this node already published it. Counted once, apart from published and
    /// dropped (the frame is neither: its result goes out once, from its owner).
    pub fn not_published(&self, camera_id: &str, seq: u64, why: &str) {
        self.0.not_published.fetch_add(1, Relaxed);
        self.0.settled.notify_waiters();
        tracing::debug!(camera = camera_id, seq, why, "result not published");
    }

    /// Results settled without publication (see [`not_published`](Self::not_published)).
    pub fn not_published_count(&self) -> u64 {
        self.0.not_published.load(Relaxed)
    }

    /// A frame was dropped: counted, logged at debug level, and reported on
    /// `its.events.error.<camera>`.
    pub fn dropped(&self, camera_id: &str, seq: Option<u64>, reason: DropReason, message: String) {
        self.0.drops[drop_index(reason)].fetch_add(1, Relaxed);
        self.0.settled.notify_waiters();
        tracing::debug!(camera = camera_id, ?seq, reason = reason.as_str(), %message, "frame dropped");
        // The subject needs a valid token even when the envelope's id was garbage.
        let camera = if subjects::is_valid_id(camera_id) {
            camera_id
        } else {
            "_invalid"
        };
        let event = EventMsg {
            v: SCHEMA_VERSION,
            kind: EventKind::Error,
            camera_id: camera.to_owned(),
            node_id: self.0.node_id.clone(),
            at_ns: now_ns(),
            seq,
            reason: Some(reason),
            message,
        };
        let bus = self.0.bus.clone();
        let subject = subjects::events(EventKind::Error, camera);
        actix::spawn(async move {
            if let Err(e) = bus.publish_msg(subject, &event).await {
                tracing::warn!(error = %e, "cannot publish error event");
            }
        });
    }

    /// Sets the queue depth of a class (by the scheduler).
    pub fn set_queue_depth(&self, p: Priority, depth: usize) {
        self.0.queue_depth[p.index()].store(depth as u64, Relaxed);
    }

    /// Frames received and not yet settled.
    pub fn in_flight(&self) -> u64 {
        let settled = self.0.published.load(Relaxed)
            + self.0.not_published.load(Relaxed)
            + self.0.drops.iter().map(|d| d.load(Relaxed)).sum::<u64>();
        self.0.received.load(Relaxed).saturating_sub(settled)
    }

    /// Waits until every received frame is settled.
    pub async fn wait_settled(&self) {
        loop {
            let notified = self.0.settled.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The counters as a NodeStatus; with `reset_window`, the latency window starts anew.
    pub fn status(&self, reset_window: bool) -> NodeStatus {
        let (p50, p99) = match self.0.latency.lock() {
            Ok(mut h) => {
                let r = (h.value_at_quantile(0.5), h.value_at_quantile(0.99));
                if reset_window {
                    h.reset();
                }
                r
            }
            Err(_) => (0, 0),
        };
        let drops: BTreeMap<String, u64> = DropReason::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str().to_owned(),
                    self.0.drops[drop_index(*r)].load(Relaxed),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        NodeStatus {
            v: SCHEMA_VERSION,
            node_id: self.0.node_id.clone(),
            at_ns: now_ns(),
            frames_received: self.0.received.load(Relaxed),
            results_published: self.0.published.load(Relaxed),
            in_flight: self.in_flight(),
            drops,
            queue_depth: Priority::ALL
                .iter()
                .map(|p| {
                    (
                        p.as_str().to_owned(),
                        self.0.queue_depth[p.index()].load(Relaxed),
                    )
                })
                .collect(),
            latency_p50_ns: p50,
            latency_p99_ns: p99,
            breaker: self.breaker().as_str().to_owned(),
            batch_sizes: self
                .0
                .batch_sizes
                .iter()
                .enumerate()
                .map(|(n, c)| (n, c.load(Relaxed)))
                .filter(|(_, c)| *c > 0)
                .map(|(n, c)| (n.to_string(), c))
                .collect(),
        }
    }
}
