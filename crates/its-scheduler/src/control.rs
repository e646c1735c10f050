//! Run-time control of the scheduler: tuning validation, the control-subject server, and the
//! periodic worker status.

use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Recipient};
use futures::StreamExt;
use its_bus::Bus;
use its_proto::{
    ControlReply, ModelSwapReply, SchedulerControl, SchedulerTuning, SwapFailure, WorkerModel,
    subjects,
};
use its_worker::{SwapError, SwapModel};

use crate::actor::{Control, GetSchedulerSnapshot, SchedulerActor};

/// What happens to a frame whose deadline passed before its result was ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatePolicy {
    /// Dropped (`deadline_missed`): before inference when it expires in the queue, after
    /// inference when the result is ready too late. No result is ever published late.
    Drop,
    /// Run and published anyway, with `DetectionMsg.late = true`.
    Deliver,
}

impl LatePolicy {
    /// Parses `drop` or `deliver`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "drop" => Ok(LatePolicy::Drop),
            "deliver" => Ok(LatePolicy::Deliver),
            other => Err(format!(
                "late_policy {other:?} is not one of \"drop\", \"deliver\""
            )),
        }
    }
}

/// A tuning request that passed validation, in scheduler units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValidTuning {
    /// Preferred batch sizes, ascending.
    pub batch_sizes: Option<Vec<usize>>,
    /// Deadlines per class, Emergency first.
    pub deadlines: Option<[Duration; 4]>,
    /// Shortest batch wait.
    pub min_batch_timeout: Option<Duration>,
    /// Longest batch wait.
    pub max_batch_timeout: Option<Duration>,
    /// Miss ratio that opens the breaker.
    pub shed_miss_ratio: Option<f32>,
    /// Late policy.
    pub late_policy: Option<LatePolicy>,
}

/// Checks a tuning request against the same bounds as the configuration, given the current
/// batch timeouts (a new minimum must not exceed the maximum that will be in force).
pub fn validate_tuning(
    t: &SchedulerTuning,
    cur_min: Duration,
    cur_max: Duration,
) -> Result<ValidTuning, String> {
    let mut v = ValidTuning::default();
    if let Some(sizes) = &t.batch_sizes {
        if sizes.is_empty()
            || !sizes.windows(2).all(|w| w[0] < w[1])
            || !sizes.iter().all(|b| (1..=256).contains(b))
        {
            return Err(format!(
                "batch_sizes {sizes:?}: need a non-empty strictly ascending list of sizes 1 to 256"
            ));
        }
        v.batch_sizes = Some(sizes.iter().map(|b| *b as usize).collect());
    }
    if let Some(d) = t.deadlines_ms {
        if let Some(bad) = d.iter().find(|ms| !(1..=600_000).contains(*ms)) {
            return Err(format!(
                "deadlines_ms {d:?}: {bad} is outside 1 to 600000 ms"
            ));
        }
        v.deadlines = Some(d.map(Duration::from_millis));
    }
    let min = t.min_batch_timeout_ms.map(Duration::from_millis);
    let max = t.max_batch_timeout_ms.map(Duration::from_millis);
    if let Some(ms) = t.min_batch_timeout_ms
        && !(1..=1000).contains(&ms)
    {
        return Err(format!("min_batch_timeout_ms {ms}: need 1 to 1000"));
    }
    if let Some(ms) = t.max_batch_timeout_ms
        && ms > 1000
    {
        return Err(format!(
            "max_batch_timeout_ms {ms}: need min_batch_timeout_ms to 1000"
        ));
    }
    let (new_min, new_max) = (min.unwrap_or(cur_min), max.unwrap_or(cur_max));
    if new_min > new_max {
        return Err(format!(
            "min_batch_timeout_ms {} exceeds max_batch_timeout_ms {}",
            new_min.as_millis(),
            new_max.as_millis()
        ));
    }
    v.min_batch_timeout = min;
    v.max_batch_timeout = max;
    if let Some(r) = t.shed_miss_ratio {
        if !(r.is_finite() && r > 0.0 && r <= 1.0) {
            return Err(format!("shed_miss_ratio {r}: need more than 0, at most 1"));
        }
        v.shed_miss_ratio = Some(r);
    }
    if let Some(p) = &t.late_policy {
        v.late_policy = Some(LatePolicy::parse(p)?);
    }
    Ok(v)
}

/// Serves [`SchedulerControl`] requests on `its.control.scheduler.<node_id>` until the
/// subscription ends; each request with a reply subject gets a [`ControlReply`]. A request that
/// does not decode gets `ok: false` with the decoding error. This node's workers cannot swap
/// models: `swap_model` is refused (see [`run_control_with_models`]).
pub async fn run_control(bus: Bus, node_id: String, scheduler: Addr<SchedulerActor>) {
    run_control_with_models(bus, node_id, scheduler, Vec::new()).await
}

/// A worker that can switch models at run time: its id and where [`SwapModel`] goes.
pub type ModelSwitches = Vec<(String, Recipient<SwapModel>)>;

/// As [`run_control`], and serves `swap_model` with the workers' model switches: the named
/// worker, or every one in turn, loads the new model beside the old one and switches between
/// batches; the answer is a [`ModelSwapReply`]. Swaps run one at a time, beside the other
/// requests (a load does not hold up a drain or a tuning).
pub async fn run_control_with_models(
    bus: Bus,
    node_id: String,
    scheduler: Addr<SchedulerActor>,
    models: ModelSwitches,
) {
    let subject = subjects::control_scheduler(&node_id);
    let mut sub = match bus.subscribe(&subject).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve scheduler control");
            return;
        }
    };
    let models = Arc::new(models);
    let one_swap = Arc::new(tokio::sync::Mutex::new(()));
    while let Some(msg) = sub.next().await {
        let reply = match its_proto::decode::<SchedulerControl>(&msg.payload) {
            Err(e) => ControlReply {
                ok: false,
                message: format!("not a SchedulerControl request: {e}"),
            },
            Ok(SchedulerControl::SwapModel {
                model_dir,
                worker_id,
            }) => {
                let (bus, models, one_swap) = (bus.clone(), models.clone(), one_swap.clone());
                actix::spawn(async move {
                    let reply = {
                        let _one = one_swap.lock().await;
                        swap_models(&models, &model_dir, worker_id.as_deref()).await
                    };
                    if !reply.ok {
                        tracing::warn!(message = %reply.message, "model swap refused");
                    }
                    if let Some(to) = msg.reply
                        && let Err(e) = bus.publish_msg(to.to_string(), &reply).await
                    {
                        tracing::warn!(error = %e, "cannot answer a model swap request");
                    }
                });
                continue;
            }
            Ok(cmd) => match scheduler.send(Control(cmd)).await {
                Ok(r) => r,
                Err(e) => ControlReply {
                    ok: false,
                    message: format!("the scheduler has stopped: {e}"),
                },
            },
        };
        if !reply.ok {
            tracing::warn!(message = %reply.message, "scheduler control refused");
        }
        if let Some(to) = msg.reply
            && let Err(e) = bus.publish_msg(to.to_string(), &reply).await
        {
            tracing::warn!(error = %e, "cannot answer a scheduler control request");
        }
    }
}

/// Swaps the model of `worker_id`, or of every worker in order (stopping at the first that
/// fails: the workers before it keep the new model, the reply lists them).
async fn swap_models(
    models: &ModelSwitches,
    model_dir: &str,
    worker_id: Option<&str>,
) -> ModelSwapReply {
    let refuse = |failure, message: String, workers| ModelSwapReply {
        ok: false,
        message,
        workers,
        failure: Some(failure),
    };
    if models.is_empty() {
        return refuse(
            SwapFailure::Unsupported,
            "the workers of this node cannot swap models".into(),
            Vec::new(),
        );
    }
    let targets: Vec<&(String, Recipient<SwapModel>)> = match worker_id {
        None => models.iter().collect(),
        Some(id) => match models.iter().find(|(w, _)| w == id) {
            Some(t) => vec![t],
            None => {
                let known: Vec<&str> = models.iter().map(|(w, _)| w.as_str()).collect();
                return refuse(
                    SwapFailure::UnknownWorker,
                    format!(
                        "no worker {id:?} on this node (workers: {})",
                        known.join(", ")
                    ),
                    Vec::new(),
                );
            }
        },
    };
    let mut done = Vec::new();
    let mut said = Vec::new();
    for (id, switch) in targets {
        let r = switch
            .send(SwapModel {
                model_dir: model_dir.into(),
            })
            .await
            .unwrap_or_else(|e| Err(SwapError::Stopped(e.to_string())));
        match r {
            Ok(s) => {
                said.push(format!(
                    "{id}: {} {} (was {} {})",
                    s.model.name, s.model.version, s.previous.name, s.previous.version
                ));
                done.push(WorkerModel {
                    worker_id: id.clone(),
                    model: s.model,
                });
            }
            Err(e) => {
                let failure = match e {
                    SwapError::Load { .. } => SwapFailure::BadModel,
                    SwapError::Stopped(_) => SwapFailure::WorkerStopped,
                };
                let mut message = format!("worker {id}: {e}");
                if !done.is_empty() {
                    message.push_str(&format!("; already switched: {}", said.join(", ")));
                }
                return refuse(failure, message, done);
            }
        }
    }
    ModelSwapReply {
        ok: true,
        message: format!("switched {}", said.join(", ")),
        workers: done,
        failure: None,
    }
}

/// Publishes every worker's [`its_proto::WorkerStatus`] on
/// `its.status.worker.<node_id>.<worker_id>` every `interval` (the latency and utilisation
/// windows restart at each report), until the scheduler stops.
pub async fn run_worker_status(bus: Bus, scheduler: Addr<SchedulerActor>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Ok(snap) = scheduler
            .send(GetSchedulerSnapshot {
                reset_windows: true,
            })
            .await
        else {
            return;
        };
        for w in snap.workers {
            if let Err(e) = bus
                .publish_msg(subjects::worker_status(&w.node_id, &w.worker_id), &w)
                .await
            {
                tracing::warn!(error = %e, "cannot publish worker status");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn tuning_is_checked_with_clear_errors() {
        let ok = SchedulerTuning {
            batch_sizes: Some(vec![1, 2, 4]),
            deadlines_ms: Some([10, 20, 30, 40]),
            max_batch_timeout_ms: Some(5),
            late_policy: Some("deliver".into()),
            ..Default::default()
        };
        let v = validate_tuning(&ok, 2 * MS, 50 * MS).unwrap();
        assert_eq!(v.batch_sizes, Some(vec![1, 2, 4]));
        assert_eq!(v.late_policy, Some(LatePolicy::Deliver));
        for (bad, says) in [
            (
                SchedulerTuning {
                    batch_sizes: Some(vec![4, 2]),
                    ..Default::default()
                },
                "strictly ascending",
            ),
            (
                SchedulerTuning {
                    max_batch_timeout_ms: Some(1),
                    ..Default::default()
                },
                "exceeds max_batch_timeout_ms 1",
            ),
            (
                SchedulerTuning {
                    shed_miss_ratio: Some(0.0),
                    ..Default::default()
                },
                "shed_miss_ratio",
            ),
            (
                SchedulerTuning {
                    late_policy: Some("later".into()),
                    ..Default::default()
                },
                "\"drop\", \"deliver\"",
            ),
            (
                SchedulerTuning {
                    deadlines_ms: Some([0, 1, 2, 3]),
                    ..Default::default()
                },
                "0 is outside",
            ),
        ] {
            let e = validate_tuning(&bad, 2 * MS, 50 * MS).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
