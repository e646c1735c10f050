//! The report: JSON (`--json FILE`) and Markdown, from the same structure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use its_proto::NodeStatus;
use serde::Serialize;

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// Percentiles of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let q = |v: f64| h.value_at_quantile(v) as f64 / 1e3;
        Percentiles {
            count: h.len(),
            mean_ms: h.mean() / 1e3,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: h.max() as f64 / 1e3,
        }
    }
}

/// Counts and rates over the whole run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Frames published by the simulated cameras.
    pub sent: u64,
    /// Frames answered by a DetectionMsg.
    pub answered: u64,
    /// Frames reported dropped by an error event.
    pub dropped: u64,
    /// Frames neither answered nor reported dropped by the end of the drain grace period.
    pub unaccounted: u64,
    /// Frames whose publish failed in this tool (never sent; not in `sent`).
    pub send_failed: u64,
    /// Results or drop events for a frame already settled (the node settled it twice).
    pub settled_twice: u64,
    /// Results for one of our cameras with a seq never sent.
    pub unknown_seq: u64,
    /// Results for cameras this run did not simulate (ignored).
    pub foreign_results: u64,
    /// Drop events about our cameras without a usable seq.
    pub unmatched_drop_events: u64,
    /// Results flagged `late`.
    pub flagged_late: u64,
    /// Results flagged `out_of_order`.
    pub flagged_out_of_order: u64,
    /// Mean batch size of the answered frames.
    pub mean_batch_size: f64,
    /// Mean node-side queue time of the answered frames, ms.
    pub mean_node_queue_ms: f64,
    /// Frames sent per second over the load phase.
    pub fps_in: f64,
    /// Results per second over the load phase.
    pub fps_out: f64,
    /// Worst delay of a frame behind its scheduled send time, ms (the generator's own lag).
    pub generator_max_lag_ms: f64,
    /// Frames sent more than one frame interval behind schedule.
    pub generator_late_sends: u64,
}

/// One camera's figures.
#[derive(Debug, Clone, Serialize)]
pub struct CameraRow {
    /// Camera id.
    pub camera: String,
    /// Priority class.
    pub priority: String,
    /// Resolution label.
    pub resolution: String,
    /// Frames sent.
    pub sent: u64,
    /// Frames answered.
    pub answered: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Frames unaccounted.
    pub unaccounted: u64,
    /// Latency.
    pub latency_ms: Percentiles,
}

/// Fairness across cameras.
#[derive(Debug, Clone, Serialize)]
pub struct Fairness {
    /// Jain's index of the per-camera served ratio (answered / sent): 1 = all served alike.
    pub jain_served_ratio: f64,
    /// Lowest served ratio of a camera.
    pub min_served_ratio: f64,
    /// Highest served ratio of a camera.
    pub max_served_ratio: f64,
    /// Jain's index of 1 / per-camera p99 latency: 1 = all cameras see the same tail.
    pub jain_p99: f64,
    /// Lowest per-camera p99, ms.
    pub min_camera_p99_ms: f64,
    /// Highest per-camera p99, ms.
    pub max_camera_p99_ms: f64,
}

/// Per-second series (index = seconds since the start of the load).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    /// Second.
    pub second: Vec<u64>,
    /// Frames sent in that second.
    pub sent: Vec<u64>,
    /// Results received in that second.
    pub answered: Vec<u64>,
    /// Drop events received in that second.
    pub dropped: Vec<u64>,
    /// Median latency of the results received in that second, ms.
    pub p50_ms: Vec<f64>,
    /// p99 latency of the results received in that second, ms.
    pub p99_ms: Vec<f64>,
    /// Largest latency in that second, ms.
    pub max_ms: Vec<f64>,
}

/// A node's counters over the run (last NodeStatus minus the first seen).
#[derive(Debug, Clone, Serialize)]
pub struct NodeDelta {
    /// Node id.
    pub node: String,
    /// Seconds between the two reports.
    pub seconds: f64,
    /// Frames received.
    pub frames_received: u64,
    /// Results published.
    pub results_published: u64,
    /// Drops by reason.
    pub drops: BTreeMap<String, u64>,
    /// In flight at the last report.
    pub in_flight_last: u64,
    /// Overload breaker state at the last report.
    pub breaker_last: String,
    /// Batches by size.
    pub batch_sizes: BTreeMap<String, u64>,
}

impl NodeDelta {
    /// The change from `first` to `last`.
    pub fn between(first: &NodeStatus, last: &NodeStatus) -> Self {
        let diff = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            b.iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(*a.get(k).unwrap_or(&0))))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        NodeDelta {
            node: last.node_id.clone(),
            seconds: last.at_ns.saturating_sub(first.at_ns) as f64 / 1e9,
            frames_received: last.frames_received.saturating_sub(first.frames_received),
            results_published: last
                .results_published
                .saturating_sub(first.results_published),
            drops: diff(&first.drops, &last.drops),
            in_flight_last: last.in_flight,
            breaker_last: last.breaker.clone(),
            batch_sizes: diff(&first.batch_sizes, &last.batch_sizes),
        }
    }
}

/// One worker's load, from its WorkerStatus reports.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    /// Node id.
    pub node: String,
    /// Worker id.
    pub worker: String,
    /// `cpu`, a GPU name, or `simulated-gpu ...`.
    pub device: String,
    /// Batch slots.
    pub slots_total: u32,
    /// Reports received.
    pub samples: u64,
    /// Mean of slots_busy / slots_total over the reports.
    pub mean_busy_slots_fraction: f64,
    /// Mean device utilisation, when the worker reports it.
    pub mean_utilisation: Option<f64>,
    /// Highest device utilisation, when reported.
    pub max_utilisation: Option<f64>,
    /// Highest device memory in use, when reported.
    pub max_memory_bytes: Option<u64>,
    /// Frames done per second between the first and last report.
    pub frames_per_s: f64,
    /// Mean of the reported median batch service times (reports with batches only), ms.
    pub batch_p50_ms_mean: f64,
    /// Highest p99 batch service time reported, ms.
    pub batch_p99_ms_max: f64,
}

/// One ramp step.
#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    /// Cameras running.
    pub cameras: u32,
    /// Frames sent in the measuring window.
    pub sent: u64,
    /// Of those answered.
    pub answered: u64,
    /// Of those dropped.
    pub dropped: u64,
    /// Of those still pending when the row was made.
    pub pending: u64,
    /// Latency of the window.
    pub latency_ms: Percentiles,
    /// Whether the step met the bounds (None: not judged, the ramp stopped before).
    pub passed: Option<bool>,
}

/// The ramp's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RampReport {
    /// The p99 bound, ms.
    pub p99_bound_ms: f64,
    /// Highest drop share allowed in a passing step, percent.
    pub max_drop_pct: f64,
    /// The steps, in order.
    pub steps: Vec<StepRow>,
    /// The highest camera count that met the bounds (None: not even the first step).
    pub max_cameras_meeting_bound: Option<u32>,
}

/// One process's memory over a soak.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessMemory {
    /// Process id.
    pub pid: u32,
    /// Its name (`/proc/PID/comm`).
    pub name: String,
    /// Seconds since the start of the load, per sample.
    pub t_s: Vec<f64>,
    /// Resident set size per sample, bytes.
    pub rss_bytes: Vec<u64>,
    /// RSS at the end of the warm-up, bytes.
    pub rss_after_warmup: u64,
    /// Last RSS, bytes.
    pub rss_last: u64,
    /// Highest RSS, bytes.
    pub rss_max: u64,
    /// Least-squares slope of RSS after the warm-up, MiB per hour.
    pub slope_mib_per_hour: f64,
    /// Whether RSS grew after the warm-up by more than max(16 MiB, 10 %).
    pub grows: bool,
}

/// Memory over the run.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Warm-up excluded from the growth verdict, seconds.
    pub warmup_s: f64,
    /// The processes sampled.
    pub processes: Vec<ProcessMemory>,
}

/// The settings of the run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSettings {
    /// `fixed`, `ramp` or `soak`.
    pub mode: String,
    /// Cameras (fixed and soak), or the last step's count (ramp).
    pub cameras: u32,
    /// Frames per second per camera.
    pub fps: f64,
    /// Length of the load phase, seconds.
    pub duration_s: f64,
    /// Resolution mix.
    pub resolution_mix: String,
    /// Priority mix.
    pub priority_mix: String,
    /// JPEG payload source.
    pub payload: String,
    /// Mean and largest JPEG bytes per resolution.
    pub payload_bytes: BTreeMap<String, (u64, u64)>,
    /// NATS URL.
    pub nats_url: String,
    /// Whether this tool started the node.
    pub embedded_node: bool,
    /// The embedded node's worker (`cpu`, `simulated-gpu ...`), or `external`.
    pub worker: String,
    /// Longest wait for the last results after the load stopped, seconds.
    pub drain_grace_s: f64,
    /// Camera id prefix of this run.
    pub camera_prefix: String,
    /// The command line.
    pub command: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The report's first line (says so when the GPU was simulated).
    pub title: String,
    /// The simulated GPU cost model, when the node ran one.
    pub simulated_gpu: Option<String>,
    /// Tool and version.
    pub tool: String,
    /// `git describe`-like revision of the checkout, `-dirty` when modified.
    pub git_revision: String,
    /// Start of the load, unix seconds.
    pub started_at_unix_s: f64,
    /// Host name.
    pub host: String,
    /// CPUs of this host.
    pub cpus: usize,
    /// How latency is measured.
    pub clock: String,
    /// Settings.
    pub settings: RunSettings,
    /// Counts and rates.
    pub totals: Totals,
    /// Latency over every result.
    pub latency_ms: Percentiles,
    /// Latency per priority class.
    pub latency_by_priority_ms: BTreeMap<String, Percentiles>,
    /// Drops matched to this run's frames, by reason (from error events).
    pub drops_from_events: BTreeMap<String, u64>,
    /// Node counters over the run (from NodeStatus).
    pub nodes: Vec<NodeDelta>,
    /// Worker load (from WorkerStatus).
    pub workers: Vec<WorkerRow>,
    /// Fairness across cameras.
    pub fairness: Fairness,
    /// Per-camera figures.
    pub cameras: Vec<CameraRow>,
    /// Up to 50 unaccounted frames as (camera, seq).
    pub unaccounted_sample: Vec<(String, u64)>,
    /// Per-second series.
    pub timeline: Timeline,
    /// Ramp outcome (ramp mode).
    pub ramp: Option<RampReport>,
    /// Memory (soak mode, or when PIDs were given).
    pub memory: Option<SoakReport>,
    /// The p99 bound checked, ms, when one was given.
    pub p99_bound_ms: Option<f64>,
    /// Whether every frame was accounted for.
    pub all_accounted: bool,
    /// Whether overall p99 met the bound (None without a bound).
    pub p99_within_bound: Option<bool>,
    /// PNG files written next to the Markdown report.
    pub plots: Vec<String>,
}

fn f1(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.1}")
    }
}

fn pct_row(name: &str, p: &Percentiles) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} |\n",
        p.count,
        f1(p.p50_ms),
        f1(p.p90_ms),
        f1(p.p99_ms),
        f1(p.p999_ms),
        f1(p.max_ms),
        f1(p.mean_ms)
    )
}

const PCT_HEAD: &str = "| class | results | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | mean ms |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n";

impl Report {
    /// The report as Markdown; its first line is [`Report::title`].
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let s = &self.settings;
        let t = &self.totals;
        let _ = writeln!(m, "# {}\n", self.title);
        let _ = writeln!(
            m,
            "- **Run:** mode `{}`, {} cameras at {} fps, {:.0} s of load, drain grace {:.0} s",
            s.mode, s.cameras, s.fps, s.duration_s, s.drain_grace_s
        );
        let _ = writeln!(
            m,
            "- **Mix:** resolutions `{}`, priorities `{}`, payload {}",
            s.resolution_mix, s.priority_mix, s.payload
        );
        let _ = writeln!(
            m,
            "- **System:** NATS `{}`, {}, worker `{}`",
            s.nats_url,
            if s.embedded_node {
                "node started by the load test"
            } else {
                "external node"
            },
            s.worker
        );
        let _ = writeln!(
            m,
            "- **Host:** {} ({} CPUs), revision `{}`, {}",
            self.host, self.cpus, self.git_revision, self.tool
        );
        let _ = writeln!(m, "- **Command:** `{}`", s.command);
        let _ = writeln!(m, "- **Clock:** {}\n", self.clock);

        let _ = writeln!(m, "## Accounting\n");
        let _ = writeln!(
            m,
            "| sent | answered | dropped | unaccounted | settled twice | fps in | fps out |"
        );
        let _ = writeln!(m, "| --- | --- | --- | --- | --- | --- | --- |");
        let _ = writeln!(
            m,
            "| {} | {} | {} | **{}** | {} | {:.1} | {:.1} |\n",
            t.sent, t.answered, t.dropped, t.unaccounted, t.settled_twice, t.fps_in, t.fps_out
        );
        let _ = writeln!(
            m,
            "Verdict: {}, {:.1} % of the frames dropped{}.\n",
            if self.all_accounted {
                "every frame accounted for"
            } else {
                "**frames unaccounted**"
            },
            t.dropped as f64 * 100.0 / t.sent.max(1) as f64,
            match (self.p99_within_bound, self.p99_bound_ms) {
                (Some(true), Some(b)) => format!(", p99 of the answered frames within {b} ms"),
                (Some(false), Some(b)) => {
                    format!(", **p99 of the answered frames above {b} ms**")
                }
                _ => String::new(),
            }
        );
        let _ = writeln!(
            m,
            "Results flagged late: {}, out of order: {}. Mean batch size {:.1}, mean node queue {:.1} ms. Generator: worst lag {:.1} ms, {} frames sent over one interval late.\n",
            t.flagged_late,
            t.flagged_out_of_order,
            t.mean_batch_size,
            t.mean_node_queue_ms,
            t.generator_max_lag_ms,
            t.generator_late_sends
        );

        let _ = writeln!(m, "## Latency (frame sent to result received)\n");
        m.push_str(PCT_HEAD);
        m.push_str(&pct_row("all", &self.latency_ms));
        for (k, p) in &self.latency_by_priority_ms {
            m.push_str(&pct_row(k, p));
        }
        m.push('\n');

        let _ = writeln!(m, "## Drops\n");
        if self.drops_from_events.is_empty() {
            let _ = writeln!(m, "No drop events for this run's frames.\n");
        } else {
            let _ = writeln!(m, "| reason (error events) | frames |\n| --- | --- |");
            for (k, v) in &self.drops_from_events {
                let _ = writeln!(m, "| {k} | {v} |");
            }
            m.push('\n');
        }
        for n in &self.nodes {
            let drops = if n.drops.is_empty() {
                "none".to_owned()
            } else {
                n.drops
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                m,
                "Node `{}` counters over {:.0} s: {} received, {} published, drops: {}, in flight at the end {}, breaker `{}`.\n",
                n.node,
                n.seconds,
                n.frames_received,
                n.results_published,
                drops,
                n.in_flight_last,
                n.breaker_last
            );
        }

        let _ = writeln!(m, "## Workers\n");
        if self.workers.is_empty() {
            let _ = writeln!(m, "No WorkerStatus received.\n");
        } else {
            let _ = writeln!(
                m,
                "| node | worker | device | slots | mean busy slots | utilisation mean / max | frames/s | batch p50 ms (mean) | batch p99 ms (max) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
            );
            for w in &self.workers {
                let util = match (w.mean_utilisation, w.max_utilisation) {
                    (Some(a), Some(b)) => format!("{:.0} % / {:.0} %", a * 100.0, b * 100.0),
                    _ => "not reported".into(),
                };
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {:.0} % | {} | {:.1} | {:.1} | {:.1} |",
                    w.node,
                    w.worker,
                    w.device,
                    w.slots_total,
                    w.mean_busy_slots_fraction * 100.0,
                    util,
                    w.frames_per_s,
                    w.batch_p50_ms_mean,
                    w.batch_p99_ms_max
                );
            }
            m.push('\n');
        }

        let f = &self.fairness;
        let _ = writeln!(m, "## Fairness across {} cameras\n", self.cameras.len());
        let _ = writeln!(
            m,
            "Jain's index of the served ratio {:.4} (min {:.3}, max {:.3}); of 1/p99 {:.4}; per-camera p99 from {} to {} ms.\n",
            f.jain_served_ratio,
            f.min_served_ratio,
            f.max_served_ratio,
            f.jain_p99,
            f1(f.min_camera_p99_ms),
            f1(f.max_camera_p99_ms)
        );
        let mut worst: Vec<&CameraRow> = self.cameras.iter().collect();
        worst.sort_by(|a, b| b.latency_ms.p99_ms.total_cmp(&a.latency_ms.p99_ms));
        let _ = writeln!(
            m,
            "Cameras with the highest p99 (all cameras are in the JSON report):\n\n| camera | priority | resolution | sent | answered | dropped | unaccounted | p50 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for c in worst.iter().take(10) {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.camera,
                c.priority,
                c.resolution,
                c.sent,
                c.answered,
                c.dropped,
                c.unaccounted,
                f1(c.latency_ms.p50_ms),
                f1(c.latency_ms.p99_ms),
                f1(c.latency_ms.max_ms)
            );
        }
        m.push('\n');

        if let Some(r) = &self.ramp {
            let _ = writeln!(m, "## Ramp\n");
            let _ = writeln!(
                m,
                "Bound: p99 <= {} ms and drops <= {} % in each step's measuring window. **Highest camera count meeting it: {}.**\n",
                r.p99_bound_ms,
                r.max_drop_pct,
                r.max_cameras_meeting_bound
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "none".into())
            );
            let _ = writeln!(
                m,
                "| cameras | frames | answered | dropped | pending | p50 ms | p99 ms | p99.9 ms | max ms | verdict |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
            );
            for st in &r.steps {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    st.cameras,
                    st.sent,
                    st.answered,
                    st.dropped,
                    st.pending,
                    f1(st.latency_ms.p50_ms),
                    f1(st.latency_ms.p99_ms),
                    f1(st.latency_ms.p999_ms),
                    f1(st.latency_ms.max_ms),
                    match st.passed {
                        Some(true) => "pass",
                        Some(false) => "fail",
                        None => "not judged",
                    }
                );
            }
            m.push('\n');
        }

        if let Some(mem) = &self.memory {
            let _ = writeln!(
                m,
                "## Memory (RSS, warm-up {:.0} s excluded)\n\n| pid | process | after warm-up MiB | last MiB | max MiB | slope MiB/h | grows |\n| --- | --- | --- | --- | --- | --- | --- |",
                mem.warmup_s
            );
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            for p in &mem.processes {
                let _ = writeln!(
                    m,
                    "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {} |",
                    p.pid,
                    p.name,
                    mib(p.rss_after_warmup),
                    mib(p.rss_last),
                    mib(p.rss_max),
                    p.slope_mib_per_hour,
                    if p.grows { "**yes**" } else { "no" }
                );
            }
            m.push('\n');
        }

        if !self.unaccounted_sample.is_empty() {
            let _ = writeln!(
                m,
                "## Unaccounted frames (first {})\n\n{}\n",
                self.unaccounted_sample.len(),
                self.unaccounted_sample
                    .iter()
                    .map(|(c, s)| format!("`{c}#{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !self.plots.is_empty() {
            let _ = writeln!(m, "## Plots\n");
            for p in &self.plots {
                let _ = writeln!(m, "![{p}]({p})");
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_delta_subtracts_the_first_report() {
        let mut a = NodeStatus {
            node_id: "n".into(),
            at_ns: 1_000_000_000,
            frames_received: 10,
            ..Default::default()
        };
        a.drops.insert("queue_full".into(), 2);
        let mut b = a.clone();
        b.at_ns = 3_000_000_000;
        b.frames_received = 110;
        b.drops.insert("queue_full".into(), 5);
        b.drops.insert("shed".into(), 1);
        let d = NodeDelta::between(&a, &b);
        assert_eq!(d.frames_received, 100);
        assert_eq!(d.drops["queue_full"], 3);
        assert_eq!(d.drops["shed"], 1);
        assert!((d.seconds - 2.0).abs() < 1e-9);
    }

    #[test]
    fn percentiles_of_an_empty_histogram_are_zero() {
        let h = Histogram::<u64>::new_with_bounds(1, 1000, 2).unwrap();
        assert_eq!(Percentiles::of(&h).count, 0);
    }
}
