//! The settings tree. Every field has a doc comment; `its config print` shows the effective
//! values.

use std::path::PathBuf;

use its_proto::Priority;
use serde::{Deserialize, Serialize};

use crate::{CONFIG_VERSION, ConfigError};

/// A secret string: never printed by `Debug`, redacted by [`Settings::redacted`].
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret's value, or `None` when empty.
    pub fn get(&self) -> Option<&str> {
        (!self.0.is_empty()).then_some(self.0.as_str())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

/// The whole configuration of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Configuration schema version; this build reads 1.
    pub version: u32,
    /// This node.
    pub node: NodeSettings,
    /// Connection to NATS.
    pub nats: NatsSettings,
    /// Cameras this process runs.
    pub cameras: CameraSettings,
    /// Frame scheduling and batching.
    pub scheduler: SchedulerSettings,
    /// The detector.
    pub engine: EngineSettings,
    /// Status output.
    pub status: StatusSettings,
    /// The admin REST API (role `admin` of `its run`).
    pub admin: AdminSettings,
    /// Cluster membership and camera placement across nodes.
    pub cluster: ClusterSettings,
    /// Log format and traces (OpenTelemetry over OTLP/HTTP).
    pub telemetry: TelemetrySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            version: CONFIG_VERSION,
            node: NodeSettings::default(),
            nats: NatsSettings::default(),
            cameras: CameraSettings::default(),
            scheduler: SchedulerSettings::default(),
            engine: EngineSettings::default(),
            status: StatusSettings::default(),
            admin: AdminSettings::default(),
            cluster: ClusterSettings::default(),
            telemetry: TelemetrySettings::default(),
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, target, fields, spans).
    Json,
}

/// Logs and traces. Which lines are logged is the `ITS_LOG` filter; this section says how
/// they are written and where frame traces go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// Log line format on stderr: `text` or `json`.
    pub log_format: LogFormat,
    /// OTLP/HTTP (protobuf) traces endpoint, e.g. `http://otel-collector:4318/v1/traces`;
    /// empty = no traces exported.
    pub otlp_endpoint: String,
    /// Share of frame traces sampled at the camera, 0 to 1; downstream spans follow the
    /// camera's decision (parent-based).
    pub sampling_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Time to wait for the collector per export, milliseconds.
    pub export_timeout_ms: u64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            log_format: LogFormat::Text,
            otlp_endpoint: String::new(),
            sampling_ratio: 1.0,
            service_name: "its-node".into(),
            export_timeout_ms: 10_000,
        }
    }
}

/// Cluster mode (`its-cluster`): heartbeats, the placement leader's lease, and serving only the
/// cameras the leader assigns to this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Join the cluster: serve only assigned cameras instead of every `its.frames.*`.
    pub enabled: bool,
    /// Estimated frames per second this node serves (its capacity for placement).
    pub capacity_fps: f64,
    /// GPUs on this node, reported in the heartbeat.
    pub gpus: u32,
    /// Heartbeat and placement interval, milliseconds; a node silent for 3 is dead.
    pub tick_ms: u64,
    /// Leader lease time to live, milliseconds; more than two ticks.
    pub lease_ttl_ms: u64,
    /// How long a camera that moved away is still served (make-before-break), milliseconds.
    pub handover_ms: u64,
    /// Utilisation spread between nodes tolerated before cameras move for balance, 0 to 1.
    pub imbalance: f64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            enabled: false,
            capacity_fps: 100.0,
            gpus: 0,
            tick_ms: 250,
            lease_ttl_ms: 1500,
            handover_ms: 500,
            imbalance: 0.1,
        }
    }
}

/// Identity of this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    /// Node id, a NATS subject token (letters, digits, `-`, `_`; at most 64).
    pub id: String,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            id: "node-1".into(),
        }
    }
}

/// Connection to NATS. With an empty `url`, `its run` starts a local nats-server child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSettings {
    /// Server URL(s), comma-separated (`nats://host:4222`, `tls://…`); empty = embedded server.
    pub url: String,
    /// nats-server executable for the embedded server (a name on PATH or a path).
    pub server_bin: String,
    /// Store directory of the embedded server's JetStream; empty = a temporary directory.
    pub embedded_store_dir: String,
    /// Client port of the embedded server on 127.0.0.1 (0 = any free port).
    pub embedded_port: u16,
    /// User name for user/password authentication.
    pub user: String,
    /// Password for user/password authentication.
    pub password: Secret,
    /// Token authentication.
    pub token: Secret,
    /// NATS credentials file (JWT + nkey seed).
    pub creds_file: String,
    /// Nkey seed (`SU…`) for nkey authentication.
    pub nkey_seed: Secret,
    /// Require TLS to the server.
    pub tls_required: bool,
    /// PEM file of CA certificates to trust.
    pub tls_ca_file: String,
    /// PEM client certificate for mutual TLS.
    pub tls_cert_file: String,
    /// PEM private key of the client certificate.
    pub tls_key_file: String,
    /// Attempts to make the first connection before start-up fails (0 = forever).
    pub connect_attempts: u32,
    /// First delay between connection attempts, milliseconds; doubles up to 5 s, with jitter.
    pub connect_backoff_ms: u64,
    /// Frames the node's frame subscription holds before its reader takes them (1 to 65536):
    /// the frame intake has a connection of its own, and beyond this many waiting frames the
    /// client drops new ones as a NATS slow consumer (counted, `nats_slow_consumer_events`).
    pub intake_capacity: usize,
    /// Bytes the frame subscription may hold at most (64 KiB to 1 TiB): the intake's capacity
    /// is lowered to this divided by the server's `max_payload` (the largest message it can
    /// hold) when that is fewer frames than `intake_capacity`.
    pub intake_max_bytes: u64,
}

impl NatsSettings {
    /// Frames the intake's subscription may hold: `intake_capacity`, lowered so that this
    /// many messages of the server's `max_payload` bytes fit in `intake_max_bytes` (at least 1).
    pub fn intake_frames(&self, server_max_payload: usize) -> usize {
        let per_frame = (server_max_payload as u64).max(1);
        let by_bytes = usize::try_from(self.intake_max_bytes / per_frame).unwrap_or(usize::MAX);
        self.intake_capacity.min(by_bytes.max(1))
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: String::new(),
            server_bin: "nats-server".into(),
            embedded_store_dir: String::new(),
            embedded_port: 4222,
            user: String::new(),
            password: Secret::default(),
            token: Secret::default(),
            creds_file: String::new(),
            nkey_seed: Secret::default(),
            tls_required: false,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            connect_attempts: 10,
            connect_backoff_ms: 200,
            intake_capacity: 4096,
            intake_max_bytes: 4 << 30,
        }
    }
}

/// Cameras run by this process: synthetic cameras named here, and (with `registry`) every
/// camera of the live registry in NATS KV that this process holds the lease of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraSettings {
    /// Number of synthetic cameras to run (ids `<id_prefix>-<n>`); 0 = none.
    pub synthetic_count: u32,
    /// Explicit synthetic camera ids; when non-empty, overrides `synthetic_count`.
    pub ids: Vec<String>,
    /// Prefix of generated camera ids.
    pub id_prefix: String,
    /// Frames per second of each synthetic camera (0.1 to 120).
    pub fps: f64,
    /// Frame width, pixels (16 to 8192).
    pub width: u32,
    /// Frame height, pixels (16 to 8192).
    pub height: u32,
    /// JPEG quality, 1 to 100.
    pub jpeg_quality: u8,
    /// Seed of the synthetic scenes; camera n uses seed + n.
    pub seed: u64,
    /// Distinct frames pre-rendered per camera and replayed in a loop (1 to 1000).
    pub loop_frames: u32,
    /// Scheduling class of the frames.
    pub priority: Priority,
    /// Stop each camera after this many frames; 0 = run until shutdown.
    pub max_frames: u64,
    /// Run the cameras of the live registry (NATS KV bucket `its_cameras`), sharing them with
    /// the other ingest processes through leases.
    pub registry: bool,
    /// Lifetime of a camera lease, milliseconds (1000 to 600000); renewed every third of it.
    pub lease_ttl_ms: u64,
    /// Most registry cameras this process takes; 0 = no limit.
    pub max_cameras: u32,
    /// A source that delivers nothing for this long has stalled, milliseconds (100 to 600000).
    pub read_timeout_ms: u64,
    /// First wait before reconnecting a failed camera, milliseconds (10 to 600000).
    pub backoff_initial_ms: u64,
    /// Longest wait between reconnects, milliseconds (at least `backoff_initial_ms`).
    pub backoff_max_ms: u64,
    /// Failures within `quarantine_window_ms` that quarantine a camera; 0 = never.
    pub quarantine_failures: u32,
    /// Window over which failures are counted, milliseconds.
    pub quarantine_window_ms: u64,
    /// How long a quarantined camera waits before its next attempt, milliseconds.
    pub quarantine_ms: u64,
    /// Frames queued per camera while the bus is behind (1 to 1000); the oldest is dropped
    /// beyond it.
    pub queue_capacity: u32,
    /// The ffmpeg executable used for RTSP, video-file and https sources.
    pub ffmpeg_bin: String,
    /// CA certificates (PEM file) that `https://` cameras are verified against; empty = the
    /// system trust store. Certificates are always verified.
    pub tls_ca_file: String,
}

impl Default for CameraSettings {
    fn default() -> Self {
        CameraSettings {
            synthetic_count: 4,
            ids: Vec::new(),
            id_prefix: "synth".into(),
            fps: 10.0,
            width: 1280,
            height: 720,
            jpeg_quality: 80,
            seed: 1,
            loop_frames: 30,
            priority: Priority::Normal,
            max_frames: 0,
            registry: false,
            lease_ttl_ms: 6000,
            max_cameras: 0,
            read_timeout_ms: 10_000,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
            quarantine_failures: 8,
            quarantine_window_ms: 120_000,
            quarantine_ms: 300_000,
            queue_capacity: 4,
            ffmpeg_bin: "ffmpeg".into(),
            tls_ca_file: String::new(),
        }
    }
}

impl CameraSettings {
    /// The ids of the synthetic cameras to run.
    pub fn camera_ids(&self) -> Vec<String> {
        if self.ids.is_empty() {
            (0..self.synthetic_count)
                .map(|n| format!("{}-{n}", self.id_prefix))
                .collect()
        } else {
            self.ids.clone()
        }
    }
}

/// Frame scheduling: priority queues, deadlines and adaptive batching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    /// Deadline of Emergency frames after capture, milliseconds.
    pub deadline_emergency_ms: u64,
    /// Deadline of Urgent frames after capture, milliseconds.
    pub deadline_urgent_ms: u64,
    /// Deadline of Normal frames after capture, milliseconds.
    pub deadline_normal_ms: u64,
    /// Deadline of Background frames after capture, milliseconds.
    pub deadline_background_ms: u64,
    /// Batch sizes the engine is prepared for, ascending (each 1 to 256).
    pub batch_sizes: Vec<u32>,
    /// Shortest time a batch waits to fill, milliseconds.
    pub min_batch_timeout_ms: u64,
    /// Longest time a batch waits to fill, milliseconds.
    pub max_batch_timeout_ms: u64,
    /// Frames queued per priority class before new ones are dropped (`queue_full`).
    pub queue_capacity: usize,
    /// Largest FrameMsg accepted, bytes (at most 64 MiB; NATS' own limit applies too).
    pub max_frame_bytes: usize,
    /// Most frames per second the node's intake takes from one camera id, a token bucket per
    /// camera refilled at this rate; frames beyond it are dropped (`rate_limited`). 0 = no
    /// limit. The default is the highest rate a camera may declare (`cameras.fps`, the
    /// registry's `fps`), so only a camera publishing faster than any declared rate is held.
    pub max_camera_fps: u32,
    /// Frames one camera may send at once above `max_camera_fps`: the size of its bucket.
    pub camera_burst_frames: u32,
    /// Named profile setting batching, late policy, shedding and reordering at once (see
    /// [`SchedulerPreset`]); `custom` uses the individual keys.
    pub preset: SchedulerPreset,
    /// What happens to a frame whose deadline passed before its result was ready.
    pub late_policy: LatePolicySetting,
    /// Deadline-miss ratio over the breaker window above which the overload breaker sheds the
    /// next class (Background, then Normal), more than 0 and at most 1.
    pub shed_miss_ratio: f32,
    /// Sliding window of the overload breaker, milliseconds.
    pub breaker_window_ms: u64,
    /// Fewest settled frames in the window before the breaker may open.
    pub breaker_min_samples: u32,
    /// Least time the breaker stays in a state, milliseconds.
    pub breaker_hold_ms: u64,
    /// Longest time a result waits for an earlier frame of its camera, milliseconds.
    pub reorder_hold_ms: u64,
    /// Most results held per camera while waiting for an earlier frame.
    pub reorder_capacity: usize,
    /// CPU workers on this node, each a separate worker id (`cpu-0`, `cpu-1`, ...) with
    /// `engine.cpu_workers` threads.
    pub workers: u32,
}

/// What happens to a frame whose deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicySetting {
    /// Dropped (`deadline_missed`), before inference when possible; never published late.
    Drop,
    /// Published anyway with `late = true`.
    Deliver,
}

/// Named scheduler profiles. Each sets `batch_sizes`, `min_batch_timeout_ms`,
/// `max_batch_timeout_ms`, `late_policy`, `shed_miss_ratio` and `reorder_hold_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerPreset {
    /// No preset: the individual keys apply.
    Custom,
    /// The defaults: sizes 1-32, waits 2-50 ms, drop late frames, shed above 20 % misses.
    Balanced,
    /// Large batches: sizes 4-32, waits 10-50 ms, deliver late frames flagged, shed above
    /// 50 % misses, hold results 200 ms for ordering.
    HighThroughput,
    /// Small batches: sizes 1-4, waits 1-5 ms, drop late frames, shed above 10 % misses,
    /// hold results 30 ms for ordering.
    LowLatency,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            deadline_emergency_ms: 20,
            deadline_urgent_ms: 50,
            deadline_normal_ms: 100,
            deadline_background_ms: 500,
            batch_sizes: vec![1, 4, 8, 16, 32],
            min_batch_timeout_ms: 2,
            max_batch_timeout_ms: 50,
            queue_capacity: 1024,
            max_frame_bytes: its_proto::limits::MAX_FRAME_BYTES,
            max_camera_fps: its_proto::registry::MAX_FPS as u32,
            camera_burst_frames: 60,
            preset: SchedulerPreset::Custom,
            late_policy: LatePolicySetting::Drop,
            shed_miss_ratio: 0.2,
            breaker_window_ms: 1000,
            breaker_min_samples: 20,
            breaker_hold_ms: 500,
            reorder_hold_ms: 100,
            reorder_capacity: 64,
            workers: 1,
        }
    }
}

impl SchedulerSettings {
    /// The keys a preset sets and their values: batch sizes, min and max batch wait (ms),
    /// late policy, shed miss ratio, reorder hold (ms). `None` for `custom`.
    pub fn preset_values(
        p: SchedulerPreset,
    ) -> Option<(Vec<u32>, u64, u64, LatePolicySetting, f32, u64)> {
        use LatePolicySetting::{Deliver, Drop};
        match p {
            SchedulerPreset::Custom => None,
            SchedulerPreset::Balanced => Some((vec![1, 4, 8, 16, 32], 2, 50, Drop, 0.2, 100)),
            SchedulerPreset::HighThroughput => {
                Some((vec![4, 8, 16, 32], 10, 50, Deliver, 0.5, 200))
            }
            SchedulerPreset::LowLatency => Some((vec![1, 2, 4], 1, 5, Drop, 0.1, 30)),
        }
    }

    /// These settings with the preset applied (the individual keys when `custom`).
    pub fn effective(&self) -> SchedulerSettings {
        let mut s = self.clone();
        if let Some((sizes, min, max, late, ratio, hold)) = Self::preset_values(self.preset) {
            s.batch_sizes = sizes;
            s.min_batch_timeout_ms = min;
            s.max_batch_timeout_ms = max;
            s.late_policy = late;
            s.shed_miss_ratio = ratio;
            s.reorder_hold_ms = hold;
        }
        s
    }

    /// Deadline of a class after capture, milliseconds.
    pub fn deadline_ms(&self, p: Priority) -> u64 {
        match p {
            Priority::Emergency => self.deadline_emergency_ms,
            Priority::Urgent => self.deadline_urgent_ms,
            Priority::Normal => self.deadline_normal_ms,
            Priority::Background => self.deadline_background_ms,
        }
    }
}

/// Execution providers of the ONNX Runtime engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// ONNX Runtime's CUDA provider (needs the GPU build of ONNX Runtime).
    Cuda,
    /// ONNX Runtime's TensorRT provider (needs TensorRT).
    Tensorrt,
}

/// The inference engine of the workers (`engine.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum BackendSetting {
    /// The native CUDA engine where a GPU (`engine.gpu_device`) with cuDNN and NVRTC is usable
    /// and the model builds on it, ONNX Runtime otherwise (logged with the reason).
    Auto,
    /// ONNX Runtime with `engine.providers`.
    Ort,
    /// The native CUDA engine behind CPU decode, letterbox and NMS; start-up fails without a
    /// usable GPU.
    Native,
    /// The whole frame path on the GPU (nvJPEG, letterbox kernel, native engine, GPU NMS),
    /// one worker per GPU with `engine.gpu_streams` streams; start-up fails without a GPU.
    Gpu,
}

/// Arithmetic of the native engine (`engine.native_precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum NativePrecisionSetting {
    /// FP16 activations and weights, FP32 accumulation (tensor cores).
    Fp16,
    /// Plain FP32.
    Fp32,
    /// FP32 storage, TF32 tensor cores inside cuDNN.
    Tf32,
}

// Read from strings so that a bad value's error lists what is allowed (the config crate's
// own enum error names only the key).
impl TryFrom<String> for BackendSetting {
    type Error = String;

    fn try_from(v: String) -> Result<Self, String> {
        match v.as_str() {
            "auto" => Ok(Self::Auto),
            "ort" => Ok(Self::Ort),
            "native" => Ok(Self::Native),
            "gpu" => Ok(Self::Gpu),
            _ => Err(format!(
                "{v:?} is not an engine: expected auto, ort, native or gpu"
            )),
        }
    }
}

impl TryFrom<String> for NativePrecisionSetting {
    type Error = String;

    fn try_from(v: String) -> Result<Self, String> {
        match v.as_str() {
            "fp16" => Ok(Self::Fp16),
            "fp32" => Ok(Self::Fp32),
            "tf32" => Ok(Self::Tf32),
            _ => Err(format!(
                "{v:?} is not a precision: expected fp16, fp32 or tf32"
            )),
        }
    }
}

/// The detector and the workers that run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Model directory holding `model.toml` and the ONNX file.
    pub model_dir: PathBuf,
    /// Inference engine: `auto` (the GPU frame path where a GPU is usable, else ONNX Runtime),
    /// `ort` (ONNX Runtime), `native` (the native engine behind the CPU stages) or `gpu` (the
    /// GPU frame path; start-up fails without a GPU).
    pub backend: BackendSetting,
    /// Arithmetic of the native engine: `fp16`, `fp32` or `tf32`.
    pub native_precision: NativePrecisionSetting,
    /// CUDA device ordinal of the native engine and of ONNX Runtime's `cuda` / `tensorrt`
    /// providers, 0 to 63.
    pub gpu_device: u32,
    /// libonnxruntime shared library; empty = `ORT_DYLIB_PATH`, then `.venv` near the binary.
    pub ort_dylib: PathBuf,
    /// ONNX Runtime execution providers in order of preference.
    pub providers: Vec<Provider>,
    /// Fall back to the CPU provider when a requested one is unavailable.
    pub allow_fallback: bool,
    /// Intra-op threads per worker; 0 = ONNX Runtime's default.
    pub intra_threads: u32,
    /// CPU workers (each one engine instance on its own thread), 1 to 64.
    pub cpu_workers: u32,
    /// Streams (threads, each with its own lane and engine contexts) of each GPU worker on
    /// the GPU frame path, 1 to 32.
    pub gpu_streams: u32,
    /// GPUs that get a worker on the GPU frame path, by ordinal; empty = every GPU.
    pub gpu_devices: Vec<u32>,
    /// Largest decoded frame side accepted, pixels.
    pub max_frame_dim: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            model_dir: PathBuf::from("models/generated/tiny-yolo"),
            backend: BackendSetting::Auto,
            native_precision: NativePrecisionSetting::Fp16,
            gpu_device: 0,
            ort_dylib: PathBuf::new(),
            providers: vec![Provider::Cpu],
            allow_fallback: true,
            intra_threads: 0,
            cpu_workers: 1,
            gpu_streams: 8,
            gpu_devices: Vec::new(),
            max_frame_dim: its_proto::limits::MAX_FRAME_DIM,
        }
    }
}

/// Status output of `its run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSettings {
    /// Interval of the status line and the NodeStatus message, milliseconds (100 to 60000).
    pub interval_ms: u64,
    /// Print a status line to stderr at every interval.
    pub print: bool,
}

impl Default for StatusSettings {
    fn default() -> Self {
        StatusSettings {
            interval_ms: 1000,
            print: true,
        }
    }
}

/// What a bearer token of the admin API may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// Read-only: every GET.
    Viewer,
    /// Viewer, plus camera changes and scheduler tuning.
    Operator,
    /// Everything, worker drain and model changes included.
    Admin,
}

impl AdminRole {
    /// The name used in config and token files.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Viewer => "viewer",
            AdminRole::Operator => "operator",
            AdminRole::Admin => "admin",
        }
    }
}

/// One bearer token of the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// A name for logs (the token itself is never logged).
    #[serde(default)]
    pub name: String,
    /// What the token may do.
    pub role: AdminRole,
    /// The token (at least 16 characters).
    pub token: Secret,
}

/// The admin REST API: cameras, workers, scheduler tuning, probes, metrics, OpenAPI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Run the admin API in this process.
    pub enabled: bool,
    /// Listen address `host:port` (port 0 = any free port). A non-loopback address needs
    /// at least one token.
    pub bind: String,
    /// HTTP worker threads, 1 to 16.
    pub workers: u32,
    /// Bearer tokens (`[[admin.tokens]]` tables of name, role, token).
    pub tokens: Vec<AdminToken>,
    /// A file of more tokens (e.g. a mounted secret): one `role token [name]` per line, `#`
    /// starts a comment. Read at start-up.
    pub tokens_file: String,
    /// Require a token (any role) for `/healthz` and `/readyz`.
    pub protect_health: bool,
    /// Require a token (any role) for `/metrics`.
    pub protect_metrics: bool,
    /// Export per-camera metric series (turn off for very large fleets).
    pub per_camera_metrics: bool,
    /// Most distinct cameras with their own metric series; further ones are summed under
    /// `camera="_other"`.
    pub max_camera_series: usize,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers, and again its body (408 beyond),
    /// milliseconds.
    pub request_timeout_ms: u64,
    /// Time a node's scheduler has to answer a control request (drain, tuning), milliseconds.
    pub control_timeout_ms: u64,
    /// `/readyz` needs a status report from at least one node.
    pub ready_requires_status: bool,
    /// A node, worker or camera whose last status is older than this is reported stale,
    /// milliseconds.
    pub stale_after_ms: u64,
    /// The admin API's own NATS identity (`[admin.nats]`); when none is set it shares the
    /// node's connection and so its identity.
    pub nats: AdminNatsSettings,
}

/// The NATS identity of the admin API inside a node (`[admin.nats]`): the credentials of
/// `[nats]`, for a second connection that the admin API alone uses, so that it can hold the
/// `admin` role while the node holds `node` (config/nats/roles.conf). The server URL(s) and
/// TLS are the node's. With nothing set, the admin API shares the node's connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminNatsSettings {
    /// User name for user/password authentication.
    pub user: String,
    /// Password for user/password authentication (needs `user`).
    pub password: Secret,
    /// Token authentication.
    pub token: Secret,
    /// NATS credentials file (JWT + nkey seed).
    pub creds_file: String,
    /// Nkey seed (`SU…`) for nkey authentication.
    pub nkey_seed: Secret,
}

impl AdminNatsSettings {
    /// Whether an identity is set (any of the keys), so the admin API connects on its own.
    pub fn is_set(&self) -> bool {
        !self.user.is_empty()
            || self.password.get().is_some()
            || self.token.get().is_some()
            || !self.creds_file.is_empty()
            || self.nkey_seed.get().is_some()
    }

    /// The node's connection settings with this identity's credentials in place of the
    /// node's: the same server URL(s), TLS and connection retries.
    pub fn connection(&self, node: &NatsSettings) -> NatsSettings {
        NatsSettings {
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            creds_file: self.creds_file.clone(),
            nkey_seed: self.nkey_seed.clone(),
            ..node.clone()
        }
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            enabled: false,
            bind: "127.0.0.1:8080".into(),
            workers: 2,
            tokens: Vec::new(),
            tokens_file: String::new(),
            protect_health: false,
            protect_metrics: false,
            per_camera_metrics: true,
            max_camera_series: 10_000,
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 5_000,
            control_timeout_ms: 2_000,
            ready_requires_status: true,
            stale_after_ms: 10_000,
            nats: AdminNatsSettings::default(),
        }
    }
}

fn check<T: std::fmt::Debug>(
    ok: bool,
    key: &str,
    value: T,
    allowed: &str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, value, allowed))
    }
}

impl Settings {
    /// Checks every value; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use its_proto::subjects::is_valid_id;
        let c = &self.cluster;
        check(
            c.capacity_fps.is_finite() && c.capacity_fps > 0.0,
            "cluster.capacity_fps",
            c.capacity_fps,
            "a positive number of frames per second",
        )?;
        check(
            (20..=60_000).contains(&c.tick_ms),
            "cluster.tick_ms",
            c.tick_ms,
            "20 to 60000",
        )?;
        check(
            c.lease_ttl_ms > 2 * c.tick_ms,
            "cluster.lease_ttl_ms",
            c.lease_ttl_ms,
            "more than two cluster.tick_ms",
        )?;
        check(
            c.imbalance > 0.0 && c.imbalance <= 1.0,
            "cluster.imbalance",
            c.imbalance,
            "more than 0, at most 1",
        )?;
        check(
            self.version == CONFIG_VERSION,
            "version",
            self.version,
            "this build reads version 1",
        )?;
        check(
            is_valid_id(&self.node.id),
            "node.id",
            &self.node.id,
            "1-64 ASCII letters, digits, '-' or '_'",
        )?;
        let n = &self.nats;
        check(
            !n.server_bin.is_empty(),
            "nats.server_bin",
            &n.server_bin,
            "a nats-server executable name or path",
        )?;
        check(
            n.tls_cert_file.is_empty() == n.tls_key_file.is_empty(),
            "nats.tls_key_file",
            &n.tls_key_file,
            "tls_cert_file and tls_key_file are set together",
        )?;
        check(
            [
                n.token.get().is_some(),
                !n.user.is_empty(),
                !n.creds_file.is_empty(),
                n.nkey_seed.get().is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count()
                <= 1,
            "nats.user",
            &n.user,
            "at most one of user/password, token, creds_file and nkey_seed",
        )?;
        check(
            (1..=60_000).contains(&n.connect_backoff_ms),
            "nats.connect_backoff_ms",
            n.connect_backoff_ms,
            "1 to 60000",
        )?;
        check(
            (1..=65_536).contains(&n.intake_capacity),
            "nats.intake_capacity",
            n.intake_capacity,
            "1 to 65536",
        )?;
        check(
            ((64 << 10)..=(1 << 40)).contains(&n.intake_max_bytes),
            "nats.intake_max_bytes",
            n.intake_max_bytes,
            "65536 to 1099511627776 (64 KiB to 1 TiB)",
        )?;
        let c = &self.cameras;
        for id in c.camera_ids() {
            check(
                is_valid_id(&id),
                "cameras.ids",
                &id,
                "1-64 ASCII letters, digits, '-' or '_' per id",
            )?;
        }
        check(
            is_valid_id(&c.id_prefix),
            "cameras.id_prefix",
            &c.id_prefix,
            "1-50 ASCII letters, digits, '-' or '_'",
        )?;
        check(
            c.synthetic_count <= 10_000,
            "cameras.synthetic_count",
            c.synthetic_count,
            "0 to 10000",
        )?;
        check(
            c.fps.is_finite() && (0.1..=120.0).contains(&c.fps),
            "cameras.fps",
            c.fps,
            "0.1 to 120",
        )?;
        check(
            (16..=8192).contains(&c.width),
            "cameras.width",
            c.width,
            "16 to 8192",
        )?;
        check(
            (16..=8192).contains(&c.height),
            "cameras.height",
            c.height,
            "16 to 8192",
        )?;
        check(
            (1..=100).contains(&c.jpeg_quality),
            "cameras.jpeg_quality",
            c.jpeg_quality,
            "1 to 100",
        )?;
        check(
            (1..=1000).contains(&c.loop_frames),
            "cameras.loop_frames",
            c.loop_frames,
            "1 to 1000",
        )?;
        check(
            (1000..=600_000).contains(&c.lease_ttl_ms),
            "cameras.lease_ttl_ms",
            c.lease_ttl_ms,
            "1000 to 600000",
        )?;
        check(
            (100..=600_000).contains(&c.read_timeout_ms),
            "cameras.read_timeout_ms",
            c.read_timeout_ms,
            "100 to 600000",
        )?;
        check(
            (10..=600_000).contains(&c.backoff_initial_ms),
            "cameras.backoff_initial_ms",
            c.backoff_initial_ms,
            "10 to 600000",
        )?;
        check(
            c.backoff_max_ms >= c.backoff_initial_ms && c.backoff_max_ms <= 3_600_000,
            "cameras.backoff_max_ms",
            c.backoff_max_ms,
            "backoff_initial_ms to 3600000",
        )?;
        check(
            (1..=1000).contains(&c.queue_capacity),
            "cameras.queue_capacity",
            c.queue_capacity,
            "1 to 1000",
        )?;
        check(
            !c.ffmpeg_bin.trim().is_empty(),
            "cameras.ffmpeg_bin",
            &c.ffmpeg_bin,
            "a program name or path",
        )?;
        let s = &self.scheduler;
        for (key, v) in [
            ("scheduler.deadline_emergency_ms", s.deadline_emergency_ms),
            ("scheduler.deadline_urgent_ms", s.deadline_urgent_ms),
            ("scheduler.deadline_normal_ms", s.deadline_normal_ms),
            ("scheduler.deadline_background_ms", s.deadline_background_ms),
        ] {
            check((1..=600_000).contains(&v), key, v, "1 to 600000 ms")?;
        }
        check(
            !s.batch_sizes.is_empty()
                && s.batch_sizes.windows(2).all(|w| w[0] < w[1])
                && s.batch_sizes.iter().all(|b| (1..=256).contains(b)),
            "scheduler.batch_sizes",
            &s.batch_sizes,
            "a non-empty strictly ascending list of sizes 1 to 256",
        )?;
        check(
            (1..=1000).contains(&s.min_batch_timeout_ms),
            "scheduler.min_batch_timeout_ms",
            s.min_batch_timeout_ms,
            "1 to 1000",
        )?;
        check(
            s.max_batch_timeout_ms >= s.min_batch_timeout_ms && s.max_batch_timeout_ms <= 1000,
            "scheduler.max_batch_timeout_ms",
            s.max_batch_timeout_ms,
            "min_batch_timeout_ms to 1000",
        )?;
        check(
            (1..=1_000_000).contains(&s.queue_capacity),
            "scheduler.queue_capacity",
            s.queue_capacity,
            "1 to 1000000",
        )?;
        check(
            (1024..=64 * 1024 * 1024).contains(&s.max_frame_bytes),
            "scheduler.max_frame_bytes",
            s.max_frame_bytes,
            "1024 to 67108864",
        )?;
        check(
            s.max_camera_fps <= 10_000,
            "scheduler.max_camera_fps",
            s.max_camera_fps,
            "0 (no limit) to 10000 frames per second",
        )?;
        check(
            (1..=10_000).contains(&s.camera_burst_frames),
            "scheduler.camera_burst_frames",
            s.camera_burst_frames,
            "1 to 10000 frames",
        )?;
        if s.preset != SchedulerPreset::Custom {
            // A preset owns its keys: a different explicit value would be silently overridden.
            let d = SchedulerSettings::default();
            for (key, changed) in [
                ("scheduler.batch_sizes", s.batch_sizes != d.batch_sizes),
                (
                    "scheduler.min_batch_timeout_ms",
                    s.min_batch_timeout_ms != d.min_batch_timeout_ms,
                ),
                (
                    "scheduler.max_batch_timeout_ms",
                    s.max_batch_timeout_ms != d.max_batch_timeout_ms,
                ),
                ("scheduler.late_policy", s.late_policy != d.late_policy),
                (
                    "scheduler.shed_miss_ratio",
                    s.shed_miss_ratio != d.shed_miss_ratio,
                ),
                (
                    "scheduler.reorder_hold_ms",
                    s.reorder_hold_ms != d.reorder_hold_ms,
                ),
            ] {
                check(
                    !changed,
                    key,
                    format!("set together with scheduler.preset = {:?}", s.preset),
                    "the preset's value: set scheduler.preset = \"custom\" to choose it yourself",
                )?;
            }
        }
        check(
            s.shed_miss_ratio.is_finite() && s.shed_miss_ratio > 0.0 && s.shed_miss_ratio <= 1.0,
            "scheduler.shed_miss_ratio",
            s.shed_miss_ratio,
            "more than 0, at most 1",
        )?;
        check(
            (100..=60_000).contains(&s.breaker_window_ms),
            "scheduler.breaker_window_ms",
            s.breaker_window_ms,
            "100 to 60000",
        )?;
        check(
            (1..=100_000).contains(&s.breaker_min_samples),
            "scheduler.breaker_min_samples",
            s.breaker_min_samples,
            "1 to 100000",
        )?;
        check(
            (10..=60_000).contains(&s.breaker_hold_ms),
            "scheduler.breaker_hold_ms",
            s.breaker_hold_ms,
            "10 to 60000",
        )?;
        check(
            (1..=10_000).contains(&s.reorder_hold_ms),
            "scheduler.reorder_hold_ms",
            s.reorder_hold_ms,
            "1 to 10000",
        )?;
        check(
            (1..=4096).contains(&s.reorder_capacity),
            "scheduler.reorder_capacity",
            s.reorder_capacity,
            "1 to 4096",
        )?;
        check(
            (1..=16).contains(&s.workers),
            "scheduler.workers",
            s.workers,
            "1 to 16",
        )?;
        let e = &self.engine;
        check(
            !e.model_dir.as_os_str().is_empty(),
            "engine.model_dir",
            &e.model_dir,
            "a model directory",
        )?;
        check(
            e.gpu_device <= 63,
            "engine.gpu_device",
            e.gpu_device,
            "a CUDA device ordinal, 0 to 63",
        )?;
        check(
            !e.providers.is_empty(),
            "engine.providers",
            &e.providers,
            "at least one of cpu, cuda, tensorrt",
        )?;
        check(
            (1..=64).contains(&e.cpu_workers),
            "engine.cpu_workers",
            e.cpu_workers,
            "1 to 64",
        )?;
        check(
            (1..=32).contains(&e.gpu_streams),
            "engine.gpu_streams",
            e.gpu_streams,
            "1 to 32",
        )?;
        check(
            e.gpu_devices.iter().all(|&d| d <= 63),
            "engine.gpu_devices",
            &e.gpu_devices,
            "CUDA device ordinals, 0 to 63 (empty = every GPU)",
        )?;
        check(
            e.intra_threads <= 256,
            "engine.intra_threads",
            e.intra_threads,
            "0 (default) to 256",
        )?;
        check(
            (16..=its_proto::limits::MAX_FRAME_DIM).contains(&e.max_frame_dim),
            "engine.max_frame_dim",
            e.max_frame_dim,
            "16 to 8192",
        )?;
        check(
            (100..=60_000).contains(&self.status.interval_ms),
            "status.interval_ms",
            self.status.interval_ms,
            "100 to 60000",
        )?;
        let a = &self.admin;
        check(
            a.bind.parse::<std::net::SocketAddr>().is_ok(),
            "admin.bind",
            &a.bind,
            "an IP address and port, e.g. 127.0.0.1:8080",
        )?;
        check(
            (1..=16).contains(&a.workers),
            "admin.workers",
            a.workers,
            "1 to 16",
        )?;
        for t in &a.tokens {
            check(
                t.token.0.len() >= 16 && !t.token.0.chars().any(char::is_whitespace),
                "admin.tokens.token",
                &t.name,
                "a token of at least 16 characters without whitespace",
            )?;
        }
        check(
            (1024..=16 * 1024 * 1024).contains(&a.max_body_bytes),
            "admin.max_body_bytes",
            a.max_body_bytes,
            "1024 to 16777216",
        )?;
        check(
            (1..=1_000_000).contains(&a.max_camera_series),
            "admin.max_camera_series",
            a.max_camera_series,
            "1 to 1000000",
        )?;
        for (key, v) in [
            ("admin.request_timeout_ms", a.request_timeout_ms),
            ("admin.control_timeout_ms", a.control_timeout_ms),
            ("admin.stale_after_ms", a.stale_after_ms),
        ] {
            check((100..=600_000).contains(&v), key, v, "100 to 600000 ms")?;
        }
        let an = &a.nats;
        check(
            [
                an.token.get().is_some(),
                !an.user.is_empty(),
                !an.creds_file.is_empty(),
                an.nkey_seed.get().is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count()
                <= 1,
            "admin.nats.user",
            &an.user,
            "at most one of user/password, token, creds_file and nkey_seed",
        )?;
        check(
            an.password.get().is_none() || !an.user.is_empty(),
            "admin.nats.password",
            &an.password,
            "a password only together with admin.nats.user",
        )?;
        let t = &self.telemetry;
        check(
            t.otlp_endpoint.is_empty()
                || (t.otlp_endpoint.starts_with("http://")
                    && t.otlp_endpoint.len() > "http://".len()
                    && !t.otlp_endpoint.chars().any(char::is_whitespace)),
            "telemetry.otlp_endpoint",
            &t.otlp_endpoint,
            "empty (no traces) or an http:// URL of an OTLP/HTTP traces endpoint, e.g. \
             http://127.0.0.1:4318/v1/traces (no TLS: send to a collector on the host or pod)",
        )?;
        check(
            t.sampling_ratio.is_finite() && (0.0..=1.0).contains(&t.sampling_ratio),
            "telemetry.sampling_ratio",
            t.sampling_ratio,
            "0 to 1",
        )?;
        check(
            !t.service_name.trim().is_empty() && t.service_name.len() <= 256,
            "telemetry.service_name",
            &t.service_name,
            "1 to 256 characters",
        )?;
        check(
            (100..=600_000).contains(&t.export_timeout_ms),
            "telemetry.export_timeout_ms",
            t.export_timeout_ms,
            "100 to 600000",
        )?;
        Ok(())
    }

    /// A copy fit to print: secrets replaced by `<redacted>`.
    pub fn redacted(&self) -> Settings {
        let mut s = self.clone();
        for secret in [
            &mut s.nats.password,
            &mut s.nats.token,
            &mut s.nats.nkey_seed,
            &mut s.admin.nats.password,
            &mut s.admin.nats.token,
            &mut s.admin.nats.nkey_seed,
        ]
        .into_iter()
        .chain(s.admin.tokens.iter_mut().map(|t| &mut t.token))
        {
            if secret.get().is_some() {
                *secret = Secret("<redacted>".into());
            }
        }
        s
    }

    /// The configuration as TOML, secrets redacted.
    pub fn to_toml_redacted(&self) -> String {
        toml::to_string_pretty(&self.redacted())
            .unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}
