//! Frame intake: reads `its.frames.*` ([`run_intake`]) or exactly the frame subjects of the
//! cameras assigned to this node ([`run_intake_assigned`], cluster mode), checks each envelope,
//! holds each camera to its rate limit ([`crate::rate`]), and hands good frames to the
//! scheduler. Every message read is counted.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use actix::Addr;
use futures::StreamExt;
use its_bus::{Bus, Message, Subscriber};
use its_proto::{DropReason, decode_frame, subjects};
use tokio::sync::{mpsc, oneshot, watch};

use crate::rate::{CameraRate, CameraRateLimiter};
use crate::{Accounting, Enqueue, SchedulerActor};

/// What the intake checks before a frame reaches the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeOptions {
    /// Largest FrameMsg accepted, bytes (`scheduler.max_frame_bytes`).
    pub max_frame_bytes: usize,
    /// Per-camera rate limit (`scheduler.max_camera_fps`, `scheduler.camera_burst_frames`);
    /// `None`: none.
    pub camera_rate: Option<CameraRate>,
}

impl IntakeOptions {
    /// Frames up to `max_frame_bytes`, no rate limit.
    pub fn new(max_frame_bytes: usize) -> Self {
        IntakeOptions {
            max_frame_bytes,
            camera_rate: None,
        }
    }

    /// These options with `rate` applied to each camera (`None`: no limit).
    pub fn with_camera_rate(self, rate: Option<CameraRate>) -> Self {
        IntakeOptions {
            camera_rate: rate,
            ..self
        }
    }
}

/// The intake's checks and the state they keep: one per intake task.
struct Checks {
    max_frame_bytes: usize,
    limiter: Option<CameraRateLimiter>,
}

impl Checks {
    fn new(opts: IntakeOptions) -> Self {
        Checks {
            max_frame_bytes: opts.max_frame_bytes,
            limiter: opts.camera_rate.map(CameraRateLimiter::new),
        }
    }
}

/// Runs until `stop` fires (then drains the subscription: every message already in its buffer
/// is still read and counted) or the subscription ends.
///
/// What is in the buffer when `stop` fires is what the caller made sure of: a
/// [`Bus::round_trip`] on each publishing connection (the server has routed their frames to
/// this subscription), then one on the subscription's own connection (they are in the buffer),
/// before `stop`. `Subscriber::drain` alone does not wait for frames on their way: async-nats
/// 0.51 forgets the subscription one poll after the UNSUB was written, not when the server
/// answered it, and silently discards what arrives for it after that.
pub async fn run_intake(
    mut sub: Subscriber,
    scheduler: Addr<SchedulerActor>,
    acct: Accounting,
    opts: IntakeOptions,
    stop: oneshot::Receiver<()>,
) {
    let mut checks = Checks::new(opts);
    let mut stop = Some(stop);
    loop {
        let msg = match stop.as_mut() {
            Some(s) => tokio::select! {
                m = sub.next() => m,
                _ = s => {
                    stop = None;
                    if let Err(e) = sub.drain().await {
                        tracing::warn!(error = %e, "cannot drain the frame subscription");
                        break;
                    }
                    continue;
                }
            },
            None => sub.next().await,
        };
        let Some(msg) = msg else { break };
        handle(msg, &scheduler, &acct, &mut checks).await;
    }
    tracing::info!("frame intake stopped");
}

/// Counts one frame message, checks it and hands it to the scheduler.
async fn handle(
    msg: Message,
    scheduler: &Addr<SchedulerActor>,
    acct: &Accounting,
    checks: &mut Checks,
) {
    acct.received();
    let received_at = Instant::now();
    match decode_frame(&msg.payload, msg.subject.as_str(), checks.max_frame_bytes) {
        Err(e) => acct.dropped(
            subjects::last_token(msg.subject.as_str()),
            None,
            e.drop_reason(),
            e.to_string(),
        ),
        Ok(frame) => {
            if let Some(limiter) = checks.limiter.as_mut()
                && !limiter.admit(&frame.camera_id, received_at)
            {
                let rate = limiter.rate();
                acct.dropped(
                    &frame.camera_id,
                    Some(frame.seq),
                    DropReason::RateLimited,
                    format!(
                        "camera over the node's rate limit of {} fps with a burst of {} frames \
                         (scheduler.max_camera_fps, scheduler.camera_burst_frames)",
                        rate.fps, rate.burst
                    ),
                );
                return;
            }
            let (camera, seq) = (frame.camera_id.clone(), frame.seq);
            let span = crate::trace::frame_span(&frame, || its_bus::message_headers(&msg));
            if scheduler
                .send(Enqueue {
                    frame,
                    received_at,
                    span,
                })
                .await
                .is_err()
            {
                acct.dropped(
                    &camera,
                    Some(seq),
                    DropReason::Shutdown,
                    "scheduler has stopped".into(),
                );
            }
        }
    }
}

/// Cluster mode: subscribes to exactly `its.frames.<camera>` for each camera in `cameras` and
/// unsubscribes when a camera leaves the set. A new camera is subscribed (the server answered a
/// [`Bus::round_trip`] after the SUB) before the set change is considered handled, so a
/// make-before-break handover never leaves a camera unread. Runs until `stop` fires (then every
/// frame already in a subscription's buffer is still counted and queued, as with
/// [`run_intake`]) or the camera set's sender is dropped.
pub async fn run_intake_assigned(
    bus: Bus,
    mut cameras: watch::Receiver<BTreeSet<String>>,
    scheduler: Addr<SchedulerActor>,
    acct: Accounting,
    opts: IntakeOptions,
    mut stop: oneshot::Receiver<()>,
) {
    let mut checks = Checks::new(opts);
    let (tx, mut rx) = mpsc::channel::<Message>(256);
    // Tells the per-camera readers to unsubscribe and hand over what their buffers hold.
    let (finish_tx, finish) = watch::channel(false);
    let mut subs: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let initial = cameras.borrow_and_update().clone();
    follow(&bus, &initial, &mut subs, &tx, &finish).await;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            changed = cameras.changed() => {
                if changed.is_err() {
                    break;
                }
                let set = cameras.borrow_and_update().clone();
                follow(&bus, &set, &mut subs, &tx, &finish).await;
            }
            Some(msg) = rx.recv() => handle(msg, &scheduler, &acct, &mut checks).await,
        }
    }
    // Each reader forwards the rest of its buffer, then ends and drops its sender: `rx` ends
    // once all of them have.
    let _ = finish_tx.send(true);
    drop(tx);
    while let Some(msg) = rx.recv().await {
        handle(msg, &scheduler, &acct, &mut checks).await;
    }
    tracing::info!("frame intake stopped");
}

/// Brings the per-camera subscriptions in line with `set`.
async fn follow(
    bus: &Bus,
    set: &BTreeSet<String>,
    subs: &mut HashMap<String, tokio::task::JoinHandle<()>>,
    tx: &mpsc::Sender<Message>,
    finish: &watch::Receiver<bool>,
) {
    subs.retain(|camera, task| {
        let keep = set.contains(camera) && !task.is_finished();
        if !keep {
            task.abort();
        }
        keep
    });
    for camera in set {
        if subs.contains_key(camera) {
            continue;
        }
        let mut sub = match bus.subscribe(&subjects::frames(camera)).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(%camera, error = %e, "cannot subscribe to the camera's frames");
                continue;
            }
        };
        let tx = tx.clone();
        let mut finish = finish.clone();
        let task = tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = sub.next() => m,
                    _ = finish.wait_for(|f| *f) => break,
                };
                let Some(msg) = msg else { return };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            // Unsubscribing closes the buffer; what it holds is still read.
            if let Err(e) = sub.unsubscribe().await {
                tracing::warn!(error = %e, "cannot unsubscribe from a camera's frames");
            }
            while let Some(msg) = sub.next().await {
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        });
        subs.insert(camera.clone(), task);
    }
    if let Err(e) = bus.round_trip().await {
        tracing::warn!(
            error = %e,
            "the server did not confirm the frame subscriptions; frames published right now \
             may not be delivered"
        );
    }
}
