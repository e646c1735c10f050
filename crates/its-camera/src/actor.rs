//! The camera actor: a timer that publishes the next frame of its source.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use its_bus::Bus;
use its_proto::{Encoding, EventKind, EventMsg, FrameMsg, Priority, SCHEMA_VERSION, subjects};
use serde::Serialize;

use crate::SyntheticScene;

/// Life-cycle states of a camera, as published on `its.events.camera.<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// Opening the source.
    Connecting,
    /// Publishing frames.
    Streaming,
    /// Stopped (shutdown, or its frame budget was used up).
    Stopped,
}

impl CameraState {
    fn as_str(self) -> &'static str {
        match self {
            CameraState::Connecting => "connecting",
            CameraState::Streaming => "streaming",
            CameraState::Stopped => "stopped",
        }
    }
}

/// What a camera reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CameraSnapshot {
    /// Camera id.
    pub camera_id: String,
    /// Current state.
    pub state: CameraState,
    /// Frames handed to NATS.
    pub frames_published: u64,
    /// Frames that could not be published.
    pub publish_errors: u64,
    /// The last publish error.
    pub last_error: Option<String>,
}

/// Asks for a [`CameraSnapshot`].
#[derive(Debug, Message)]
#[rtype(result = "CameraSnapshot")]
pub struct GetSnapshot;

/// Stops publishing; answers with the final snapshot. The actor stays to answer snapshots.
#[derive(Debug, Message)]
#[rtype(result = "CameraSnapshot")]
pub struct StopCamera;

/// Answers once the camera has stopped publishing (its frame budget used up, or stopped).
#[derive(Debug, Message)]
#[rtype(result = "CameraSnapshot")]
pub struct WaitStopped;

/// One camera: publishes the frames of its source on `its.frames.<camera_id>`.
pub struct CameraActor {
    id: String,
    node_id: String,
    scene: Arc<SyntheticScene>,
    bus: Bus,
    priority: Priority,
    interval: Duration,
    max_frames: u64,
    seq: u64,
    state: CameraState,
    published: u64,
    publish_errors: u64,
    last_error: Option<String>,
    timer: Option<SpawnHandle>,
    stop_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl CameraActor {
    /// A camera replaying `scene` at `fps`, stopping after `max_frames` frames (0 = never).
    pub fn new(
        id: String,
        node_id: String,
        scene: Arc<SyntheticScene>,
        bus: Bus,
        priority: Priority,
        fps: f64,
        max_frames: u64,
    ) -> Self {
        CameraActor {
            id,
            node_id,
            scene,
            bus,
            priority,
            interval: Duration::from_secs_f64(1.0 / fps),
            max_frames,
            seq: 0,
            state: CameraState::Connecting,
            published: 0,
            publish_errors: 0,
            last_error: None,
            timer: None,
            stop_waiters: Vec::new(),
        }
    }

    fn snapshot(&self) -> CameraSnapshot {
        CameraSnapshot {
            camera_id: self.id.clone(),
            state: self.state,
            frames_published: self.published,
            publish_errors: self.publish_errors,
            last_error: self.last_error.clone(),
        }
    }

    fn set_state(&mut self, state: CameraState) {
        if self.state == state {
            return;
        }
        self.state = state;
        tracing::info!(camera = %self.id, state = state.as_str(), "camera state");
        let msg = EventMsg {
            v: SCHEMA_VERSION,
            kind: EventKind::Camera,
            camera_id: self.id.clone(),
            node_id: self.node_id.clone(),
            at_ns: now_ns(),
            seq: None,
            reason: None,
            message: state.as_str().to_owned(),
        };
        let bus = self.bus.clone();
        let subject = subjects::events(EventKind::Camera, &self.id);
        actix::spawn(async move {
            if let Err(e) = bus.publish_msg(subject, &msg).await {
                tracing::warn!(error = %e, "cannot publish camera event");
            }
        });
    }

    fn stop_publishing(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        self.set_state(CameraState::Stopped);
        for w in self.stop_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.max_frames > 0 && self.seq >= self.max_frames {
            self.stop_publishing(ctx);
            return;
        }
        let jpeg = &self.scene.jpegs[(self.seq % self.scene.jpegs.len() as u64) as usize];
        let frame = FrameMsg {
            v: SCHEMA_VERSION,
            camera_id: self.id.clone(),
            seq: self.seq,
            captured_at_ns: now_ns(),
            priority: self.priority,
            deadline_ns: None,
            width: self.scene.width,
            height: self.scene.height,
            encoding: Encoding::Jpeg,
            data: jpeg.clone(),
        };
        self.seq += 1;
        let bytes = match its_proto::encode(&frame) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                self.publish_errors += 1;
                self.last_error = Some(e.to_string());
                return;
            }
        };
        let bus = self.bus.clone();
        let subject = subjects::frames(&self.id);
        ctx.spawn(
            async move { bus.publish_raw(subject, bytes).await }
                .into_actor(self)
                .map(|res, act, _| match res {
                    Ok(()) => act.published += 1,
                    Err(e) => {
                        act.publish_errors += 1;
                        act.last_error = Some(e.to_string());
                    }
                }),
        );
    }
}

impl Actor for CameraActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.set_state(CameraState::Streaming);
        self.timer = Some(ctx.run_interval(self.interval, |act, ctx| act.tick(ctx)));
    }
}

impl Handler<GetSnapshot> for CameraActor {
    type Result = MessageResult<GetSnapshot>;
    fn handle(&mut self, _: GetSnapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

impl Handler<StopCamera> for CameraActor {
    type Result = MessageResult<StopCamera>;
    fn handle(&mut self, _: StopCamera, ctx: &mut Context<Self>) -> Self::Result {
        self.stop_publishing(ctx);
        MessageResult(self.snapshot())
    }
}

/// Now, unix nanoseconds.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Handler<WaitStopped> for CameraActor {
    type Result = ResponseActFuture<Self, CameraSnapshot>;
    fn handle(&mut self, _: WaitStopped, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.state == CameraState::Stopped {
            let _ = tx.send(());
        } else {
            self.stop_waiters.push(tx);
        }
        Box::pin(
            async move {
                let _ = rx.await;
            }
            .into_actor(self)
            .map(|(), act, _| act.snapshot()),
        )
    }
}
