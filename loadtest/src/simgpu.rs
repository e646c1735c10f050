//! The simulated GPU worker: a worker whose batch cost is a sleep from a cost model.
//!
//! It exists only inside the load generator, to exercise the distributed plumbing (NATS,
//! intake, scheduler, result publication) at full camera counts on machines without a GPU.
//! It implements the same `RunBatch` interface as the real workers, runs each batch on its own
//! thread (one per slot, like CUDA streams), decodes nothing and returns no detections. Every
//! report made with it says so on its first line.

use std::time::{Duration, Instant};

use actix::prelude::*;
use its_proto::ModelRef;
use its_scheduler::WorkerHandle;
use its_worker::{BatchOutcome, JobResult, RunBatch, WorkerInfo};

use crate::LoadError;

/// Cost of one batch: `base + per_frame * frames`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// Fixed cost of a batch.
    pub base: Duration,
    /// Added cost per frame of the batch.
    pub per_frame: Duration,
}

impl CostModel {
    /// Parses `fixed:2ms` or `linear:1ms+0.3ms/frame` (units `us`, `ms`, `s`).
    pub fn parse(spec: &str) -> Result<Self, LoadError> {
        let bad = || {
            LoadError::CostModel(format!(
                "{spec:?}: expected fixed:<time> or linear:<time>+<time>/frame, e.g. fixed:2ms, linear:1ms+0.3ms/frame"
            ))
        };
        let (kind, rest) = spec.split_once(':').ok_or_else(bad)?;
        match kind.trim() {
            "fixed" => Ok(CostModel {
                base: parse_duration(rest).ok_or_else(bad)?,
                per_frame: Duration::ZERO,
            }),
            "linear" => {
                let (base, per) = rest.split_once('+').ok_or_else(bad)?;
                let per = per.trim().strip_suffix("/frame").ok_or_else(bad)?;
                Ok(CostModel {
                    base: parse_duration(base).ok_or_else(bad)?,
                    per_frame: parse_duration(per).ok_or_else(bad)?,
                })
            }
            _ => Err(bad()),
        }
    }

    /// The cost of a batch of `frames`.
    pub fn cost(&self, frames: usize) -> Duration {
        self.base + self.per_frame * frames as u32
    }

    /// The model as text, in the syntax [`parse`](Self::parse) reads.
    pub fn describe(&self) -> String {
        let ms = |d: Duration| format!("{}ms", d.as_secs_f64() * 1e3);
        if self.per_frame.is_zero() {
            format!("fixed:{}", ms(self.base))
        } else {
            format!("linear:{}+{}/frame", ms(self.base), ms(self.per_frame))
        }
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-6)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else {
        return None;
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && (0.0..=60.0).contains(&(v * scale)))
        .then(|| Duration::from_secs_f64(v * scale))
}

/// One slot (thread) of a simulated GPU.
struct SimGpu {
    cost: CostModel,
}

impl Actor for SimGpu {
    type Context = SyncContext<Self>;
}

impl Handler<RunBatch> for SimGpu {
    type Result = MessageResult<RunBatch>;

    fn handle(&mut self, msg: RunBatch, _: &mut SyncContext<Self>) -> Self::Result {
        let t0 = Instant::now();
        let cost = self.cost.cost(msg.jobs.len());
        std::thread::sleep(cost);
        let infer_ns = t0.elapsed().as_nanos() as u64;
        let results = msg
            .jobs
            .into_iter()
            .map(|job| {
                let (frame_width, frame_height) = (job.frame.width, job.frame.height);
                (
                    job,
                    JobResult::Done {
                        detections: Vec::new(),
                        frame_width,
                        frame_height,
                        preprocess_ns: 0,
                        infer_ns,
                        postprocess_ns: 0,
                    },
                )
            })
            .collect();
        MessageResult(BatchOutcome {
            results,
            service_ns: t0.elapsed().as_nanos() as u64,
            model: None,
        })
    }
}

/// Starts `gpus` simulated GPU workers of `slots` slots each; must run inside an actix system.
pub fn start_workers(cost: CostModel, gpus: u32, slots: u32) -> Vec<WorkerHandle> {
    (0..gpus.max(1))
        .map(|g| {
            let slots = slots.max(1);
            let addr = SyncArbiter::start(slots as usize, move || SimGpu { cost });
            WorkerHandle {
                info: WorkerInfo {
                    id: format!("simgpu-{g}"),
                    device: format!("simulated-gpu {}", cost.describe()),
                    engine: "simulated".into(),
                    slots,
                    model: ModelRef {
                        name: "simulated".into(),
                        version: cost.describe(),
                    },
                    gpu: None,
                    pools: None,
                },
                addr: addr.recipient(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_models_parse_and_price_batches() {
        let f = CostModel::parse("fixed:2ms").unwrap();
        assert_eq!(f.cost(1), Duration::from_millis(2));
        assert_eq!(f.cost(32), Duration::from_millis(2));
        let l = CostModel::parse("linear:1ms+0.3ms/frame").unwrap();
        assert_eq!(l.cost(10), Duration::from_micros(4000));
        assert_eq!(CostModel::parse(&l.describe()).unwrap(), l);
        assert_eq!(
            CostModel::parse("linear:500us+0s/frame").unwrap().cost(3),
            Duration::from_micros(500)
        );
        for bad in [
            "",
            "fixed",
            "fixed:2",
            "linear:1ms",
            "linear:1ms+2ms",
            "gpu:1ms",
            "fixed:-1ms",
        ] {
            assert!(CostModel::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
