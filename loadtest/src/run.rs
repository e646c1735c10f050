//! A whole run: set up, load (fixed, ramp or soak), drain, report.

use std::io::{IsTerminal, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use its_config::NatsSettings;
use its_proto::Priority;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::{Args, Mode};
use crate::collector::Collector;
use crate::embedded::{EmbeddedNode, EmbeddedOptions};
use crate::generator::{CameraPlan, StepClock, phase, run_camera};
use crate::ledger::{Clock, Ledger};
use crate::mix::{Mix, Resolution, describe};
use crate::payload::PayloadSet;
use crate::procmem::{self, Series};
use crate::report::{RampReport, Report, RunSettings, SoakReport};
use crate::simgpu::CostModel;
use crate::{LoadError, plots};

/// How latency is measured, as written in every report.
pub const CLOCK_NOTE: &str = "one host, one monotonic clock (Instant) in the load generator: latency = result received - frame sent; captured_at_ns = unix anchor taken once at start + monotonic time since, so wall-clock steps do not move it";

/// Runs the load test described by `args` and writes its report; returns the report.
pub fn run(args: Args) -> Result<Report, LoadError> {
    validate(&args)?;
    let simulated = args
        .simulated_gpu
        .as_deref()
        .map(CostModel::parse)
        .transpose()?;
    let embedded = if args.embedded_node {
        Some(EmbeddedNode::start(&EmbeddedOptions {
            simulated,
            simulated_gpus: args.simulated_gpus,
            simulated_slots: args.simulated_slots,
            model_dir: args.model_dir.clone(),
            settings: embedded_settings(&args),
        })?)
    } else {
        None
    };
    let url = match (&embedded, &args.nats_url) {
        (Some(e), _) => e.url(),
        (None, Some(u)) => u.clone(),
        (None, None) => {
            return Err(LoadError::Settings(
                "give --nats-url of the system under test, or --embedded-node".into(),
            ));
        }
    };
    let worker = embedded.as_ref().and_then(|e| e.worker.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("loadtest")
        .build()
        .map_err(|e| LoadError::Settings(format!("cannot start the runtime: {e}")))?;
    let outcome = rt.block_on(load(
        &args,
        &url,
        worker.as_deref(),
        simulated,
        embedded.is_some(),
    ));
    // The node drains only after the load test has read what it needs.
    if let Some(e) = embedded {
        match e.stop() {
            Ok(st) => tracing::info!(
                received = st.frames_received,
                published = st.results_published,
                in_flight = st.in_flight,
                "embedded node stopped"
            ),
            Err(e) => tracing::warn!(error = %e, "embedded node shutdown"),
        }
    }
    outcome
}

fn validate(a: &Args) -> Result<(), LoadError> {
    let bad = |m: &str| Err(LoadError::Settings(m.into()));
    if !(a.fps > 0.0 && a.fps <= 240.0) {
        return bad("--fps must be above 0 and at most 240");
    }
    if a.mode != Mode::Ramp && a.cameras == 0 {
        return bad("--cameras must be at least 1");
    }
    if a.mode == Mode::Ramp && (a.ramp_start == 0 || a.ramp_max < a.ramp_start) {
        return bad("--ramp-start must be at least 1 and at most --ramp-max");
    }
    if a.mode == Mode::Ramp && a.step_secs <= a.warmup_secs {
        return bad("--step-secs must be longer than --warmup-secs");
    }
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(a.duration_secs())
        || !(positive(a.drain_grace_secs) || a.drain_grace_secs == 0.0)
        || !positive(a.p99_ms)
    {
        return bad("--duration, --drain-grace-secs and --p99-ms must be positive");
    }
    Ok(())
}

struct Setup {
    ledger: Ledger,
    bus: its_bus::Bus,
    payloads: PayloadSet,
    resolutions: Vec<Resolution>,
    priorities: Vec<Priority>,
    prefix: String,
    period: Duration,
    steps: Arc<StepClock>,
    stop: watch::Sender<bool>,
    cameras: Vec<JoinHandle<()>>,
}

impl Setup {
    /// Starts cameras until `n` run.
    fn grow_to(&mut self, n: u32) {
        while self.cameras.len() < n as usize {
            let i = self.cameras.len();
            let res = self.resolutions[i];
            let priority = self.priorities[i];
            let id = format!("{}-{i}", self.prefix);
            let index = self.ledger.add_camera(&id, priority, res);
            let plan = CameraPlan {
                index,
                id,
                priority,
                frames: self.payloads.loop_for(res, i),
                start: Instant::now() + phase(i, self.period),
                period: self.period,
            };
            self.cameras.push(tokio::spawn(run_camera(
                plan,
                self.bus.clone(),
                self.ledger.clone(),
                self.steps.clone(),
                self.stop.subscribe(),
            )));
        }
    }
}

async fn load(
    args: &Args,
    url: &str,
    worker: Option<&str>,
    simulated: Option<CostModel>,
    embedded: bool,
) -> Result<Report, LoadError> {
    let max_cameras = match args.mode {
        Mode::Ramp => args.ramp_max,
        _ => args.cameras,
    } as usize;
    let res_mix = Mix::resolutions(&args.res_mix)?;
    let prio_mix = Mix::priorities(&args.priority_mix)?;
    let resolutions = res_mix.assign(max_cameras);
    let priorities = prio_mix.assign(max_cameras);
    let payloads = match &args.frames_dir {
        Some(d) => PayloadSet::from_dir(d)?,
        None => {
            let mut used: Vec<Resolution> = resolutions.clone();
            used.sort();
            used.dedup();
            let (scenes, frames, q, seed) =
                (args.scenes, args.loop_frames, args.jpeg_quality, args.seed);
            tracing::info!(
                resolutions = used.len(),
                scenes,
                frames,
                "rendering synthetic scenes"
            );
            tokio::task::spawn_blocking(move || {
                PayloadSet::synthetic(&used, scenes, frames, q, seed)
            })
            .await
            .map_err(|e| LoadError::Payload(e.to_string()))??
        }
    };
    let bus = its_bus::connect(&NatsSettings::default(), url, "its-loadtest").await?;
    // A FrameMsg is the JPEG plus a small envelope.
    let largest = payloads.largest() + 256;
    if largest > bus.max_payload() {
        return Err(LoadError::Payload(format!(
            "a frame of {largest} bytes exceeds the server's max_payload of {} bytes: lower --jpeg-quality, drop 4k from --res-mix, or raise max_payload",
            bus.max_payload()
        )));
    }
    let clock = Clock::new();
    let ledger = Ledger::new(clock);
    let collector = Collector::start(&bus, &ledger).await?;
    // A baseline NodeStatus makes the node counters in the report cover this run only.
    let seen = poll_until(Duration::from_secs(3), || ledger.seen_node()).await;
    if !seen {
        tracing::warn!("no NodeStatus within 3 s: the report will have no node counters");
    }

    let (stop, _) = watch::channel(false);
    let prefix = args
        .camera_prefix
        .clone()
        .unwrap_or_else(|| format!("lt{}", std::process::id()));
    let mut setup = Setup {
        ledger: ledger.clone(),
        bus: bus.clone(),
        payloads,
        resolutions,
        priorities,
        prefix: prefix.clone(),
        period: Duration::from_secs_f64(1.0 / args.fps),
        steps: Arc::new(StepClock::default()),
        stop,
        cameras: Vec::new(),
    };

    let load_start = Instant::now();
    let progress = spawn_progress(ledger.clone(), args.progress_secs, load_start);
    let memory = spawn_memory(args, embedded, load_start);

    let mut ramp = None;
    match args.mode {
        Mode::Fixed | Mode::Soak => {
            let step = ledger.open_step(args.cameras);
            setup.steps.set(step, 0);
            setup.grow_to(args.cameras);
            tokio::time::sleep(Duration::from_secs_f64(args.duration_secs())).await;
        }
        Mode::Ramp => ramp = Some(run_ramp(args, &mut setup).await),
    }

    // Stop the cameras, then wait for the answers.
    let _ = setup.stop.send(true);
    for c in setup.cameras.drain(..) {
        let _ = c.await;
    }
    let load_time = load_start.elapsed();
    let _ = bus.flush().await;
    poll_until(Duration::from_secs_f64(args.drain_grace_secs), || {
        ledger.pending() == 0
    })
    .await;
    // One more status interval, so the node counters include the drained frames.
    let settle_from = clock.unix_ns(Instant::now());
    poll_until(Duration::from_millis(1500), || {
        ledger_node_after(&ledger, settle_from)
    })
    .await;
    progress.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let memory = match memory {
        Some((task, series)) => {
            task.abort();
            let s = series.lock().unwrap_or_else(|p| p.into_inner()).clone();
            Some(SoakReport {
                warmup_s: args.soak_warmup_secs,
                processes: s
                    .iter()
                    .map(|s| s.summarise(args.soak_warmup_secs))
                    .collect(),
            })
        }
        None => None,
    };
    let undecodable = collector.undecodable();
    collector.stop();
    if undecodable > 0 {
        tracing::warn!(undecodable, "messages that did not decode were ignored");
    }
    let summary = ledger.summary(load_time);
    let _ = bus.drain().await;

    let devices: Vec<&str> = summary.workers.iter().map(|w| w.device.as_str()).collect();
    let simulated_desc = simulated.map(|c| c.describe()).or_else(|| {
        devices
            .iter()
            .find(|d| d.starts_with("simulated"))
            .map(|d| d.to_string())
    });
    let cameras = match (&ramp, args.mode) {
        (Some(r), _) => r
            .steps
            .last()
            .map(|s: &crate::report::StepRow| s.cameras)
            .unwrap_or(0),
        _ => args.cameras,
    };
    // What served the frames: the simulated workers as configured, else what the workers'
    // own status reports name (e.g. "NVIDIA H200 gpu[fp16]" for a GPU worker).
    let worker_label = match worker {
        Some(w) => w.to_owned(),
        None => {
            let mut d: Vec<&str> = devices.clone();
            d.dedup();
            match (embedded, d.is_empty()) {
                (true, true) => "embedded node (no worker status seen)".to_owned(),
                (true, false) => d.join(", "),
                (false, true) => "external".to_owned(),
                (false, false) => format!("external ({})", d.join(", ")),
            }
        }
    };
    let mode_line = match &ramp {
        Some(r) => format!(
            "ITS load test: ramp mode, {} to {} cameras at {} fps, worker {}: highest count meeting p99 <= {} ms: {}",
            r.steps.first().map(|s| s.cameras).unwrap_or(0),
            cameras,
            args.fps,
            worker_label,
            args.p99_ms,
            r.max_cameras_meeting_bound
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none".into())
        ),
        None => format!(
            "ITS load test: {} mode, {} cameras at {} fps, worker {}",
            args.mode.as_str(),
            cameras,
            args.fps,
            worker_label
        ),
    };
    let title = match &simulated_desc {
        Some(c) => format!("SIMULATED GPU (cost model {c}): NOT a GPU measurement. {mode_line}"),
        None => mode_line,
    };
    let settings = RunSettings {
        mode: args.mode.as_str().into(),
        cameras,
        fps: args.fps,
        duration_s: load_time.as_secs_f64(),
        resolution_mix: if setup.payloads.from_files() {
            "from files".into()
        } else {
            describe(&res_mix, Resolution::label)
        },
        priority_mix: describe(&prio_mix, |p| p.as_str().into()),
        payload: match &args.frames_dir {
            Some(d) => format!("JPEG files of {}", d.display()),
            None => format!(
                "synthetic road scenes ({} scenes x {} frames per resolution, quality {})",
                args.scenes, args.loop_frames, args.jpeg_quality
            ),
        },
        payload_bytes: setup.payloads.sizes(),
        nats_url: url.into(),
        embedded_node: embedded,
        worker: worker_label,
        drain_grace_s: args.drain_grace_secs,
        camera_prefix: prefix,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let all_accounted = summary.totals.unaccounted == 0;
    let p99_within = (summary.overall.count > 0).then_some(summary.overall.p99_ms <= args.p99_ms);
    let mut report = Report {
        title,
        simulated_gpu: simulated_desc,
        tool: format!("its-loadtest {}", env!("CARGO_PKG_VERSION")),
        git_revision: git_revision(),
        started_at_unix_s: clock.unix_ns(load_start) as f64 / 1e9,
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into()),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        clock: CLOCK_NOTE.into(),
        settings,
        totals: summary.totals,
        latency_ms: summary.overall,
        latency_by_priority_ms: summary.by_priority,
        drops_from_events: summary.drops_from_events,
        nodes: summary.nodes,
        workers: summary.workers,
        fairness: summary.fairness,
        cameras: summary.cameras,
        unaccounted_sample: summary.unaccounted_sample,
        timeline: summary.timeline,
        ramp,
        memory,
        p99_bound_ms: Some(args.p99_ms),
        all_accounted,
        p99_within_bound: p99_within,
        plots: Vec::new(),
    };
    write_outputs(args, &mut report, &summary.overall_hist)?;
    Ok(report)
}

async fn run_ramp(args: &Args, setup: &mut Setup) -> RampReport {
    let ledger = setup.ledger.clone();
    let clock = ledger.clock();
    let bound = Duration::from_secs_f64(args.p99_ms / 1e3);
    let settle = bound + Duration::from_millis(500);
    let step_len = Duration::from_secs_f64(args.step_secs);
    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let mut verdicts: Vec<Option<bool>> = Vec::new();
    let mut n = args.ramp_start;
    let judge = |step: u32, verdicts: &mut Vec<Option<bool>>| -> bool {
        let f = ledger.step_figures(step, Instant::now());
        let frames = f.sent.max(1) as f64;
        let drop_pct = f.dropped as f64 * 100.0 / frames;
        let ok = f.answered > 0 && f.latency.p99_ms <= args.p99_ms && drop_pct <= args.max_drop_pct;
        tracing::info!(
            step,
            p99_ms = f.latency.p99_ms,
            drop_pct,
            pending = f.pending,
            ok,
            "ramp step judged"
        );
        verdicts.resize(step as usize + 1, None);
        verdicts[step as usize] = Some(ok);
        ok
    };
    loop {
        let started = Instant::now();
        let step = ledger.open_step(n);
        setup.steps.set(step, clock.since_ns(started + warmup));
        setup.grow_to(n);
        if step > 0 {
            // The previous step is judged once each of its frames is answered or older than
            // the bound; the new step's warm-up covers that wait.
            tokio::time::sleep(settle.min(step_len)).await;
            if !judge(step - 1, &mut verdicts) {
                break;
            }
        }
        tokio::time::sleep_until((started + step_len).into()).await;
        if n >= args.ramp_max {
            tokio::time::sleep(settle).await;
            judge(step, &mut verdicts);
            break;
        }
        n = (n + args.ramp_step.max(1)).min(args.ramp_max);
    }
    let steps = ledger.step_rows(Instant::now(), &verdicts);
    // Steps are judged in order and the ramp stops at the first failure.
    let best = steps
        .iter()
        .take_while(|s| s.passed == Some(true))
        .map(|s| s.cameras)
        .last();
    RampReport {
        p99_bound_ms: args.p99_ms,
        max_drop_pct: args.max_drop_pct,
        steps,
        max_cameras_meeting_bound: best,
    }
}

fn ledger_node_after(ledger: &Ledger, unix_ns: u64) -> bool {
    ledger.latest_node_at().is_none_or(|at| at >= unix_ns)
}

async fn poll_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn_progress(ledger: Ledger, every: f64, start: Instant) -> JoinHandle<()> {
    let tty = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let every = Duration::from_secs_f64(every.max(0.1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut prev = ledger.progress();
        let mut prev_at = Instant::now();
        loop {
            tick.tick().await;
            let p = ledger.progress();
            let dt = prev_at.elapsed().as_secs_f64().max(1e-3);
            let line = format!(
                "[loadtest {:>5.0}s] cameras {:>4} | in {:>7.1} fps | out {:>7.1} fps | p99 so far {:>7.1} ms | drops {} | pending {}",
                start.elapsed().as_secs_f64(),
                p.cameras,
                (p.sent - prev.sent) as f64 / dt,
                (p.answered - prev.answered) as f64 / dt,
                p.p99_ms,
                p.dropped,
                p.pending
            );
            let mut err = std::io::stderr().lock();
            let _ = if tty {
                write!(err, "\r\x1b[2K{line}")
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
            prev = p;
            prev_at = Instant::now();
        }
    })
}

type MemorySeries = Arc<Mutex<Vec<Series>>>;

/// Samples RSS: of `--pid`s, and in soak mode of this process and its children (the embedded
/// nats-server; the embedded node runs inside this process).
fn spawn_memory(
    args: &Args,
    embedded: bool,
    start: Instant,
) -> Option<(JoinHandle<()>, MemorySeries)> {
    let mut pids = args.pids.clone();
    if args.mode == Mode::Soak && embedded {
        let me = std::process::id();
        pids.push(me);
        pids.extend(procmem::children(me));
    }
    if pids.is_empty() {
        return None;
    }
    pids.sort();
    pids.dedup();
    let me = std::process::id();
    let series: Vec<Series> = pids
        .into_iter()
        .map(|pid| {
            let mut s = Series::new(pid);
            if pid == me && embedded {
                s.name = format!("{} (load generator and embedded node)", s.name);
            }
            s
        })
        .collect();
    let series: MemorySeries = Arc::new(Mutex::new(series));
    let every = Duration::from_secs_f64(args.rss_interval_secs.max(0.1));
    let s2 = series.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let t = start.elapsed().as_secs_f64();
            for s in s2.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
                s.sample(t);
            }
        }
    });
    Some((task, series))
}

/// The checkout's revision (`git rev-parse`), `-dirty` when tracked files are modified.
fn git_revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{rev}-dirty") } else { rev }
        }
        None => std::env::var("ITS_GIT_REVISION").unwrap_or_else(|_| "unknown".into()),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    std::fs::write(path, bytes).map_err(|e| LoadError::Write {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

fn write_outputs(
    args: &Args,
    report: &mut Report,
    hist: &hdrhistogram::Histogram<u64>,
) -> Result<(), LoadError> {
    let out = &args.out;
    std::fs::create_dir_all(out).map_err(|e| LoadError::Write {
        path: out.display().to_string(),
        detail: e.to_string(),
    })?;
    let short = if report.simulated_gpu.is_some() {
        "SIMULATED GPU"
    } else {
        "end-to-end latency"
    };
    let mut plots: Vec<(&str, Result<(), String>)> = vec![
        (
            "latency_histogram.png",
            plots::latency_histogram(
                &out.join("latency_histogram.png"),
                &format!(
                    "{short}: latency histogram, {} results",
                    report.latency_ms.count
                ),
                hist,
            ),
        ),
        (
            "latency_over_time.png",
            plots::latency_over_time(
                &out.join("latency_over_time.png"),
                &format!("{short}: latency per second"),
                &report.timeline,
            ),
        ),
        (
            "throughput_over_time.png",
            plots::throughput_over_time(
                &out.join("throughput_over_time.png"),
                &format!("{short}: frames per second"),
                &report.timeline,
            ),
        ),
    ];
    if let Some(m) = &report.memory {
        plots.push((
            "memory_over_time.png",
            plots::memory_over_time(
                &out.join("memory_over_time.png"),
                &format!("{short}: resident memory"),
                &m.processes,
            ),
        ));
    }
    for (name, r) in plots {
        match r {
            Ok(()) => report.plots.push(name.into()),
            Err(e) => tracing::warn!(plot = name, error = %e, "plot not written"),
        }
    }
    let json = serde_json::to_vec_pretty(&report).map_err(|e| LoadError::Write {
        path: "report.json".into(),
        detail: e.to_string(),
    })?;
    write_file(&out.join("report.json"), &json)?;
    if let Some(j) = &args.json {
        write_file(j, &json)?;
    }
    write_file(&out.join("report.md"), report.markdown().as_bytes())?;
    Ok(())
}

/// The embedded node's overrides: the `--set` ones, after a per-camera rate limit raised above
/// the offered rate when `--fps` exceeds the node's default (the limit must not be what a fast
/// load test measures; a `--set scheduler.max_camera_fps=...` still wins).
fn embedded_settings(args: &Args) -> Vec<String> {
    let limit = its_config::Settings::default().scheduler.max_camera_fps;
    let mut out = Vec::new();
    if limit > 0 && args.fps > f64::from(limit) {
        out.push(format!(
            "scheduler.max_camera_fps={}",
            (args.fps * 2.0).ceil() as u32
        ));
    }
    out.extend(args.node_settings.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::try_parse_from(["its-loadtest"].iter().chain(extra)).expect("valid arguments")
    }

    #[test]
    fn a_load_faster_than_the_nodes_camera_limit_raises_it_and_a_set_still_wins() {
        let limit = its_config::Settings::default().scheduler.max_camera_fps;
        assert!(embedded_settings(&args(&["--fps", "30"])).is_empty());
        let fast = (limit * 2).to_string();
        let s = embedded_settings(&args(&["--fps", &fast]));
        assert_eq!(s, [format!("scheduler.max_camera_fps={}", limit * 4)]);
        let s = embedded_settings(&args(&[
            "--fps",
            &fast,
            "--set",
            "scheduler.max_camera_fps=0",
        ]));
        assert_eq!(
            s.last().map(String::as_str),
            Some("scheduler.max_camera_fps=0")
        );
        // Overrides apply in order, so the user's comes last and wins.
        let settings = its_config::load(&its_config::Sources {
            file: None,
            env: Default::default(),
            overrides: s,
        })
        .expect("valid settings");
        assert_eq!(settings.scheduler.max_camera_fps, 0);
    }
}
