//! `its engine build | bench | check MODEL`: the native GPU engine (its-gpu) from the command
//! line. `check` compares it with ONNX Runtime on the CPU, `bench` times it with CUDA events.
//! Both print a table, or JSON with `--json`. Every build reads and writes the engine cache
//! file (cuDNN algorithm choices per layer and profile; `--cache-dir`, `--no-cache`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use its_engine::{Engine as _, ModelManifest, OrtEngine, OrtOptions};
use its_gpu::GpuContext;
use its_gpu::engine::tensor::{relative_error, sample_input};
use its_gpu::engine::{ConvMath, CudaEngine, EngineCache, EngineOptions, Plan, cpu};
use its_model::onnx::ModelProto;
use serde_json::json;

/// `its engine` subcommands.
#[derive(Debug, Subcommand)]
pub enum EngineCommand {
    /// Lower the model for each batch profile and build an execution context on GPU 0:
    /// prints the plan size, activation memory (planned arena and one buffer per tensor),
    /// engine cache hit or miss and build time per profile; writes the engine cache file. Where
    /// the first profile hits the cache, the others are restored from it at the same time.
    Build(Common),
    /// Time inference per batch profile with CUDA events (median of --iters runs).
    Bench {
        #[command(flatten)]
        common: Common,
        /// Timed runs per profile.
        #[arg(long, default_value_t = 50)]
        iters: usize,
        /// Also print the device time of every op of the largest profile (eager, unfused).
        #[arg(long)]
        profile: bool,
        /// Also run this many execution contexts (one CUDA stream each) side by side per
        /// profile and report their total throughput (host wall clock).
        #[arg(long, default_value_t = 1)]
        streams: usize,
    },
    /// Run the engine and ONNX Runtime (CPU) on the same deterministic input; fails when the
    /// largest relative difference exceeds --tolerance.
    Check {
        #[command(flatten)]
        common: Common,
        /// Largest allowed |ours - ort| / max|ort|.
        #[arg(long, default_value_t = 1e-3)]
        tolerance: f32,
        /// Compare the plan on the CPU reference executor instead of the GPU (no GPU needed).
        #[arg(long)]
        cpu: bool,
        /// Also run every JPEG in this directory through FP32 and FP16 detectors (letterbox,
        /// decode, NMS of the manifest) and require 99 % of the FP32 boxes matched by an FP16
        /// box of the same class at IoU >= 0.9. Needs a model directory.
        #[arg(long, value_name = "DIR")]
        images: Option<PathBuf>,
    },
}

/// Arithmetic of the convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MathArg {
    /// FP32 FMA (the reference).
    Fp32,
    /// TF32 tensor cores inside cuDNN, FP32 storage.
    Tf32,
    /// FP16 activations and weights, FP32 accumulation.
    Fp16,
}

/// Options every `its engine` subcommand takes.
#[derive(Debug, Args)]
pub struct Common {
    /// A model directory (model.toml + ONNX file) or a bare .onnx file.
    pub model: PathBuf,
    /// Batch profiles, comma-separated.
    #[arg(long, default_value = "1,8,32", value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Square input size for a bare .onnx with dynamic height and width.
    #[arg(long, default_value_t = 640)]
    pub imgsz: usize,
    /// Convolution arithmetic.
    #[arg(long, value_enum, default_value_t = MathArg::Fp32)]
    pub math: MathArg,
    /// Run the plan eagerly instead of replaying a CUDA graph.
    #[arg(long)]
    pub no_graph: bool,
    /// Keep every convolution and its bias + activation as two steps (no fused cuDNN graphs).
    #[arg(long)]
    pub no_fused: bool,
    /// Run the first convolution on cuDNN after an input transpose (default: our direct
    /// stem kernel reads the NCHW input, in channels-last FP16 mode).
    #[arg(long)]
    pub no_direct_stem: bool,
    /// Run depthwise convolutions on cuDNN's grouped kernels (default: our `conv_dw3x3_nhwc`
    /// kernel, in channels-last mode).
    #[arg(long)]
    pub no_direct_depthwise: bool,
    /// Copy every concatenation input (default: convolutions, max-pools and upsamples write
    /// their slices of a channel concatenation in place; also ITS_ENGINE_CONCAT_IN_PLACE=0).
    #[arg(long)]
    pub no_concat_in_place: bool,
    /// Keep every activation NCHW (default: channels-last between convolutions).
    #[arg(long)]
    pub nchw: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Directory of the engine cache files (default: $XDG_CACHE_HOME/its/engine, else
    /// ~/.cache/its/engine, else .engine-cache beside the model file).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Neither read nor write the engine cache: time every convolution algorithm again.
    #[arg(long)]
    pub no_cache: bool,
}

impl Common {
    fn options(&self) -> EngineOptions {
        EngineOptions {
            math: match self.math {
                MathArg::Fp32 => ConvMath::Fp32,
                MathArg::Tf32 => ConvMath::Tf32,
                MathArg::Fp16 => ConvMath::Fp16,
            },
            time_algorithms: true,
            cuda_graph: !self.no_graph,
            nhwc: !self.nchw,
            fused: !self.no_fused,
            direct_stem: !self.no_direct_stem,
            direct_depthwise: !self.no_direct_depthwise,
            concat_in_place: !self.no_concat_in_place && EngineOptions::default().concat_in_place,
        }
    }
}

/// The model file and its input size.
struct Loaded {
    path: PathBuf,
    model: ModelProto,
    manifest: Option<ModelManifest>,
    height: usize,
    width: usize,
    cache: Option<EngineCache>,
}

impl Loaded {
    /// Builds an execution context for `plan` on `gpu`, through the engine cache unless
    /// `--no-cache`.
    fn engine(
        &self,
        gpu: &GpuContext,
        plan: Plan,
        opts: EngineOptions,
    ) -> anyhow::Result<CudaEngine> {
        Ok(match &self.cache {
            Some(c) => CudaEngine::build_cached(gpu, plan, opts, c)?,
            None => CudaEngine::build(gpu, plan, opts)?,
        })
    }
}

/// The engine cache of the model file at `path`, per `--cache-dir` / `--no-cache`.
fn cache_for(common: &Common, path: &Path) -> anyhow::Result<Option<EngineCache>> {
    if common.no_cache {
        return Ok(None);
    }
    let c = EngineCache::for_model(path, common.cache_dir.clone())
        .with_context(|| format!("hashing {}", path.display()))?;
    Ok(Some(c))
}

fn load(common: &Common) -> anyhow::Result<Loaded> {
    let p = &common.model;
    if p.is_dir() {
        let manifest =
            ModelManifest::load(p).with_context(|| format!("reading {}", p.display()))?;
        let path = manifest.model_path(p);
        let model =
            ModelProto::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Loaded {
            height: manifest.input.height as usize,
            width: manifest.input.width as usize,
            cache: cache_for(common, &path)?,
            path,
            model,
            manifest: Some(manifest),
        })
    } else {
        let model = ModelProto::read(p).with_context(|| format!("reading {}", p.display()))?;
        Ok(Loaded {
            cache: cache_for(common, p)?,
            path: p.clone(),
            model,
            manifest: None,
            height: common.imgsz,
            width: common.imgsz,
        })
    }
}

/// The deterministic input every check and bench runs on.
fn input(n: usize) -> Vec<f32> {
    sample_input(n, 0x2545_F491_4F6C_DD1D)
}

fn gpu() -> anyhow::Result<GpuContext> {
    GpuContext::new(0).context("the native engine needs a CUDA GPU (device 0)")
}

fn out(v: &serde_json::Value, table: &str, json: bool) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    if json {
        writeln!(o, "{}", serde_json::to_string_pretty(v)?)?;
    } else {
        write!(o, "{table}")?;
    }
    Ok(())
}

/// Runs one `its engine` subcommand.
pub fn run(command: &EngineCommand) -> anyhow::Result<()> {
    match command {
        EngineCommand::Build(common) => build(common),
        EngineCommand::Bench {
            common,
            iters,
            profile,
            streams,
        } => bench(common, *iters, *profile, *streams),
        EngineCommand::Check {
            common,
            tolerance,
            cpu,
            images,
        } => {
            check(common, *tolerance, *cpu)?;
            match images {
                Some(dir) => fp16_agreement(common, dir),
                None => Ok(()),
            }
        }
    }
}

fn plan_for(l: &Loaded, batch: usize) -> anyhow::Result<(Plan, f64)> {
    let t = Instant::now();
    let plan = Plan::build(&l.model, [batch, 3, l.height, l.width])
        .with_context(|| format!("lowering {} for batch {batch}", l.path.display()))?;
    Ok((plan, t.elapsed().as_secs_f64() * 1e3))
}

fn build(common: &Common) -> anyhow::Result<()> {
    let started = Instant::now();
    let l = load(common)?;
    let gpu = gpu()?;
    let mut rows = Vec::new();
    let mut table = format!(
        "{} on {} ({}x{}, {:?})\nengine cache: {}\nbatch  ops  convs  lower ms  build ms  timing ms  arena MiB  unplanned MiB  workspace MiB  graph  cache\n",
        l.path.display(),
        gpu.device_name(),
        l.width,
        l.height,
        common.math,
        l.cache.as_ref().map_or("off (--no-cache)".to_owned(), |c| c
            .dir
            .display()
            .to_string())
    );
    let mut notes = String::new();
    let mut plans = Vec::new();
    let mut lowered = Vec::new();
    for &b in &common.batch {
        let (plan, lower_ms) = plan_for(&l, b)?;
        lowered.push((b, plan.ops.len(), lower_ms));
        plans.push(plan);
    }
    // As a GPU worker builds its profiles: restored together where the first hits the cache.
    let engines = CudaEngine::build_all(&gpu, plans, common.options(), l.cache.as_ref())?;
    for ((b, ops, lower_ms), engine) in lowered.into_iter().zip(&engines) {
        let r = engine.report();
        table += &format!(
            "{b:>5}  {ops:>3}  {:>5}  {lower_ms:>8.1}  {:>8.1}  {:>9.1}  {:>9.1}  {:>13.1}  {:>13.1}  {:>5}  {}\n",
            r.convs,
            r.build_ms,
            r.timing_ms,
            mib(r.activation_bytes),
            mib(r.unplanned_activation_bytes),
            mib(r.workspace_bytes),
            r.cuda_graph,
            r.cache.label()
        );
        if let its_gpu::engine::CacheOutcome::Miss { .. } = &r.cache {
            notes += &format!("batch {b}: {}\n", r.cache);
        }
        let phases: Vec<String> = r
            .phases
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.0}"))
            .collect();
        notes += &format!("batch {b} phases, ms: {}\n", phases.join(", "));
        if r.fused_tried > 0 {
            notes += &format!(
                "batch {b} fused: {} of {} convolutions, {} plans restored from the cache, {:.0} ms\n",
                r.fused_convs, r.fused_tried, r.fused_restored, r.fused_ms
            );
        }
        rows.push(json!({
            "fused_convs": r.fused_convs, "fused_tried": r.fused_tried,
            "fused_restored": r.fused_restored, "fused_ms": r.fused_ms,
            "phases_ms": r.phases.iter().map(|(n, ms)| json!({"phase": n, "ms": ms})).collect::<Vec<_>>(),
            "batch": b, "ops": ops, "convs": r.convs, "lower_ms": lower_ms,
            "build_ms": r.build_ms, "timing_ms": r.timing_ms,
            "activation_bytes": r.activation_bytes,
            "unplanned_activation_bytes": r.unplanned_activation_bytes,
            "workspace_bytes": r.workspace_bytes, "cuda_graph": r.cuda_graph,
            "graph_fallback": r.graph_fallback, "cache": r.cache.label(),
            "cache_detail": r.cache.to_string(),
        }));
    }
    table += &notes;
    let total_ms = started.elapsed().as_secs_f64() * 1e3;
    table += &format!(
        "all {} profiles: {total_ms:.0} ms from start (model load, lowering and builds)\n",
        common.batch.len()
    );
    out(
        &json!({"model": l.path, "device": gpu.device_name(), "profiles": rows, "total_ms": total_ms}),
        &table,
        common.json,
    )
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn bench(common: &Common, iters: usize, profile: bool, streams: usize) -> anyhow::Result<()> {
    let l = load(common)?;
    let gpu = gpu()?;
    let mut rows = Vec::new();
    let mut table = format!(
        "{} on {} ({}x{}, {:?}, {}), CUDA events, median of {iters}\nbatch   ms/batch   img/s   GFLOP/s  build ms  cache  arena MiB  unplanned MiB\n",
        l.path.display(),
        gpu.device_name(),
        l.width,
        l.height,
        common.math,
        if common.no_graph {
            "eager"
        } else {
            "CUDA graph"
        }
    );
    let mut last = None;
    for &b in &common.batch {
        let (plan, _) = plan_for(&l, b)?;
        let macs = plan.macs();
        let mut engine = l.engine(&gpu, plan, common.options())?;
        engine.run(&input(engine.plan().tensors[engine.plan().input].numel()))?;
        let ms = engine.time(iters)?;
        let ips = b as f64 * 1e3 / ms;
        let gflops = 2.0 * macs as f64 / (ms * 1e6);
        let r = engine.report();
        table += &format!(
            "{b:>5}  {ms:>9.3}  {ips:>7.0}  {gflops:>8.0}  {:>8.0}  {:>5}  {:>9.1}  {:>13.1}\n",
            r.build_ms,
            r.cache.label(),
            mib(r.activation_bytes),
            mib(r.unplanned_activation_bytes)
        );
        if r.fused_tried > 0 {
            table += &format!(
                "       fused: {} of {} convolutions as one cuDNN graph ({} tried, {:.0} ms){}\n",
                r.fused_convs,
                r.convs,
                r.fused_tried,
                r.fused_ms,
                if r.fused_notes.is_empty() {
                    String::new()
                } else {
                    format!("; unfused because: {}", r.fused_notes.join(" | "))
                }
            );
        }
        if r.depthwise_convs > 0 {
            table += &format!(
                "       depthwise: {} convolutions on our conv_dw3x3_nhwc kernel\n",
                r.depthwise_convs
            );
        }
        if r.concat_inputs_in_place > 0 {
            table += &format!(
                "       slices: {} concatenation inputs written in place, {} narrows read in place; {} launches per run\n",
                r.concat_inputs_in_place, r.narrows_viewed, r.launches
            );
        }
        let mut multi = serde_json::Value::Null;
        if streams > 1 {
            // N contexts, each on its own stream, launched together; wall time per round.
            let mut ctxs = vec![];
            for _ in 1..streams {
                let (plan, _) = plan_for(&l, b)?;
                ctxs.push(l.engine(&gpu, plan, common.options())?);
            }
            let all: Vec<&CudaEngine> = std::iter::once(&engine).chain(ctxs.iter()).collect();
            let round = || -> anyhow::Result<()> {
                for c in &all {
                    c.launch()?;
                }
                for c in &all {
                    c.stream().synchronize()?;
                }
                Ok(())
            };
            round()?;
            let t = Instant::now();
            for _ in 0..iters.max(1) {
                round()?;
            }
            let wall_ms = t.elapsed().as_secs_f64() * 1e3 / iters.max(1) as f64;
            let total_ips = (streams * b) as f64 * 1e3 / wall_ms;
            table += &format!(
                "       {streams} streams: {wall_ms:.3} ms per round of {streams} batches, {total_ips:.0} img/s in total ({:.2}x one stream)\n",
                total_ips / ips
            );
            multi = json!({"streams": streams, "round_ms": wall_ms, "img_per_s": total_ips});
        }
        rows.push(json!({
            "batch": b, "ms": ms, "img_per_s": ips, "gflop_per_s": gflops,
            "build_ms": engine.report().build_ms, "cuda_graph": engine.report().cuda_graph,
            "cache": engine.report().cache.label(),
            "activation_bytes": engine.report().activation_bytes,
            "unplanned_activation_bytes": engine.report().unplanned_activation_bytes,
            "workspace_bytes": engine.report().workspace_bytes,
            "fused_convs": engine.report().fused_convs,
            "fused_tried": engine.report().fused_tried,
            "fused_notes": engine.report().fused_notes,
            "depthwise_convs": engine.report().depthwise_convs,
            "concat_inputs_in_place": engine.report().concat_inputs_in_place,
            "narrows_viewed": engine.report().narrows_viewed,
            "launches": engine.report().launches,
            "multi_stream": multi,
        }));
        last = Some(engine);
    }
    let mut ops_json = Vec::new();
    if profile && let Some(engine) = &last {
        let p = engine.profile()?;
        let total: f64 = p.iter().map(|t| t.ms).sum();
        let mut by_kind = std::collections::BTreeMap::<&str, (usize, f64)>::new();
        for t in &p {
            let e = by_kind.entry(t.kind).or_default();
            e.0 += 1;
            e.1 += t.ms;
        }
        table += &format!("op profile (eager, one event pair per op): {total:.3} ms\n");
        for (k, (n, ms)) in &by_kind {
            table += &format!(
                "  {k:<14} {n:>4} ops  {ms:>8.3} ms  {:>5.1}%\n",
                100.0 * ms / total
            );
            ops_json.push(json!({"kind": k, "count": n, "ms": ms}));
        }
        let mut slow: Vec<_> = p.iter().collect();
        slow.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        table += "  slowest:\n";
        for t in slow.iter().take(PROFILE_SLOWEST) {
            table += &format!(
                "  {:>8.3} ms  op {:>3} {:<14} {}\n",
                t.ms, t.op, t.kind, t.detail
            );
        }
    }
    out(
        &json!({"model": l.path, "device": gpu.device_name(), "math": format!("{:?}", common.math),
                "iters": iters, "profiles": rows, "op_profile": ops_json}),
        &table,
        common.json,
    )
}

/// How many of the slowest ops `bench --profile` lists.
const PROFILE_SLOWEST: usize = 25;

/// A manifest for a bare .onnx, so ONNX Runtime's interface check can run.
fn bare_manifest(l: &Loaded, classes: usize) -> anyhow::Result<ModelManifest> {
    let names: Vec<String> = (0..classes).map(|i| format!("\"class{i}\"")).collect();
    let text = format!(
        "name = \"{}\"\nversion = \"0\"\nfile = \"{}\"\nclasses = [{}]\n[input]\nwidth = {}\nheight = {}\nlayout = \"nchw\"\ncolor = \"rgb\"\nscale = \"0..1\"\n[output]\nformat = \"yolov8\"\n",
        l.path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model"),
        l.path
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("model.onnx"),
        names.join(", "),
        l.width,
        l.height
    );
    Ok(ModelManifest::parse(&text)?)
}

fn check(common: &Common, tolerance: f32, on_cpu: bool) -> anyhow::Result<()> {
    let l = load(common)?;
    let gpu = if on_cpu { None } else { Some(gpu()?) };
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    let mut table = format!(
        "{} vs ONNX Runtime (CPU) on {} ({}x{})\nbatch  output          rel. error  max |ort|   ok\n",
        l.path.display(),
        gpu.as_ref()
            .map_or("the CPU reference executor", |g| g.device_name()),
        l.width,
        l.height
    );
    for &b in &common.batch {
        let (plan, _) = plan_for(&l, b)?;
        let out_shape = plan.shape(plan.outputs[0].1).to_vec();
        let x = input(plan.tensors[plan.input].numel());
        let ours = match &gpu {
            Some(g) => l.engine(g, plan, common.options())?.run(&x)?,
            None => cpu::run(&plan, &x)?,
        };
        let manifest = match &l.manifest {
            Some(m) => m.clone(),
            None => bare_manifest(&l, out_shape.get(1).copied().unwrap_or(5).saturating_sub(4))?,
        };
        let model_dir = l.path.parent().unwrap_or(Path::new("."));
        let mut ort = OrtEngine::load(
            &manifest.model_path(model_dir),
            &manifest,
            &OrtOptions::default(),
        )
        .context("loading ONNX Runtime (set ORT_DYLIB_PATH to libonnxruntime.so)")?;
        let theirs = ort.run(&x, b)?;
        if theirs.shape != out_shape {
            bail!(
                "output shapes differ: ours {out_shape:?}, ONNX Runtime {:?}",
                theirs.shape
            );
        }
        let err = relative_error(&ours[0], &theirs.data);
        let scale = theirs.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let ok = err <= tolerance && ours[0].iter().all(|v| v.is_finite());
        if !ok {
            failed.push(b);
        }
        table += &format!(
            "{b:>5}  {:<14}  {err:>10.2e}  {scale:>9.1}  {}\n",
            format!("{out_shape:?}"),
            if ok { "yes" } else { "NO" }
        );
        rows.push(json!({"batch": b, "output_shape": out_shape, "rel_error": err, "max_abs_ort": scale, "ok": ok}));
    }
    out(
        &json!({"model": l.path, "device": gpu.as_ref().map(|g| g.device_name().to_string()),
                "tolerance": tolerance, "profiles": rows}),
        &table,
        common.json,
    )?;
    if !failed.is_empty() {
        bail!("engine differs from ONNX Runtime beyond {tolerance} at batch {failed:?}");
    }
    Ok(())
}

fn iou(a: &its_engine::Detection, b: &its_engine::Detection) -> f32 {
    let cand = |d: &its_engine::Detection| its_engine::Candidate {
        class_id: d.class_id,
        score: d.score,
        x1: d.x1,
        y1: d.y1,
        x2: d.x2,
        y2: d.y2,
    };
    its_engine::nms::iou(&cand(a), &cand(b))
}

/// FP16 detections against FP32 detections on real images, after the manifest's NMS.
fn fp16_agreement(common: &Common, dir: &Path) -> anyhow::Result<()> {
    use its_gpu::engine::NativeEngine;
    let l = load(common)?;
    let Some(manifest) = l.manifest.clone() else {
        bail!("--images needs a model directory with model.toml (for classes and thresholds)");
    };
    let gpu = gpu()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .jpg files in {}", dir.display());
    }
    let detector = |math: ConvMath| -> anyhow::Result<its_engine::Detector> {
        let opts = EngineOptions {
            math,
            ..common.options()
        };
        let engine = NativeEngine::new_cached(
            gpu.clone(),
            l.model.clone(),
            manifest.input,
            opts,
            &[],
            &manifest.name,
            l.cache.clone(),
        )?;
        Ok(its_engine::Detector::new(
            Box::new(engine),
            manifest.clone(),
        )?)
    };
    let mut d32 = detector(ConvMath::Fp32)?;
    let mut d16 = detector(ConvMath::Fp16)?;
    let (mut total32, mut total16, mut matched) = (0usize, 0usize, 0usize);
    for chunk in files.chunks(8) {
        let imgs = chunk
            .iter()
            .map(|p| {
                let bytes = std::fs::read(p)?;
                its_engine::decode_jpeg(&bytes).with_context(|| format!("decoding {}", p.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let a = d32.detect(&imgs)?;
        let b = d16.detect(&imgs)?;
        for (x, y) in a.iter().zip(&b) {
            total32 += x.detections.len();
            total16 += y.detections.len();
            let mut used = vec![false; y.detections.len()];
            for d in &x.detections {
                if let Some(j) = (0..y.detections.len()).find(|&j| {
                    !used[j]
                        && y.detections[j].class_id == d.class_id
                        && iou(d, &y.detections[j]) >= 0.9
                }) {
                    used[j] = true;
                    matched += 1;
                }
            }
        }
    }
    let share = if total32 == 0 {
        1.0
    } else {
        matched as f64 / total32 as f64
    };
    let table = format!(
        "FP16 vs FP32 detections on {} images of {}: FP32 {total32} boxes, FP16 {total16}, matched (same class, IoU >= 0.9) {matched} = {:.2} %\n",
        files.len(),
        dir.display(),
        100.0 * share
    );
    out(
        &json!({"images": files.len(), "fp32_boxes": total32, "fp16_boxes": total16,
                "matched": matched, "matched_share": share}),
        &table,
        common.json,
    )?;
    if total32 == 0 {
        bail!("the model found nothing in these images: no agreement to measure");
    }
    if share < 0.99 {
        bail!(
            "only {:.2} % of FP32 boxes matched in FP16 (need 99 %)",
            100.0 * share
        );
    }
    Ok(())
}
