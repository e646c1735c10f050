//! `its-loadtest`: simulated cameras against a running ITS system over NATS, and a report of
//! what came back.
//!
//! N cameras publish JPEG frames (pre-rendered synthetic scenes or files) at F fps on
//! `its.frames.<camera>`, with a resolution and a priority mix. A collector reads
//! `its.results.*`, `its.events.error.*`, `its.status.node.*` and `its.status.worker.>` and
//! matches every result and drop to its frame by `(camera, seq)`. The report gives end-to-end
//! latency percentiles overall, per priority and per camera, throughput, drops by reason,
//! fairness, worker load, unaccounted frames and, in soak mode, memory of the processes.
//!
//! The simulated GPU worker ([`simgpu`]) lives here and only here: a node started by this tool
//! with `--simulated-gpu` serves frames with a sleep instead of a detector, and every report
//! made that way says so on its first line.

pub mod args;
pub mod collector;
pub mod embedded;
pub mod generator;
pub mod ledger;
pub mod mix;
pub mod payload;
pub mod plots;
pub mod procmem;
pub mod report;
pub mod run;
pub mod simgpu;

pub use args::{Args, Mode};
pub use report::Report;
pub use run::run;

/// Errors of a load test.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A resolution or priority mix could not be read.
    #[error("mix: {0}")]
    Mix(String),
    /// The simulated GPU cost model could not be read.
    #[error("cost model: {0}")]
    CostModel(String),
    /// Payloads could not be prepared.
    #[error("payload: {0}")]
    Payload(String),
    /// The settings do not fit together.
    #[error("settings: {0}")]
    Settings(String),
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] its_bus::BusError),
    /// The embedded node failed.
    #[error("embedded node: {0}")]
    Node(String),
    /// Writing the report failed.
    #[error("cannot write {path}: {detail}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
}
