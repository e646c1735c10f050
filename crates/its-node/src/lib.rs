//! One node of ITS Camera AI: the wiring of config, NATS, cameras, scheduler and workers.
//!
//! [`Node::start`] brings a node up inside an actix system; [`Node::shutdown`] takes it down in
//! order: cameras stop, the frame subscription drains, queued and running frames finish, NATS
//! drains. The `its` binary and the end-to-end tests both use this API.

mod status;
pub mod telemetry;

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use its_bus::{Bus, LocalNatsServer};
use its_camera::{
    ApplySpec, CameraEnv, CameraSnapshot, CameraSupervisor, Registry, RegistryOptions,
    RestartPolicy, StopAll, WaitAllStopped,
};
use its_config::{BackendSetting, NativePrecisionSetting, Provider, Settings};
use its_engine::{ExecutionProviderKind, OrtOptions};
use its_proto::{CameraSpec, NodeStatus, Priority, subjects};
use its_scheduler::{
    AbandonQueued, Accounting, Drain, SchedulerActor, SchedulerOptions, WorkerHandle,
};
use its_worker::{Backend, EngineChoice, NativePrecision, Worker, WorkerOptions};
use tokio::sync::oneshot;

/// How long shutdown waits for queued and running frames to be served (the chart's
/// `terminationGracePeriodSeconds` allows for it).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// After the drain ran out and the queues were dropped: how long batches already at a worker
/// still have to return.
const RUNNING_BATCH_GRACE: Duration = Duration::from_secs(10);

/// Errors of starting or stopping a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// NATS could not be reached or started.
    #[error(transparent)]
    Bus(#[from] its_bus::BusError),
    /// The worker could not start (model or ONNX Runtime missing).
    #[error(transparent)]
    Worker(#[from] its_worker::WorkerError),
    /// A camera source could not be prepared.
    #[error("camera {camera}: {source}")]
    Camera {
        /// Camera id.
        camera: String,
        /// Why.
        source: its_camera::CameraError,
    },
    /// The admin API could not start.
    #[error(transparent)]
    Admin(#[from] its_admin::AdminError),
    /// The admin API's own NATS connection (`[admin.nats]`) failed.
    #[error("admin API's NATS identity (admin.nats): {0}")]
    AdminBus(its_bus::BusError),
    /// Shutdown did not complete in time.
    #[error("shutdown: {0}")]
    Shutdown(String),
}

/// What a node reports when it has stopped.
#[derive(Debug, Clone)]
pub struct ShutdownReport {
    /// Final state of each camera.
    pub cameras: Vec<CameraSnapshot>,
    /// Final counters.
    pub status: NodeStatus,
}

/// A running node.
pub struct Node {
    settings: Settings,
    bus: Bus,
    acct: Accounting,
    scheduler: Addr<SchedulerActor>,
    cameras: Addr<CameraSupervisor>,
    registry: Option<Registry>,
    intake_stop: Option<oneshot::Sender<()>>,
    intake_done: Option<tokio::task::JoinHandle<()>>,
    /// The frame intake's own connection, bounded by `nats.intake_capacity` and
    /// `nats.intake_max_bytes`.
    intake_bus: Bus,
    /// Frames that connection's subscription holds at most.
    intake_frames: usize,
    status_task: Option<tokio::task::JoinHandle<()>>,
    /// The scheduler control server and the worker status publisher.
    scheduler_tasks: Vec<tokio::task::JoinHandle<()>>,
    embedded: Option<LocalNatsServer>,
    admin: Option<its_admin::AdminServer>,
    /// The admin API's own connection, when `[admin.nats]` gives it an identity.
    admin_bus: Option<Bus>,
    /// The cluster agent, when `cluster.enabled`.
    cluster: Option<its_cluster::ClusterAgent>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.settings.node.id)
            .finish_non_exhaustive()
    }
}

/// The ONNX Runtime options of the `[engine]` settings.
pub fn ort_options(s: &Settings) -> OrtOptions {
    OrtOptions {
        ort_dylib: (!s.engine.ort_dylib.as_os_str().is_empty()).then(|| s.engine.ort_dylib.clone()),
        intra_threads: s.engine.intra_threads as usize,
        execution_providers: s
            .engine
            .providers
            .iter()
            .map(|p| match p {
                Provider::Cpu => ExecutionProviderKind::Cpu,
                Provider::Cuda => ExecutionProviderKind::Cuda,
                Provider::Tensorrt => ExecutionProviderKind::Tensorrt,
            })
            .collect(),
        allow_fallback: s.engine.allow_fallback,
        device_id: s.engine.gpu_device,
    }
}

/// The engine choice of the `[engine]` settings: backend, native precision and device, and the
/// scheduler's batch sizes, which the native engine builds its execution contexts for at start.
pub fn engine_choice(s: &Settings) -> EngineChoice {
    EngineChoice {
        backend: match s.engine.backend {
            BackendSetting::Auto => Backend::Auto,
            BackendSetting::Ort => Backend::Ort,
            BackendSetting::Native => Backend::Native,
            BackendSetting::Gpu => Backend::Gpu,
        },
        native_precision: match s.engine.native_precision {
            NativePrecisionSetting::Fp16 => NativePrecision::Fp16,
            NativePrecisionSetting::Fp32 => NativePrecision::Fp32,
            NativePrecisionSetting::Tf32 => NativePrecision::Tf32,
        },
        gpu_device: s.engine.gpu_device,
        batch_sizes: s
            .scheduler
            .effective()
            .batch_sizes
            .iter()
            .map(|b| *b as usize)
            .collect(),
        gpu_max_frame: (0, 0),
    }
}

/// The GPUs that get a worker of their own on the GPU frame path (`engine.backend` = `gpu`,
/// or `auto` with a usable GPU): `engine.gpu_devices`, or every GPU when that is empty.
/// `None`: the workers run on the CPU stages (`scheduler.workers` of them).
pub fn gpu_worker_devices(s: &Settings) -> Option<Vec<u32>> {
    match s.engine.backend {
        BackendSetting::Gpu => {}
        BackendSetting::Auto if its_worker::native_unavailable(s.engine.gpu_device).is_none() => {}
        _ => return None,
    }
    if !s.engine.gpu_devices.is_empty() {
        return Some(s.engine.gpu_devices.clone());
    }
    match its_gpu::device_count() {
        Ok(n) if n > 0 => Some((0..n as u32).collect()),
        // No GPU: a `gpu` backend fails in the worker's start with the reason.
        _ => Some(vec![s.engine.gpu_device]),
    }
}

fn scheduler_options(s: &Settings) -> SchedulerOptions {
    let sc = &s.scheduler.effective();
    SchedulerOptions {
        deadlines: Priority::ALL.map(|p| Duration::from_millis(sc.deadline_ms(p))),
        batch_sizes: sc.batch_sizes.iter().map(|b| *b as usize).collect(),
        min_batch_timeout: Duration::from_millis(sc.min_batch_timeout_ms),
        max_batch_timeout: Duration::from_millis(sc.max_batch_timeout_ms),
        queue_capacity: sc.queue_capacity,
        late_policy: match sc.late_policy {
            its_config::LatePolicySetting::Drop => its_scheduler::LatePolicy::Drop,
            its_config::LatePolicySetting::Deliver => its_scheduler::LatePolicy::Deliver,
        },
        breaker: its_scheduler::breaker::BreakerConfig {
            window: Duration::from_millis(sc.breaker_window_ms),
            min_samples: sc.breaker_min_samples,
            shed_miss_ratio: sc.shed_miss_ratio,
            hold: Duration::from_millis(sc.breaker_hold_ms),
            ..Default::default()
        },
        reorder_hold: Duration::from_millis(sc.reorder_hold_ms),
        reorder_capacity: sc.reorder_capacity,
    }
}

impl Node {
    /// Starts a node: NATS (a local nats-server child when `nats.url` is empty), the CPU
    /// worker, the scheduler and its frame intake, the synthetic cameras, and the status
    /// reporter. Must run inside an actix system.
    pub async fn start(settings: Settings) -> Result<Node, NodeError> {
        Self::start_with_workers(settings, None).await
    }

    /// As [`start`](Self::start), but the scheduler serves `workers` instead of the CPU worker
    /// of `[engine]` when given (the load generator's simulated GPU workers use this hook).
    pub async fn start_with_workers(
        settings: Settings,
        workers: Option<Vec<WorkerHandle>>,
    ) -> Result<Node, NodeError> {
        let node_id = settings.node.id.clone();
        let (url, embedded) = if settings.nats.url.trim().is_empty() {
            let store = (!settings.nats.embedded_store_dir.is_empty())
                .then(|| PathBuf::from(&settings.nats.embedded_store_dir));
            let server = LocalNatsServer::start_on(
                &settings.nats.server_bin,
                store.as_deref(),
                settings.nats.embedded_port,
                &[],
            )?;
            tracing::info!(url = %server.url(), "started embedded nats-server (set nats.url to use your own)");
            (server.url(), Some(server))
        } else {
            (settings.nats.url.clone(), None)
        };
        let bus = its_bus::connect(&settings.nats, &url, &format!("its-node-{node_id}")).await?;
        // The admin API first: an unsafe admin setting stops start-up before anything runs.
        // With an identity of its own (`[admin.nats]`) it uses a second connection to the
        // same server(s), so it can hold the `admin` role while the node holds `node`.
        let (admin, admin_bus) = if settings.admin.enabled {
            let admin_bus = if settings.admin.nats.is_set() {
                let admin_nats = settings.admin.nats.connection(&settings.nats);
                let name = format!("its-node-{node_id}-admin");
                let connected = its_bus::connect(&admin_nats, &url, &name).await;
                Some(connected.map_err(|e| {
                    NodeError::AdminBus(match e {
                        // the file is the admin's, not the node's
                        its_bus::BusError::File {
                            what: "nats.creds_file",
                            path,
                            source,
                        } => its_bus::BusError::File {
                            what: "admin.nats.creds_file",
                            path,
                            source,
                        },
                        e => e,
                    })
                })?)
            } else {
                None
            };
            let admin_uses = admin_bus.clone().unwrap_or_else(|| bus.clone());
            let server = its_admin::AdminServer::start(&settings.admin, admin_uses).await?;
            (Some(server), admin_bus)
        } else {
            (None, None)
        };
        let acct = Accounting::new(&node_id, bus.clone());

        // Workers that can switch models at run time (`swap_model` control requests).
        let mut model_switches = Vec::new();
        let workers = match workers {
            Some(workers) => workers,
            None => {
                // The GPU frame path: one worker per GPU (`gpu-<ordinal>`), engine.gpu_streams
                // lanes each. Otherwise scheduler.workers CPU workers (`cpu-<n>`), each its own
                // worker id and engine.cpu_workers threads.
                let plan: Vec<(String, EngineChoice, u32)> = match gpu_worker_devices(&settings) {
                    Some(devices) => devices
                        .into_iter()
                        .map(|d| {
                            let mut choice = engine_choice(&settings);
                            choice.gpu_device = d;
                            (format!("gpu-{d}"), choice, settings.engine.gpu_streams)
                        })
                        .collect(),
                    None => (0..settings.scheduler.workers)
                        .map(|n| {
                            let threads = settings.engine.cpu_workers;
                            (format!("cpu-{n}"), engine_choice(&settings), threads)
                        })
                        .collect(),
                };
                let mut workers = Vec::new();
                for (id, engine, threads) in plan {
                    let (worker_addr, info, switch) = Worker::start_swappable(&WorkerOptions {
                        id,
                        model_dir: settings.engine.model_dir.clone(),
                        ort: ort_options(&settings),
                        engine,
                        threads,
                        max_frame_dim: settings.engine.max_frame_dim,
                        faults: Default::default(),
                    })?;
                    model_switches.push((info.id.clone(), switch.recipient()));
                    workers.push(WorkerHandle {
                        info,
                        addr: worker_addr.recipient(),
                    });
                }
                workers
            }
        };
        // Cluster mode: the agent starts first, so the scheduler's publisher can consult its
        // result gate (which node publishes each frame of a camera in a handover).
        let agent = if settings.cluster.enabled {
            let c = &settings.cluster;
            Some(
                its_cluster::ClusterAgent::start(
                    bus.clone(),
                    its_cluster::AgentConfig {
                        node_id: node_id.clone(),
                        capacity_fps: c.capacity_fps,
                        gpus: c.gpus,
                        tick: Duration::from_millis(c.tick_ms),
                        lease_ttl: Duration::from_millis(c.lease_ttl_ms),
                        handover: Duration::from_millis(c.handover_ms),
                        params: its_cluster::PlacementParams {
                            imbalance: c.imbalance,
                            ..Default::default()
                        },
                    },
                )
                .await?,
            )
        } else {
            None
        };
        let mut scheduler =
            SchedulerActor::new(scheduler_options(&settings), acct.clone(), workers);
        if let Some(agent) = &agent {
            let gate = agent.result_gate();
            scheduler = scheduler.with_result_filter(std::sync::Arc::new(move |m| {
                match gate.judge(&m.camera_id, m.seq, m.captured_at_ns) {
                    its_cluster::Verdict::Publish => None,
                    its_cluster::Verdict::OtherNode => {
                        Some("handover: the other node publishes it")
                    }
                    its_cluster::Verdict::Duplicate => Some("duplicate of a published result"),
                    its_cluster::Verdict::Unconfirmed => {
                        Some("this node's cluster view is too old to be sure it owns the camera")
                    }
                }
            }));
        }
        let scheduler = scheduler.start();
        let scheduler_tasks = vec![
            actix::spawn(its_scheduler::run_control_with_models(
                bus.clone(),
                node_id.clone(),
                scheduler.clone(),
                model_switches,
            )),
            actix::spawn(its_scheduler::run_worker_status(
                bus.clone(),
                scheduler.clone(),
                Duration::from_millis(500),
            )),
        ];

        let (stop_tx, stop_rx) = oneshot::channel();
        // The frame intake reads through a connection of its own, whose subscription buffers
        // at most nats.intake_capacity frames (its slow-consumer events count in bus.health()).
        let intake_frames = settings.nats.intake_frames(bus.max_payload());
        tracing::info!(
            frames = intake_frames,
            server_max_payload = bus.max_payload(),
            "frame intake buffers at most {intake_frames} frames (nats.intake_capacity, \
             nats.intake_max_bytes)"
        );
        let intake_bus = bus
            .bounded_sibling(
                &settings.nats,
                &format!("its-node-{node_id}-intake"),
                intake_frames,
            )
            .await?;
        let intake_opts = its_scheduler::IntakeOptions::new(settings.scheduler.max_frame_bytes)
            .with_camera_rate(its_scheduler::CameraRate::per_second(
                settings.scheduler.max_camera_fps,
                settings.scheduler.camera_burst_frames,
            ));
        // Cluster mode: the intake follows the cameras the placement leader assigns here.
        let (intake_done, cluster) = if let Some(agent) = agent {
            let intake = actix::spawn(its_scheduler::run_intake_assigned(
                intake_bus.clone(),
                agent.cameras(),
                scheduler.clone(),
                acct.clone(),
                intake_opts,
                stop_rx,
            ));
            (intake, Some(agent))
        } else {
            let sub = intake_bus.subscribe(subjects::FRAMES_ALL).await?;
            // Not a flush (that only writes to the socket): the server has registered the
            // subscription before start returns, so a frame published after it is delivered.
            sync_with_server(&intake_bus, "the frame subscription").await;
            let intake = actix::spawn(its_scheduler::run_intake(
                sub,
                scheduler.clone(),
                acct.clone(),
                intake_opts,
                stop_rx,
            ));
            (intake, None)
        };

        let (cameras, registry) = start_cameras(&settings, &bus).await?;
        let status_task = actix::spawn(status::report(
            settings.status.clone(),
            acct.clone(),
            bus.clone(),
        ));
        tracing::info!(node = %node_id, registry = registry.is_some(), "node running");
        Ok(Node {
            settings,
            bus,
            acct,
            scheduler,
            cameras,
            registry,
            intake_stop: Some(stop_tx),
            intake_done: Some(intake_done),
            intake_bus,
            intake_frames,
            status_task: Some(status_task),
            scheduler_tasks,
            embedded,
            admin,
            admin_bus,
            cluster,
        })
    }

    /// Where the admin API listens, when `admin.enabled`.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(|a| a.local_addr())
    }

    /// The bus this node uses.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The admin API's own connection, when `[admin.nats]` gives it an identity (otherwise the
    /// admin API uses [`bus`](Self::bus)).
    pub fn admin_bus(&self) -> Option<&Bus> {
        self.admin_bus.as_ref()
    }

    /// Frames the frame intake's subscription holds at most: `nats.intake_capacity`, lowered by
    /// `nats.intake_max_bytes` over the server's `max_payload`.
    pub fn intake_frames(&self) -> usize {
        self.intake_frames
    }

    /// The node's counters now.
    pub fn status(&self) -> NodeStatus {
        self.acct.status(false)
    }

    /// Waits until every camera has used up its frame budget (`cameras.max_frames`).
    pub async fn cameras_finished(&self) -> Vec<CameraSnapshot> {
        self.cameras.send(WaitAllStopped).await.unwrap_or_default()
    }

    /// Stops the node in order and reports the final counters.
    pub async fn shutdown(mut self) -> Result<ShutdownReport, NodeError> {
        tracing::info!("shutting down: stopping cameras");
        let cameras = self.cameras.send(StopAll).await.unwrap_or_default();
        if let Some(r) = self.registry.take() {
            r.stop().await;
        }
        self.bus.flush().await?;
        if let Some(agent) = self.cluster.take() {
            // resigns the lease and removes the heartbeat, so the cameras move at once
            agent.stop().await;
        }
        tracing::info!("draining the frame subscription");
        // Every frame the cameras published must be read before the intake unsubscribes: a
        // round trip on the cameras' connection (the server has routed their frames to the
        // intake's connection: it keeps no order between two connections, and a flush does
        // not wait for it), then one on the intake's (those frames are in its subscription's
        // buffer, which the intake reads to the end after the stop).
        sync_with_server(&self.bus, "the cameras' last frames").await;
        sync_with_server(&self.intake_bus, "the frames routed to the intake").await;
        if let Some(stop) = self.intake_stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.intake_done.take() {
            tokio::time::timeout(Duration::from_secs(30), done)
                .await
                .map_err(|_| NodeError::Shutdown("frame intake did not drain within 30 s".into()))?
                .map_err(|e| NodeError::Shutdown(format!("frame intake failed: {e}")))?;
        }
        tracing::info!(
            in_flight = self.acct.in_flight(),
            "finishing queued and running frames"
        );
        match tokio::time::timeout(DRAIN_TIMEOUT, self.scheduler.send(Drain)).await {
            Ok(r) => r.map_err(|e| NodeError::Shutdown(format!("scheduler: {e}")))?,
            Err(_) => {
                // Out of time: what is still queued is counted as dropped (so the ledger
                // stays whole); batches already at a worker get a little longer.
                let left = self
                    .scheduler
                    .send(AbandonQueued {
                        reason: format!(
                            "not served within the {} s shutdown drain",
                            DRAIN_TIMEOUT.as_secs()
                        ),
                    })
                    .await
                    .map_err(|e| NodeError::Shutdown(format!("scheduler: {e}")))?;
                tracing::warn!(
                    in_flight = self.acct.in_flight(),
                    "shutdown drain ran out of time after {} s: {left}",
                    DRAIN_TIMEOUT.as_secs()
                );
                tokio::time::timeout(RUNNING_BATCH_GRACE, self.acct.wait_settled())
                    .await
                    .map_err(|_| {
                        NodeError::Shutdown(format!(
                            "{} frame(s) still in flight {} s after the shutdown drain ran out \
                             ({left})",
                            self.acct.in_flight(),
                            RUNNING_BATCH_GRACE.as_secs()
                        ))
                    })?;
            }
        }
        if let Some(t) = self.status_task.take() {
            t.abort();
        }
        for t in self.scheduler_tasks.drain(..) {
            t.abort();
        }
        // StopAll answered once every camera's queue was published, so its counters are final.
        let status = self.acct.status(false);
        self.bus
            .publish_msg(
                subjects::node_status(&self.settings.node.id),
                &status::node_report(status.clone(), &self.bus),
            )
            .await?;
        if let Some(admin) = self.admin.take() {
            admin.stop().await;
        }
        // The admin's own connection once the admin stopped; a failure there is reported
        // after the node's connections drained, so results are never held back by it.
        let admin_drained = match self.admin_bus.take() {
            Some(bus) => bus.drain().await.map_err(NodeError::AdminBus),
            None => Ok(()),
        };
        tracing::info!("draining nats");
        self.intake_bus.drain().await?;
        // Returns once every result, event and the final status reached the server.
        self.bus.drain().await?;
        drop(self.embedded.take());
        admin_drained?;
        Ok(ShutdownReport { cameras, status })
    }
}

/// A round trip through the server on `bus` ([`Bus::round_trip`]). When the
/// server does not answer in time, it warns that `what` may be incomplete and goes on.
async fn sync_with_server(bus: &Bus, what: &str) {
    if let Err(e) = bus.round_trip().await {
        tracing::warn!(
            error = %e,
            "the server did not answer a round trip: {what} may not be complete"
        );
    }
}

/// The camera environment of the `[cameras]` settings.
pub fn camera_env(settings: &Settings, bus: &Bus) -> CameraEnv {
    let c = &settings.cameras;
    let mut env = CameraEnv::new(bus.clone(), settings.node.id.clone());
    env.source.read_timeout = Duration::from_millis(c.read_timeout_ms);
    env.source.ffmpeg_bin = c.ffmpeg_bin.clone();
    env.source.tls_ca_file = (!c.tls_ca_file.is_empty()).then(|| PathBuf::from(&c.tls_ca_file));
    env.source.synthetic_loop_frames = c.loop_frames;
    env.restart = RestartPolicy {
        initial: Duration::from_millis(c.backoff_initial_ms),
        max: Duration::from_millis(c.backoff_max_ms),
        quarantine_failures: c.quarantine_failures,
        quarantine_window: Duration::from_millis(c.quarantine_window_ms),
        quarantine_for: Duration::from_millis(c.quarantine_ms),
        ..RestartPolicy::default()
    };
    env.queue_capacity = c.queue_capacity as usize;
    env.max_frames = c.max_frames;
    env
}

/// Starts the camera supervisor with the synthetic cameras of the settings, and the registry
/// watcher when `cameras.registry` is set.
async fn start_cameras(
    settings: &Settings,
    bus: &Bus,
) -> Result<(Addr<CameraSupervisor>, Option<Registry>), NodeError> {
    let c = &settings.cameras;
    let supervisor = CameraSupervisor::new(camera_env(settings, bus)).start();
    for (n, id) in c.camera_ids().into_iter().enumerate() {
        let mut spec = CameraSpec::new(id, "synthetic://road", c.fps as f32);
        spec.width = Some(c.width);
        spec.height = Some(c.height);
        spec.seed = c.seed + n as u64;
        spec.jpeg_quality = c.jpeg_quality;
        spec.priority = c.priority;
        supervisor.do_send(ApplySpec(spec));
    }
    let registry = if c.registry {
        let opts = RegistryOptions {
            ingest_id: settings.node.id.clone(),
            lease_ttl: Duration::from_millis(c.lease_ttl_ms),
            max_cameras: c.max_cameras as usize,
        };
        Some(Registry::start(bus, supervisor.clone(), opts).await?)
    } else {
        None
    };
    Ok((supervisor, registry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_settings_reach_the_worker() {
        let mut s = Settings::default();
        let c = engine_choice(&s);
        assert_eq!(
            (c.backend, c.native_precision, c.gpu_device),
            (Backend::Auto, NativePrecision::Fp16, 0)
        );
        assert_eq!(c.batch_sizes, vec![1, 4, 8, 16, 32]);
        s.engine.backend = BackendSetting::Native;
        s.engine.native_precision = NativePrecisionSetting::Tf32;
        s.engine.gpu_device = 3;
        s.scheduler.batch_sizes = vec![2, 6];
        let c = engine_choice(&s);
        assert_eq!(
            (c.backend, c.native_precision, c.gpu_device),
            (Backend::Native, NativePrecision::Tf32, 3)
        );
        assert_eq!(c.batch_sizes, vec![2, 6]);
        assert_eq!(ort_options(&s).device_id, 3);
    }
}
