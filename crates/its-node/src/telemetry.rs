//! Logs and traces of a node (`[telemetry]`).
//!
//! Log lines go to stderr as text or as one JSON object per line (`telemetry.log_format`);
//! which lines is the `ITS_LOG` filter. With `telemetry.otlp_endpoint` set, the spans of the
//! frame path (target [`FRAME_SPAN_TARGET`]) are exported over OTLP/HTTP (protobuf) by a batch
//! span processor, sampled at the camera with `telemetry.sampling_ratio` and parent-based after
//! that, and the W3C trace context propagator is installed, so the camera's `traceparent`
//! header carries one frame's trace across NATS to the scheduler and on to its result:
//!
//! ```text
//! camera.publish                  its-camera, the FrameMsg publish (root of the trace)
//! └ scheduler.frame               its-scheduler, from intake until the frame settles
//!   ├ scheduler.queue             queued until dispatched in a batch
//!   ├ worker.batch                the worker's service of the batch, recorded by the scheduler
//!   └ result.publish              the DetectionMsg publish; its context rides in its headers
//! ```
//!
//! With no endpoint nothing is exported and no frame span is even created.

use std::time::Duration;

use its_config::{LogFormat, TelemetrySettings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Subscriber;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, Registry};

/// The `tracing` target of the frame-path spans (`its-camera` and `its-scheduler` spell the
/// same string). They go to the trace exporter only; the log filter leaves them out unless
/// `ITS_LOG` names them.
pub const FRAME_SPAN_TARGET: &str = "its::frame";

/// The log filter when `ITS_LOG` is not set.
pub const DEFAULT_LOG_FILTER: &str = "info,async_nats=warn,ort=warn,its::frame=off";

/// Errors of setting up or flushing logs and traces.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("telemetry.otlp_endpoint {endpoint:?}: cannot build the OTLP exporter: {source}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// `ITS_LOG` is not a valid filter.
    #[error("ITS_LOG {value:?} is not a valid log filter: {detail}")]
    Filter {
        /// The variable's value.
        value: String,
        /// Why.
        detail: String,
    },
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
    /// Spans could not be flushed or the exporter shut down.
    #[error("cannot {what} the trace exporter: {detail}")]
    Export {
        /// `flush` or `shut down`.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

/// The trace pipeline of a process; flush and shut it down before exit so that the spans still
/// queued reach the collector. Dropping it without [`Telemetry::shutdown`] loses them.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every finished span now; blocks until the collector answered (or the export
    /// timed out). A no-op when nothing is exported.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        match &self.provider {
            Some(p) => p.force_flush().map_err(|e| TelemetryError::Export {
                what: "flush",
                detail: e.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Exports what is left and stops the exporter. Blocks, so call it outside async code (or
    /// from a blocking task).
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        match self.provider.take() {
            Some(p) => p.shutdown().map_err(|e| TelemetryError::Export {
                what: "shut down",
                detail: e.to_string(),
            }),
            None => Ok(()),
        }
    }
}

/// The log filter: `ITS_LOG` when given, else [`DEFAULT_LOG_FILTER`].
pub fn log_filter(its_log: Option<&str>) -> Result<EnvFilter, TelemetryError> {
    let value = its_log.unwrap_or(DEFAULT_LOG_FILTER);
    EnvFilter::builder()
        .parse(value)
        .map_err(|e| TelemetryError::Filter {
            value: value.to_owned(),
            detail: e.to_string(),
        })
}

/// Builds the subscriber (log lines to `writer`, filtered by `filter`, text lines coloured
/// when `ansi`; frame spans to the OTLP exporter when configured) without installing it, and
/// the pipeline to flush. Also installs the W3C trace context propagator when exporting.
pub fn build<W>(
    settings: &TelemetrySettings,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Result<(Box<dyn Subscriber + Send + Sync>, Telemetry), TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let logs = match settings.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    if settings.otlp_endpoint.is_empty() {
        let subscriber = Registry::default().with(logs);
        return Ok((Box::new(subscriber), Telemetry::default()));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.otlp_endpoint.clone())
        .with_timeout(Duration::from_millis(settings.export_timeout_ms))
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: settings.otlp_endpoint.clone(),
            source,
        })?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampling_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer("its");
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            Targets::new()
                .with_default(LevelFilter::WARN)
                .with_target(FRAME_SPAN_TARGET, LevelFilter::INFO),
        );
    let subscriber = Registry::default().with(logs).with(traces);
    Ok((
        Box::new(subscriber),
        Telemetry {
            provider: Some(provider),
        },
    ))
}

/// Builds and installs the process-wide subscriber: log lines to stderr (coloured text only on
/// a terminal), filter from `ITS_LOG`, traces as configured.
pub fn init(settings: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
    use std::io::IsTerminal as _;
    let its_log = std::env::var("ITS_LOG").ok();
    let filter = log_filter(its_log.as_deref())?;
    let ansi = std::io::stderr().is_terminal();
    let (subscriber, telemetry) = build(settings, filter, std::io::stderr, ansi)?;
    subscriber
        .try_init()
        .map_err(|e| TelemetryError::Install(e.to_string()))?;
    Ok(telemetry)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Sink {
        type Writer = Sink;
        fn make_writer(&'w self) -> Sink {
            self.clone()
        }
    }

    fn logged(format: LogFormat) -> String {
        let settings = TelemetrySettings {
            log_format: format,
            ..TelemetrySettings::default()
        };
        let sink = Sink::default();
        let (subscriber, telemetry) = build(
            &settings,
            log_filter(Some("info")).unwrap(),
            sink.clone(),
            false,
        )
        .unwrap();
        assert!(!telemetry.exporting(), "no endpoint, nothing exported");
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("intake", camera = "cam-1");
            let _e = span.enter();
            tracing::info!(frames = 3u64, "a line with \"quotes\"\nand a line break");
            tracing::warn!(error = %"disk full", "second line");
            tracing::debug!("filtered out");
        });
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_logs_are_one_parseable_object_per_line() {
        let out = logged(LogFormat::Json);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let v: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(v[0]["level"], "INFO");
        assert_eq!(
            v[0]["fields"]["message"],
            "a line with \"quotes\"\nand a line break"
        );
        assert_eq!(v[0]["fields"]["frames"], 3);
        assert_eq!(v[0]["span"]["name"], "intake");
        assert_eq!(v[0]["span"]["camera"], "cam-1");
        assert!(v[0]["timestamp"].is_string(), "{}", lines[0]);
        assert_eq!(v[1]["level"], "WARN");
        assert_eq!(v[1]["fields"]["error"], "disk full");
    }

    #[test]
    fn text_logs_are_not_json() {
        let out = logged(LogFormat::Text);
        assert_eq!(
            out.lines().count(),
            3,
            "the message holds a line break: {out}"
        );
        assert!(
            out.contains("INFO") && out.contains("intake{camera=\"cam-1\"}"),
            "{out}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(out.lines().next().unwrap()).is_err());
    }

    #[test]
    fn a_bad_its_log_filter_is_a_clear_error() {
        let e = log_filter(Some("info,=[")).unwrap_err().to_string();
        assert!(e.contains("ITS_LOG") && e.contains("info,=["), "{e}");
    }
}
