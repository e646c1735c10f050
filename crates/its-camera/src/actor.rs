//! The camera actor: one per camera. It runs connection attempts of its source (each a task
//! that can fail, stall or panic without harming anything else), restarts them with
//! exponential backoff and jitter, quarantines a camera that keeps failing, publishes state
//! changes and a [`CameraStatus`] about every second.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use its_bus::Bus;
use its_proto::{
    CameraSpec, CameraState, CameraStatus, Encoding, EventKind, EventMsg, FrameMsg, PriorityBoost,
    SCHEMA_VERSION, subjects,
};
use rand::RngExt;
use serde::Serialize;

use crate::backoff::{Backoff, RestartPolicy, Verdict};
use crate::capture::{self, CaptureCtx};
use crate::source::{SourceError, SourceOptions};
use crate::stats::{Counters, DROP_PUBLISH_FAILED, FrameQueue, LiveCounts, PriorityCell};
use crate::synthetic::SceneCache;

/// What every camera of one ingest process shares.
#[derive(Debug, Clone)]
pub struct CameraEnv {
    /// The bus frames, events and status go to.
    pub bus: Bus,
    /// Id of this ingest process (in `CameraStatus` and events).
    pub ingest_id: String,
    /// Source timeouts, limits and tools.
    pub source: SourceOptions,
    /// Restart and quarantine policy.
    pub restart: RestartPolicy,
    /// Frames queued per camera between capture and publication; the oldest is dropped
    /// beyond this.
    pub queue_capacity: usize,
    /// Interval of `CameraStatus` reports.
    pub status_interval: Duration,
    /// Stop each camera after this many frames (0 = never); for tests and demos.
    pub max_frames: u64,
    /// Rendered synthetic scenes, shared between cameras.
    pub scenes: SceneCache,
    /// Live actor and task counts.
    pub live: Arc<LiveCounts>,
}

impl CameraEnv {
    /// Defaults for everything but the bus and the ingest id.
    pub fn new(bus: Bus, ingest_id: impl Into<String>) -> Self {
        CameraEnv {
            bus,
            ingest_id: ingest_id.into(),
            source: SourceOptions::default(),
            restart: RestartPolicy::default(),
            queue_capacity: 4,
            status_interval: Duration::from_secs(1),
            max_frames: 0,
            scenes: SceneCache::default(),
            live: Arc::new(LiveCounts::default()),
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
    /// The last error (URLs redacted).
    pub last_error: Option<String>,
    /// The full status, as published on `its.status.camera.<id>`.
    pub status: CameraStatus,
}

/// Asks for a [`CameraSnapshot`].
#[derive(Debug, Message)]
#[rtype(result = "CameraSnapshot")]
pub struct GetSnapshot;

/// Stops the source and publishes what is queued; answers with the final snapshot. The actor
/// stays to answer snapshots.
#[derive(Debug, Message)]
#[rtype(result = "CameraSnapshot")]
pub struct StopCamera;

/// Like [`StopCamera`], then the actor ends.
#[derive(Debug, Message)]
#[rtype(result = "CameraSnapshot")]
pub struct Shutdown;

/// Answers once the camera is stopped (its frame budget used up, its source ended, or stopped).
#[derive(Debug, Message)]
#[rtype(result = "CameraSnapshot")]
pub struct WaitStopped;

/// Raises the camera's priority for a while.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Boost(pub PriorityBoost);

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct FirstFrame(u64);

/// One camera.
pub struct CameraActor {
    spec: CameraSpec,
    env: Arc<CameraEnv>,
    counters: Arc<Counters>,
    queue: Arc<FrameQueue>,
    priority: Arc<PriorityCell>,
    state: CameraState,
    backoff: Backoff,
    attempt: u64,
    capture: Option<tokio::task::AbortHandle>,
    publisher: Option<tokio::task::JoinHandle<()>>,
    retry: Option<SpawnHandle>,
    streaming_since: Option<Instant>,
    stopping: bool,
    last_report: (Instant, u64),
    stop_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for CameraActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraActor")
            .field("id", &self.spec.id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl CameraActor {
    /// A camera for `spec`; it starts connecting when the actor starts.
    pub fn new(spec: CameraSpec, env: Arc<CameraEnv>) -> Self {
        CameraActor {
            counters: Arc::new(Counters::default()),
            queue: Arc::new(FrameQueue::new(env.queue_capacity)),
            priority: Arc::new(PriorityCell::new(spec.priority)),
            state: CameraState::Connecting,
            backoff: Backoff::new(env.restart.clone()),
            attempt: 0,
            capture: None,
            publisher: None,
            retry: None,
            streaming_since: None,
            stopping: false,
            last_report: (Instant::now(), 0),
            stop_waiters: Vec::new(),
            spec,
            env,
        }
    }

    fn status(&self) -> CameraStatus {
        let c = &self.counters;
        let published = c.published.load(Ordering::Relaxed);
        let (t, p) = self.last_report;
        let secs = t.elapsed().as_secs_f64();
        let (width, height) = c.resolution();
        CameraStatus {
            v: SCHEMA_VERSION,
            camera_id: self.spec.id.clone(),
            ingest_id: self.env.ingest_id.clone(),
            at_ns: now_ns(),
            state: self.state,
            frames_captured: c.captured.load(Ordering::Relaxed),
            frames_published: published,
            drops: c.drops(),
            fps_measured: if secs > 0.0 {
                (published.saturating_sub(p) as f64 / secs) as f32
            } else {
                0.0
            },
            last_error: c.last_error(),
            width,
            height,
            priority: self.priority.current(),
        }
    }

    fn snapshot(&self) -> CameraSnapshot {
        let status = self.status();
        CameraSnapshot {
            camera_id: self.spec.id.clone(),
            state: self.state,
            frames_published: status.frames_published,
            publish_errors: self.counters.dropped(DROP_PUBLISH_FAILED),
            last_error: status.last_error.clone(),
            status,
        }
    }

    fn event(&self, kind: EventKind, message: String) {
        let msg = EventMsg {
            v: SCHEMA_VERSION,
            kind,
            camera_id: self.spec.id.clone(),
            node_id: self.env.ingest_id.clone(),
            at_ns: now_ns(),
            seq: None,
            reason: None,
            message,
        };
        let bus = self.env.bus.clone();
        let subject = subjects::events(kind, &self.spec.id);
        tokio::spawn(async move {
            if let Err(e) = bus.publish_msg(subject, &msg).await {
                tracing::debug!(error = %e, "cannot publish camera event");
            }
        });
    }

    fn set_state(&mut self, state: CameraState) {
        if self.state == state {
            return;
        }
        self.state = state;
        tracing::info!(camera = %self.spec.id, state = state.as_str(), "camera state");
        self.event(EventKind::Camera, state.as_str().to_owned());
        if state == CameraState::Stopped {
            for w in self.stop_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    fn fail(&mut self, error: String) {
        let error = redact_error(&error, &self.spec);
        tracing::warn!(camera = %self.spec.id, %error, "camera source failed");
        self.counters.set_error(error.clone());
        self.event(EventKind::Error, error);
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.retry = None;
        self.attempt += 1;
        let attempt = self.attempt;
        self.streaming_since = None;
        self.set_state(CameraState::Connecting);
        let addr = ctx.address();
        let cctx = CaptureCtx {
            spec: self.spec.clone(),
            opts: self.env.source.clone(),
            scenes: self.env.scenes.clone(),
            queue: self.queue.clone(),
            counters: self.counters.clone(),
            max_frames: self.env.max_frames,
            on_streaming: Box::new(move || addr.do_send(FirstFrame(attempt))),
        };
        let guard = self.env.live.task();
        let handle = tokio::spawn(async move {
            let _guard = guard;
            capture::run(cctx).await
        });
        self.capture = Some(handle.abort_handle());
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(handle)
                .map(move |res, act, ctx| act.capture_ended(attempt, res, ctx)),
        );
    }

    fn capture_ended(
        &mut self,
        attempt: u64,
        res: Result<Result<(), SourceError>, tokio::task::JoinError>,
        ctx: &mut Context<Self>,
    ) {
        if attempt != self.attempt || self.stopping {
            return;
        }
        self.capture = None;
        let err = match res {
            Ok(Ok(())) => {
                tracing::info!(camera = %self.spec.id, "source ended");
                self.finish(ctx);
                return;
            }
            Ok(Err(SourceError::Config(m))) => {
                self.fail(SourceError::Config(m).to_string());
                self.finish(ctx);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) if e.is_panic() => format!("source task panicked: {e}"),
            Err(e) => format!("source task ended: {e}"),
        };
        self.fail(err);
        let streamed = self
            .streaming_since
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let unit: f64 = rand::rng().random();
        let (state, wait) = match self.backoff.on_failure(Instant::now(), streamed, unit) {
            Verdict::Backoff(d) => (CameraState::Backoff, d),
            Verdict::Quarantine(d) => (CameraState::Quarantined, d),
        };
        self.set_state(state);
        self.retry = Some(ctx.run_later(wait, |act, ctx| act.connect(ctx)));
    }

    /// The source ended for good: publish what is queued, then stop.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        self.stopping = true;
        let fut = self.stop_sources(ctx);
        ctx.spawn(fut.map(|(), act, _| act.set_state(CameraState::Stopped)));
    }

    /// Stops the capture and lets the publisher drain the queue (2 s at most).
    fn stop_sources(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> impl ActorFuture<Self, Output = ()> + use<> {
        self.stopping = true;
        if let Some(r) = self.retry.take() {
            ctx.cancel_future(r);
        }
        if let Some(c) = self.capture.take() {
            c.abort();
        }
        self.queue.close();
        let publisher = self.publisher.take();
        actix::fut::wrap_future(async move {
            if let Some(mut p) = publisher
                && tokio::time::timeout(Duration::from_secs(2), &mut p)
                    .await
                    .is_err()
            {
                p.abort();
            }
        })
    }

    fn report(&mut self) {
        let status = self.status();
        self.last_report = (Instant::now(), status.frames_published);
        let bus = self.env.bus.clone();
        let subject = subjects::camera_status(&self.spec.id);
        tokio::spawn(async move {
            if let Err(e) = bus.publish_msg(subject, &status).await {
                tracing::debug!(error = %e, "cannot publish camera status");
            }
        });
    }
}

/// The `tracing` target of the frame-path spans, exported as traces (its-node's telemetry).
const FRAME_SPAN_TARGET: &str = "its::frame";

/// The W3C trace context (`traceparent`, `tracestate`) of `span` as message headers, through
/// the process's text map propagator; empty when the span is disabled or traces are off.
fn trace_headers(span: &tracing::Span) -> Vec<(String, String)> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    struct Headers(Vec<(String, String)>);
    impl opentelemetry::propagation::Injector for Headers {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_owned(), value));
        }
    }
    if span.is_disabled() {
        return Vec::new();
    }
    let cx = span.context();
    let mut headers = Headers(Vec::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut headers));
    headers.0
}

async fn publish_loop(
    id: String,
    bus: Bus,
    queue: Arc<FrameQueue>,
    counters: Arc<Counters>,
    priority: Arc<PriorityCell>,
) {
    let subject = subjects::frames(&id);
    let mut seq = 0u64;
    while let Some(f) = queue.pop().await {
        let msg = FrameMsg {
            v: SCHEMA_VERSION,
            camera_id: id.clone(),
            seq,
            captured_at_ns: f.captured_at_ns,
            priority: priority.current(),
            deadline_ns: None,
            width: f.width,
            height: f.height,
            encoding: Encoding::Jpeg,
            data: f.jpeg,
        };
        // One frame is one trace: this span is its root, and its W3C context rides in the
        // message headers to the scheduler (no headers when traces are off).
        let span = tracing::info_span!(
            target: FRAME_SPAN_TARGET,
            parent: None,
            "camera.publish",
            otel.kind = "producer",
            camera_id = %id,
            // Integers as i64: the OpenTelemetry layer exports u64 fields as strings.
            seq = seq as i64,
        );
        let headers = trace_headers(&span);
        let res = match its_proto::encode(&msg) {
            Ok(b) => {
                bus.publish_raw_with_headers(subject.clone(), &headers, Bytes::from(b))
                    .await
            }
            Err(e) => Err(e.into()),
        };
        drop(span);
        match res {
            Ok(()) => {
                seq += 1;
                counters.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counters.drop_frame(DROP_PUBLISH_FAILED);
                counters.set_error(e.to_string());
            }
        }
    }
}

impl Actor for CameraActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.env.live.actor_started();
        let guard = self.env.live.task();
        let fut = publish_loop(
            self.spec.id.clone(),
            self.env.bus.clone(),
            self.queue.clone(),
            self.counters.clone(),
            self.priority.clone(),
        );
        self.publisher = Some(tokio::spawn(async move {
            let _guard = guard;
            fut.await
        }));
        ctx.run_interval(self.env.status_interval, |act, _| act.report());
        // The first Connecting is the initial state, so announce it here.
        self.event(
            EventKind::Camera,
            CameraState::Connecting.as_str().to_owned(),
        );
        self.connect(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(c) = self.capture.take() {
            c.abort();
        }
        if let Some(p) = self.publisher.take() {
            p.abort();
        }
        self.env.live.actor_stopped();
    }
}

impl Handler<FirstFrame> for CameraActor {
    type Result = ();
    fn handle(&mut self, FirstFrame(attempt): FirstFrame, _: &mut Context<Self>) {
        if attempt == self.attempt && !self.stopping && self.state == CameraState::Connecting {
            self.streaming_since = Some(Instant::now());
            self.set_state(CameraState::Streaming);
        }
    }
}

impl Handler<GetSnapshot> for CameraActor {
    type Result = MessageResult<GetSnapshot>;
    fn handle(&mut self, _: GetSnapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

impl Handler<Boost> for CameraActor {
    type Result = ();
    fn handle(&mut self, Boost(b): Boost, _: &mut Context<Self>) {
        let until = Instant::now() + Duration::from_millis(b.duration_ms);
        self.priority.boost(b.priority, until);
        tracing::info!(camera = %self.spec.id, priority = b.priority.as_str(), ms = b.duration_ms, "priority boost");
    }
}

impl Handler<StopCamera> for CameraActor {
    type Result = ResponseActFuture<Self, CameraSnapshot>;
    fn handle(&mut self, _: StopCamera, ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.stop_sources(ctx).map(|(), act, _| {
            act.set_state(CameraState::Stopped);
            act.snapshot()
        }))
    }
}

impl Handler<Shutdown> for CameraActor {
    type Result = ResponseActFuture<Self, CameraSnapshot>;
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.stop_sources(ctx).map(|(), act, ctx| {
            act.set_state(CameraState::Stopped);
            ctx.stop();
            act.snapshot()
        }))
    }
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

/// Now, unix nanoseconds.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// An error text fit to show: the camera's URL in it redacted, and its credentials removed
/// wherever else they appear (a tool may print the URL decoded, or only part of it).
fn redact_error(error: &str, spec: &CameraSpec) -> String {
    let mut text = error.replace(&spec.url, &spec.redacted_url());
    if let Some((_, rest)) = spec.url.split_once("://") {
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            let password = userinfo.split_once(':').map(|(_, p)| p).unwrap_or("");
            // A password this short would mangle the message; the full URL is redacted anyway.
            for secret in [userinfo, password] {
                if secret.len() >= 3 {
                    text = text.replace(secret, "***");
                }
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_lose_the_url_credentials_in_any_form() {
        let spec = CameraSpec::new("c", "rtsp://admin:hunter22@10.0.0.5:554/s", 5.0);
        let e = redact_error(
            "rtsp://admin:hunter22@10.0.0.5:554/s: Connection refused; auth admin:hunter22 \
             failed; password hunter22",
            &spec,
        );
        assert!(!e.contains("hunter22"), "{e}");
        assert!(
            e.starts_with("rtsp://***@10.0.0.5:554/s: Connection refused"),
            "{e}"
        );
        // Without credentials nothing changes.
        let plain = CameraSpec::new("c", "http://cam/x", 5.0);
        assert_eq!(
            redact_error("http://cam/x: 404", &plain),
            "http://cam/x: 404"
        );
    }
}
