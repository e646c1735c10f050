//! Handlers and the request and response bodies of `/api/v1`, the probes and `/metrics`.
//!
//! Every handler first checks the caller's role, then its input; bad input is a 4xx problem
//! naming the field, never a 500.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use its_bus::{Bus, BusError, Kv};
use its_config::{AdminRole, AdminSettings};
use its_proto::{
    CameraSpec, ControlReply, HttpMode, ModelSwapReply, Priority, RtspTransport, SchedulerControl,
    SchedulerTuning, SwapFailure, subjects,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Tokens;
use crate::problem::{ApiError, Problem};
use crate::view::{ClusterView, Seen};

/// Shared state of the handlers.
pub(crate) struct AppState {
    pub(crate) settings: AdminSettings,
    pub(crate) bus: Bus,
    pub(crate) kv: Kv<CameraSpec>,
    pub(crate) view: Arc<ClusterView>,
    pub(crate) tokens: Tokens,
    pub(crate) http: Arc<crate::metrics::HttpCounters>,
    pub(crate) limiter: crate::limits::RateLimiter,
}

type State = web::Data<AppState>;
type ApiResult = Result<HttpResponse, ApiError>;

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

fn json<T: Serialize>(status: actix_web::http::StatusCode, body: &T) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(serde_json::to_string(body).unwrap_or_default())
}

fn ok<T: Serialize>(body: &T) -> ApiResult {
    Ok(json(actix_web::http::StatusCode::OK, body))
}

/// A node's answer to a control request: 200 with it when the node applied it, else 409.
fn applied(r: &ControlResult) -> ApiResult {
    if r.ok {
        ok(r)
    } else {
        Err(ApiError::Conflict(format!(
            "node {} did not apply it: {}",
            r.node_id, r.message
        )))
    }
}

/// Checks the caller's role for a change, then takes one token of its address's rate limit.
fn may_change(req: &HttpRequest, st: &AppState, need: AdminRole) -> Result<(), ApiError> {
    use crate::limits::{MUTATION_BURST, MUTATIONS_PER_SEC};
    st.tokens.require(req, need)?;
    let client = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    st.limiter
        .admit(client, std::time::Instant::now())
        .map_err(|retry_after| {
            tracing::info!(%client, path = %req.path(), "admin change refused: rate limit");
            ApiError::TooManyRequests {
                retry_after,
                burst: MUTATION_BURST,
                per_sec: MUTATIONS_PER_SEC,
            }
        })
}

// ---------------------------------------------------------------------------------------------
// request bodies

/// Scheduling class.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PriorityName {
    /// Served first.
    Emergency,
    /// Before normal traffic.
    Urgent,
    /// The default.
    Normal,
    /// Shed first under overload.
    Background,
}

impl From<PriorityName> for Priority {
    fn from(p: PriorityName) -> Self {
        match p {
            PriorityName::Emergency => Priority::Emergency,
            PriorityName::Urgent => Priority::Urgent,
            PriorityName::Normal => Priority::Normal,
            PriorityName::Background => Priority::Background,
        }
    }
}

impl From<Priority> for PriorityName {
    fn from(p: Priority) -> Self {
        match p {
            Priority::Emergency => PriorityName::Emergency,
            Priority::Urgent => PriorityName::Urgent,
            Priority::Normal => PriorityName::Normal,
            Priority::Background => PriorityName::Background,
        }
    }
}

/// RTSP transport.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransportName {
    /// Interleaved over TCP.
    Tcp,
    /// RTP over UDP.
    Udp,
}

/// How an HTTP source is read.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpModeName {
    /// A multipart JPEG stream.
    Mjpeg,
    /// One JPEG per GET.
    Snapshot,
}

/// A camera as written by `POST /api/v1/cameras` and `PUT /api/v1/cameras/{id}` (a full
/// replacement). Absent optional fields take their defaults.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CameraInput {
    /// Camera id (required on create; on replace it must equal the path's id when given).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: Option<String>,
    /// Source URL: `rtsp://`, `http://`, `https://`, `file://` or `synthetic://`.
    /// Credentials in it are stored but never returned. Sending back the redacted URL of a
    /// `GET` keeps the stored credentials.
    #[schema(max_length = 2048)]
    pub url: String,
    /// Target frame rate, 0.1 to 120.
    #[schema(minimum = 0.1, maximum = 120.0)]
    pub fps: f32,
    /// Scheduling class (default normal).
    pub priority: Option<PriorityName>,
    /// Whether the camera runs (default true).
    pub enabled: Option<bool>,
    /// Output width, 16 to 8192.
    #[schema(minimum = 16, maximum = 8192)]
    pub width: Option<u32>,
    /// Output height, 16 to 8192.
    #[schema(minimum = 16, maximum = 8192)]
    pub height: Option<u32>,
    /// JPEG quality, 1 to 100 (default 85).
    #[schema(minimum = 1, maximum = 100)]
    pub jpeg_quality: Option<u8>,
    /// RTSP transport (default tcp).
    pub rtsp_transport: Option<TransportName>,
    /// HTTP read mode (default mjpeg).
    pub http_mode: Option<HttpModeName>,
    /// Replay a file source when it ends (default false).
    pub loop_playback: Option<bool>,
    /// Seed of a synthetic scene (default 0).
    pub seed: Option<u64>,
}

impl CameraInput {
    fn into_spec(self, id: String) -> CameraSpec {
        let mut spec = CameraSpec::new(id, self.url, self.fps);
        if let Some(p) = self.priority {
            spec.priority = p.into();
        }
        if let Some(e) = self.enabled {
            spec.enabled = e;
        }
        spec.width = self.width;
        spec.height = self.height;
        if let Some(q) = self.jpeg_quality {
            spec.jpeg_quality = q;
        }
        if let Some(t) = self.rtsp_transport {
            spec.rtsp_transport = match t {
                TransportName::Tcp => RtspTransport::Tcp,
                TransportName::Udp => RtspTransport::Udp,
            };
        }
        if let Some(m) = self.http_mode {
            spec.http_mode = match m {
                HttpModeName::Mjpeg => HttpMode::Mjpeg,
                HttpModeName::Snapshot => HttpMode::Snapshot,
            };
        }
        if let Some(l) = self.loop_playback {
            spec.loop_playback = l;
        }
        if let Some(s) = self.seed {
            spec.seed = s;
        }
        spec
    }
}

/// What happens to a frame whose deadline passed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Drop it (`deadline_missed`).
    Drop,
    /// Deliver it flagged `late`.
    Deliver,
}

/// Run-time scheduler tuning (`PATCH /api/v1/scheduler`). Absent fields keep their value.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TuningInput {
    /// Preferred batch sizes, strictly ascending, each 1 to 256.
    #[schema(min_items = 1, max_items = 64)]
    pub batch_sizes: Option<Vec<u32>>,
    /// Deadline per class from capture, ms (emergency, urgent, normal, background), each 1 to
    /// 600000.
    #[schema(min_items = 4, max_items = 4)]
    pub deadlines_ms: Option<Vec<u64>>,
    /// Shortest batch wait, ms, 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub min_batch_timeout_ms: Option<u64>,
    /// Longest batch wait, ms, 1 to 1000, at least `min_batch_timeout_ms`.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_batch_timeout_ms: Option<u64>,
    /// Deadline-miss ratio above which the breaker sheds the next class, more than 0, at
    /// most 1.
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub shed_miss_ratio: Option<f32>,
    /// Late frame policy.
    pub late_policy: Option<LatePolicy>,
}

impl TuningInput {
    fn validate(self) -> Result<SchedulerTuning, ApiError> {
        if let Some(b) = &self.batch_sizes {
            if b.is_empty() || b.len() > 64 {
                return Err(ApiError::invalid("batch_sizes", "give 1 to 64 sizes"));
            }
            if let Some(n) = b.iter().position(|s| !(1..=256).contains(s)) {
                return Err(ApiError::invalid(
                    format!("batch_sizes[{n}]"),
                    format!("{} is out of range: use 1 to 256", b[n]),
                ));
            }
            if b.windows(2).any(|w| w[0] >= w[1]) {
                return Err(ApiError::invalid(
                    "batch_sizes",
                    "sizes must be strictly ascending",
                ));
            }
        }
        let deadlines = match &self.deadlines_ms {
            None => None,
            Some(d) => {
                let arr: [u64; 4] = d.as_slice().try_into().map_err(|_| {
                    ApiError::invalid(
                        "deadlines_ms",
                        "give exactly 4 values: emergency, urgent, normal, background",
                    )
                })?;
                if let Some(n) = arr.iter().position(|v| !(1..=600_000).contains(v)) {
                    return Err(ApiError::invalid(
                        format!("deadlines_ms[{n}]"),
                        format!("{} is out of range: use 1 to 600000", arr[n]),
                    ));
                }
                Some(arr)
            }
        };
        for (field, v) in [
            ("min_batch_timeout_ms", self.min_batch_timeout_ms),
            ("max_batch_timeout_ms", self.max_batch_timeout_ms),
        ] {
            if let Some(v) = v
                && !(1..=1000).contains(&v)
            {
                return Err(ApiError::invalid(
                    field,
                    format!("{v} is out of range: use 1 to 1000"),
                ));
            }
        }
        if let (Some(lo), Some(hi)) = (self.min_batch_timeout_ms, self.max_batch_timeout_ms)
            && hi < lo
        {
            return Err(ApiError::invalid(
                "max_batch_timeout_ms",
                "must be at least min_batch_timeout_ms",
            ));
        }
        if let Some(r) = self.shed_miss_ratio
            && !(r.is_finite() && r > 0.0 && r <= 1.0)
        {
            return Err(ApiError::invalid(
                "shed_miss_ratio",
                format!("{r} is out of range: use more than 0, at most 1"),
            ));
        }
        Ok(SchedulerTuning {
            batch_sizes: self.batch_sizes,
            deadlines_ms: deadlines,
            min_batch_timeout_ms: self.min_batch_timeout_ms,
            max_batch_timeout_ms: self.max_batch_timeout_ms,
            shed_miss_ratio: self.shed_miss_ratio,
            late_policy: self.late_policy.map(|p| {
                match p {
                    LatePolicy::Drop => "drop",
                    LatePolicy::Deliver => "deliver",
                }
                .to_owned()
            }),
        })
    }
}

/// Reads a JSON body: content type, size limit (`admin.max_body_bytes`), time limit
/// (`admin.request_timeout_ms` for the whole body, so a client trickling bytes cannot hold a
/// connection), then a typed parse whose errors name the field.
async fn read_json<T: DeserializeOwned>(
    req: &HttpRequest,
    mut payload: web::Payload,
    settings: &AdminSettings,
) -> Result<T, ApiError> {
    let limit = settings.max_body_bytes;
    let time_limit = Duration::from_millis(settings.request_timeout_ms);
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| ApiError::BadRequest {
                detail: format!("cannot read the request body: {e}"),
                field: None,
            })?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout(time_limit, read)
        .await
        .map_err(|_| ApiError::RequestTimeout(time_limit))??;
    parse_json(&body)
}

/// The typed parse of a JSON body; errors name the field at fault.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::BadRequest {
                detail: format!("the body is not valid JSON: {detail}"),
                field: None,
            }
        } else {
            let field = if path == "." {
                missing_field(&detail).unwrap_or_else(|| "body".into())
            } else {
                path
            };
            ApiError::invalid(field, detail)
        }
    })
}

/// The body of `PATCH /api/v1/scheduler` parsed and validated exactly as the handler does,
/// before anything is sent to a node: the tuning to send, or the problem the client gets.
/// Public for the fuzz target `scheduler_tuning_json`.
pub fn scheduler_tuning_body(body: &[u8]) -> Result<SchedulerTuning, Problem> {
    parse_json::<TuningInput>(body)
        .and_then(TuningInput::validate)
        .map_err(|e| e.problem())
}

/// The field named in serde's "missing field `x`" and "unknown field `x`" messages.
fn missing_field(detail: &str) -> Option<String> {
    let rest = detail
        .strip_prefix("missing field `")
        .or_else(|| detail.strip_prefix("unknown field `"))?;
    rest.split('`').next().map(str::to_owned)
}

fn check_camera_id(id: &str) -> Result<(), ApiError> {
    if subjects::is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_field(
            "id",
            "a camera id is 1 to 64 ASCII letters, digits, '-' or '_'",
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// cameras

/// A registered camera. The URL never shows credentials.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CameraView {
    /// Camera id.
    pub id: String,
    /// Source URL with any `user:password@` replaced by `***@`.
    pub url: String,
    /// Target frame rate.
    pub fps: f32,
    /// Scheduling class.
    pub priority: PriorityName,
    /// Whether the camera should run.
    pub enabled: bool,
    /// Output width, when set.
    pub width: Option<u32>,
    /// Output height, when set.
    pub height: Option<u32>,
    /// JPEG quality.
    pub jpeg_quality: u8,
    /// RTSP transport.
    pub rtsp_transport: TransportName,
    /// HTTP read mode.
    pub http_mode: HttpModeName,
    /// Replay a file source when it ends.
    pub loop_playback: bool,
    /// Seed of a synthetic scene.
    pub seed: u64,
    /// Registry revision of this entry.
    pub revision: u64,
}

impl CameraView {
    fn new(spec: &CameraSpec, revision: u64) -> Self {
        CameraView {
            id: spec.id.clone(),
            url: spec.redacted_url(),
            fps: spec.fps,
            priority: spec.priority.into(),
            enabled: spec.enabled,
            width: spec.width,
            height: spec.height,
            jpeg_quality: spec.jpeg_quality,
            rtsp_transport: match spec.rtsp_transport {
                RtspTransport::Tcp => TransportName::Tcp,
                RtspTransport::Udp => TransportName::Udp,
            },
            http_mode: match spec.http_mode {
                HttpMode::Mjpeg => HttpModeName::Mjpeg,
                HttpMode::Snapshot => HttpModeName::Snapshot,
            },
            loop_playback: spec.loop_playback,
            seed: spec.seed,
            revision,
        }
    }
}

fn validate_spec(spec: &CameraSpec) -> Result<(), ApiError> {
    spec.validate()
        .map_err(|e| ApiError::invalid(e.field, e.message))
}

/// Lists the registered cameras, sorted by id.
#[utoipa::path(get, path = "/api/v1/cameras", tag = "cameras",
    responses(
        (status = 200, description = "Registered cameras", body = Vec<CameraView>),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The registry cannot be reached", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn list_cameras(req: HttpRequest, st: State) -> ApiResult {
    st.tokens.require(&req, AdminRole::Viewer)?;
    let keys = st.kv.keys().await?;
    let kv = st.kv.clone();
    let entries: Vec<_> = futures::stream::iter(keys)
        .map(|k| {
            let kv = kv.clone();
            async move { kv.get(&k).await }
        })
        .buffered(16)
        .collect()
        .await;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        if let Some(e) = e?
            && let Some(spec) = &e.value
        {
            out.push(CameraView::new(spec, e.revision));
        }
    }
    ok(&out)
}

/// Registers a camera. Ids are unique: an existing id is a 409.
#[utoipa::path(post, path = "/api/v1/cameras", tag = "cameras",
    request_body = CameraInput,
    responses(
        (status = 201, description = "Registered", body = CameraView),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the operator role", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The id exists", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within admin.request_timeout_ms", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The registry cannot be reached", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many changes from this client; `Retry-After` says when to retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn create_camera(req: HttpRequest, st: State, payload: web::Payload) -> ApiResult {
    may_change(&req, &st, AdminRole::Operator)?;
    let input: CameraInput = read_json(&req, payload, &st.settings).await?;
    let Some(id) = input.id.clone() else {
        return Err(ApiError::invalid("id", "required when creating a camera"));
    };
    let spec = input.into_spec(id);
    validate_spec(&spec)?;
    if st.kv.get(&spec.id).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "camera {} exists; use PUT /api/v1/cameras/{} to change it",
            spec.id, spec.id
        )));
    }
    let revision = match st.kv.create(&spec.id, &spec).await {
        Ok(r) => r,
        // Created by someone else between the check and the write.
        Err(BusError::Kv { .. }) if st.kv.get(&spec.id).await?.is_some() => {
            return Err(ApiError::Conflict(format!("camera {} exists", spec.id)));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(camera = %spec.id, url = %spec.redacted_url(), "camera registered");
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/cameras/{}", spec.id)))
        .content_type("application/json")
        .body(serde_json::to_string(&CameraView::new(&spec, revision)).unwrap_or_default()))
}

/// Reads one camera.
#[utoipa::path(get, path = "/api/v1/cameras/{id}", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    responses(
        (status = 200, description = "The camera", body = CameraView),
        (status = 400, description = "Invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such camera", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The registry cannot be reached", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn get_camera(req: HttpRequest, st: State, id: web::Path<String>) -> ApiResult {
    st.tokens.require(&req, AdminRole::Viewer)?;
    check_camera_id(&id)?;
    match st.kv.get(&id).await? {
        Some(e) if e.value.is_some() => ok(&CameraView::new(
            e.value.as_ref().expect("checked"),
            e.revision,
        )),
        _ => Err(ApiError::NotFound(format!("no camera {id}"))),
    }
}

/// Replaces a camera's settings.
#[utoipa::path(put, path = "/api/v1/cameras/{id}", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    request_body = CameraInput,
    responses(
        (status = 200, description = "Replaced", body = CameraView),
        (status = 400, description = "Invalid id or malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the operator role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such camera", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed concurrently; retry", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within admin.request_timeout_ms", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The registry cannot be reached", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many changes from this client; `Retry-After` says when to retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn replace_camera(
    req: HttpRequest,
    st: State,
    id: web::Path<String>,
    payload: web::Payload,
) -> ApiResult {
    may_change(&req, &st, AdminRole::Operator)?;
    check_camera_id(&id)?;
    let input: CameraInput = read_json(&req, payload, &st.settings).await?;
    if let Some(body_id) = &input.id
        && body_id != id.as_str()
    {
        return Err(ApiError::invalid(
            "id",
            format!(
                "the body's id {body_id:?} differs from the path's {:?}",
                *id
            ),
        ));
    }
    let Some(current) = st.kv.get(&id).await? else {
        return Err(ApiError::NotFound(format!("no camera {id}")));
    };
    let mut spec = input.into_spec(id.to_string());
    if let Some(old) = &current.value
        && spec.url != old.url
        && spec.url == old.redacted_url()
    {
        // The client sent back the redacted URL of a GET: keep the stored credentials.
        spec.url = old.url.clone();
    }
    validate_spec(&spec)?;
    let revision = st
        .kv
        .update(&spec.id, &spec, current.revision)
        .await
        .map_err(|_| {
            ApiError::Conflict(format!(
                "camera {} changed while it was being replaced; read it again and retry",
                spec.id
            ))
        })?;
    tracing::info!(camera = %spec.id, url = %spec.redacted_url(), "camera replaced");
    ok(&CameraView::new(&spec, revision))
}

/// Removes a camera; its ingest stops it.
#[utoipa::path(delete, path = "/api/v1/cameras/{id}", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the operator role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such camera", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The registry cannot be reached", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many changes from this client; `Retry-After` says when to retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn delete_camera(req: HttpRequest, st: State, id: web::Path<String>) -> ApiResult {
    may_change(&req, &st, AdminRole::Operator)?;
    check_camera_id(&id)?;
    if st.kv.get(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no camera {id}")));
    }
    st.kv.delete(&id).await?;
    tracing::info!(camera = %id, "camera removed");
    Ok(HttpResponse::NoContent().finish())
}

/// What the camera's ingest last reported.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CameraStatusView {
    /// Camera id.
    pub camera_id: String,
    /// Whether the camera is in the registry.
    pub registered: bool,
    /// Whether a status report was seen; the fields below are empty until one is.
    pub seen: bool,
    /// Ingest process running the camera.
    pub ingest_id: Option<String>,
    /// `connecting`, `streaming`, `backoff`, `quarantined` or `stopped`.
    pub state: Option<String>,
    /// Age of the last report, ms.
    pub age_ms: Option<u64>,
    /// The last report is older than `admin.stale_after_ms`.
    pub stale: bool,
    /// Frames read from the source.
    pub frames_captured: Option<u64>,
    /// Frames published to NATS.
    pub frames_published: Option<u64>,
    /// Frames dropped at the source, by reason.
    pub drops: BTreeMap<String, u64>,
    /// Measured publish rate, frames per second.
    pub fps_measured: Option<f32>,
    /// Last error, URLs redacted.
    pub last_error: Option<String>,
    /// Width of the last frame.
    pub width: Option<u32>,
    /// Height of the last frame.
    pub height: Option<u32>,
    /// Current priority (a boost included).
    pub priority: Option<PriorityName>,
}

/// Redacts credentials of every URL in a free text.
fn redact_text(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            if w.contains("://") {
                its_proto::redact_url(w)
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// State, rate, drops and last error of a camera, from its ingest's latest report.
#[utoipa::path(get, path = "/api/v1/cameras/{id}/status", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    responses(
        (status = 200, description = "The camera's status", body = CameraStatusView),
        (status = 400, description = "Invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Neither registered nor reported", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The registry cannot be reached", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn camera_status(req: HttpRequest, st: State, id: web::Path<String>) -> ApiResult {
    st.tokens.require(&req, AdminRole::Viewer)?;
    check_camera_id(&id)?;
    let registered = st.kv.get(&id).await?.is_some();
    let seen = st.view.camera(&id);
    if !registered && seen.is_none() {
        return Err(ApiError::NotFound(format!("no camera {id}")));
    }
    let stale_after = st.view.opts.stale_after;
    let view = match seen {
        None => CameraStatusView {
            camera_id: id.to_string(),
            registered,
            seen: false,
            ingest_id: None,
            state: None,
            age_ms: None,
            stale: false,
            frames_captured: None,
            frames_published: None,
            drops: BTreeMap::new(),
            fps_measured: None,
            last_error: None,
            width: None,
            height: None,
            priority: None,
        },
        Some(Seen { value: s, at }) => CameraStatusView {
            camera_id: s.camera_id,
            registered,
            seen: true,
            ingest_id: Some(s.ingest_id),
            state: Some(s.state.as_str().to_owned()),
            age_ms: Some(ms(at.elapsed())),
            stale: at.elapsed() > stale_after,
            frames_captured: Some(s.frames_captured),
            frames_published: Some(s.frames_published),
            drops: s.drops,
            fps_measured: Some(s.fps_measured),
            last_error: s.last_error.as_deref().map(redact_text),
            width: Some(s.width),
            height: Some(s.height),
            priority: Some(s.priority.into()),
        },
    };
    ok(&view)
}

/// Which ingest serves a camera, as its status reports say.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AssignmentView {
    /// Camera id.
    pub camera_id: String,
    /// Ingest process (node) running it.
    pub ingest_id: String,
    /// The camera's state there.
    pub state: String,
    /// Age of the report, ms.
    pub age_ms: u64,
    /// The report is older than `admin.stale_after_ms`.
    pub stale: bool,
}

/// Which node serves which camera.
#[utoipa::path(get, path = "/api/v1/assignments", tag = "cluster",
    responses(
        (status = 200, description = "One entry per camera that reported", body = Vec<AssignmentView>),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn assignments(req: HttpRequest, st: State) -> ApiResult {
    st.tokens.require(&req, AdminRole::Viewer)?;
    let stale_after = st.view.opts.stale_after;
    let out: Vec<AssignmentView> = st
        .view
        .cameras()
        .into_iter()
        .map(|s| AssignmentView {
            camera_id: s.value.camera_id.clone(),
            ingest_id: s.value.ingest_id.clone(),
            state: s.value.state.as_str().to_owned(),
            age_ms: ms(s.age()),
            stale: s.age() > stale_after,
        })
        .collect();
    ok(&out)
}

// ---------------------------------------------------------------------------------------------
// workers

/// A model reference.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelView {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
}

/// One worker (one GPU, or the CPU worker) of a node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerView {
    /// `<node_id>.<worker_id>`: the id of the worker endpoints.
    pub id: String,
    /// Node the worker runs on.
    pub node_id: String,
    /// Worker id on its node.
    pub worker_id: String,
    /// `cpu` or the GPU's name.
    pub device: String,
    /// Concurrent batch slots.
    pub slots_total: u32,
    /// Slots busy now.
    pub slots_busy: u32,
    /// Frames queued on the worker's node.
    pub node_queue_depth: Option<u64>,
    /// Frames given to the worker and not yet returned, by priority class.
    pub queue_depth: BTreeMap<String, u64>,
    /// Estimated frames per second the worker can serve, once measured.
    pub capacity_fps: Option<f32>,
    /// The worker is drained: it gets no new batches.
    pub draining: bool,
    /// Engine restarts since start.
    pub restarts: u64,
    /// Frames processed since start.
    pub frames_done: u64,
    /// Batches processed since start.
    pub batches_done: u64,
    /// Median batch service time over the last window, ms.
    pub batch_p50_ms: f64,
    /// 99th percentile batch service time over the last window, ms.
    pub batch_p99_ms: f64,
    /// Device utilisation 0..1, when known.
    pub utilisation: Option<f32>,
    /// Device memory in use, bytes, when known.
    pub memory_used_bytes: Option<u64>,
    /// Model in the worker's latest result, when one was seen.
    pub model: Option<ModelView>,
    /// Age of the last report, ms.
    pub age_ms: u64,
    /// The report is older than `admin.stale_after_ms`.
    pub stale: bool,
}

fn worker_views(st: &AppState) -> Vec<WorkerView> {
    let stale_after = st.view.opts.stale_after;
    let models = st.view.models();
    let depth: BTreeMap<String, u64> = st
        .view
        .nodes()
        .into_iter()
        .map(|n| (n.value.node_id.clone(), n.value.queue_depth.values().sum()))
        .collect();
    st.view
        .workers()
        .into_iter()
        .map(|s| {
            let w = &s.value;
            WorkerView {
                id: format!("{}.{}", w.node_id, w.worker_id),
                node_id: w.node_id.clone(),
                worker_id: w.worker_id.clone(),
                device: w.device.clone(),
                slots_total: w.slots_total,
                slots_busy: w.slots_busy,
                node_queue_depth: depth.get(&w.node_id).copied(),
                queue_depth: w.queue_depth.clone(),
                capacity_fps: w.capacity_fps,
                draining: w.draining,
                restarts: w.restarts,
                frames_done: w.frames_done,
                batches_done: w.batches_done,
                batch_p50_ms: w.batch_p50_ns as f64 / 1e6,
                batch_p99_ms: w.batch_p99_ns as f64 / 1e6,
                utilisation: w.utilisation,
                memory_used_bytes: w.memory_used_bytes,
                model: models
                    .get(&(w.node_id.clone(), w.worker_id.clone()))
                    .map(|m| ModelView {
                        name: m.model.name.clone(),
                        version: m.model.version.clone(),
                    }),
                age_ms: ms(s.age()),
                stale: s.age() > stale_after,
            }
        })
        .collect()
}

/// Every worker that reported, with its load and latency.
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers",
    responses(
        (status = 200, description = "Workers", body = Vec<WorkerView>),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn list_workers(req: HttpRequest, st: State) -> ApiResult {
    st.tokens.require(&req, AdminRole::Viewer)?;
    ok(&worker_views(&st))
}

/// Finds a worker by `<node>.<worker>` or by a worker id that is unique in the cluster.
fn find_worker(st: &AppState, id: &str) -> Result<WorkerView, ApiError> {
    let valid = match id.split_once('.') {
        Some((n, w)) => subjects::is_valid_id(n) && subjects::is_valid_id(w),
        None => subjects::is_valid_id(id),
    };
    if !valid {
        return Err(ApiError::bad_field(
            "id",
            "a worker id is `<node_id>.<worker_id>`, or a worker id unique in the cluster",
        ));
    }
    let all = worker_views(st);
    let mut matches: Vec<WorkerView> = all
        .into_iter()
        .filter(|w| w.id == id || w.worker_id == id)
        .collect();
    match matches.len() {
        0 => Err(ApiError::NotFound(format!("no worker {id}"))),
        1 => Ok(matches.remove(0)),
        _ => Err(ApiError::bad_field(
            "id",
            format!("worker id {id} is on several nodes: use <node_id>.{id}"),
        )),
    }
}

/// One worker.
#[utoipa::path(get, path = "/api/v1/workers/{id}", tag = "workers",
    params(("id" = String, Path, description = "`<node_id>.<worker_id>`, or a worker id unique in the cluster")),
    responses(
        (status = 200, description = "The worker", body = WorkerView),
        (status = 400, description = "Invalid or ambiguous id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such worker", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn get_worker(req: HttpRequest, st: State, id: web::Path<String>) -> ApiResult {
    st.tokens.require(&req, AdminRole::Viewer)?;
    ok(&find_worker(&st, &id)?)
}

/// The answer of one node's scheduler to a control request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ControlResult {
    /// The node.
    pub node_id: String,
    /// Whether the command was applied.
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
}

async fn control(
    st: &AppState,
    node: &str,
    cmd: &SchedulerControl,
) -> Result<ControlResult, ApiError> {
    let timeout = Duration::from_millis(st.settings.control_timeout_ms);
    match st
        .bus
        .request_msg::<_, ControlReply>(subjects::control_scheduler(node), cmd, timeout)
        .await
    {
        Ok(r) => Ok(ControlResult {
            node_id: node.to_owned(),
            ok: r.ok,
            message: r.message,
        }),
        Err(BusError::Request { no_responders, .. }) => Ok(ControlResult {
            node_id: node.to_owned(),
            ok: false,
            message: if no_responders {
                "the node's scheduler does not listen for control requests".into()
            } else {
                format!(
                    "the node's scheduler did not answer within {} ms",
                    timeout.as_millis()
                )
            },
        }),
        Err(e) => Err(e.into()),
    }
}

async fn worker_control(req: HttpRequest, st: State, id: String, drain: bool) -> ApiResult {
    may_change(&req, &st, AdminRole::Admin)?;
    let w = find_worker(&st, &id)?;
    let cmd = if drain {
        SchedulerControl::DrainWorker {
            worker_id: w.worker_id.clone(),
        }
    } else {
        SchedulerControl::ResumeWorker {
            worker_id: w.worker_id.clone(),
        }
    };
    let r = control(&st, &w.node_id, &cmd).await?;
    tracing::info!(worker = %w.id, drain, ok = r.ok, message = %r.message, "worker control");
    applied(&r)
}

/// Stops sending batches to a worker; it finishes what it has.
#[utoipa::path(post, path = "/api/v1/workers/{id}/drain", tag = "workers",
    params(("id" = String, Path, description = "`<node_id>.<worker_id>`, or a worker id unique in the cluster")),
    responses(
        (status = 200, description = "Applied by the node's scheduler", body = ControlResult),
        (status = 400, description = "Invalid or ambiguous id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such worker", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The scheduler refused or did not answer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "NATS cannot be reached", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many changes from this client; `Retry-After` says when to retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn drain_worker(req: HttpRequest, st: State, id: web::Path<String>) -> ApiResult {
    worker_control(req, st, id.into_inner(), true).await
}

/// Sends batches to a drained worker again.
#[utoipa::path(post, path = "/api/v1/workers/{id}/resume", tag = "workers",
    params(("id" = String, Path, description = "`<node_id>.<worker_id>`, or a worker id unique in the cluster")),
    responses(
        (status = 200, description = "Applied by the node's scheduler", body = ControlResult),
        (status = 400, description = "Invalid or ambiguous id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such worker", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The scheduler refused or did not answer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "NATS cannot be reached", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many changes from this client; `Retry-After` says when to retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn resume_worker(req: HttpRequest, st: State, id: web::Path<String>) -> ApiResult {
    worker_control(req, st, id.into_inner(), false).await
}

// ---------------------------------------------------------------------------------------------
// cluster nodes

/// Sends a `ClusterControl` request to the cluster agent of node `id`.
async fn node_control(req: HttpRequest, st: State, id: String, drain: bool) -> ApiResult {
    may_change(&req, &st, AdminRole::Admin)?;
    if !subjects::is_valid_id(&id) {
        return Err(ApiError::BadRequest {
            detail: format!("{id:?} is not a node id"),
            field: Some("id".into()),
        });
    }
    let cmd = if drain {
        its_proto::ClusterControl::Drain
    } else {
        its_proto::ClusterControl::Resume
    };
    let timeout = Duration::from_millis(st.settings.control_timeout_ms);
    let r = match st
        .bus
        .request_msg::<_, ControlReply>(its_proto::cluster::control_cluster(&id), &cmd, timeout)
        .await
    {
        Ok(r) => r,
        Err(BusError::Request {
            no_responders: true,
            ..
        }) => {
            return Err(ApiError::NotFound(format!(
                "no cluster agent of node {id} listens (not running, or not in cluster mode)"
            )));
        }
        Err(BusError::Request { .. }) => {
            return Err(ApiError::Conflict(format!(
                "node {id} did not answer within {} ms",
                timeout.as_millis()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(node = %id, drain, ok = r.ok, message = %r.message, "node control");
    let out = ControlResult {
        node_id: id,
        ok: r.ok,
        message: r.message,
    };
    applied(&out)
}

/// Drains a cluster node: the placement leader moves its cameras to other nodes
/// (make-before-break), and the node reports `drained` in its heartbeat once it serves none.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/drain", tag = "cluster",
    params(("id" = String, Path, description = "Node id")),
    responses(
        (status = 200, description = "The node's cluster agent is draining", body = ControlResult),
        (status = 400, description = "Invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No cluster agent of that node listens", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The node refused or did not answer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "NATS cannot be reached", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many changes from this client; `Retry-After` says when to retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn drain_node(req: HttpRequest, st: State, id: web::Path<String>) -> ApiResult {
    node_control(req, st, id.into_inner(), true).await
}

/// Lets a drained cluster node take cameras again.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/resume", tag = "cluster",
    params(("id" = String, Path, description = "Node id")),
    responses(
        (status = 200, description = "The node's cluster agent takes cameras again", body = ControlResult),
        (status = 400, description = "Invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No cluster agent of that node listens", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The node refused or did not answer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "NATS cannot be reached", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many changes from this client; `Retry-After` says when to retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn resume_node(req: HttpRequest, st: State, id: web::Path<String>) -> ApiResult {
    node_control(req, st, id.into_inner(), false).await
}

// ---------------------------------------------------------------------------------------------
// scheduler

/// A node's scheduler: counters, queues, latency, breaker and batch sizes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SchedulerView {
    /// Node id.
    pub node_id: String,
    /// Frames received since the node started.
    pub frames_received: u64,
    /// Results published since the node started.
    pub results_published: u64,
    /// Frames queued or running.
    pub in_flight: u64,
    /// Drops since start, by reason.
    pub drops: BTreeMap<String, u64>,
    /// Queued frames by priority class.
    pub queue_depth: BTreeMap<String, u64>,
    /// Median capture-to-result latency over the last window, ms.
    pub latency_p50_ms: f64,
    /// 99th percentile capture-to-result latency over the last window, ms.
    pub latency_p99_ms: f64,
    /// Overload breaker state.
    pub breaker: String,
    /// Batches dispatched since start, by size.
    pub batch_sizes: BTreeMap<String, u64>,
    /// Age of the report, ms.
    pub age_ms: u64,
    /// The report is older than `admin.stale_after_ms`.
    pub stale: bool,
}

/// The scheduler of every node that reported.
#[utoipa::path(get, path = "/api/v1/scheduler", tag = "scheduler",
    responses(
        (status = 200, description = "One entry per node", body = Vec<SchedulerView>),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn get_scheduler(req: HttpRequest, st: State) -> ApiResult {
    st.tokens.require(&req, AdminRole::Viewer)?;
    let stale_after = st.view.opts.stale_after;
    let out: Vec<SchedulerView> = st
        .view
        .nodes()
        .into_iter()
        .map(|s| {
            let age = s.age();
            let n = s.value;
            SchedulerView {
                node_id: n.node_id,
                frames_received: n.frames_received,
                results_published: n.results_published,
                in_flight: n.in_flight,
                drops: n.drops,
                queue_depth: n.queue_depth,
                latency_p50_ms: n.latency_p50_ns as f64 / 1e6,
                latency_p99_ms: n.latency_p99_ns as f64 / 1e6,
                breaker: if n.breaker.is_empty() {
                    "closed".into()
                } else {
                    n.breaker
                },
                batch_sizes: n.batch_sizes,
                age_ms: ms(age),
                stale: age > stale_after,
            }
        })
        .collect();
    ok(&out)
}

/// Which node `PATCH /api/v1/scheduler` tunes, or `POST /api/v1/models/swap` swaps on.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NodeQuery {
    /// Only this node; default every node that reported.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub node: Option<String>,
}

/// The answers of the tuned nodes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TuneReply {
    /// One entry per node.
    pub results: Vec<ControlResult>,
}

/// Tunes the scheduler of every node that reported (or of `?node=`) at run time.
#[utoipa::path(patch, path = "/api/v1/scheduler", tag = "scheduler",
    params(NodeQuery),
    request_body = TuningInput,
    responses(
        (status = 200, description = "Every node applied it", body = TuneReply),
        (status = 400, description = "Malformed body or query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the operator role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such node, or no node reported yet", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A node refused or did not answer; `detail` says which", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within admin.request_timeout_ms", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "NATS cannot be reached", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many changes from this client; `Retry-After` says when to retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn patch_scheduler(
    req: HttpRequest,
    st: State,
    query: web::Query<NodeQuery>,
    payload: web::Payload,
) -> ApiResult {
    may_change(&req, &st, AdminRole::Operator)?;
    let targets = target_nodes(&st, query.node.as_deref())?;
    let input: TuningInput = read_json(&req, payload, &st.settings).await?;
    let tuning = input.validate()?;
    let cmd = SchedulerControl::Tune { tuning };
    let replies = futures::future::join_all(targets.iter().map(|n| control(&st, n, &cmd))).await;
    let results: Vec<ControlResult> = replies.into_iter().collect::<Result<_, _>>()?;
    tracing::info!(nodes = ?targets, applied = results.iter().filter(|r| r.ok).count(), "scheduler tuning");
    if let Some(bad) = results.iter().find(|r| !r.ok) {
        return Err(ApiError::Conflict(format!(
            "{} of {} node(s) applied the tuning; node {}: {}",
            results.iter().filter(|r| r.ok).count(),
            results.len(),
            bad.node_id,
            bad.message
        )));
    }
    ok(&TuneReply { results })
}

// ---------------------------------------------------------------------------------------------
// models

/// A model and the workers that run it, from the results seen.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoadedModel {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Workers (`<node_id>.<worker_id>`) whose latest result came from this model.
    pub workers: Vec<String>,
    /// Age of the newest result from this model, ms.
    pub last_result_age_ms: u64,
}

/// The models the workers are running.
#[utoipa::path(get, path = "/api/v1/models", tag = "models",
    responses(
        (status = 200, description = "Models in use", body = Vec<LoadedModel>),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn list_models(req: HttpRequest, st: State) -> ApiResult {
    st.tokens.require(&req, AdminRole::Viewer)?;
    let mut by_model: BTreeMap<(String, String), LoadedModel> = BTreeMap::new();
    for ((node, worker), m) in st.view.models() {
        let entry = by_model
            .entry((m.model.name.clone(), m.model.version.clone()))
            .or_insert_with(|| LoadedModel {
                name: m.model.name.clone(),
                version: m.model.version.clone(),
                workers: Vec::new(),
                last_result_age_ms: u64::MAX,
            });
        entry.workers.push(format!("{node}.{worker}"));
        entry.last_result_age_ms = entry.last_result_age_ms.min(ms(m.at.elapsed()));
    }
    ok(&by_model.into_values().collect::<Vec<_>>())
}

/// Longest time a node gets to load a model and switch to it (or `admin.control_timeout_ms`
/// when that is longer).
const SWAP_TIMEOUT: Duration = Duration::from_secs(30);

/// A model hot swap (`POST /api/v1/models/swap`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwapInput {
    /// Model directory (`model.toml` and its ONNX file) on the nodes' file system, absolute or
    /// relative to the node's working directory; 1 to 4096 bytes, no control characters.
    #[schema(min_length = 1, max_length = 4096)]
    pub model_dir: String,
    /// Only this worker of each node (`cpu-0`, …); default every worker, one after another.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub worker_id: Option<String>,
}

impl SwapInput {
    fn validate(&self) -> Result<(), ApiError> {
        if self.model_dir.is_empty() || self.model_dir.len() > 4096 {
            return Err(ApiError::invalid("model_dir", "give 1 to 4096 bytes"));
        }
        if self.model_dir.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "model_dir",
                "must not contain control characters",
            ));
        }
        if let Some(w) = &self.worker_id
            && !subjects::is_valid_id(w)
        {
            return Err(ApiError::invalid(
                "worker_id",
                "1 to 64 ASCII letters, digits, `-` or `_`",
            ));
        }
        Ok(())
    }
}

/// A worker and the model it runs after a swap.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SwappedWorker {
    /// Worker id on its node.
    pub worker_id: String,
    /// The model it runs now.
    pub model: ModelView,
}

/// The answer of one node to a swap.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SwapResult {
    /// The node.
    pub node_id: String,
    /// Whether every requested worker of the node switched.
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
    /// The workers that switched.
    pub workers: Vec<SwappedWorker>,
}

/// The answers of every node asked to swap.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SwapReply {
    /// One entry per node.
    pub results: Vec<SwapResult>,
}

async fn swap_on(
    st: &AppState,
    node: &str,
    cmd: &SchedulerControl,
) -> Result<(SwapResult, Option<SwapFailure>), ApiError> {
    let timeout = Duration::from_millis(st.settings.control_timeout_ms).max(SWAP_TIMEOUT);
    let reply = match st
        .bus
        .request_msg::<_, ModelSwapReply>(subjects::control_scheduler(node), cmd, timeout)
        .await
    {
        Ok(r) => r,
        Err(BusError::Request { no_responders, .. }) => ModelSwapReply {
            ok: false,
            message: if no_responders {
                "the node's scheduler does not listen for control requests".into()
            } else {
                format!("the node did not answer within {} ms", timeout.as_millis())
            },
            workers: Vec::new(),
            failure: None,
        },
        Err(e) => return Err(e.into()),
    };
    let failure = match (reply.ok, reply.failure) {
        (true, _) => None,
        // A node that does not know the request answers a plain refusal.
        (false, f) => Some(f.unwrap_or(SwapFailure::Unsupported)),
    };
    Ok((
        SwapResult {
            node_id: node.to_owned(),
            ok: reply.ok,
            message: reply.message,
            workers: reply
                .workers
                .into_iter()
                .map(|w| SwappedWorker {
                    worker_id: w.worker_id,
                    model: ModelView {
                        name: w.model.name,
                        version: w.model.version,
                    },
                })
                .collect(),
        },
        failure,
    ))
}

/// Loads another model on the workers of every node that reported (or of `?node=`), beside the
/// running one, and switches over between batches without dropping frames; the old model is
/// released. Results carry the new `model` from the first batch after the switch.
#[utoipa::path(post, path = "/api/v1/models/swap", tag = "models",
    params(NodeQuery),
    request_body = SwapInput,
    responses(
        (status = 200, description = "Every requested worker switched", body = SwapReply),
        (status = 400, description = "Malformed body or query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such node or worker, or no node reported yet", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within admin.request_timeout_ms", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A node cannot swap models or did not answer; `detail` says which", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid, or a node cannot load the model in `model_dir` (it keeps its model); `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many changes from this client; `Retry-After` says when to retry", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "NATS cannot be reached", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn swap_model(
    req: HttpRequest,
    st: State,
    query: web::Query<NodeQuery>,
    payload: web::Payload,
) -> ApiResult {
    may_change(&req, &st, AdminRole::Admin)?;
    let targets = target_nodes(&st, query.node.as_deref())?;
    let input: SwapInput = read_json(&req, payload, &st.settings).await?;
    input.validate()?;
    let cmd = SchedulerControl::SwapModel {
        model_dir: input.model_dir.clone(),
        worker_id: input.worker_id.clone(),
    };
    let replies = futures::future::join_all(targets.iter().map(|n| swap_on(&st, n, &cmd))).await;
    let replies: Vec<(SwapResult, Option<SwapFailure>)> =
        replies.into_iter().collect::<Result<_, _>>()?;
    let switched = replies.iter().filter(|(r, _)| r.ok).count();
    tracing::info!(nodes = ?targets, model_dir = %input.model_dir, switched, "model swap");
    if let Some((bad, failure)) = replies.iter().find(|(r, _)| !r.ok) {
        let detail = format!(
            "{switched} of {} node(s) switched; node {}: {}",
            replies.len(),
            bad.node_id,
            bad.message
        );
        return Err(match failure {
            Some(SwapFailure::BadModel) => ApiError::invalid("model_dir", detail),
            Some(SwapFailure::UnknownWorker) => ApiError::NotFound(detail),
            _ => ApiError::Conflict(detail),
        });
    }
    ok(&SwapReply {
        results: replies.into_iter().map(|(r, _)| r).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// probes, metrics, OpenAPI

/// Liveness.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses(
        (status = 200, description = "Alive", body = Health),
        (status = 401, description = "No valid token (when admin.protect_health is set)", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("bearer" = [])))]
pub(crate) async fn healthz(req: HttpRequest, st: State) -> ApiResult {
    if st.settings.protect_health {
        st.tokens.require(&req, AdminRole::Viewer)?;
    }
    ok(&Health {
        status: "ok".into(),
    })
}

/// Readiness and each check behind it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    /// All checks pass.
    pub ready: bool,
    /// Connected to NATS.
    pub nats_connected: bool,
    /// The camera registry bucket answers.
    pub registry_reachable: bool,
    /// A node or worker status was seen (or `admin.ready_requires_status` is off).
    pub status_seen: bool,
    /// What is missing, when not ready.
    pub detail: Option<String>,
}

/// Ready to serve: NATS connected, registry reachable, a node has reported.
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 401, description = "No valid token (when admin.protect_health is set)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not ready; the body says why", body = Readiness),
    ),
    security((), ("bearer" = [])))]
pub(crate) async fn readyz(req: HttpRequest, st: State) -> ApiResult {
    if st.settings.protect_health {
        st.tokens.require(&req, AdminRole::Viewer)?;
    }
    let nats_connected = st.bus.is_connected();
    let registry_reachable = nats_connected
        && tokio::time::timeout(Duration::from_secs(2), st.kv.get("readyz-probe"))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
    let status_seen = !st.settings.ready_requires_status || st.view.status_seen();
    let mut missing = Vec::new();
    if !nats_connected {
        missing.push("not connected to NATS");
    }
    if !registry_reachable {
        missing.push("the camera registry bucket does not answer");
    }
    if !status_seen {
        missing.push("no node has reported its status yet");
    }
    let ready = missing.is_empty();
    let body = Readiness {
        ready,
        nats_connected,
        registry_reachable,
        status_seen,
        detail: (!ready).then(|| missing.join("; ")),
    };
    Ok(json(
        if ready {
            actix_web::http::StatusCode::OK
        } else {
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    ))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "No valid token (when admin.protect_metrics is set)", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("bearer" = [])))]
pub(crate) async fn metrics(req: HttpRequest, st: State) -> ApiResult {
    if st.settings.protect_metrics {
        st.tokens.require(&req, AdminRole::Viewer)?;
    }
    let mut text = st
        .view
        .render_metrics(&st.bus.health().snapshot(), st.bus.is_connected());
    let mut http = crate::metrics::Exposition::default();
    st.http.render(&mut http);
    text.push_str(&http.finish());
    Ok(HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(text))
}

/// This document.
pub(crate) async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::openapi_json())
}

/// Unknown paths.
pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::NotFound(format!(
        "no endpoint {} {}",
        req.method(),
        req.path()
    )))
}

/// A known path with a method it does not serve.
pub(crate) async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .content_type(crate::problem::PROBLEM_JSON)
        .body(
            serde_json::to_string(&Problem {
                kind: "about:blank".into(),
                title: "Method Not Allowed".into(),
                status: 405,
                detail: format!("{} does not serve {}", req.path(), req.method()),
                field: None,
            })
            .unwrap_or_default(),
        )
}

/// The nodes a request addresses: the one named by `?node=` (which must have reported), or
/// every node that has reported.
fn target_nodes(st: &State, node: Option<&str>) -> Result<Vec<String>, ApiError> {
    let known: Vec<String> = st
        .view
        .nodes()
        .into_iter()
        .map(|n| n.value.node_id)
        .collect();
    match node {
        Some(n) if !subjects::is_valid_id(n) => {
            Err(ApiError::bad_field("node", "not a valid node id"))
        }
        Some(n) if !known.iter().any(|k| k == n) => {
            Err(ApiError::NotFound(format!("no node {n} has reported")))
        }
        Some(n) => Ok(vec![n.to_owned()]),
        None if known.is_empty() => Err(ApiError::NotFound("no node has reported yet".into())),
        None => Ok(known),
    }
}
