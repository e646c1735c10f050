//! The admin REST API of ITS Camera AI: camera registry CRUD, worker drain, scheduler tuning,
//! assignments, models, probes, Prometheus metrics and the OpenAPI document.
//!
//! Architecture invariant: this is the only crate that imports actix-web. It reads the cluster
//! from NATS (status, results and error events), writes the camera registry (JetStream KV) and
//! sends scheduler control requests; it never calls into another process directly.

mod api;
mod auth;
mod limits;
pub mod metrics;
mod problem;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use its_bus::Bus;
use its_config::AdminSettings;
use its_proto::registry::CAMERAS_BUCKET;
use utoipa::OpenApi;

pub use api::scheduler_tuning_body;
pub use limits::{MUTATION_BURST, MUTATIONS_PER_SEC};
pub use problem::Problem;

/// Errors of starting the admin server.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The settings are unsafe or unusable.
    #[error("admin API: {0}")]
    Config(String),
    /// The tokens file could not be read or parsed.
    #[error("admin API: tokens file {path}: {detail}")]
    TokensFile {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The listen address could not be bound.
    #[error("admin API: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// NATS or the registry bucket is unavailable.
    #[error(transparent)]
    Bus(#[from] its_bus::BusError),
}

/// History kept per camera in the registry bucket (the same as the ingest's registry watcher,
/// so the bucket is the same whichever process creates it).
const REGISTRY_HISTORY: i64 = 1;

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ITS Camera AI admin API",
        description = "Operate an ITS Camera AI cluster: cameras, workers, scheduler, models, probes and metrics. Errors are application/problem+json with the field at fault. Bearer tokens carry a role: viewer (GET), operator (camera and tuning changes), admin (everything)."
    ),
    paths(
        api::list_cameras,
        api::create_camera,
        api::get_camera,
        api::replace_camera,
        api::delete_camera,
        api::camera_status,
        api::assignments,
        api::list_workers,
        api::get_worker,
        api::drain_worker,
        api::resume_worker,
        api::drain_node,
        api::resume_node,
        api::get_scheduler,
        api::patch_scheduler,
        api::list_models,
        api::swap_model,
        api::healthz,
        api::readyz,
        api::metrics,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "cameras", description = "The camera registry"),
        (name = "cluster", description = "Placement"),
        (name = "workers", description = "Inference workers"),
        (name = "scheduler", description = "Frame scheduling"),
        (name = "models", description = "Detector models"),
        (name = "probes", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3.1 document of this API, as served on `/openapi.json`.
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// A running admin server.
pub struct AdminServer {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

impl AdminServer {
    /// Starts the server on `settings.bind`, reading the cluster from `bus`. Refuses a
    /// non-loopback address without tokens. Must run inside an actix (or tokio) runtime.
    pub async fn start(settings: &AdminSettings, bus: Bus) -> Result<AdminServer, AdminError> {
        let bind: SocketAddr = settings.bind.parse().map_err(|_| {
            AdminError::Config(format!(
                "admin.bind {:?} is not an address and port",
                settings.bind
            ))
        })?;
        let tokens = auth::Tokens::load(settings)?;
        if tokens.is_empty() {
            if !is_loopback(&bind) {
                return Err(AdminError::Config(format!(
                    "refusing to listen on {bind} without tokens: configure admin.tokens or admin.tokens_file, or bind to 127.0.0.1"
                )));
            }
            tracing::warn!(%bind, "admin API has no tokens: every local caller has the admin role");
        }
        let kv = bus
            .kv::<its_proto::CameraSpec>(CAMERAS_BUCKET, REGISTRY_HISTORY)
            .await?;
        let view = Arc::new(view::ClusterView::new(view::ViewOptions {
            per_camera_metrics: settings.per_camera_metrics,
            max_camera_series: settings.max_camera_series,
            stale_after: Duration::from_millis(settings.stale_after_ms),
        }));
        // Subscribe before serving, so the first status reports are not missed.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let watcher = {
            let (bus, view) = (bus.clone(), view.clone());
            tokio::spawn(async move {
                let r = view::watch(bus, view, ready_tx).await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "admin view stopped");
                }
            })
        };
        ready_rx
            .await
            .map_err(|_| AdminError::Config("the status subscription failed".into()))??;

        let http = Arc::new(metrics::HttpCounters::default());
        let state = web::Data::new(api::AppState {
            settings: settings.clone(),
            bus,
            kv,
            view,
            tokens,
            http: http.clone(),
            limiter: limits::RateLimiter::new(limits::MUTATION_BURST, limits::MUTATIONS_PER_SEC),
        });
        let query_cfg = web::QueryConfig::default().error_handler(|e, _| {
            problem::ApiError::BadRequest {
                detail: format!("bad query: {e}"),
                field: None,
            }
            .into()
        });
        let path_cfg = web::PathConfig::default().error_handler(|e, _| {
            problem::ApiError::BadRequest {
                detail: format!("bad path: {e}"),
                field: Some("id".into()),
            }
            .into()
        });
        let server = HttpServer::new(move || {
            let http = http.clone();
            App::new()
                .wrap_fn(move |req, srv| {
                    use actix_web::dev::Service as _;
                    let route = req
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".to_owned());
                    let method = req.method().clone();
                    let http = http.clone();
                    let fut = srv.call(req);
                    async move {
                        let res = fut.await?;
                        http.record(route, method.as_str(), res.status().as_u16());
                        Ok(res)
                    }
                })
                .app_data(state.clone())
                .app_data(query_cfg.clone())
                .app_data(path_cfg.clone())
                .service(
                    web::resource("/api/v1/cameras")
                        .route(web::get().to(api::list_cameras))
                        .route(web::post().to(api::create_camera))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/api/v1/cameras/{id}")
                        .route(web::get().to(api::get_camera))
                        .route(web::put().to(api::replace_camera))
                        .route(web::delete().to(api::delete_camera))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/api/v1/cameras/{id}/status")
                        .route(web::get().to(api::camera_status))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/api/v1/assignments")
                        .route(web::get().to(api::assignments))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/api/v1/workers")
                        .route(web::get().to(api::list_workers))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/api/v1/workers/{id}")
                        .route(web::get().to(api::get_worker))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/api/v1/workers/{id}/drain")
                        .route(web::post().to(api::drain_worker))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/api/v1/workers/{id}/resume")
                        .route(web::post().to(api::resume_worker))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/api/v1/nodes/{id}/drain")
                        .route(web::post().to(api::drain_node))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/api/v1/nodes/{id}/resume")
                        .route(web::post().to(api::resume_node))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/api/v1/scheduler")
                        .route(web::get().to(api::get_scheduler))
                        .route(web::patch().to(api::patch_scheduler))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/api/v1/models")
                        .route(web::get().to(api::list_models))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/api/v1/models/swap")
                        .route(web::post().to(api::swap_model))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/healthz")
                        .route(web::get().to(api::healthz))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/readyz")
                        .route(web::get().to(api::readyz))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/metrics")
                        .route(web::get().to(api::metrics))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .service(
                    web::resource("/openapi.json")
                        .route(web::get().to(api::openapi))
                        .default_service(web::to(api::method_not_allowed)),
                )
                .default_service(web::to(api::not_found))
        })
        .workers(settings.workers as usize)
        .disable_signals()
        .client_request_timeout(Duration::from_millis(settings.request_timeout_ms))
        .client_disconnect_timeout(Duration::from_secs(2))
        .keep_alive(Duration::from_secs(30))
        .shutdown_timeout(5)
        .bind(bind)
        .map_err(|source| AdminError::Bind {
            addr: bind.to_string(),
            source,
        })?;
        let addr = server.addrs().first().copied().unwrap_or(bind);
        let server = server.run();
        let handle = server.handle();
        let server = tokio::spawn(server);
        tracing::info!(%addr, "admin API listening");
        Ok(AdminServer {
            addr,
            handle,
            server,
            watcher,
        })
    }

    /// The address the server listens on (the real port when `bind` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, lets running requests finish (5 s at most) and stops
    /// reading the bus.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.server.await;
        self.watcher.abort();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_operation_declares_auth_and_errors() {
        let doc: serde_json::Value = serde_json::from_str(&super::openapi_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 16);
        for (path, ops) in paths {
            for (method, op) in ops.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.contains_key("401"),
                    "{method} {path} does not declare 401"
                );
                assert!(
                    op["security"].as_array().is_some_and(|s| !s.is_empty()),
                    "{method} {path} has no security requirement"
                );
                if path.contains("{id}") {
                    assert_eq!(op["parameters"][0]["name"], "id", "{method} {path}");
                }
                for (code, r) in responses {
                    if code.starts_with('4') || code.starts_with('5') {
                        let content = r["content"].as_object().unwrap();
                        assert!(
                            content.contains_key("application/problem+json") || path == "/readyz",
                            "{method} {path} {code} is not a problem"
                        );
                    }
                }
            }
        }
    }
}
