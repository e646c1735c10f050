//! The engine cache file on the CPU: a written file loads back for the same key and plan; a
//! different key names the field; a corrupt or foreign file is a miss with a reason, never a
//! panic.

use std::path::Path;

use its_engine::ModelManifest;
use its_gpu::engine::Plan;
use its_gpu::engine::cache::{
    self, CACHE_FORMAT, CacheFile, CacheKey, CacheMiss, CachedConv, EngineCache, plan_convs,
};
use its_model::onnx::ModelProto;
use its_model::synth::{Arch, SynthSpec, write};

struct Fixture {
    _model_dir: tempfile::TempDir,
    _cache_dir: tempfile::TempDir,
    cache: EngineCache,
    plan: Plan,
    key: CacheKey,
}

fn fixture(batch: usize) -> Fixture {
    let model_dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec {
        arch: Arch::Yolov8n,
        seed: 3,
        imgsz: 64,
        classes: 2,
    };
    write(&spec, model_dir.path()).unwrap();
    let manifest = ModelManifest::load(model_dir.path()).unwrap();
    let onnx = manifest.model_path(model_dir.path());
    let model = ModelProto::read(&onnx).unwrap();
    let plan = Plan::build(&model, [batch, 3, 64, 64]).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = EngineCache::for_model(&onnx, Some(cache_dir.path().join("engine"))).unwrap();
    assert_eq!(cache.model_sha256.len(), 64);
    let key = CacheKey {
        format: CACHE_FORMAT,
        gpu: "NVIDIA H200".into(),
        compute_capability: (9, 0),
        driver: "cuda 13.0, module 580.159.04".into(),
        cudnn: 91_000,
        model_sha256: cache.model_sha256.clone(),
        math: "fp16".into(),
        nhwc: false,
        direct_depthwise: true,
        concat_in_place: false,
        input_shape: [batch, 3, 64, 64],
    };
    Fixture {
        _model_dir: model_dir,
        _cache_dir: cache_dir,
        cache,
        plan,
        key,
    }
}

fn file_for(f: &Fixture) -> CacheFile {
    let convs = plan_convs(&f.plan)
        .into_iter()
        .enumerate()
        .map(|(k, (op, signature))| CachedConv {
            op,
            signature,
            algo: (k % 3) as i32,
            workspace: k * 1024,
            ms: 0.01,
            fused: (k % 2 == 0).then_some(k % 4),
            fused_plan: (k % 4 == 0).then(|| format!("{{\"plan\": {k}}}")),
        })
        .collect();
    CacheFile {
        key: f.key.clone(),
        convs,
        timing_ms: 123.0,
    }
}

#[test]
fn a_written_file_loads_back_for_the_same_key_and_plan() {
    let f = fixture(2);
    let file = file_for(&f);
    assert!(!file.convs.is_empty());
    let missing = cache::load(&f.cache, &f.key, &f.plan).unwrap_err();
    assert!(matches!(missing, CacheMiss::NotFound(_)), "{missing}");
    let path = cache::store(&f.cache, &file).unwrap();
    assert!(path.starts_with(&f.cache.dir));
    assert_eq!(cache::load(&f.cache, &f.key, &f.plan).unwrap(), file);
    // Overwriting is fine and leaves no temporary file behind.
    cache::store(&f.cache, &file).unwrap();
    let names: Vec<_> = std::fs::read_dir(&f.cache.dir).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn a_file_for_another_driver_gpu_or_model_is_a_named_miss() {
    let f = fixture(1);
    cache::store(&f.cache, &file_for(&f)).unwrap();
    for (field, change) in [
        (
            "driver",
            Box::new(|k: &mut CacheKey| k.driver = "cuda 13.1, module 590.1".into())
                as Box<dyn Fn(&mut CacheKey)>,
        ),
        (
            "gpu",
            Box::new(|k: &mut CacheKey| k.gpu = "NVIDIA H100 80GB HBM3".into()),
        ),
        ("cudnn", Box::new(|k: &mut CacheKey| k.cudnn = 90_700)),
        (
            "compute capability",
            Box::new(|k: &mut CacheKey| k.compute_capability = (8, 0)),
        ),
    ] {
        let mut now = f.key.clone();
        change(&mut now);
        match cache::load(&f.cache, &now, &f.plan) {
            Err(CacheMiss::KeyMismatch(why)) => assert!(why.starts_with(field), "{why}"),
            other => panic!("{field}: expected a key mismatch, got {other:?}"),
        }
    }
    // Another model is another file name: not found.
    let mut now = f.key.clone();
    now.model_sha256 = cache::sha256_hex(b"another model");
    assert!(matches!(
        cache::load(&f.cache, &now, &f.plan),
        Err(CacheMiss::NotFound(_))
    ));
}

#[test]
fn key_matches_only_a_file_written_under_the_same_key() {
    // What decides whether a model's profiles restore side by side: a file of another
    // format or driver (say, from before an upgrade) must not count as cached.
    let f = fixture(1);
    assert!(!cache::key_matches(&f.cache, &f.key), "no file yet");
    cache::store(&f.cache, &file_for(&f)).unwrap();
    assert!(cache::key_matches(&f.cache, &f.key));
    let mut older = f.key.clone();
    older.format = CACHE_FORMAT - 1;
    let mut file = file_for(&f);
    file.key = older;
    cache::store(&f.cache, &file).unwrap();
    assert!(
        !cache::key_matches(&f.cache, &f.key),
        "a file of the previous format"
    );
    let mut other_driver = f.key.clone();
    other_driver.driver = "cuda 13.1, module 590.1".into();
    file.key = other_driver;
    cache::store(&f.cache, &file).unwrap();
    assert!(
        !cache::key_matches(&f.cache, &f.key),
        "a file of another driver"
    );
    std::fs::write(f.cache.file(&f.key), "not json").unwrap();
    assert!(!cache::key_matches(&f.cache, &f.key), "a corrupt file");
}

#[test]
fn corrupt_files_are_misses_with_a_reason() {
    let f = fixture(1);
    let good = serde_json::to_string(&file_for(&f)).unwrap();
    let path = f.cache.file(&f.key);
    std::fs::create_dir_all(&f.cache.dir).unwrap();
    for bad in [
        String::new(),
        "not json".to_owned(),
        good[..good.len() / 2].to_owned(),
        "{\"key\": 1, \"convs\": []}".to_owned(),
        good.replace("\"algo\":", "\"algorithm\":"),
        String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x01]).into_owned(),
    ] {
        std::fs::write(&path, &bad).unwrap();
        match cache::load(&f.cache, &f.key, &f.plan) {
            Err(CacheMiss::Corrupt(why)) => assert!(!why.is_empty()),
            other => panic!("{bad:?}: expected corrupt, got {other:?}"),
        }
    }
    // Not UTF-8 at all.
    std::fs::write(&path, [0xff, 0xfe, 0xfd]).unwrap();
    assert!(matches!(
        cache::load(&f.cache, &f.key, &f.plan),
        Err(CacheMiss::Corrupt(_))
    ));
    // A directory where the file should be.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert!(matches!(
        cache::load(&f.cache, &f.key, &f.plan),
        Err(CacheMiss::Corrupt(_))
    ));
}

#[test]
fn a_file_whose_layers_do_not_fit_the_plan_is_refused() {
    let f = fixture(1);
    let mut file = file_for(&f);
    file.convs[0].signature = "x[1, 3, 64, 64] y[1, 1, 1, 1]".into();
    cache::store(&f.cache, &file).unwrap();
    match cache::load(&f.cache, &f.key, &f.plan) {
        Err(CacheMiss::PlanMismatch(why)) => assert!(why.contains("cached as"), "{why}"),
        other => panic!("expected a plan mismatch, got {other:?}"),
    }
    let mut file = file_for(&f);
    file.convs.pop();
    cache::store(&f.cache, &file).unwrap();
    assert!(matches!(
        cache::load(&f.cache, &f.key, &f.plan),
        Err(CacheMiss::PlanMismatch(_))
    ));
    // The batch-2 plan has other shapes: the batch-1 file does not fit it.
    let two = fixture(2);
    assert!(cache::check_plan(&file_for(&f), &two.plan).is_err());
}

#[test]
fn an_unwritable_cache_directory_is_an_error_not_a_panic() {
    let f = fixture(1);
    // A file where the directory should be.
    let blocker = f.cache.dir.parent().unwrap().join("blocked");
    std::fs::write(&blocker, b"x").unwrap();
    let c = EngineCache {
        dir: blocker.join("engine"),
        model_sha256: f.cache.model_sha256.clone(),
    };
    assert!(cache::store(&c, &file_for(&f)).is_err());
    assert!(cache::load(&c, &f.key, &f.plan).is_err());
}

#[test]
fn the_default_directory_needs_no_configuration() {
    let d = cache::default_dir(Path::new("/models/yolo/model.onnx"));
    assert!(!d.as_os_str().is_empty());
}
