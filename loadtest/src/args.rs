//! Command-line settings.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// What kind of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// A fixed number of cameras for `--duration`.
    Fixed,
    /// Step the camera count up until a step misses the p99 bound (or drops too much); the
    /// result is the highest count that met it.
    Ramp,
    /// A fixed load for a long time, sampling the memory (RSS) of the processes.
    Soak,
}

impl Mode {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fixed => "fixed",
            Mode::Ramp => "ramp",
            Mode::Soak => "soak",
        }
    }
}

/// Simulated cameras against a running ITS system over NATS; a report of latency,
/// throughput, drops, fairness and worker load.
#[derive(Debug, Clone, Parser)]
#[command(name = "its-loadtest", version, about)]
pub struct Args {
    /// NATS URL of the system under test (required unless --embedded-node).
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Start a nats-server and a node in this process (CPU worker with the generated model,
    /// or the simulated GPU) and test that.
    #[arg(long)]
    pub embedded_node: bool,
    /// Serve frames with a simulated GPU whose batch cost is a sleep: `fixed:2ms` or
    /// `linear:1ms+0.3ms/frame`. Only with --embedded-node; reports say so on their first line.
    #[arg(long, value_name = "COST_MODEL", requires = "embedded_node")]
    pub simulated_gpu: Option<String>,
    /// Simulated GPUs (workers) of the embedded node.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub simulated_gpus: u32,
    /// Concurrent batches per simulated GPU (like CUDA streams).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub simulated_slots: u32,
    /// Model directory of the embedded node's CPU worker (default: models/generated/tiny-yolo
    /// found from the working directory or the executable).
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// A setting of the embedded node, e.g. `--set scheduler.deadline_normal_ms=500`
    /// (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub node_settings: Vec<String>,

    /// fixed, ramp or soak.
    #[arg(long, value_enum, default_value_t = Mode::Fixed)]
    pub mode: Mode,
    /// Cameras (fixed and soak).
    #[arg(long, default_value_t = 200)]
    pub cameras: u32,
    /// Frames per second of each camera.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Seconds of load (fixed and soak; soak defaults to 3600).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Resolution mix: `name=weight,...` with 480p, 720p, 1080p, 4k or WxH.
    #[arg(long, default_value = "720p=80,1080p=15,4k=5")]
    pub res_mix: String,
    /// Priority mix: `class=weight,...` with emergency, urgent, normal, background.
    #[arg(long, default_value = "urgent=5,normal=95")]
    pub priority_mix: String,
    /// Replay the JPEG files of this directory (sorted by name) instead of synthetic scenes;
    /// for a video, extract its frames first (`ffmpeg -i clip.mp4 -q:v 3 DIR/%05d.jpg`).
    #[arg(long, value_name = "DIR")]
    pub frames_dir: Option<PathBuf>,
    /// Different synthetic scenes per resolution.
    #[arg(long, default_value_t = 4)]
    pub scenes: u32,
    /// Frames in each synthetic loop.
    #[arg(long, default_value_t = 8)]
    pub loop_frames: u32,
    /// JPEG quality of the synthetic scenes.
    #[arg(long, default_value_t = 80)]
    pub jpeg_quality: u8,
    /// Seed of the synthetic scenes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix of the camera ids (default `lt<pid>`), so runs do not mix.
    #[arg(long)]
    pub camera_prefix: Option<String>,

    /// p99 latency bound, ms: the ramp's criterion, and checked in every report.
    #[arg(long, default_value_t = 100.0)]
    pub p99_ms: f64,
    /// Ramp: cameras of the first step.
    #[arg(long, default_value_t = 10)]
    pub ramp_start: u32,
    /// Ramp: cameras added per step.
    #[arg(long, default_value_t = 10)]
    pub ramp_step: u32,
    /// Ramp: largest camera count tried.
    #[arg(long, default_value_t = 400)]
    pub ramp_max: u32,
    /// Ramp: seconds per step.
    #[arg(long, default_value_t = 20.0)]
    pub step_secs: f64,
    /// Ramp: seconds at the start of each step left out of its verdict.
    #[arg(long, default_value_t = 3.0)]
    pub warmup_secs: f64,
    /// Ramp: largest share of dropped frames in a passing step, percent.
    #[arg(long, default_value_t = 0.1)]
    pub max_drop_pct: f64,

    /// Longest wait for outstanding results after the load stops, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain_grace_secs: f64,
    /// Also sample the memory of this process (repeatable; soak samples the embedded
    /// node's processes by itself).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 5.0)]
    pub rss_interval_secs: f64,
    /// Seconds of soak warm-up left out of the memory-growth verdict.
    #[arg(long, default_value_t = 60.0)]
    pub soak_warmup_secs: f64,

    /// Write the report as JSON to this file too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Folder for report.md, report.json and the PNG plots.
    #[arg(long, default_value = "loadtest-report", value_name = "DIR")]
    pub out: PathBuf,
    /// Seconds between progress lines (stderr).
    #[arg(long, default_value_t = 1.0)]
    pub progress_secs: f64,
    /// Exit with status 2 when a frame is unaccounted or p99 is above --p99-ms.
    #[arg(long)]
    pub check: bool,
}

impl Args {
    /// Length of the load phase (fixed, soak).
    pub fn duration_secs(&self) -> f64 {
        self.duration.unwrap_or(match self.mode {
            Mode::Soak => 3600.0,
            _ => 30.0,
        })
    }
}
