//! The scheduler of a GPU node.
//!
//! Frames arrive on `its.frames.*` ([`intake`]), are checked, held to a per-camera [`rate`]
//! limit, admitted by the overload [`breaker`], queued by priority with a deadline
//! ([`queues`]), grouped into batches whose size and wait adapt to the arrival rate and the
//! measured cost of each batch size ([`batcher`]), and sent to the worker that will finish
//! them first ([`SchedulerActor`]). A batch that fails on its device is retried once on another
//! worker. Results pass a per-camera [`reorder`] buffer and go out on `its.results.<camera>`.
//! [`run_control`] serves run-time tuning and worker drain/resume.
//!
//! Architecture invariant: every frame read from NATS is counted once in [`Accounting`] and
//! settled once, as a published result, as a drop with a reason, or (cluster mode) as a result
//! not published because another node publishes that frame; `in_flight` is the
//! difference and is zero when the node is idle.

mod actor;
pub mod batcher;
pub mod breaker;
mod control;
mod intake;
pub mod queues;
pub mod rate;
pub mod reorder;
mod stats;
pub mod trace;

pub use actor::{
    AbandonQueued, Control, Drain, Enqueue, GetSchedulerSnapshot, ResultFilter, SchedulerActor,
    SchedulerOptions, SchedulerSnapshot, WorkerHandle,
};
pub use control::{
    LatePolicy, ModelSwitches, ValidTuning, run_control, run_control_with_models,
    run_worker_status, validate_tuning,
};
pub use intake::{IntakeOptions, run_intake, run_intake_assigned};
pub use rate::{CameraRate, CameraRateLimiter};
pub use stats::{Accounting, now_ns};
