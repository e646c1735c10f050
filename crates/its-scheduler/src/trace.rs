//! The frame's trace through the scheduler: the W3C trace context read from a frame's NATS
//! headers and written into its result's, and the spans of the frame path.
//!
//! Span tree of one frame (the camera's `camera.publish` is its remote parent):
//! `scheduler.frame` (intake until the frame settles) with the children `scheduler.queue`
//! (queued until dispatched), `worker.batch` (the worker's service of the batch, recorded here
//! around the worker: opened when the batch is sent to it, closed when its outcome settles;
//! workers emit no spans themselves) and `result.publish` (the DetectionMsg publish, whose
//! context goes out in the result's headers). The spans have the target
//! [`FRAME_SPAN_TARGET`]; with no subscriber interested in it (traces off) they are disabled
//! and cost a check each.

use its_proto::FrameMsg;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `tracing` target of the frame-path spans (its-camera and its-node spell it the same).
pub const FRAME_SPAN_TARGET: &str = "its::frame";

/// An integer field value as the exporter keeps it: the OpenTelemetry layer exports `u64`
/// fields as strings and `i64` as integers.
pub fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

struct HeadersOut(Vec<(String, String)>);

impl Injector for HeadersOut {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

struct HeadersIn<'a>(&'a [(String, String)]);

impl Extractor for HeadersIn<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The trace context of `span` as message headers (`traceparent`, `tracestate`), through the
/// process's text map propagator; empty when the span is disabled or traces are off.
pub fn context_headers(span: &Span) -> Vec<(String, String)> {
    if span.is_disabled() {
        return Vec::new();
    }
    let cx = span.context();
    let mut out = HeadersOut(Vec::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut out));
    out.0
}

/// The `scheduler.frame` span of a frame that passed intake, a child of the trace context in
/// its message headers when they carry one (else the root of a trace of its own). `headers`
/// is called only when the span is enabled.
pub fn frame_span(frame: &FrameMsg, headers: impl FnOnce() -> Vec<(String, String)>) -> Span {
    let span = tracing::info_span!(
        target: FRAME_SPAN_TARGET,
        parent: None,
        "scheduler.frame",
        otel.kind = "consumer",
        camera_id = %frame.camera_id,
        seq = int(frame.seq),
        priority = frame.priority.as_str(),
        drop_reason = tracing::field::Empty,
        not_published = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let headers = headers();
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract_with_context(&opentelemetry::Context::new(), &HeadersIn(&headers))
    });
    if parent.span().span_context().is_valid() {
        // Fails only without the OpenTelemetry layer, when there is no trace to join.
        let _ = span.set_parent(parent);
    }
    span
}

/// The `scheduler.queue` span of a frame entering a queue (`attempt` 1 after a device error).
pub fn queue_span(frame: &Span, attempt: u8) -> Span {
    tracing::info_span!(target: FRAME_SPAN_TARGET, parent: frame, "scheduler.queue", attempt = i64::from(attempt))
}

/// The `worker.batch` span of a frame sent to `worker` in a batch of `size`; the outcome and
/// the frame's stage times are recorded on it when the batch comes back.
pub fn worker_span(frame: &Span, worker: &str, size: usize) -> Span {
    tracing::info_span!(
        target: FRAME_SPAN_TARGET,
        parent: frame,
        "worker.batch",
        worker.id = worker,
        batch.size = int(size as u64),
        outcome = tracing::field::Empty,
        preprocess_ns = tracing::field::Empty,
        infer_ns = tracing::field::Empty,
        postprocess_ns = tracing::field::Empty,
    )
}

/// The `result.publish` span of a frame's DetectionMsg on `subject`.
pub fn publish_span(frame: &Span, subject: &str) -> Span {
    tracing::info_span!(
        target: FRAME_SPAN_TARGET,
        parent: frame,
        "result.publish",
        otel.kind = "producer",
        subject,
    )
}
