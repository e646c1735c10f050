//! Message types. Encoded as MessagePack maps with named fields (see `codec`).
//!
//! Units: timestamps are unix nanoseconds (`*_ns`, u64), durations are nanoseconds
//! (`*_ns`), boxes are pixels of the original frame with the origin at the top-left corner.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Scheduling class of a frame. Higher classes are served first.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served first; never waits for a batch to fill.
    Emergency,
    /// Served before normal traffic.
    Urgent,
    /// The default class.
    #[default]
    Normal,
    /// Served when nothing else waits; shed first under overload.
    Background,
}

impl Priority {
    /// All classes, highest first.
    pub const ALL: [Priority; 4] = [
        Priority::Emergency,
        Priority::Urgent,
        Priority::Normal,
        Priority::Background,
    ];

    /// Index into per-priority arrays, 0 = Emergency.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used on the wire and in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Emergency => "emergency",
            Priority::Urgent => "urgent",
            Priority::Normal => "normal",
            Priority::Background => "background",
        }
    }
}

/// Image encoding of a frame payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Baseline or progressive JPEG (JFIF/EXIF).
    Jpeg,
    /// One H.264 access unit in Annex B byte stream form. Reserved for nodes that decode on the
    /// GPU (NVDEC); a node without such a decoder drops it as `unsupported_encoding`.
    H264,
}

/// One camera frame, published on `its.frames.<camera_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FrameMsg {
    /// Schema version of this message (`SCHEMA_VERSION`).
    pub v: u16,
    /// Camera id: 1-64 ASCII letters, digits, `-` or `_`; equals the subject's last token.
    pub camera_id: String,
    /// Per-camera sequence number, starting at 0 and rising by one per published frame.
    pub seq: u64,
    /// Capture time, unix nanoseconds.
    pub captured_at_ns: u64,
    /// Scheduling class.
    pub priority: Priority,
    /// Absolute deadline, unix nanoseconds; absent means capture time + the class default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ns: Option<u64>,
    /// Frame width in pixels, as encoded in the payload.
    pub width: u32,
    /// Frame height in pixels, as encoded in the payload.
    pub height: u32,
    /// Payload encoding.
    pub encoding: Encoding,
    /// Encoded image (MessagePack bin).
    #[serde(with = "serde_bytes")]
    #[schemars(with = "Vec<u8>")]
    pub data: Vec<u8>,
}

/// One detected object. Box corners in pixels of the original frame, x1 <= x2, y1 <= y2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Detection {
    /// Class index into the model's class list.
    pub class_id: u32,
    /// Class name from the model manifest.
    pub class_name: String,
    /// Confidence, 0..1.
    pub score: f32,
    /// Left edge, pixels.
    pub x1: f32,
    /// Top edge, pixels.
    pub y1: f32,
    /// Right edge, pixels.
    pub x2: f32,
    /// Bottom edge, pixels.
    pub y2: f32,
}

/// Where the time of one frame went, nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Timings {
    /// Frame arrival at the node to dispatch in a batch.
    pub queue_ns: u64,
    /// Decode and preprocessing of the batch.
    pub preprocess_ns: u64,
    /// Detector run of the batch.
    pub infer_ns: u64,
    /// Output decoding and NMS of the batch.
    pub postprocess_ns: u64,
    /// Capture time to result publication.
    pub total_ns: u64,
}

/// Model that produced a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelRef {
    /// Model name from its manifest.
    pub name: String,
    /// Model version from its manifest.
    pub version: String,
}

/// Detections for one frame, published on `its.results.<camera_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DetectionMsg {
    /// Schema version of this message.
    pub v: u16,
    /// Camera id.
    pub camera_id: String,
    /// Sequence number of the frame these detections belong to.
    pub seq: u64,
    /// Capture time of the frame, unix nanoseconds.
    pub captured_at_ns: u64,
    /// Publication time of this result, unix nanoseconds.
    pub published_at_ns: u64,
    /// Width of the original frame, pixels.
    pub frame_width: u32,
    /// Height of the original frame, pixels.
    pub frame_height: u32,
    /// Node that ran the detector.
    pub node_id: String,
    /// Worker (one per GPU, or the CPU worker) that ran the detector.
    pub worker_id: String,
    /// Model that ran.
    pub model: ModelRef,
    /// Number of frames in the batch this frame ran in.
    pub batch_size: u32,
    /// Detected objects, highest score first, at most `limits::MAX_DETECTIONS`.
    pub detections: Vec<Detection>,
    /// Latency breakdown.
    pub timings: Timings,
    /// The frame's deadline had passed when the result was published (delivered late by policy).
    #[serde(default)]
    pub late: bool,
    /// The result left after a later frame of the same camera (the reorder window ran out).
    #[serde(default)]
    pub out_of_order: bool,
    /// Frame quality 0..1 (sharpness, brightness, contrast), when the worker measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<f32>,
}

/// Why an accepted frame did not produce a result.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The message is not a FrameMsg MessagePack map.
    MalformedEnvelope,
    /// The message declares a schema version this node does not read.
    UnsupportedVersion,
    /// The message is larger than the configured frame limit.
    PayloadTooLarge,
    /// The envelope's camera id is invalid or differs from the subject.
    BadCameraId,
    /// The frame declares or decodes to zero or oversized dimensions.
    BadDimensions,
    /// The image payload could not be decoded.
    Undecodable,
    /// The frame's deadline passed before it could be dispatched.
    DeadlineMissed,
    /// The queue for its class was full (overload shedding).
    QueueFull,
    /// The worker failed while running the batch.
    WorkerFailed,
    /// The result could not be published to NATS.
    PublishFailed,
    /// The node shut down before the frame could be served.
    Shutdown,
    /// The overload breaker shed the frame's class.
    Shed,
    /// The device (GPU) failed while running the batch, and a retry was not possible.
    DeviceError,
    /// The payload encoding is one this node cannot decode.
    UnsupportedEncoding,
    /// The camera sent faster than the node's per-camera rate limit
    /// (`scheduler.max_camera_fps`, with a burst of `scheduler.camera_burst_frames`).
    RateLimited,
}

impl DropReason {
    /// All reasons, in declaration order.
    pub const ALL: [DropReason; 15] = [
        DropReason::MalformedEnvelope,
        DropReason::UnsupportedVersion,
        DropReason::PayloadTooLarge,
        DropReason::BadCameraId,
        DropReason::BadDimensions,
        DropReason::Undecodable,
        DropReason::DeadlineMissed,
        DropReason::QueueFull,
        DropReason::WorkerFailed,
        DropReason::PublishFailed,
        DropReason::Shutdown,
        DropReason::Shed,
        DropReason::DeviceError,
        DropReason::UnsupportedEncoding,
        DropReason::RateLimited,
    ];

    /// The name used on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MalformedEnvelope => "malformed_envelope",
            DropReason::UnsupportedVersion => "unsupported_version",
            DropReason::PayloadTooLarge => "payload_too_large",
            DropReason::BadCameraId => "bad_camera_id",
            DropReason::BadDimensions => "bad_dimensions",
            DropReason::Undecodable => "undecodable",
            DropReason::DeadlineMissed => "deadline_missed",
            DropReason::QueueFull => "queue_full",
            DropReason::WorkerFailed => "worker_failed",
            DropReason::PublishFailed => "publish_failed",
            DropReason::Shutdown => "shutdown",
            DropReason::Shed => "shed",
            DropReason::DeviceError => "device_error",
            DropReason::UnsupportedEncoding => "unsupported_encoding",
            DropReason::RateLimited => "rate_limited",
        }
    }
}

/// Kind of an event; the second token of `its.events.<kind>.<camera_id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A frame was dropped or a camera failed; `reason` and `message` say why.
    Error,
    /// A camera changed state; `message` holds the new state.
    Camera,
    /// A frame was blurred, dark or overexposed; `message` says which.
    Quality,
    /// The node's overload breaker changed state; `message` holds the new state.
    Breaker,
}

impl EventKind {
    /// The subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Error => "error",
            EventKind::Camera => "camera",
            EventKind::Quality => "quality",
            EventKind::Breaker => "breaker",
        }
    }
}

/// A derived event, published on `its.events.<kind>.<camera_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventMsg {
    /// Schema version of this message.
    pub v: u16,
    /// Event kind.
    pub kind: EventKind,
    /// Camera the event is about (the subject's token when the envelope was unreadable).
    pub camera_id: String,
    /// Node that raised the event.
    pub node_id: String,
    /// Time of the event, unix nanoseconds.
    pub at_ns: u64,
    /// Sequence number of the frame concerned, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Drop reason, for error events about a frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DropReason>,
    /// Human-readable detail.
    pub message: String,
}

/// Load of one worker, on `its.status.worker.<node_id>.<worker_id>` about every 0.5 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerStatus {
    /// Schema version of this message.
    pub v: u16,
    /// Node the worker runs on.
    pub node_id: String,
    /// Worker id, unique on its node.
    pub worker_id: String,
    /// `cpu` or the GPU's name.
    pub device: String,
    /// Time of the report, unix nanoseconds.
    pub at_ns: u64,
    /// Concurrent batch slots (CUDA streams on a GPU).
    pub slots_total: u32,
    /// Slots running a batch now.
    pub slots_busy: u32,
    /// Frames processed since start.
    pub frames_done: u64,
    /// Batches processed since start.
    pub batches_done: u64,
    /// Median batch service time over the last window, nanoseconds.
    pub batch_p50_ns: u64,
    /// 99th percentile batch service time over the last window, nanoseconds.
    pub batch_p99_ns: u64,
    /// Device utilisation 0..1 when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilisation: Option<f32>,
    /// Device memory in use, bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    /// Frames given to this worker and not yet returned, by `Priority` name.
    #[serde(default)]
    pub queue_depth: BTreeMap<String, u64>,
    /// Estimated frames per second the worker can serve (all slots, largest batch size), when
    /// a batch cost has been measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_fps: Option<f32>,
    /// The worker is drained: it finishes what it has and gets no new batches.
    #[serde(default)]
    pub draining: bool,
    /// Engine restarts (after a panic or a device error) since start.
    #[serde(default)]
    pub restarts: u64,
    /// The GPU's temperature, degrees Celsius, when NVML reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_temperature_c: Option<f32>,
    /// The GPU board's power draw, watts, when NVML reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_power_w: Option<f32>,
    /// The GPU's SM clock, MHz, when NVML reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_sm_clock_mhz: Option<u32>,
    /// The GPU's installed memory, bytes, when NVML reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    /// Buffer takes its streams' device and pinned pools served from a free buffer, since
    /// start (GPU workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_hits: Option<u64>,
    /// Buffer takes that allocated, since start (GPU workers; flat after warm-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_misses: Option<u64>,
    /// Bytes the pools hold now (in use and free), GPU workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_bytes_held: Option<u64>,
    /// Largest `pool_bytes_held` of each pool, summed, GPU workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_high_water_bytes: Option<u64>,
}

/// Counters of one node, on `its.status.node.<node_id>` every second.
///
/// Invariant once the node is idle: `frames_received = results_published + sum(drops)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeStatus {
    /// Schema version of this message.
    pub v: u16,
    /// Node id.
    pub node_id: String,
    /// Time of the report, unix nanoseconds.
    pub at_ns: u64,
    /// Messages received on frame subjects since start (every one is accepted or dropped).
    pub frames_received: u64,
    /// DetectionMsg published since start.
    pub results_published: u64,
    /// Frames currently queued or running.
    pub in_flight: u64,
    /// Dropped frames since start, by reason (`DropReason` names).
    pub drops: BTreeMap<String, u64>,
    /// Queued frames per class, by `Priority` name.
    pub queue_depth: BTreeMap<String, u64>,
    /// Median capture-to-result latency over the last window, nanoseconds.
    pub latency_p50_ns: u64,
    /// 99th percentile capture-to-result latency over the last window, nanoseconds.
    pub latency_p99_ns: u64,
    /// State of the node's overload breaker: `closed`, `shedding_background`,
    /// `shedding_normal` or `half_open`.
    #[serde(default)]
    pub breaker: String,
    /// Batches dispatched since start, by batch size (decimal string keys).
    #[serde(default)]
    pub batch_sizes: BTreeMap<String, u64>,
}

/// Counters of one node, on `its.status.node.<node_id>` every second: the ledger
/// ([`NodeStatus`]) and the health of the node's own NATS connection, one flat map on the wire.
/// A reader that decodes only `NodeStatus` reads the same message; a report from an older
/// node reads the connection fields as 0.
///
/// Invariant once the node is idle: `frames_received = results_published + sum(drops)`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename = "NodeStatus")]
pub struct NodeReport {
    /// The node's ledger.
    #[serde(flatten)]
    pub status: NodeStatus,
    /// Slow-consumer events of the node's NATS connection since start: each one means the
    /// client or the server dropped messages of one of the node's subscriptions because it
    /// read them too slowly (for the frame subscription: frames that were never counted).
    #[serde(default)]
    pub nats_slow_consumer_events: u64,
}

/// Raises a camera's priority for a while, on `its.control.priority.<camera_id>`.
///
/// Sent for example when a violation was detected; the camera falls back to its configured
/// priority by itself when `duration_ms` has passed. A later boost replaces an earlier one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PriorityBoost {
    /// Schema version of this message.
    pub v: u16,
    /// Camera to boost; equal to the subject's last token.
    pub camera_id: String,
    /// Priority for the window.
    pub priority: Priority,
    /// Length of the window, milliseconds.
    pub duration_ms: u64,
}

/// Life-cycle state of a camera actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// Opening the source.
    Connecting,
    /// Frames are flowing.
    Streaming,
    /// The source failed; waiting before the next attempt (exponential, with jitter).
    Backoff,
    /// The source failed too often in a short time; parked for a longer while.
    Quarantined,
    /// Stopped on request, or the source ended.
    Stopped,
}

impl CameraState {
    /// The name used on the wire and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Connecting => "connecting",
            CameraState::Streaming => "streaming",
            CameraState::Backoff => "backoff",
            CameraState::Quarantined => "quarantined",
            CameraState::Stopped => "stopped",
        }
    }
}

/// Counters of one camera, on `its.status.camera.<camera_id>` about every second from the
/// ingest process running it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CameraStatus {
    /// Schema version of this message.
    pub v: u16,
    /// Camera id.
    pub camera_id: String,
    /// Ingest process running the camera.
    pub ingest_id: String,
    /// Time of the report, unix nanoseconds.
    pub at_ns: u64,
    /// Current state.
    pub state: CameraState,
    /// Frames read from the source since the actor started.
    pub frames_captured: u64,
    /// Frames published on `its.frames.<camera_id>`.
    pub frames_published: u64,
    /// Frames dropped at the source, by reason (`corrupt`, `behind`, `publish_failed`, …).
    pub drops: BTreeMap<String, u64>,
    /// Measured publish rate over the last window, frames per second.
    pub fps_measured: f32,
    /// Last error, when there was one (URLs redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Resolution of the last frame, pixels (0 before the first).
    pub width: u32,
    /// Resolution of the last frame, pixels (0 before the first).
    pub height: u32,
    /// Current priority (a boost included).
    pub priority: Priority,
}

/// Run-time tuning of a node's scheduler. Absent fields keep their current value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SchedulerTuning {
    /// Preferred batch sizes, ascending, each 1..=256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_sizes: Option<Vec<u32>>,
    /// Deadline per class from capture, ms, in `Priority::ALL` order (emergency first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadlines_ms: Option<[u64; 4]>,
    /// Shortest batch wait, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_batch_timeout_ms: Option<u64>,
    /// Longest batch wait, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_timeout_ms: Option<u64>,
    /// Deadline-miss ratio over the breaker window above which the breaker sheds the next class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shed_miss_ratio: Option<f32>,
    /// What happens to a frame whose deadline passed: `drop` or `deliver` (flagged late).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_policy: Option<String>,
}

/// A command to a node's scheduler, on `its.control.scheduler.<node_id>` (request/reply; the
/// reply is a [`ControlReply`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SchedulerControl {
    /// Apply tuning.
    Tune {
        /// The changes.
        tuning: SchedulerTuning,
    },
    /// Stop sending batches to a worker; it finishes what it has.
    DrainWorker {
        /// Worker id on this node.
        worker_id: String,
    },
    /// Send batches to a drained worker again.
    ResumeWorker {
        /// Worker id on this node.
        worker_id: String,
    },
    /// Load the model in `model_dir` beside the one a worker runs, switch to it between
    /// batches, then release the old one. Answered with a [`ModelSwapReply`].
    SwapModel {
        /// Model directory (`model.toml` + ONNX file) on the node's file system.
        model_dir: String,
        /// Only this worker; absent means every worker of the node, one after another.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker_id: Option<String>,
    },
}

/// Why a [`SchedulerControl::SwapModel`] request was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SwapFailure {
    /// The model directory could not be loaded (missing, bad manifest, bad ONNX file); the
    /// worker keeps its model.
    BadModel,
    /// No worker with the requested id on this node.
    UnknownWorker,
    /// The node's workers cannot swap models (for example simulated workers).
    Unsupported,
    /// The worker stopped before it answered.
    WorkerStopped,
}

/// The model a worker runs after a swap request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerModel {
    /// Worker id on the node.
    pub worker_id: String,
    /// The model it runs now.
    pub model: ModelRef,
}

/// Answer to [`SchedulerControl::SwapModel`]: a [`ControlReply`] with more fields, so a reader
/// of `ControlReply` reads it too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelSwapReply {
    /// Whether every requested worker switched.
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
    /// The workers that switched, each with the model it runs now.
    #[serde(default)]
    pub workers: Vec<WorkerModel>,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<SwapFailure>,
}

/// Answer to a control request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ControlReply {
    /// Whether the command was applied.
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
}
