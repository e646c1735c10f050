//! What the admin server knows of the cluster: the latest status of every node, worker and
//! camera, the models seen in results, and the counters behind `/metrics`. Fed by one task
//! subscribed to the status, result and error-event subjects.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use its_bus::{Bus, HealthSnapshot, Message};
use its_proto::{
    CameraStatus, DetectionMsg, EventKind, EventMsg, ModelRef, NodeReport, NodeStatus,
    WorkerStatus, subjects,
};

use crate::metrics::{BATCH_BUCKETS, Exposition, Histogram, Kind, LATENCY_BUCKETS};

/// A status and when it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Seen<T> {
    pub(crate) value: T,
    pub(crate) at: Instant,
}

impl<T> Seen<T> {
    pub(crate) fn age(&self) -> Duration {
        self.at.elapsed()
    }
}

/// The model a worker ran last.
#[derive(Debug, Clone)]
pub(crate) struct ModelSeen {
    pub(crate) model: ModelRef,
    pub(crate) at: Instant,
}

/// Cumulative counters since this server started.
#[derive(Debug)]
struct Counters {
    /// (camera or `_other` / `""`, outcome) -> frames.
    frames: BTreeMap<(String, &'static str), u64>,
    /// Drop reason -> frames.
    drops: BTreeMap<String, u64>,
    end_to_end: Histogram,
    stages: [Histogram; 4],
    decode_errors: u64,
    messages: u64,
    /// Cameras with their own series (at most `max_camera_series`).
    labelled: std::collections::HashSet<String>,
}

/// Stage names of `its_stage_latency_seconds`, in `Counters::stages` order.
const STAGES: [&str; 4] = ["queue", "preprocess", "infer", "postprocess"];

/// Known breaker states (one `its_breaker_state` series each).
const BREAKER_STATES: [&str; 4] = [
    "closed",
    "shedding_background",
    "shedding_normal",
    "half_open",
];

#[derive(Debug)]
struct Inner {
    nodes: BTreeMap<String, Seen<NodeStatus>>,
    /// `NodeReport.nats_slow_consumer_events` of each node in `nodes`.
    node_slow_consumers: BTreeMap<String, u64>,
    workers: BTreeMap<(String, String), Seen<WorkerStatus>>,
    cameras: BTreeMap<String, Seen<CameraStatus>>,
    models: BTreeMap<(String, String), ModelSeen>,
    counters: Counters,
}

/// Options of the view that come from the settings.
#[derive(Debug, Clone)]
pub(crate) struct ViewOptions {
    pub(crate) per_camera_metrics: bool,
    pub(crate) max_camera_series: usize,
    pub(crate) stale_after: Duration,
}

/// The cluster as seen on NATS.
#[derive(Debug)]
pub(crate) struct ClusterView {
    inner: Mutex<Inner>,
    pub(crate) opts: ViewOptions,
}

/// Entries silent for this many times `stale_after` are forgotten.
const FORGET_AFTER_STALE: u32 = 6;

/// Most distinct drop-reason labels kept (reasons come from the wire; bound them).
const MAX_REASONS: usize = 64;

impl ClusterView {
    pub(crate) fn new(opts: ViewOptions) -> Self {
        ClusterView {
            inner: Mutex::new(Inner {
                nodes: BTreeMap::new(),
                node_slow_consumers: BTreeMap::new(),
                workers: BTreeMap::new(),
                cameras: BTreeMap::new(),
                models: BTreeMap::new(),
                counters: Counters {
                    frames: BTreeMap::new(),
                    drops: BTreeMap::new(),
                    end_to_end: Histogram::new(&LATENCY_BUCKETS),
                    stages: std::array::from_fn(|_| Histogram::new(&LATENCY_BUCKETS)),
                    decode_errors: 0,
                    messages: 0,
                    labelled: Default::default(),
                },
            }),
            opts,
        }
    }

    /// The state, with entries silent for longer than [`FORGET_AFTER_STALE`] times
    /// `stale_after` forgotten (a removed camera or a stopped node leaves the lists).
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let forget = self.opts.stale_after * FORGET_AFTER_STALE;
        i.nodes.retain(|_, s| s.at.elapsed() <= forget);
        let Inner {
            nodes,
            node_slow_consumers,
            ..
        } = &mut *i;
        node_slow_consumers.retain(|id, _| nodes.contains_key(id));
        i.workers.retain(|_, s| s.at.elapsed() <= forget);
        i.cameras.retain(|_, s| s.at.elapsed() <= forget);
        i.models.retain(|_, m| m.at.elapsed() <= forget);
        i
    }

    /// Latest status of every node.
    pub(crate) fn nodes(&self) -> Vec<Seen<NodeStatus>> {
        self.lock().nodes.values().cloned().collect()
    }

    /// Latest status of every worker.
    pub(crate) fn workers(&self) -> Vec<Seen<WorkerStatus>> {
        self.lock().workers.values().cloned().collect()
    }

    /// Latest status of every camera.
    pub(crate) fn cameras(&self) -> Vec<Seen<CameraStatus>> {
        self.lock().cameras.values().cloned().collect()
    }

    /// Latest status of one camera.
    pub(crate) fn camera(&self, id: &str) -> Option<Seen<CameraStatus>> {
        self.lock().cameras.get(id).cloned()
    }

    /// The model each worker ran last, by (node, worker).
    pub(crate) fn models(&self) -> BTreeMap<(String, String), ModelSeen> {
        self.lock().models.clone()
    }

    /// Whether any node or worker has reported.
    pub(crate) fn status_seen(&self) -> bool {
        let i = self.lock();
        !i.nodes.is_empty() || !i.workers.is_empty()
    }

    /// Applies one message from the bus.
    pub(crate) fn apply(&self, msg: &Message) {
        let subject: &str = &msg.subject;
        let payload: &[u8] = &msg.payload;
        let node_prefix = subjects::node_status("");
        let worker_prefix = subjects::worker_status("", "");
        let worker_prefix = worker_prefix.trim_end_matches('.');
        let camera_prefix = subjects::camera_status("");
        let results_prefix = subjects::results("");
        let error_prefix = subjects::events(EventKind::Error, "");
        let now = Instant::now();
        // No pruning on this hot path: reads prune.
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        i.counters.messages += 1;
        let ok = if subject.starts_with(&node_prefix) {
            its_proto::decode::<NodeReport>(payload)
                .map(|r| {
                    let id = r.status.node_id.clone();
                    i.node_slow_consumers
                        .insert(id.clone(), r.nats_slow_consumer_events);
                    i.nodes.insert(
                        id,
                        Seen {
                            value: r.status,
                            at: now,
                        },
                    );
                })
                .is_ok()
        } else if subject.starts_with(worker_prefix) {
            its_proto::decode::<WorkerStatus>(payload)
                .map(|s| {
                    i.workers.insert(
                        (s.node_id.clone(), s.worker_id.clone()),
                        Seen { value: s, at: now },
                    );
                })
                .is_ok()
        } else if subject.starts_with(&camera_prefix) {
            its_proto::decode::<CameraStatus>(payload)
                .map(|s| {
                    i.cameras
                        .insert(s.camera_id.clone(), Seen { value: s, at: now });
                })
                .is_ok()
        } else if subject.starts_with(&results_prefix) {
            its_proto::decode::<DetectionMsg>(payload)
                .map(|d| {
                    let camera = self.camera_label(&mut i.counters, &d.camera_id);
                    *i.counters.frames.entry((camera, "result")).or_default() += 1;
                    let t = &d.timings;
                    i.counters.end_to_end.observe(t.total_ns as f64 / 1e9);
                    for (h, ns) in i.counters.stages.iter_mut().zip([
                        t.queue_ns,
                        t.preprocess_ns,
                        t.infer_ns,
                        t.postprocess_ns,
                    ]) {
                        h.observe(ns as f64 / 1e9);
                    }
                    i.models.insert(
                        (d.node_id.clone(), d.worker_id.clone()),
                        ModelSeen {
                            model: d.model.clone(),
                            at: now,
                        },
                    );
                })
                .is_ok()
        } else if subject.starts_with(&error_prefix) {
            its_proto::decode::<EventMsg>(payload)
                .map(|e| {
                    if let Some(reason) = e.reason {
                        let camera = self.camera_label(&mut i.counters, &e.camera_id);
                        *i.counters.frames.entry((camera, "dropped")).or_default() += 1;
                        let reason = reason.as_str().to_owned();
                        let known = i.counters.drops.contains_key(&reason);
                        if known || i.counters.drops.len() < MAX_REASONS {
                            *i.counters.drops.entry(reason).or_default() += 1;
                        }
                    }
                })
                .is_ok()
        } else {
            true
        };
        if !ok {
            i.counters.decode_errors += 1;
            tracing::debug!(subject, "admin view: undecodable message");
        }
    }

    /// The camera label of a frame counter: the id, `_other` past the series limit, or empty
    /// when per-camera series are off.
    fn camera_label(&self, c: &mut Counters, camera: &str) -> String {
        if !self.opts.per_camera_metrics {
            return String::new();
        }
        if c.labelled.contains(camera) {
            return camera.to_owned();
        }
        if c.labelled.len() < self.opts.max_camera_series {
            c.labelled.insert(camera.to_owned());
            camera.to_owned()
        } else {
            "_other".into()
        }
    }

    /// The `/metrics` text.
    pub(crate) fn render_metrics(&self, nats: &HealthSnapshot, nats_connected: bool) -> String {
        let i = self.lock();
        let stale = self.opts.stale_after;
        let per_camera = self.opts.per_camera_metrics;
        let mut e = Exposition::default();

        e.family(
            "its_frames_total",
            Kind::Counter,
            "Frames seen by this admin server since it started, by camera and outcome (result or dropped).",
        );
        for ((camera, outcome), n) in &i.counters.frames {
            if per_camera {
                e.sample(
                    "its_frames_total",
                    &[("camera", camera), ("outcome", outcome)],
                    *n as f64,
                );
            } else {
                e.sample("its_frames_total", &[("outcome", outcome)], *n as f64);
            }
        }
        e.family(
            "its_frame_drops_total",
            Kind::Counter,
            "Dropped frames seen by this admin server since it started, by reason.",
        );
        for (reason, n) in &i.counters.drops {
            e.sample("its_frame_drops_total", &[("reason", reason)], *n as f64);
        }
        e.family(
            "its_frame_latency_seconds",
            Kind::Histogram,
            "Capture to result publication, per frame.",
        );
        e.histogram("its_frame_latency_seconds", &[], &i.counters.end_to_end);
        e.family(
            "its_stage_latency_seconds",
            Kind::Histogram,
            "Time per stage (queue, preprocess incl. JPEG decode, infer, postprocess incl. NMS) of each frame's batch.",
        );
        for (stage, h) in STAGES.iter().zip(&i.counters.stages) {
            e.histogram("its_stage_latency_seconds", &[("stage", stage)], h);
        }

        e.family(
            "its_node_frames_received_total",
            Kind::Counter,
            "Frames a node's scheduler received since the node started.",
        );
        for (id, s) in &i.nodes {
            e.sample(
                "its_node_frames_received_total",
                &[("node", id)],
                s.value.frames_received as f64,
            );
        }
        e.family(
            "its_node_results_published_total",
            Kind::Counter,
            "Results a node published since it started.",
        );
        for (id, s) in &i.nodes {
            e.sample(
                "its_node_results_published_total",
                &[("node", id)],
                s.value.results_published as f64,
            );
        }
        e.family(
            "its_node_frame_drops_total",
            Kind::Counter,
            "Frames a node dropped since it started, by reason.",
        );
        for (id, s) in &i.nodes {
            for (reason, n) in s.value.drops.iter().take(MAX_REASONS) {
                e.sample(
                    "its_node_frame_drops_total",
                    &[("node", id), ("reason", reason)],
                    *n as f64,
                );
            }
        }
        e.family(
            "its_node_in_flight_frames",
            Kind::Gauge,
            "Frames queued or running on a node.",
        );
        for (id, s) in &i.nodes {
            e.sample(
                "its_node_in_flight_frames",
                &[("node", id)],
                s.value.in_flight as f64,
            );
        }
        e.family(
            "its_node_queue_depth_frames",
            Kind::Gauge,
            "Frames queued on a node, by priority class.",
        );
        for (id, s) in &i.nodes {
            for (prio, n) in s.value.queue_depth.iter().take(8) {
                e.sample(
                    "its_node_queue_depth_frames",
                    &[("node", id), ("priority", prio)],
                    *n as f64,
                );
            }
        }
        e.family(
            "its_node_latency_seconds",
            Kind::Gauge,
            "Capture-to-result latency quantiles over a node's last status window.",
        );
        for (id, s) in &i.nodes {
            for (q, ns) in [
                ("0.5", s.value.latency_p50_ns),
                ("0.99", s.value.latency_p99_ns),
            ] {
                e.sample(
                    "its_node_latency_seconds",
                    &[("node", id), ("quantile", q)],
                    ns as f64 / 1e9,
                );
            }
        }
        e.family(
            "its_batch_size",
            Kind::Histogram,
            "Batches a node dispatched since it started, by size (frames).",
        );
        for (id, s) in &i.nodes {
            let mut h = Histogram::new(&BATCH_BUCKETS);
            for (size, n) in &s.value.batch_sizes {
                if let Ok(size) = size.parse::<f64>() {
                    h.observe_n(size, *n);
                }
            }
            e.histogram("its_batch_size", &[("node", id)], &h);
        }
        e.family(
            "its_breaker_state",
            Kind::Gauge,
            "1 for the current state of a node's overload breaker, 0 for the others.",
        );
        for (id, s) in &i.nodes {
            let current = if s.value.breaker.is_empty() {
                "closed"
            } else {
                s.value.breaker.as_str()
            };
            for state in BREAKER_STATES {
                e.sample(
                    "its_breaker_state",
                    &[("node", id), ("state", state)],
                    if state == current { 1.0 } else { 0.0 },
                );
            }
        }
        e.family(
            "its_node_up",
            Kind::Gauge,
            "1 while a node's last status is fresher than admin.stale_after_ms.",
        );
        for (id, s) in &i.nodes {
            e.sample(
                "its_node_up",
                &[("node", id)],
                if s.age() <= stale { 1.0 } else { 0.0 },
            );
        }

        e.family(
            "its_node_nats_slow_consumer_events_total",
            Kind::Counter,
            "Slow-consumer events of a node's NATS connection (messages of a subscription dropped because it read too slowly), from its last status.",
        );
        for (id, n) in &i.node_slow_consumers {
            e.sample(
                "its_node_nats_slow_consumer_events_total",
                &[("node", id)],
                *n as f64,
            );
        }

        type WorkerField = fn(&WorkerStatus) -> Option<f64>;
        let worker_families: [(&str, Kind, &str, WorkerField); 19] = [
            (
                "its_worker_queue_depth_frames",
                Kind::Gauge,
                "Frames given to a worker and not yet returned.",
                |w| Some(w.queue_depth.values().sum::<u64>() as f64),
            ),
            (
                "its_worker_capacity_fps",
                Kind::Gauge,
                "Estimated frames per second a worker can serve, once measured.",
                |w| w.capacity_fps.map(f64::from),
            ),
            (
                "its_worker_draining",
                Kind::Gauge,
                "1 while a worker is drained.",
                |w| Some(if w.draining { 1.0 } else { 0.0 }),
            ),
            (
                "its_worker_restarts_total",
                Kind::Counter,
                "Engine restarts of a worker since it started.",
                |w| Some(w.restarts as f64),
            ),
            (
                "its_worker_slots",
                Kind::Gauge,
                "Concurrent batch slots of a worker.",
                |w| Some(w.slots_total as f64),
            ),
            (
                "its_worker_slots_busy",
                Kind::Gauge,
                "Slots of a worker running a batch now.",
                |w| Some(w.slots_busy as f64),
            ),
            (
                "its_worker_frames_total",
                Kind::Counter,
                "Frames a worker processed since it started.",
                |w| Some(w.frames_done as f64),
            ),
            (
                "its_worker_batches_total",
                Kind::Counter,
                "Batches a worker processed since it started.",
                |w| Some(w.batches_done as f64),
            ),
            (
                "its_worker_batch_p50_seconds",
                Kind::Gauge,
                "Median batch service time over a worker's last window.",
                |w| Some(w.batch_p50_ns as f64 / 1e9),
            ),
            (
                "its_worker_batch_p99_seconds",
                Kind::Gauge,
                "99th percentile batch service time over a worker's last window.",
                |w| Some(w.batch_p99_ns as f64 / 1e9),
            ),
            (
                "its_worker_utilisation_ratio",
                Kind::Gauge,
                "Device utilisation of a worker, 0 to 1, when the device reports it.",
                |w| w.utilisation.map(f64::from),
            ),
            (
                "its_worker_memory_used_bytes",
                Kind::Gauge,
                "Device memory a worker uses, when the device reports it.",
                |w| w.memory_used_bytes.map(|b| b as f64),
            ),
            (
                "its_worker_memory_total_bytes",
                Kind::Gauge,
                "Device memory installed on a worker's GPU (NVML).",
                |w| w.memory_total_bytes.map(|b| b as f64),
            ),
            (
                "its_worker_gpu_temperature_celsius",
                Kind::Gauge,
                "Temperature of a worker's GPU (NVML).",
                |w| w.gpu_temperature_c.map(f64::from),
            ),
            (
                "its_worker_gpu_power_watts",
                Kind::Gauge,
                "Board power draw of a worker's GPU (NVML).",
                |w| w.gpu_power_w.map(f64::from),
            ),
            (
                "its_worker_gpu_sm_clock_hertz",
                Kind::Gauge,
                "SM clock of a worker's GPU (NVML).",
                |w| w.gpu_sm_clock_mhz.map(|m| f64::from(m) * 1e6),
            ),
            (
                "its_worker_pool_hit_ratio",
                Kind::Gauge,
                "Share of buffer takes a GPU worker's pools served without allocating, since start.",
                |w| match (w.pool_hits, w.pool_misses) {
                    (Some(h), Some(m)) if h + m > 0 => Some(h as f64 / (h + m) as f64),
                    _ => None,
                },
            ),
            (
                "its_worker_pool_bytes",
                Kind::Gauge,
                "Bytes a GPU worker's device and pinned pools hold.",
                |w| w.pool_bytes_held.map(|b| b as f64),
            ),
            (
                "its_worker_pool_high_water_bytes",
                Kind::Gauge,
                "Largest bytes each of a GPU worker's pools held, summed.",
                |w| w.pool_high_water_bytes.map(|b| b as f64),
            ),
        ];
        for (name, kind, help, get) in worker_families {
            e.family(name, kind, help);
            for ((node, worker), s) in &i.workers {
                if let Some(v) = get(&s.value) {
                    e.sample(
                        name,
                        &[
                            ("node", node),
                            ("worker", worker),
                            ("device", &s.value.device),
                        ],
                        v,
                    );
                }
            }
        }

        if per_camera {
            e.family(
                "its_camera_fps",
                Kind::Gauge,
                "Publish rate of a camera over its ingest's last window, frames per second.",
            );
            for (id, s) in i.cameras.iter().take(self.opts.max_camera_series) {
                e.sample(
                    "its_camera_fps",
                    &[("camera", id)],
                    f64::from(s.value.fps_measured),
                );
            }
            e.family(
                "its_camera_frames_published_total",
                Kind::Counter,
                "Frames a camera's ingest published since the camera actor started.",
            );
            for (id, s) in i.cameras.iter().take(self.opts.max_camera_series) {
                e.sample(
                    "its_camera_frames_published_total",
                    &[("camera", id)],
                    s.value.frames_published as f64,
                );
            }
            e.family(
                "its_camera_source_drops_total",
                Kind::Counter,
                "Frames a camera's ingest dropped at the source, by reason.",
            );
            for (id, s) in i.cameras.iter().take(self.opts.max_camera_series) {
                for (reason, n) in s.value.drops.iter().take(MAX_REASONS) {
                    e.sample(
                        "its_camera_source_drops_total",
                        &[("camera", id), ("reason", reason)],
                        *n as f64,
                    );
                }
            }
            e.family(
                "its_camera_streaming",
                Kind::Gauge,
                "1 while a camera's last reported state is streaming and fresh.",
            );
            for (id, s) in i.cameras.iter().take(self.opts.max_camera_series) {
                let up = s.value.state == its_proto::CameraState::Streaming && s.age() <= stale;
                e.sample(
                    "its_camera_streaming",
                    &[("camera", id)],
                    if up { 1.0 } else { 0.0 },
                );
            }
        }

        e.family(
            "its_nats_reconnects_total",
            Kind::Counter,
            "Reconnections of this admin server's NATS connection.",
        );
        e.sample("its_nats_reconnects_total", &[], nats.reconnects() as f64);
        e.family(
            "its_nats_disconnects_total",
            Kind::Counter,
            "Connection losses of this admin server's NATS connection.",
        );
        e.sample("its_nats_disconnects_total", &[], nats.disconnects as f64);
        e.family(
            "its_nats_slow_consumer_events_total",
            Kind::Counter,
            "Slow-consumer events of this admin server's NATS connection (the node's own connection when the admin runs inside a node): messages of a subscription dropped because it read too slowly.",
        );
        e.sample(
            "its_nats_slow_consumer_events_total",
            &[],
            nats.slow_consumers as f64,
        );
        e.family(
            "its_nats_connected",
            Kind::Gauge,
            "1 while this admin server is connected to NATS.",
        );
        e.sample(
            "its_nats_connected",
            &[],
            if nats_connected { 1.0 } else { 0.0 },
        );
        e.family(
            "its_admin_messages_total",
            Kind::Counter,
            "Status, result and event messages this admin server read.",
        );
        e.sample("its_admin_messages_total", &[], i.counters.messages as f64);
        e.family(
            "its_admin_undecodable_messages_total",
            Kind::Counter,
            "Messages this admin server could not decode.",
        );
        e.sample(
            "its_admin_undecodable_messages_total",
            &[],
            i.counters.decode_errors as f64,
        );
        e.finish()
    }
}

/// Subscribes to status, results and error events, reports on `ready` whether that worked,
/// then feeds `view` until the bus closes.
pub(crate) async fn watch(
    bus: Bus,
    view: std::sync::Arc<ClusterView>,
    ready: tokio::sync::oneshot::Sender<Result<(), its_bus::BusError>>,
) -> Result<(), its_bus::BusError> {
    let error_events = subjects::events(EventKind::Error, "*");
    let subscribed = async {
        let subs = vec![
            bus.subscribe(subjects::STATUS_ALL).await?,
            bus.subscribe(subjects::RESULTS_ALL).await?,
            bus.subscribe(&error_events).await?,
        ];
        bus.flush().await?;
        Ok::<_, its_bus::BusError>(subs)
    }
    .await;
    let subs = match subscribed {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let mut all = futures::stream::select_all(subs);
    while let Some(msg) = all.next().await {
        view.apply(&msg);
    }
    Ok(())
}
