//! Traces end to end: a node with a synthetic camera and the CPU worker exports its spans over
//! OTLP/HTTP to a collector stand-in (a real HTTP server in this test that decodes each
//! `ExportTraceServiceRequest`), and each frame is one trace: camera publish -> scheduler
//! (frame, queue) -> worker batch -> result publish, with the trace context carried across
//! NATS in the message headers, on to the DetectionMsg's own headers.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use its_node::{Node, telemetry};
use its_proto::{DetectionMsg, subjects};
use its_testkit::{TestNats, within};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;

const FRAMES: u64 = 3;

/// A span as the collector received it, with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    attrs: BTreeMap<String, Value>,
}

impl Received {
    fn int(&self, key: &str) -> i64 {
        match self.attrs.get(key) {
            Some(Value::IntValue(v)) => *v,
            other => panic!(
                "{}: attribute {key} is {other:?}, not an integer",
                self.name
            ),
        }
    }
    fn str(&self, key: &str) -> &str {
        match self.attrs.get(key) {
            Some(Value::StringValue(v)) => v,
            other => panic!("{}: attribute {key} is {other:?}, not a string", self.name),
        }
    }
}

#[derive(Default)]
struct Store {
    spans: Vec<Received>,
    /// Anything the collector refused; the test fails on any.
    errors: Vec<String>,
    requests: usize,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The collector stand-in: OTLP/HTTP with protobuf bodies on `POST /v1/traces`, on its own
/// threads (the test blocks its runtime while flushing). Returns the endpoint.
fn start_collector(store: Arc<Mutex<Store>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let store = store.clone();
            std::thread::spawn(move || serve(conn, &store));
        }
    });
    endpoint
}

/// Serves one keep-alive connection: reads requests until the client closes it.
fn serve(conn: TcpStream, store: &Mutex<Store>) {
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if r.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').expect("a header line");
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        let status = match accept(request_line.trim_end(), &headers, &body, store) {
            Ok(()) => "200 OK",
            Err(e) => {
                store.lock().unwrap().errors.push(e);
                "400 Bad Request"
            }
        };
        // An empty ExportTraceServiceResponse encodes to zero bytes.
        write!(
            out,
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        )
        .unwrap();
        out.flush().unwrap();
    }
}

fn accept(
    request_line: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    store: &Mutex<Store>,
) -> Result<(), String> {
    if request_line != "POST /v1/traces HTTP/1.1" {
        return Err(format!("unexpected request {request_line:?}"));
    }
    if headers.get("content-type").map(String::as_str) != Some("application/x-protobuf") {
        return Err(format!("content-type {:?}", headers.get("content-type")));
    }
    if headers.contains_key("transfer-encoding") {
        return Err("chunked bodies are not read by this stand-in".into());
    }
    let req = ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())?;
    let mut store = store.lock().unwrap();
    store.requests += 1;
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.clone())
            .map(|v| match v {
                Value::StringValue(s) => s,
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                store.spans.push(Received {
                    service: service.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    name: s.name,
                    kind: s.kind,
                    attrs: s
                        .attributes
                        .into_iter()
                        .filter_map(|kv| Some((kv.key, kv.value?.value?)))
                        .collect(),
                });
            }
        }
    }
    Ok(())
}

#[actix_rt::test]
async fn one_frame_is_one_trace_from_camera_to_published_result() {
    let store = Arc::new(Mutex::new(Store::default()));
    let endpoint = start_collector(store.clone());
    let nats = TestNats::start();
    let overrides = vec![
        format!("nats.url={}", nats.url()),
        "cameras.synthetic_count=1".into(),
        "cameras.fps=20".into(),
        "cameras.width=320".into(),
        "cameras.height=240".into(),
        "cameras.loop_frames=2".into(),
        format!("cameras.max_frames={FRAMES}"),
        // Debug builds on a 2-core machine are slow: deadlines must not be what is tested.
        "scheduler.deadline_normal_ms=60000".into(),
        "status.print=false".into(),
        format!(
            "engine.model_dir={}",
            its_testkit::demo_model_dir().display()
        ),
        format!("telemetry.otlp_endpoint={endpoint}"),
        "telemetry.sampling_ratio=1".into(),
        "telemetry.service_name=its-trace-test".into(),
    ];
    let settings = its_testkit::settings(&overrides);
    let filter = telemetry::log_filter(Some("warn,its::frame=off")).unwrap();
    let (subscriber, pipeline) =
        telemetry::build(&settings.telemetry, filter, std::io::stderr, false).unwrap();
    assert!(pipeline.exporting());
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let client = nats.bus().await;
    let mut results = client.subscribe(subjects::RESULTS_ALL).await.unwrap();
    client.flush().await.unwrap();
    let node = within(60, "node start", Node::start(settings))
        .await
        .unwrap();
    // Each result with the trace context in its headers.
    let mut published: Vec<(DetectionMsg, String)> = Vec::new();
    within(180, "every frame's result", async {
        while published.len() < FRAMES as usize {
            let m = results.next().await.expect("results subscription");
            let msg: DetectionMsg = its_proto::decode(&m.payload).unwrap();
            let headers = its_bus::message_headers(&m);
            let traceparent = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("result {} has no traceparent: {headers:?}", msg.seq));
            published.push((msg, traceparent));
        }
    })
    .await;
    let report = within(120, "shutdown", node.shutdown()).await.unwrap();
    assert_eq!(report.status.results_published, FRAMES);
    // Every frame settled, so every frame span has ended: export them all now.
    pipeline.flush().unwrap();
    pipeline.shutdown().unwrap();

    let store = store.lock().unwrap();
    assert!(
        store.errors.is_empty(),
        "collector refused: {:?}",
        store.errors
    );
    assert!(store.requests >= 1);
    let mut traces: BTreeMap<&str, Vec<&Received>> = BTreeMap::new();
    for s in &store.spans {
        assert_eq!(s.service, "its-trace-test", "{s:?}");
        traces.entry(s.trace_id.as_str()).or_default().push(s);
    }
    assert_eq!(
        traces.len(),
        FRAMES as usize,
        "one trace per frame: {:#?}",
        store.spans
    );

    let mut seqs = BTreeSet::new();
    for (msg, traceparent) in &published {
        // traceparent = version-traceid-spanid-flags, sampled.
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!((parts[0], parts[3]), ("00", "01"), "{traceparent}");
        let spans = traces
            .get(parts[1])
            .unwrap_or_else(|| panic!("no spans for the trace of result {}", msg.seq));
        let one = |name: &str| -> &Received {
            let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
            assert_eq!(found.len(), 1, "{name} in trace {}: {spans:#?}", parts[1]);
            found[0]
        };
        let camera = one("camera.publish");
        let frame = one("scheduler.frame");
        let queue = one("scheduler.queue");
        let worker = one("worker.batch");
        let publish = one("result.publish");
        assert_eq!(spans.len(), 5, "{spans:#?}");

        // Parent links: the camera's span is the root; the scheduler's frame span is its
        // child across NATS; queue, worker and publish are children of the frame span; the
        // result's headers name the publish span.
        assert_eq!(camera.parent, "", "camera.publish is the root");
        assert_eq!(frame.parent, camera.span_id);
        assert_eq!(queue.parent, frame.span_id);
        assert_eq!(worker.parent, frame.span_id);
        assert_eq!(publish.parent, frame.span_id);
        assert_eq!(
            parts[2], publish.span_id,
            "the result carries result.publish"
        );

        assert_eq!(camera.kind, SpanKind::Producer as i32);
        assert_eq!(frame.kind, SpanKind::Consumer as i32);
        assert_eq!(publish.kind, SpanKind::Producer as i32);
        assert_eq!(camera.str("camera_id"), msg.camera_id);
        assert_eq!(camera.int("seq") as u64, msg.seq);
        assert_eq!(frame.str("camera_id"), msg.camera_id);
        assert_eq!(frame.int("seq") as u64, msg.seq);
        assert!(!frame.attrs.contains_key("drop_reason"), "{frame:?}");
        assert_eq!(queue.int("attempt"), 0);
        assert_eq!(worker.str("worker.id"), msg.worker_id);
        assert_eq!(worker.int("batch.size") as u32, msg.batch_size);
        assert_eq!(worker.str("outcome"), "done");
        assert_eq!(
            worker.int("preprocess_ns") as u64,
            msg.timings.preprocess_ns
        );
        assert_eq!(worker.int("infer_ns") as u64, msg.timings.infer_ns);
        assert_eq!(
            worker.int("postprocess_ns") as u64,
            msg.timings.postprocess_ns
        );
        assert!(msg.timings.infer_ns > 0);
        assert_eq!(
            publish.str("subject"),
            subjects::results(&msg.camera_id).as_str()
        );
        seqs.insert(msg.seq);
    }
    assert_eq!(seqs, (0..FRAMES).collect::<BTreeSet<_>>());
}
