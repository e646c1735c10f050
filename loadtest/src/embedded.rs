//! A node started by the load test: a nats-server child and a real `Node` on its own thread
//! (an actix system), with the CPU worker or the simulated GPU.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use its_bus::LocalNatsServer;
use its_node::Node;
use tokio::sync::oneshot;

use crate::LoadError;
use crate::simgpu::{self, CostModel};

/// How to start the embedded node.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The simulated GPU, else the CPU worker.
    pub simulated: Option<CostModel>,
    /// Simulated GPUs.
    pub simulated_gpus: u32,
    /// Slots per simulated GPU.
    pub simulated_slots: u32,
    /// Model directory of the CPU worker.
    pub model_dir: Option<PathBuf>,
    /// Extra `key=value` settings.
    pub settings: Vec<String>,
}

/// A running embedded node.
#[derive(Debug)]
pub struct EmbeddedNode {
    server: LocalNatsServer,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<its_proto::NodeStatus, String>>>,
    /// The simulated GPU workers serving the frames (`simulated-gpu ...`); `None` for the
    /// node's own workers, which name their device in their status reports.
    pub worker: Option<String>,
}

/// The generated demo model, searched from the working directory up and from the executable
/// up.
pub fn find_demo_model() -> Option<PathBuf> {
    let rel = Path::new("models/generated/tiny-yolo");
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for s in starts {
        for dir in s.ancestors() {
            let c = dir.join(rel);
            if c.join("model.toml").exists() {
                return Some(c);
            }
        }
    }
    None
}

impl EmbeddedNode {
    /// Starts nats-server (`ITS_NATS_SERVER` or `nats-server` on PATH) and the node.
    pub fn start(opts: &EmbeddedOptions) -> Result<Self, LoadError> {
        let bin = std::env::var("ITS_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let server = LocalNatsServer::start(&bin, None)?;
        let mut overrides = vec![
            format!("nats.url={}", server.url()),
            "node.id=loadtest-node".into(),
            "cameras.synthetic_count=0".into(),
            "status.print=false".into(),
        ];
        let worker = match opts.simulated {
            Some(c) => Some(format!(
                "simulated-gpu {} x{} ({} slots each)",
                c.describe(),
                opts.simulated_gpus.max(1),
                opts.simulated_slots.max(1)
            )),
            None => {
                let model = match &opts.model_dir {
                    Some(m) => m.clone(),
                    None => find_demo_model().ok_or_else(|| {
                        LoadError::Settings(
                            "models/generated/tiny-yolo not found: run scripts/setup.sh or pass --model-dir".into(),
                        )
                    })?,
                };
                overrides.push(format!("engine.model_dir={}", model.display()));
                None
            }
        };
        overrides.extend(opts.settings.iter().cloned());
        let settings = node_settings(&overrides)?;
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let sim = opts
            .simulated
            .map(|c| (c, opts.simulated_gpus, opts.simulated_slots));
        let thread = std::thread::Builder::new()
            .name("embedded-node".into())
            .spawn(move || {
                actix::System::new().block_on(async move {
                    let workers = sim.map(|(c, g, s)| simgpu::start_workers(c, g, s));
                    let node = match Node::start_with_workers(settings, workers).await {
                        Ok(n) => {
                            let _ = ready_tx.send(Ok(()));
                            n
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return Err(e.to_string());
                        }
                    };
                    let _ = stop_rx.await;
                    node.shutdown()
                        .await
                        .map(|r| r.status)
                        .map_err(|e| e.to_string())
                })
            })
            .map_err(|e| LoadError::Node(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(LoadError::Node(e)),
            Err(_) => return Err(LoadError::Node("the node thread ended at start-up".into())),
        }
        Ok(EmbeddedNode {
            server,
            stop: Some(stop_tx),
            thread: Some(thread),
            worker,
        })
    }

    /// The NATS URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Shuts the node down in order; returns its final counters.
    pub fn stop(mut self) -> Result<its_proto::NodeStatus, LoadError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let t = self.thread.take().expect("stopped once");
        t.join()
            .map_err(|_| LoadError::Node("the node thread panicked".into()))?
            .map_err(LoadError::Node)
    }
}

/// Node settings from the defaults and `overrides` only (no its.toml, no environment), so a
/// developer's configuration cannot change a measurement.
fn node_settings(overrides: &[String]) -> Result<its_config::Settings, LoadError> {
    let empty =
        std::env::temp_dir().join(format!("its-loadtest-empty-{}.toml", std::process::id()));
    std::fs::write(&empty, "").map_err(|e| LoadError::Write {
        path: empty.display().to_string(),
        detail: e.to_string(),
    })?;
    let s = its_config::load(&its_config::Sources {
        file: Some(&empty),
        env: Default::default(),
        overrides: overrides.to_vec(),
    })
    .map_err(|e| LoadError::Settings(e.to_string()));
    let _ = std::fs::remove_file(&empty);
    s
}
