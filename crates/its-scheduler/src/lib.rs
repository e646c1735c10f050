//! The scheduler of a GPU node.
//!
//! Frames arrive on `its.frames.*` ([`intake`]), are checked, queued by priority with a
//! deadline ([`queues`]), grouped into batches whose size and wait adapt to the arrival rate and
//! the measured cost of each batch size ([`batcher`]), and sent to the worker that will finish
//! them first ([`SchedulerActor`]). Results go out on `its.results.<camera>`.
//!
//! Architecture invariant: every frame read from NATS is counted once in [`Accounting`] and
//! settled once, as a published result or as a drop with a reason; `in_flight` is the
//! difference and is zero when the node is idle.

mod actor;
pub mod batcher;
mod intake;
pub mod queues;
mod stats;

pub use actor::{
    Drain, Enqueue, GetSchedulerSnapshot, SchedulerActor, SchedulerOptions, SchedulerSnapshot,
    WorkerHandle,
};
pub use intake::run_intake;
pub use stats::{Accounting, now_ns};
