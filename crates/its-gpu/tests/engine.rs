//! The native engine's plan against ONNX Runtime (CPU reference executor, every machine), and
//! the CUDA executor against the CPU reference (GPU machines; skipped with a message elsewhere).

use std::path::{Path, PathBuf};

use its_engine::{Engine, ModelManifest, OrtEngine, OrtOptions};
use its_gpu::GpuContext;
use its_gpu::engine::cuda::{from_elems, to_elems};
use its_gpu::engine::plan::{Act, Op};
use its_gpu::engine::tensor::{relative_error, sample_input};
use its_gpu::engine::{ConvMath, CudaEngine, EngineBuildError, EngineOptions, Plan, cpu};
use its_gpu::testdata::gpu_or_skip;
use its_model::onnx::ModelProto;
use its_model::synth::{Arch, SynthSpec, write};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn synth(arch: Arch, imgsz: usize, classes: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        &SynthSpec {
            arch,
            seed: 7,
            imgsz,
            classes,
        },
        dir.path(),
    )
    .unwrap();
    dir
}

fn load(dir: &Path) -> (ModelProto, ModelManifest) {
    let manifest = ModelManifest::load(dir).unwrap();
    let model = ModelProto::read(&manifest.model_path(dir)).unwrap();
    (model, manifest)
}

/// Runs the plan on the CPU and ONNX Runtime on the same batch; returns the relative error.
fn plan_vs_ort(dir: &Path, batch: usize) -> f32 {
    let (model, manifest) = load(dir);
    let spec = &manifest.input;
    let (h, w) = (spec.height as usize, spec.width as usize);
    let plan = Plan::build(&model, [batch, 3, h, w]).unwrap();
    let x = sample_input(batch * 3 * h * w, 1);
    let ours = cpu::run(&plan, &x).unwrap();
    let mut ort =
        OrtEngine::load(&manifest.model_path(dir), &manifest, &OrtOptions::default()).unwrap();
    let theirs = ort.run(&x, batch).unwrap();
    assert_eq!(plan.shape(plan.outputs[0].1), theirs.shape.as_slice());
    relative_error(&ours[0], &theirs.data)
}

#[test]
fn plan_matches_onnx_runtime_on_the_generated_tiny_yolo() {
    let err = plan_vs_ort(&workspace().join("models/generated/tiny-yolo"), 2);
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn plan_matches_onnx_runtime_on_synth_yolo11n() {
    let dir = synth(Arch::Yolo11n, 160, 80);
    let err = plan_vs_ort(dir.path(), 2);
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn plan_matches_onnx_runtime_on_synth_yolov8n() {
    let dir = synth(Arch::Yolov8n, 128, 3);
    let err = plan_vs_ort(dir.path(), 1);
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn plan_folds_shape_arithmetic_and_fuses_activations() {
    let dir = synth(Arch::Yolo11n, 160, 80);
    let (model, _) = load(dir.path());
    let plan = Plan::build(&model, [1, 3, 160, 160]).unwrap();
    let kinds: Vec<&str> = plan.ops.iter().map(|o| o.kind()).collect();
    let count = |k: &str| kinds.iter().filter(|&&x| x == k).count();
    let graph_convs = model
        .graph()
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .count();
    assert_eq!(count("conv"), graph_convs);
    // Every SiLU went into its convolution: no Sigmoid·Mul pair survives as separate ops
    // except the head's class sigmoid.
    let standalone_act = count("act");
    assert!(
        standalone_act <= 2,
        "{standalone_act} activations left: {kinds:?}"
    );
    // Each fused SiLU removed a Sigmoid and a Mul node: the remaining element-wise binary
    // ops are exactly the graph's others.
    let ops = model.op_counts();
    let n = |k: &str| ops.get(k).copied().unwrap_or(0);
    let fused = n("Sigmoid") - standalone_act;
    // Each residual Add went into the convolution that feeds it.
    let residual = |act: Option<Act>| {
        plan.ops
            .iter()
            .filter(|o| {
                matches!(o, Op::Conv(c) if c.residual.is_some() && act.is_none_or(|a| a == c.act))
            })
            .count()
    };
    assert_eq!(
        count("binary") + residual(None),
        n("Add") + n("Sub") + n("Mul") + n("Div") - fused
    );
    // The bottlenecks' shortcuts, counted on the graph: an Add of which one input is a
    // SiLU (x * sigmoid(x)) of a Conv's output. Every one of them is a fused residual.
    let nodes = &model.graph().node;
    let producer = |name: &str| nodes.iter().find(|n| n.output.iter().any(|o| o == name));
    let is_conv = |name: &str| producer(name).is_some_and(|p| p.op_type == "Conv");
    let is_silu_of_conv = |name: &str| {
        producer(name).is_some_and(|m| {
            m.op_type == "Mul"
                && m.input.iter().any(|i| is_conv(i))
                && m.input.iter().any(|i| {
                    producer(i).is_some_and(|s| s.op_type == "Sigmoid" && is_conv(&s.input[0]))
                })
        })
    };
    let shortcuts = nodes
        .iter()
        .filter(|n| n.op_type == "Add" && n.input.iter().any(|i| is_silu_of_conv(i)))
        .count();
    assert!(shortcuts >= 8, "{shortcuts} shortcuts in the synth YOLO11n");
    assert_eq!(residual(Some(Act::Silu)), shortcuts);
}

#[test]
fn c2f_and_c3k2_splits_and_the_heads_box_and_class_split_copy_nothing() {
    // Both detectors have 8 such blocks (YOLOv8n: C2f at layers 2, 4, 6, 8, 12, 15, 18, 21;
    // YOLO11n: C3k2 at 2, 4, 6, 8, 13, 16, 19, 22). Each splits its first convolution's output
    // into halves and concatenates both with the bottlenecks' outputs: folded, the
    // concatenation reads that convolution's output whole, and only the half the bottleneck
    // reads is still narrowed.
    for arch in [Arch::Yolov8n, Arch::Yolo11n] {
        let dir = synth(arch, 64, 3);
        let (model, _) = load(dir.path());
        let plan = Plan::build(&model, [1, 3, 64, 64]).unwrap();
        let conv_out = |t| {
            plan.ops
                .iter()
                .any(|o| matches!(o, Op::Conv(c) if c.y == t))
        };
        let narrowed = |t| {
            plan.ops
                .iter()
                .any(|o| matches!(o, Op::Narrow { x, .. } if *x == t))
        };
        let whole = plan
            .ops
            .iter()
            .filter(|o| matches!(o, Op::Concat { xs, .. } if conv_out(xs[0]) && narrowed(xs[0])))
            .count();
        assert_eq!(whole, 8, "{arch:?}");
        // The head's box and class narrows of the levels' concatenation read each level's
        // parts instead: no narrow of a concatenation is left.
        let concat_out = |t| {
            plan.ops
                .iter()
                .any(|o| matches!(o, Op::Concat { y, .. } if *y == t))
        };
        assert!(
            !plan
                .ops
                .iter()
                .any(|o| matches!(o, Op::Narrow { x, .. } if concat_out(*x))),
            "{arch:?}"
        );
    }
}

#[test]
fn an_unsupported_operator_is_named_with_its_node() {
    let dir = synth(Arch::Yolov8n, 64, 1);
    let (mut model, _) = load(dir.path());
    let graph = model.graph.as_mut().unwrap();
    let node = graph
        .node
        .iter_mut()
        .find(|n| n.op_type == "Sigmoid")
        .unwrap();
    node.op_type = "Erf".into();
    let name = node.name.clone();
    let err = Plan::build(&model, [1, 3, 64, 64]).unwrap_err();
    match &err {
        EngineBuildError::Unsupported { op, node, .. } => {
            assert_eq!(op, "Erf");
            assert_eq!(node, &name);
        }
        other => panic!("expected Unsupported, got {other}"),
    }
    assert!(err.to_string().contains("Erf"));
}

#[test]
fn a_profile_that_contradicts_a_fixed_input_dimension_is_refused() {
    let (model, _) = load(&workspace().join("models/generated/tiny-yolo"));
    let err = Plan::build(&model, [1, 4, 320, 320]).unwrap_err();
    assert!(err.to_string().contains("dimension 1"), "{err}");
}

fn gpu_vs_cpu(gpu: &GpuContext, dir: &Path, batch: usize) -> f32 {
    gpu_vs_cpu_with(gpu, dir, batch, EngineOptions::default())
}

fn gpu_vs_cpu_with(gpu: &GpuContext, dir: &Path, batch: usize, opts: EngineOptions) -> f32 {
    let (model, manifest) = load(dir);
    let spec = &manifest.input;
    let (h, w) = (spec.height as usize, spec.width as usize);
    let plan = Plan::build(&model, [batch, 3, h, w]).unwrap();
    let x = sample_input(batch * 3 * h * w, 3);
    let reference = cpu::run(&plan, &x).unwrap();
    let mut engine = CudaEngine::build(gpu, plan, opts).unwrap();
    let r = engine.report();
    eprintln!(
        "{} b{batch} {:?}: {} of {} convolutions fused ({} tried, {:.0} ms), notes {:?}",
        dir.display(),
        opts.math,
        r.fused_convs,
        r.convs,
        r.fused_tried,
        r.fused_ms,
        r.fused_notes
    );
    let ours = engine.run(&x).unwrap();
    // A second run replays the graph on the same buffers: same answer.
    let again = engine.run(&x).unwrap();
    assert_eq!(ours, again, "replay differs from the first run");
    relative_error(&ours[0], &reference[0])
}

#[test]
fn gpu_engine_matches_the_cpu_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    for (arch, size, classes, batch) in [
        (Arch::Yolo11n, 160, 80, 1),
        (Arch::Yolo11n, 320, 80, 3),
        (Arch::Yolov8n, 128, 5, 2),
        // 3 classes: the class heads' last convolutions run on conv1x1_few too.
        (Arch::Yolov8n, 96, 3, 2),
    ] {
        let dir = synth(arch, size, classes);
        let err = gpu_vs_cpu(&gpu, dir.path(), batch);
        eprintln!("{arch:?} {size} batch {batch}: relative error {err:.2e}");
        assert!(
            err < 1e-3,
            "{arch:?} {size} batch {batch}: relative error {err}"
        );
    }
    if workspace().join(".cache/yolov3-tiny").is_dir() {
        let dir = yolov3_tiny();
        let err = gpu_vs_cpu(&gpu, dir.path(), 2);
        assert!(err < 1e-3, "yolov3-tiny: relative error {err}");
    }
    let tiny = workspace().join("models/generated/tiny-yolo");
    if tiny.is_dir() {
        let err = gpu_vs_cpu(&gpu, &tiny, 4);
        assert!(err < 1e-3, "tiny-yolo: relative error {err}");
    }
}

#[test]
fn gpu_fp16_engine_tracks_the_cpu_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let opts = EngineOptions {
        math: ConvMath::Fp16,
        ..EngineOptions::default()
    };
    let dir = synth(Arch::Yolo11n, 320, 80);
    let err = gpu_vs_cpu_with(&gpu, dir.path(), 2, opts);
    eprintln!("Yolo11n 320 batch 2 FP16: relative error {err:.2e}");
    // FP16 storage keeps ~3 significant digits per layer; 88 layers of random weights.
    assert!(err < 5e-2, "FP16 relative error {err}");
}

#[test]
fn gpu_fused_fp16_convolutions_track_the_cpu_reference_as_the_unfused_pair_does() {
    let Some(gpu) = gpu_or_skip() else { return };
    let fused = EngineOptions {
        math: ConvMath::Fp16,
        fused: true,
        ..EngineOptions::default()
    };
    let unfused = EngineOptions {
        fused: false,
        ..fused
    };
    let mut models = vec![
        (synth(Arch::Yolo11n, 320, 80), 2),
        (synth(Arch::Yolov8n, 128, 5), 3),
    ];
    if workspace().join(".cache/yolov3-tiny").is_dir() {
        // LeakyRelu: cuDNN's RELU with a lower slope.
        models.push((yolov3_tiny(), 2));
    }
    for (dir, batch) in &models {
        let with = gpu_vs_cpu_with(&gpu, dir.path(), *batch, fused);
        let without = gpu_vs_cpu_with(&gpu, dir.path(), *batch, unfused);
        eprintln!(
            "{}: fused {with:.2e}, unfused {without:.2e}",
            dir.path().display()
        );
        assert!(with < 5e-2, "fused FP16 relative error {with}");
        assert!(without < 5e-2, "unfused FP16 relative error {without}");
    }
}

/// The COCO-trained YOLOv3-tiny that set-up fetches, imported by `its model import darknet`.
fn yolov3_tiny() -> tempfile::TempDir {
    let src = workspace().join(".cache/yolov3-tiny");
    let dir = tempfile::tempdir().unwrap();
    its_model::darknet::import(
        &src.join("yolov3-tiny.cfg"),
        &src.join("yolov3-tiny.weights"),
        &src.join("coco.names"),
        dir.path(),
    )
    .unwrap_or_else(|e| panic!("import {} (run scripts/setup.sh): {e}", src.display()));
    dir
}

#[test]
fn plan_matches_onnx_runtime_on_the_imported_yolov3_tiny() {
    let dir = yolov3_tiny();
    let err = plan_vs_ort(dir.path(), 2);
    assert!(err < 1e-4, "relative error {err}");
}

/// The channels-last rewrite gives the same outputs on the CPU reference, and puts the
/// convolutions in NHWC.
fn nhwc_rewrite_is_exact(dir: &Path, batch: usize) {
    let (model, manifest) = load(dir);
    let spec = &manifest.input;
    let (h, w) = (spec.height as usize, spec.width as usize);
    let plan = Plan::build(&model, [batch, 3, h, w]).unwrap();
    let rewritten = its_gpu::engine::layout::to_nhwc(&plan);
    let convs = |p: &Plan| {
        p.ops
            .iter()
            .filter(|o| matches!(o, its_gpu::engine::Op::Conv(_)))
            .count()
    };
    let nhwc_convs = rewritten
        .ops
        .iter()
        .filter(|o| matches!(o, its_gpu::engine::Op::Conv(c) if c.nhwc))
        .count();
    assert_eq!(convs(&rewritten), convs(&plan));
    assert!(
        nhwc_convs * 10 >= convs(&plan) * 8,
        "only {nhwc_convs} of {} convolutions channels-last",
        convs(&plan)
    );
    let x = sample_input(batch * 3 * h * w, 5);
    let a = cpu::run(&plan, &x).unwrap();
    let b = cpu::run(&rewritten, &x).unwrap();
    let err = relative_error(&b[0], &a[0]);
    assert!(err < 1e-6, "{}: relative error {err}", dir.display());
}

#[test]
fn channels_last_rewrite_keeps_the_outputs() {
    nhwc_rewrite_is_exact(synth(Arch::Yolo11n, 160, 80).path(), 2);
    nhwc_rewrite_is_exact(synth(Arch::Yolov8n, 128, 3).path(), 1);
    nhwc_rewrite_is_exact(yolov3_tiny().path(), 1);
}

/// Builds `dir`'s plan with the liveness-planned arena, feeds it through the input view,
/// reads the output view, and compares with the CPU reference (separate buffers, and the
/// context's own rewritten plan run through the same arena layout on the CPU).
fn arena_vs_cpu(gpu: &GpuContext, dir: &Path, batch: usize, math: ConvMath) -> f32 {
    use its_gpu::engine::memory::verify;
    let (model, manifest) = load(dir);
    let (h, w) = (
        manifest.input.height as usize,
        manifest.input.width as usize,
    );
    let plan = Plan::build(&model, [batch, 3, h, w]).unwrap();
    let x = sample_input(batch * 3 * h * w, 9);
    let reference = cpu::run(&plan, &x).unwrap();
    let opts = EngineOptions {
        math,
        ..EngineOptions::default()
    };
    let mut engine = CudaEngine::build(gpu, plan, opts).unwrap();
    let r = engine.report().clone();
    eprintln!(
        "{} b{batch} {math:?}: arena {:.1} MiB of {:.1} MiB unplanned, workspace {:.1} MiB",
        dir.display(),
        r.activation_bytes as f64 / 1048576.0,
        r.unplanned_activation_bytes as f64 / 1048576.0,
        r.workspace_bytes as f64 / 1048576.0
    );
    assert_eq!(r.activation_bytes, engine.memory().arena_bytes);
    assert!(
        r.activation_bytes * 2 < r.unplanned_activation_bytes,
        "{r:?}"
    );
    verify(engine.plan(), engine.memory()).unwrap();
    let in_arena = cpu::run_in_arena(engine.plan(), &x, engine.memory()).unwrap();
    assert!(relative_error(&in_arena[0], &reference[0]) < 1e-6);
    // Through the views, the way the GPU worker feeds and reads a context.
    let stream = engine.stream().clone();
    let bytes = to_elems(&x, math);
    {
        let mut input = engine.input_view_mut();
        assert_eq!(input.len(), bytes.len());
        stream.memcpy_htod(bytes.as_slice(), &mut input).unwrap();
    }
    engine.launch().unwrap();
    let (view, shape) = engine.output_view(0).unwrap();
    assert_eq!(shape, engine.plan().shape(engine.plan().outputs[0].1));
    let out = from_elems(&stream.clone_dtoh(&view).unwrap(), math);
    stream.synchronize().unwrap();
    // And run() (copies in and out of the same arena) agrees with the views.
    let ran = engine.run(&x).unwrap();
    assert_eq!(ran[0], out, "run() and the views differ");
    relative_error(&out, &reference[0])
}

#[test]
fn gpu_arena_engine_matches_the_cpu_reference_through_its_views() {
    let Some(gpu) = gpu_or_skip() else { return };
    let y11 = synth(Arch::Yolo11n, 320, 80);
    let err = arena_vs_cpu(&gpu, y11.path(), 2, ConvMath::Fp32);
    assert!(err < 1e-3, "yolo11n fp32: relative error {err}");
    let err = arena_vs_cpu(&gpu, y11.path(), 2, ConvMath::Fp16);
    assert!(err < 5e-2, "yolo11n fp16: relative error {err}");
    let v8 = synth(Arch::Yolov8n, 128, 5);
    let err = arena_vs_cpu(&gpu, v8.path(), 3, ConvMath::Fp32);
    assert!(err < 1e-3, "yolov8n fp32: relative error {err}");
    if workspace().join(".cache/yolov3-tiny").is_dir() {
        let v3 = yolov3_tiny();
        let err = arena_vs_cpu(&gpu, v3.path(), 2, ConvMath::Fp32);
        assert!(err < 1e-3, "yolov3-tiny fp32: relative error {err}");
        let err = arena_vs_cpu(&gpu, v3.path(), 2, ConvMath::Fp16);
        assert!(err < 5e-2, "yolov3-tiny fp16: relative error {err}");
    } else {
        eprintln!("yolov3-tiny skipped: .cache/yolov3-tiny missing");
    }
}

/// A synthetic YOLO11n at 320 (80 classes), an empty engine cache for it and FP16 options;
/// the temporary directories live as long as the first value.
fn cached_yolo11n_320() -> (
    [tempfile::TempDir; 2],
    its_model::onnx::ModelProto,
    its_gpu::engine::EngineCache,
    EngineOptions,
) {
    let dir = synth(Arch::Yolo11n, 320, 80);
    let (model, manifest) = load(dir.path());
    let onnx = manifest.model_path(dir.path());
    let cache_dir = tempfile::tempdir().unwrap();
    let cache =
        its_gpu::engine::EngineCache::for_model(&onnx, Some(cache_dir.path().join("engine")))
            .unwrap();
    let opts = EngineOptions {
        math: ConvMath::Fp16,
        ..EngineOptions::default()
    };
    ([dir, cache_dir], model, cache, opts)
}

#[test]
fn gpu_profiles_restored_together_compute_what_they_computed_when_timed() {
    use its_gpu::engine::CacheOutcome;
    let Some(gpu) = gpu_or_skip() else { return };
    let (_dirs, model, cache, opts) = cached_yolo11n_320();
    let batches = [1usize, 2, 4, 8];
    let plans = || {
        batches
            .iter()
            .map(|&b| Plan::build(&model, [b, 3, 320, 320]).unwrap())
            .collect::<Vec<_>>()
    };
    let inputs: Vec<Vec<f32>> = batches
        .iter()
        .map(|&b| sample_input(b * 3 * 320 * 320, b as u64))
        .collect();
    // Cold: every profile times its layers (one after another) and writes its file.
    let mut cold = CudaEngine::build_all(&gpu, plans(), opts, Some(&cache)).unwrap();
    assert_eq!(cold.len(), batches.len());
    let timed: Vec<Vec<f32>> = cold
        .iter_mut()
        .zip(&inputs)
        .map(|(e, x)| {
            assert!(matches!(e.report().cache, CacheOutcome::Miss { .. }));
            e.run(x).unwrap().swap_remove(0)
        })
        .collect();
    drop(cold);
    // Cached: every profile has its file, so all four restore at once, each on its own
    // thread.
    let mut warm = CudaEngine::build_all(&gpu, plans(), opts, Some(&cache)).unwrap();
    for (i, (e, x)) in warm.iter_mut().zip(&inputs).enumerate() {
        let r = e.report().clone();
        assert!(
            matches!(r.cache, CacheOutcome::Hit(_)),
            "batch {}: {}",
            batches[i],
            r.cache
        );
        assert_eq!(r.timing_ms, 0.0);
        assert_eq!(e.plan().shape(e.plan().input)[0], batches[i]);
        let y = e.run(x).unwrap().swap_remove(0);
        assert!(
            relative_error(&y, &timed[i]) < 1e-6,
            "batch {}: the restored profile computes another result",
            batches[i]
        );
    }
}

#[test]
fn gpu_second_build_loads_the_engine_cache_and_skips_timing() {
    use its_gpu::engine::CacheOutcome;
    let Some(gpu) = gpu_or_skip() else { return };
    let (_dirs, model, cache, opts) = cached_yolo11n_320();
    let plan = || Plan::build(&model, [4, 3, 320, 320]).unwrap();
    let x = sample_input(4 * 3 * 320 * 320, 4);

    let mut first = CudaEngine::build_cached(&gpu, plan(), opts, &cache).unwrap();
    let r1 = first.report().clone();
    let CacheOutcome::Miss { written, reason } = &r1.cache else {
        panic!("first build: expected a miss, got {}", r1.cache)
    };
    let file = written.clone().expect("cache file written");
    assert!(file.is_file(), "{reason}");
    let a = first.run(&x).unwrap();
    drop(first);

    let mut second = CudaEngine::build_cached(&gpu, plan(), opts, &cache).unwrap();
    let r2 = second.report().clone();
    eprintln!(
        "build {:.0} ms (timing {:.0} ms, {}), then {:.0} ms ({})",
        r1.build_ms, r1.timing_ms, r1.cache, r2.build_ms, r2.cache
    );
    assert_eq!(r2.cache, CacheOutcome::Hit(file.clone()));
    assert_eq!(r2.timing_ms, 0.0);
    assert!(
        r2.build_ms < r1.build_ms,
        "cached build {} ms, first {} ms",
        r2.build_ms,
        r1.build_ms
    );
    assert_eq!(r2.workspace_bytes, r1.workspace_bytes);
    // The fused layers come back as they were chosen, from cuDNN's serialized plans where
    // the file holds them (cuDNN serializes only its runtime-compiled engines).
    assert_eq!(r2.fused_convs, r1.fused_convs, "{:?}", r2.fused_notes);
    let stored: its_gpu::engine::cache::CacheFile =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let serialized = stored
        .convs
        .iter()
        .filter(|c| c.fused_plan.is_some())
        .count();
    eprintln!(
        "fused {} of {}, {serialized} plans serialized, {} restored",
        r2.fused_convs, r2.fused_tried, r2.fused_restored
    );
    assert_eq!(r2.fused_restored, serialized, "{:?}", r2.fused_notes);
    let b = second.run(&x).unwrap();
    assert!(
        relative_error(&b[0], &a[0]) < 1e-6,
        "the cached choices compute another result"
    );
    drop(second);

    // A corrupt file: rebuilt with a reason, rewritten, then a hit again.
    std::fs::write(&file, b"{ not json").unwrap();
    let third = CudaEngine::build_cached(&gpu, plan(), opts, &cache).unwrap();
    match &third.report().cache {
        CacheOutcome::Miss { reason, written } => {
            assert!(reason.contains("corrupt"), "{reason}");
            assert!(written.is_ok());
        }
        other => panic!("expected a miss on a corrupt file, got {other}"),
    }
    drop(third);
    let fourth = CudaEngine::build_cached(&gpu, plan(), opts, &cache).unwrap();
    assert!(fourth.report().cache.is_hit());
}

#[test]
fn gpu_contexts_of_one_model_share_its_weights_while_one_lives() {
    let Some(gpu) = gpu_or_skip() else { return };
    let dir = synth(Arch::Yolo11n, 320, 80);
    let (model, _) = load(dir.path());
    let opts = EngineOptions {
        math: ConvMath::Fp16,
        fused: false,
        ..EngineOptions::default()
    };
    let build = |batch: usize| {
        let plan = Plan::build(&model, [batch, 3, 320, 320]).unwrap();
        CudaEngine::build(&gpu, plan, opts).unwrap()
    };
    let mut one = build(1);
    let mut four = build(4);
    let (r1, r4) = (one.report().clone(), four.report().clone());
    assert!(r1.weight_bytes > 0);
    assert_eq!(r1.weight_bytes_shared, 0, "the first context uploads");
    assert_eq!(r4.weight_bytes, r1.weight_bytes);
    assert_eq!(
        r4.weight_bytes_shared, r4.weight_bytes,
        "the second profile uploads none of the weights again"
    );
    // Sharing changes nothing in what either computes: frame 0 of batch 4 equals batch 1.
    let x1 = sample_input(3 * 320 * 320, 9);
    let mut x4 = x1.clone();
    x4.extend(sample_input(3 * 3 * 320 * 320, 10));
    let a = one.run(&x1).unwrap();
    let b = four.run(&x4).unwrap();
    let per_frame = a[0].len();
    assert!(relative_error(&b[0][..per_frame], &a[0]) < 1e-2);
    drop(one);
    drop(four);
    // Once no context holds them, the weights are freed, and the next build uploads again.
    let again = build(1);
    assert_eq!(again.report().weight_bytes_shared, 0);
}

#[test]
fn gpu_direct_stem_kernel_tracks_the_cpu_reference_as_cudnn_does() {
    let Some(gpu) = gpu_or_skip() else { return };
    let direct = EngineOptions {
        math: ConvMath::Fp16,
        fused: false,
        direct_stem: true,
        ..EngineOptions::default()
    };
    let cudnn = EngineOptions {
        direct_stem: false,
        ..direct
    };
    // Two models, sizes and batches; the 3x3 windows of the border rows read the padding.
    for (arch, size, classes, batch) in [(Arch::Yolo11n, 320, 80, 2), (Arch::Yolov8n, 96, 5, 3)] {
        let dir = synth(arch, size, classes);
        let (model, manifest) = load(dir.path());
        let (h, w) = (
            manifest.input.height as usize,
            manifest.input.width as usize,
        );
        let plan = || Plan::build(&model, [batch, 3, h, w]).unwrap();
        let x = sample_input(batch * 3 * h * w, 5);
        let reference = cpu::run(&plan(), &x).unwrap();
        let mut a = CudaEngine::build(&gpu, plan(), direct).unwrap();
        let mut b = CudaEngine::build(&gpu, plan(), cudnn).unwrap();
        assert!(a.report().direct_stem, "{arch:?}: the stem kernel is used");
        assert!(!b.report().direct_stem);
        let (ya, yb) = (a.run(&x).unwrap(), b.run(&x).unwrap());
        let (ea, eb) = (
            relative_error(&ya[0], &reference[0]),
            relative_error(&yb[0], &reference[0]),
        );
        let between = relative_error(&ya[0], &yb[0]);
        eprintln!("{arch:?} {size} b{batch}: stem {ea:.2e}, cuDNN {eb:.2e}, between {between:.2e}");
        assert!(ea < 5e-2 && eb < 5e-2, "stem {ea}, cuDNN {eb}");
        assert!(between < 2e-2, "stem kernel vs cuDNN: {between}");
    }
}

/// Small enough for compute-sanitizer (`gpu_small`): no algorithm timing, no fused graphs.
#[test]
fn gpu_small_depthwise_kernel_tracks_the_cpu_reference_as_cudnn_does() {
    let Some(gpu) = gpu_or_skip() else { return };
    let direct = EngineOptions {
        math: ConvMath::Fp16,
        fused: false,
        time_algorithms: false,
        direct_depthwise: true,
        ..EngineOptions::default()
    };
    let cudnn = EngineOptions {
        direct_depthwise: false,
        ..direct
    };
    // YOLO11n has 7 depthwise 3x3 convolutions (the attention's positional one, two per head
    // level), 64 to 256 channels. At 96 pixels the deepest level is 3x3, where every window
    // but the centre one reads padding; batch 3 and 80 or 5 classes vary the other shapes.
    for (size, classes, batch) in [(160, 80, 2), (96, 5, 3)] {
        let dir = synth(Arch::Yolo11n, size, classes);
        let (model, manifest) = load(dir.path());
        let (h, w) = (
            manifest.input.height as usize,
            manifest.input.width as usize,
        );
        let plan = || Plan::build(&model, [batch, 3, h, w]).unwrap();
        let x = sample_input(batch * 3 * h * w, 11);
        let reference = cpu::run(&plan(), &x).unwrap();
        let mut a = CudaEngine::build(&gpu, plan(), direct).unwrap();
        let mut b = CudaEngine::build(&gpu, plan(), cudnn).unwrap();
        assert_eq!(a.report().depthwise_convs, 7, "{size}: the kernel is used");
        assert_eq!(b.report().depthwise_convs, 0);
        let (ya, yb) = (a.run(&x).unwrap(), b.run(&x).unwrap());
        let (ea, eb) = (
            relative_error(&ya[0], &reference[0]),
            relative_error(&yb[0], &reference[0]),
        );
        let between = relative_error(&ya[0], &yb[0]);
        eprintln!("Yolo11n {size} b{batch}: ours {ea:.2e}, cuDNN {eb:.2e}, between {between:.2e}");
        assert!(ea < 5e-2 && eb < 5e-2, "ours {ea}, cuDNN {eb}");
        assert!(between < 2e-2, "depthwise kernel vs cuDNN: {between}");
    }
}

/// A small FP16 engine that runs every kernel family of the real ones (the stem, the DFL's
/// few-outputs 1x1, channels-last convolutions, element-wise, copy and concat kernels) with
/// cuDNN's heuristic choice instead of timing every algorithm. It is what compute-sanitizer runs
/// (`gpu_small`): under the sanitizer, the algorithm timing of the larger tests runs past any
/// sane limit.
#[test]
fn gpu_small_fp16_engine_runs_the_stem_and_dfl_kernels_like_the_cpu_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let opts = EngineOptions {
        math: ConvMath::Fp16,
        time_algorithms: false,
        fused: false,
        direct_stem: true,
        ..EngineOptions::default()
    };
    // 3 classes: the class heads' last convolutions run on conv1x1_few beside the DFL.
    let dir = synth(Arch::Yolov8n, 64, 3);
    let (model, manifest) = load(dir.path());
    let (h, w) = (
        manifest.input.height as usize,
        manifest.input.width as usize,
    );
    let engine = CudaEngine::build(&gpu, Plan::build(&model, [1, 3, h, w]).unwrap(), opts).unwrap();
    assert!(engine.report().direct_stem, "the stem kernel is used");
    assert_eq!(engine.report().timing_ms, 0.0, "nothing was timed");
    drop(engine);
    for batch in [1, 2] {
        let err = gpu_vs_cpu_with(&gpu, dir.path(), batch, opts);
        eprintln!("Yolov8n 64 batch {batch} FP16: relative error {err:.2e}");
        assert!(err < 5e-2, "batch {batch}: relative error {err}");
    }
}
