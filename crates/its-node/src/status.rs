//! The status reporter: a line per interval on stderr and NodeStatus on NATS (WorkerStatus is
//! published every 500 ms by `its_scheduler::run_worker_status`).

use std::time::{Duration, Instant};

use its_bus::Bus;
use its_config::StatusSettings;
use its_proto::{NodeReport, NodeStatus, subjects};
use its_scheduler::Accounting;

/// One status line, computed from two consecutive NodeStatus reports.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatusLine(pub(crate) String);

impl StatusLine {
    /// Formats the change from `prev` to `now` over `dt`.
    pub(crate) fn new(prev: &NodeStatus, now: &NodeStatus, dt: Duration, uptime: Duration) -> Self {
        let secs = dt.as_secs_f64().max(1e-3);
        let fps_in = (now.frames_received - prev.frames_received) as f64 / secs;
        let fps_out = (now.results_published - prev.results_published) as f64 / secs;
        let drops = if now.drops.is_empty() {
            "none".to_owned()
        } else {
            now.drops
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        StatusLine(format!(
            "[its {:>5.0}s] in {:>6.1} fps  out {:>6.1} fps | frames in {} out {} in-flight {} | latency p50 {:.1} ms p99 {:.1} ms | drops: {}",
            uptime.as_secs_f64(),
            fps_in,
            fps_out,
            now.frames_received,
            now.results_published,
            now.in_flight,
            now.latency_p50_ns as f64 / 1e6,
            now.latency_p99_ns as f64 / 1e6,
            drops,
        ))
    }
}

/// The report published on `its.status.node.<node_id>`: the ledger and the health of the
/// node's NATS connection.
pub(crate) fn node_report(status: NodeStatus, bus: &Bus) -> NodeReport {
    NodeReport {
        status,
        nats_slow_consumer_events: bus.health().snapshot().slow_consumers,
    }
}

pub(crate) async fn report(settings: StatusSettings, acct: Accounting, bus: Bus) {
    let start = Instant::now();
    let interval = Duration::from_millis(settings.interval_ms);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut prev = acct.status(false);
    let mut prev_at = Instant::now();
    loop {
        ticker.tick().await;
        let now = acct.status(true);
        let line = StatusLine::new(&prev, &now, prev_at.elapsed(), start.elapsed());
        if settings.print {
            eprintln!("{}", line.0);
        }
        if let Err(e) = bus
            .publish_msg(
                subjects::node_status(&now.node_id),
                &node_report(now.clone(), &bus),
            )
            .await
        {
            tracing::warn!(error = %e, "cannot publish node status");
        }
        prev = now;
        prev_at = Instant::now();
    }
}
