//! The camera supervisor: owns every camera actor of one ingest process, starts, restarts and
//! stops them as specs arrive, routes priority boosts, and answers a snapshot of all cameras.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use futures::StreamExt;
use its_proto::{CameraSpec, PriorityBoost, subjects};
use serde::Serialize;

use crate::actor::{
    Boost, CameraActor, CameraEnv, CameraSnapshot, GetSnapshot, Shutdown, StopCamera, WaitStopped,
};

/// Starts or restarts a camera with this spec (a disabled spec stops it). An unchanged spec
/// is a no-op.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ApplySpec(pub CameraSpec);

/// Stops and removes a camera.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RemoveCamera(pub String);

/// Stops every camera (the actors stay to answer snapshots); answers their final snapshots.
#[derive(Debug, Message)]
#[rtype(result = "Vec<CameraSnapshot>")]
pub struct StopAll;

/// Answers once every camera has stopped by itself (frame budget used up or source ended).
#[derive(Debug, Message)]
#[rtype(result = "Vec<CameraSnapshot>")]
pub struct WaitAllStopped;

/// Asks for a [`SupervisorSnapshot`].
#[derive(Debug, Message)]
#[rtype(result = "SupervisorSnapshot")]
pub struct GetSupervisorSnapshot;

/// Every camera of this ingest process, for the admin API and leak checks.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisorSnapshot {
    /// Ingest process id.
    pub ingest_id: String,
    /// One entry per camera the supervisor holds, sorted by id.
    pub cameras: Vec<CameraSnapshot>,
    /// Camera actors alive in this process (also ones being shut down).
    pub live_actors: usize,
    /// Camera tasks (capture, publication) alive in this process.
    pub live_tasks: usize,
}

/// Supervises the cameras of one ingest process.
pub struct CameraSupervisor {
    env: Arc<CameraEnv>,
    cameras: HashMap<String, (CameraSpec, Addr<CameraActor>)>,
    boosts: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for CameraSupervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSupervisor")
            .field("ingest_id", &self.env.ingest_id)
            .field("cameras", &self.cameras.len())
            .finish_non_exhaustive()
    }
}

impl CameraSupervisor {
    /// A supervisor with no cameras yet.
    pub fn new(env: CameraEnv) -> Self {
        CameraSupervisor {
            env: Arc::new(env),
            cameras: HashMap::new(),
            boosts: None,
        }
    }

    /// Live actor and task counts of this supervisor's cameras.
    pub fn live(&self) -> Arc<crate::LiveCounts> {
        self.env.live.clone()
    }
}

impl Actor for CameraSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let bus = self.env.bus.clone();
        let me = ctx.address();
        // Priority boosts for every camera arrive on one subscription and are routed here.
        self.boosts = Some(tokio::spawn(async move {
            let mut sub = match bus.subscribe(subjects::CONTROL_PRIORITY_ALL).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "priority boosts are unavailable");
                    return;
                }
            };
            while let Some(m) = sub.next().await {
                match its_proto::decode::<PriorityBoost>(&m.payload) {
                    Ok(b) if b.camera_id == subjects::last_token(m.subject.as_str()) => {
                        if me.try_send(RoutedBoost(b)).is_err() {
                            tracing::warn!("supervisor busy: priority boost dropped");
                        }
                    }
                    Ok(_) => {
                        tracing::warn!(subject = %m.subject, "priority boost for another camera id")
                    }
                    Err(e) => {
                        tracing::warn!(subject = %m.subject, error = %e, "unreadable priority boost")
                    }
                }
            }
        }));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(b) = self.boosts.take() {
            b.abort();
        }
        for (_, (_, addr)) in self.cameras.drain() {
            addr.do_send(Shutdown);
        }
    }
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct RoutedBoost(PriorityBoost);

impl Handler<RoutedBoost> for CameraSupervisor {
    type Result = ();
    fn handle(&mut self, RoutedBoost(b): RoutedBoost, _: &mut Context<Self>) {
        if let Some((_, addr)) = self.cameras.get(&b.camera_id) {
            addr.do_send(Boost(b));
        }
    }
}

impl Handler<ApplySpec> for CameraSupervisor {
    type Result = ();
    fn handle(&mut self, ApplySpec(spec): ApplySpec, _: &mut Context<Self>) {
        if let Some((old, addr)) = self.cameras.get(&spec.id) {
            if *old == spec {
                return;
            }
            addr.do_send(Shutdown);
            self.cameras.remove(&spec.id);
        }
        if !spec.enabled {
            return;
        }
        tracing::info!(camera = %spec.id, url = %spec.redacted_url(), "starting camera");
        let addr = CameraActor::new(spec.clone(), self.env.clone()).start();
        self.cameras.insert(spec.id.clone(), (spec, addr));
    }
}

impl Handler<RemoveCamera> for CameraSupervisor {
    type Result = ();
    fn handle(&mut self, RemoveCamera(id): RemoveCamera, _: &mut Context<Self>) {
        if let Some((_, addr)) = self.cameras.remove(&id) {
            tracing::info!(camera = %id, "removing camera");
            addr.do_send(Shutdown);
        }
    }
}

fn collect(res: Vec<Result<CameraSnapshot, MailboxError>>) -> Vec<CameraSnapshot> {
    let mut v: Vec<CameraSnapshot> = res.into_iter().filter_map(Result::ok).collect();
    v.sort_by(|a, b| a.camera_id.cmp(&b.camera_id));
    v
}

impl Handler<StopAll> for CameraSupervisor {
    type Result = ResponseFuture<Vec<CameraSnapshot>>;
    fn handle(&mut self, _: StopAll, _: &mut Context<Self>) -> Self::Result {
        let stops: Vec<_> = self
            .cameras
            .values()
            .map(|(_, a)| a.send(StopCamera))
            .collect();
        Box::pin(async move { collect(futures::future::join_all(stops).await) })
    }
}

impl Handler<WaitAllStopped> for CameraSupervisor {
    type Result = ResponseFuture<Vec<CameraSnapshot>>;
    fn handle(&mut self, _: WaitAllStopped, _: &mut Context<Self>) -> Self::Result {
        let waits: Vec<_> = self
            .cameras
            .values()
            .map(|(_, a)| a.send(WaitStopped))
            .collect();
        Box::pin(async move { collect(futures::future::join_all(waits).await) })
    }
}

impl Handler<GetSupervisorSnapshot> for CameraSupervisor {
    type Result = ResponseFuture<SupervisorSnapshot>;
    fn handle(&mut self, _: GetSupervisorSnapshot, _: &mut Context<Self>) -> Self::Result {
        let snaps: Vec<_> = self
            .cameras
            .values()
            .map(|(_, a)| a.send(GetSnapshot))
            .collect();
        let env = self.env.clone();
        Box::pin(async move {
            let cameras = collect(futures::future::join_all(snaps).await);
            SupervisorSnapshot {
                ingest_id: env.ingest_id.clone(),
                cameras,
                live_actors: env.live.actors(),
                live_tasks: env.live.tasks(),
            }
        })
    }
}
