//! One node's cluster agent: heartbeat, leader contention, placement when leading, and the set
//! of cameras this node must serve.
//!
//! The node and camera buckets are mirrored in memory by watches ([`crate::mirror`]); the
//! assignments are read once per round (a node must see a move away from it within a tick), and
//! the leader applies its own writes to what it read.
//!
//! Every `tick` the agent
//! 1. writes its [`NodeInfo`] heartbeat;
//! 2. ticks the [`LeaderElector`]; as leader it reads nodes, the camera registry and the
//!    assignments, runs [`place`] and writes each changed [`Assignment`] with its lease
//!    term as `fence` (and deletes assignments of cameras that left the registry);
//! 3. reads the lease term (into its [`FenceFilter`]) and the assignments, obeys those whose
//!    fence is not stale, and publishes the cameras assigned to it on a `watch` channel. A camera
//!    that moves away stays in the set for `2 × handover` more (make-before-break: the new node
//!    subscribes first), and the moves that concern this node go to its [`ResultGate`], which
//!    decides per frame which of the two nodes publishes the result (see [`crate::handover`]).
//!
//! A drain arrives as a [`ClusterControl`] request on `its.control.cluster.<node_id>`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use its_bus::{Bus, BusError, Kv};
use its_proto::cluster::{
    ASSIGNMENTS_BUCKET, DEAD_AFTER_HEARTBEATS, LEADER_BUCKET, LEADER_KEY, NODES_BUCKET,
};
use its_proto::{
    Assignment, CAMERAS_BUCKET, CameraSpec, ClusterControl, ControlReply, LeaderLease, NodeInfo,
    SCHEMA_VERSION,
};
use tokio::sync::watch;

use crate::fence::{FenceFilter, FenceVerdict};
use crate::handover::{ResultGate, Window, Windows};
use crate::lease::{LeaderElector, Role};
use crate::membership;
use crate::mirror::Mirror;
use crate::placement::{CameraDemand, PlacementParams, place};

/// Settings of one agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node's id.
    pub node_id: String,
    /// Estimated capacity, frames per second.
    pub capacity_fps: f64,
    /// GPUs on the node.
    pub gpus: u32,
    /// Interval of heartbeats and placement rounds.
    pub tick: Duration,
    /// Leader lease time to live.
    pub lease_ttl: Duration,
    /// Make-before-break window: the new node publishes frames captured from `handover` after
    /// the move was written, the previous node keeps serving for `2 × handover` after it saw
    /// the move. Must be longer than `tick` and equal on every node.
    pub handover: Duration,
    /// Placement tuning.
    pub params: PlacementParams,
}

/// What the agent reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentState {
    /// Cameras this node serves now (assigned plus those in their handover window).
    pub cameras: BTreeSet<String>,
    /// Whether this node holds the leader lease.
    pub leader: bool,
    /// Newest lease term seen.
    pub fence: u64,
}

/// Handle to a running agent.
pub struct ClusterAgent {
    state: watch::Receiver<AgentState>,
    cameras: watch::Receiver<BTreeSet<String>>,
    windows: watch::Receiver<BTreeMap<String, Window>>,
    confirmed_until: Arc<AtomicU64>,
    overloaded: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ClusterAgent {
    /// Opens the buckets and starts the agent task.
    pub async fn start(bus: Bus, config: AgentConfig) -> Result<Self, BusError> {
        let nodes: Kv<NodeInfo> = bus.kv(NODES_BUCKET, 1).await?;
        let assignments: Kv<Assignment> = bus.kv(ASSIGNMENTS_BUCKET, 1).await?;
        let nodes_seen = Mirror::open(nodes.clone()).await?;
        let cameras = Mirror::open(bus.kv::<CameraSpec>(CAMERAS_BUCKET, 1).await?).await?;
        let lease: Kv<LeaderLease> = bus.kv(LEADER_BUCKET, 1).await?;
        let elector = LeaderElector::new(&bus, &config.node_id, config.lease_ttl).await?;
        let control = bus
            .subscribe(&its_proto::cluster::control_cluster(&config.node_id))
            .await?;
        let (tx, rx) = watch::channel(AgentState::default());
        let (cameras_tx, cameras_rx) = watch::channel(BTreeSet::new());
        let (windows_tx, windows_rx) = watch::channel(BTreeMap::new());
        let confirmed_until = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let overloaded = Arc::new(AtomicBool::new(false));
        let run = Run {
            bus,
            config,
            nodes,
            nodes_seen,
            assignments,
            cameras,
            lease,
            elector,
            fence: FenceFilter::new(),
            draining: false,
            leaving: BTreeMap::new(),
            written: BTreeMap::new(),
            overloaded: overloaded.clone(),
            state: tx,
            cameras_tx,
            windows_tx,
            publication: Windows::new(),
            confirmed_until: confirmed_until.clone(),
        };
        let task = tokio::spawn(run.run(control, stop_rx));
        Ok(Self {
            state: rx,
            cameras: cameras_rx,
            windows: windows_rx,
            confirmed_until,
            overloaded,
            stop: Some(stop_tx),
            task,
        })
    }

    /// A receiver of the agent's state; changes whenever the camera set or role changes.
    pub fn state(&self) -> watch::Receiver<AgentState> {
        self.state.clone()
    }

    /// A receiver of the cameras this node serves (for the intake's subscriptions).
    pub fn cameras(&self) -> watch::Receiver<BTreeSet<String>> {
        self.cameras.clone()
    }

    /// The gate for this node's result publisher: which results of cameras in a handover this
    /// node publishes, and first-result-wins per (camera, seq).
    pub fn result_gate(&self) -> ResultGate {
        ResultGate::new(self.windows.clone()).confirmed_by(self.confirmed_until.clone())
    }

    /// Reports sustained overload (the breaker's verdict); the leader then moves cameras away.
    pub fn set_overloaded(&self, overloaded: bool) {
        self.overloaded.store(overloaded, Ordering::Relaxed);
    }

    /// Stops the agent, resigning the lease if held so another node takes over at once.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Stops the agent abruptly, as a crash would: no resignation, heartbeats just cease.
    pub fn abort(self) {
        self.task.abort();
    }
}

struct Run {
    bus: Bus,
    config: AgentConfig,
    nodes: Kv<NodeInfo>,
    nodes_seen: Mirror<NodeInfo>,
    assignments: Kv<Assignment>,
    cameras: Mirror<CameraSpec>,
    lease: Kv<LeaderLease>,
    elector: LeaderElector,
    fence: FenceFilter,
    draining: bool,
    leaving: BTreeMap<String, Instant>,
    /// As leader: the node and term of every assignment this node wrote. An entry in the bucket
    /// with an older term than ours was written by a deposed leader after we took over, and is
    /// not taken even as a stickiness hint.
    written: BTreeMap<String, (String, u64)>,
    overloaded: Arc<AtomicBool>,
    state: watch::Sender<AgentState>,
    cameras_tx: watch::Sender<BTreeSet<String>>,
    windows_tx: watch::Sender<BTreeMap<String, Window>>,
    /// Capture time up to which this node's results are confirmed (see
    /// [`ResultGate::confirmed_by`]).
    confirmed_until: Arc<AtomicU64>,
    publication: Windows,
}

impl Run {
    async fn run(
        mut self,
        mut control: its_bus::Subscriber,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(msg) = control.next() => {
                    let reply = match its_proto::decode::<ClusterControl>(&msg.payload) {
                        Ok(ClusterControl::Drain) => {
                            self.draining = true;
                            ControlReply { ok: true, message: "draining".into() }
                        }
                        Ok(ClusterControl::Resume) => {
                            self.draining = false;
                            ControlReply { ok: true, message: "resumed".into() }
                        }
                        Err(e) => ControlReply { ok: false, message: format!("bad request: {e}") },
                    };
                    if let Some(to) = msg.reply {
                        let _ = self.bus.publish_msg(to.to_string(), &reply).await;
                    }
                    tick.reset_immediately();
                }
                _ = tick.tick() => {
                    if let Err(e) = self.round().await {
                        tracing::warn!(node = %self.config.node_id, error = %e, "cluster round failed");
                    }
                }
            }
        }
        let _ = self.elector.resign().await;
        let _ = self.nodes.delete(&self.config.node_id).await;
    }

    async fn round(&mut self) -> Result<(), BusError> {
        let serving = self.state.borrow().cameras.len();
        let stamp = crate::now_ns();
        let info = NodeInfo {
            v: SCHEMA_VERSION,
            node_id: self.config.node_id.clone(),
            gpus: self.config.gpus,
            capacity_fps: self.config.capacity_fps,
            load_fps: 0.0,
            cameras: u32::try_from(serving).unwrap_or(u32::MAX),
            draining: self.draining,
            drained: self.draining && serving == 0,
            overloaded: self.overloaded.load(Ordering::Relaxed),
            heartbeat_at_ns: stamp,
            heartbeat_ms: u32::try_from(self.config.tick.as_millis()).unwrap_or(u32::MAX),
        };
        self.nodes.put(&self.config.node_id, &info).await?;

        let role = self.elector.tick().await.unwrap_or(Role::Follower {
            leader: None,
            fence: 0,
        });
        // Read every round (not mirrored): a node must learn of a move away from it within a
        // tick, and a watch whose consumer sat on a lost server can lag for seconds.
        let mut current = self.read_assignments().await?;
        if let Role::Leader { fence } = role {
            self.fence.observe_lease(fence);
            self.lead(fence, &mut current).await?;
        }
        if let Some(e) = self.lease.get(LEADER_KEY).await?
            && let Some(l) = &e.value
        {
            self.fence.observe_lease(l.term_at(e.revision));
        }
        let now = Instant::now();
        let obeyed: Vec<&Assignment> = current
            .values()
            .filter(|a| self.fence.judge(a.fence) == FenceVerdict::Obey)
            .collect();
        let mine: BTreeSet<String> = obeyed
            .iter()
            .filter(|a| a.node_id == self.config.node_id)
            .map(|a| a.camera_id.clone())
            .collect();
        let handover_ns = u64::try_from(self.config.handover.as_nanos()).unwrap_or(u64::MAX);
        for a in &obeyed {
            self.publication
                .observe(a, &self.config.node_id, handover_ns);
        }
        let assigned: BTreeSet<&str> = current.keys().map(String::as_str).collect();
        self.publication
            .prune(crate::now_ns(), &|c| assigned.contains(c));
        let windows = self.publication.get();
        // The gate learns of a move before the intake's subscriptions change.
        self.windows_tx.send_if_modified(|w| {
            if w == windows {
                false
            } else {
                w.clone_from(windows);
                true
            }
        });
        // Heartbeat written at `stamp` and assignments read since: the leader cannot judge us
        // dead (and give our cameras away, splitting at its write) before stamp + DEAD_AFTER
        // ticks, so what we publish up to one tick short of that is still ours.
        let tick_ns = u64::try_from(self.config.tick.as_nanos()).unwrap_or(u64::MAX);
        let confirmed = stamp.saturating_add(
            tick_ns.saturating_mul(u64::from(DEAD_AFTER_HEARTBEATS.saturating_sub(1))),
        );
        self.confirmed_until.fetch_max(confirmed, Ordering::Relaxed);
        let before = self.state.borrow().cameras.clone();
        for gone in before.difference(&mine) {
            self.leaving.entry(gone.clone()).or_insert(now);
        }
        let keep = self.config.handover * 2;
        self.leaving
            .retain(|c, t| !mine.contains(c) && now.duration_since(*t) < keep);
        let mut cameras = mine;
        cameras.extend(self.leaving.keys().cloned());
        let next = AgentState {
            cameras,
            leader: matches!(role, Role::Leader { .. }),
            fence: self.fence.newest(),
        };
        self.cameras_tx.send_if_modified(|c| {
            if *c == next.cameras {
                false
            } else {
                c.clone_from(&next.cameras);
                true
            }
        });
        self.state.send_if_modified(|s| {
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
        Ok(())
    }

    async fn read_assignments(&self) -> Result<BTreeMap<String, Assignment>, BusError> {
        let mut out = BTreeMap::new();
        // From the stream's leader: a replica's direct get can lag behind a move written
        // long enough ago that its cutover has passed, and this node would then publish
        // frames that are the new node's.
        for key in self.assignments.keys().await? {
            if let Some(e) = self.assignments.get_from_leader(&key).await?
                && let Some(a) = e.value
            {
                out.insert(key, a);
            }
        }
        Ok(out)
    }

    async fn lead(
        &mut self,
        fence: u64,
        current: &mut BTreeMap<String, Assignment>,
    ) -> Result<(), BusError> {
        let now = crate::now_ns();
        let views: Vec<_> = self
            .nodes_seen
            .values()
            .values()
            .map(|info| membership::view(info, now))
            .collect();
        let demand: Vec<CameraDemand> = self
            .cameras
            .values()
            .into_values()
            .filter(|spec| spec.enabled)
            .map(|spec| CameraDemand {
                id: spec.id,
                priority: spec.priority,
                fps: f64::from(spec.fps),
            })
            .collect();
        // What we wrote under an older term is forgotten: a new term starts from the bucket.
        self.written.retain(|_, (_, f)| *f == fence);
        // The current assignment as placement input. An entry with an older term than ours is
        // the previous leader's: taken as a stickiness hint, unless we already wrote that camera
        // under our term, in which case a deposed leader overwrote it late and we keep ours.
        let assigned: BTreeMap<String, String> = current
            .iter()
            .map(|(c, a)| {
                let node = match self.written.get(c) {
                    Some((mine, _)) if a.fence < fence => mine.clone(),
                    _ => a.node_id.clone(),
                };
                (c.clone(), node)
            })
            .collect();
        let alive: BTreeSet<&str> = views
            .iter()
            .filter(|v| v.alive)
            .map(|v| v.id.as_str())
            .collect();
        let placement = place(&views, &demand, &assigned, self.config.params);
        // moves, and every assignment still carrying an older term (a new leader takes them
        // over under its own fence)
        for (camera, node) in &placement.assignments {
            let old = current.get(camera);
            if old.is_some_and(|a| a.fence == fence && &a.node_id == node) {
                continue;
            }
            // A handover only from a live node: a dead one publishes nothing, so the new node
            // must publish every frame at once (see crate::handover).
            let previous = assigned
                .get(camera)
                .filter(|n| *n != node && alive.contains(n.as_str()))
                .cloned();
            // Stamped just before its own put, not at the start of the round: the previous
            // node publishes until `written_at_ns + handover`, and the earlier the stamp
            // before the write is visible, the less of that window it has to see the move.
            let written_at_ns = crate::now_ns();
            let a = Assignment {
                v: SCHEMA_VERSION,
                camera_id: camera.clone(),
                node_id: node.clone(),
                previous_node: previous,
                fence,
                written_at_ns,
            };
            tracing::debug!(%camera, to = %node, previous = ?a.previous_node, fence, written_at_ns, "assignment");
            self.assignments.put(camera, &a).await?;
            self.written.insert(camera.clone(), (node.clone(), fence));
            current.insert(camera.clone(), a);
        }
        let gone: Vec<String> = current
            .keys()
            .filter(|c| !placement.assignments.contains_key(*c) && !placement.unplaced.contains(*c))
            .cloned()
            .collect();
        for c in gone {
            self.assignments.delete(&c).await?;
            self.written.remove(&c);
            current.remove(&c);
        }
        if !placement.moves.is_empty() {
            tracing::info!(
                node = %self.config.node_id,
                fence,
                moves = placement.moves.len(),
                "placement written"
            );
        }
        Ok(())
    }
}
