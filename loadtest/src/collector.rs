//! The collector: reads results, drop events and status reports into the ledger.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use futures::StreamExt;
use its_bus::{Bus, Subscriber};
use its_proto::{DetectionMsg, EventMsg, NodeStatus, WorkerStatus, subjects};
use tokio::task::JoinHandle;

use crate::LoadError;
use crate::ledger::Ledger;

/// Subject of every error event.
const ERRORS_ALL: &str = "its.events.error.*";
/// Subject of every node status.
const NODE_STATUS_ALL: &str = "its.status.node.*";
/// Subject of every worker status.
const WORKER_STATUS_ALL: &str = "its.status.worker.>";

/// The running subscriptions.
#[derive(Debug)]
pub struct Collector {
    tasks: Vec<JoinHandle<()>>,
    undecodable: Arc<AtomicU64>,
}

impl Collector {
    /// Subscribes (and flushes, so nothing published afterwards is missed) and starts
    /// reading into `ledger`.
    pub async fn start(bus: &Bus, ledger: &Ledger) -> Result<Collector, LoadError> {
        let undecodable = Arc::new(AtomicU64::new(0));
        let results = bus.subscribe(subjects::RESULTS_ALL).await?;
        let errors = bus.subscribe(ERRORS_ALL).await?;
        let nodes = bus.subscribe(NODE_STATUS_ALL).await?;
        let workers = bus.subscribe(WORKER_STATUS_ALL).await?;
        bus.flush().await?;
        let tasks = vec![
            spawn(results, ledger, &undecodable, |l, bytes, at| {
                its_proto::decode::<DetectionMsg>(bytes).map(|m| l.result(&m, at))
            }),
            spawn(errors, ledger, &undecodable, |l, bytes, at| {
                its_proto::decode::<EventMsg>(bytes).map(|m| l.event(&m, at))
            }),
            spawn(nodes, ledger, &undecodable, |l, bytes, _| {
                its_proto::decode::<NodeStatus>(bytes).map(|m| l.node_status(m))
            }),
            spawn(workers, ledger, &undecodable, |l, bytes, _| {
                its_proto::decode::<WorkerStatus>(bytes).map(|m| l.worker_status(&m))
            }),
        ];
        Ok(Collector { tasks, undecodable })
    }

    /// Messages that did not decode as what their subject promises.
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Relaxed)
    }

    /// Stops reading.
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

fn spawn(
    mut sub: Subscriber,
    ledger: &Ledger,
    undecodable: &Arc<AtomicU64>,
    handle: impl Fn(&Ledger, &[u8], Instant) -> Result<(), its_proto::ProtoError> + Send + 'static,
) -> JoinHandle<()> {
    let ledger = ledger.clone();
    let undecodable = undecodable.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let at = Instant::now();
            if let Err(e) = handle(&ledger, &msg.payload, at)
                && undecodable.fetch_add(1, Relaxed) == 0
            {
                tracing::warn!(subject = %msg.subject, error = %e, "undecodable message");
            }
        }
    })
}
