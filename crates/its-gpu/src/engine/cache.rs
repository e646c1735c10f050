//! The engine cache file: what a build decided or compiled that is costly to redo (the cuDNN
//! algorithm and its workspace per convolution; for a fused layer its engine configuration and
//! cuDNN's serialization of the finalized plan, compiled kernel included), one JSON file per
//! batch profile, keyed by everything the decision depends on: GPU name and compute
//! capability, driver, cuDNN, the model's bytes (sha256), precision and layout, and the input
//! shape of the profile. Our own plan is not stored: lowering the ONNX again is cheap and exact.
//!
//! A later build whose key matches loads the choices and skips the timing. A missing file, a
//! key that differs (the field is named), a file that does not parse or that does not fit the
//! plan: the build times again, logs why, and writes a fresh file. Nothing here can fail a
//! build. Host-only, so everything is tested without a GPU.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::plan::{Conv, Op, Plan};

/// Version of the file layout and of the plans whose ops it indexes (4: the plan rewrites
/// of narrows and concatenations renumber the ops; 5: residual additions fused into their
/// convolutions; 6: concatenation inputs written in place, strided fused graphs); a file of
/// another version is a miss.
pub const CACHE_FORMAT: u32 = 6;

/// Where a model's build decisions are cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCache {
    /// Directory of the cache files (created on first write).
    pub dir: PathBuf,
    /// sha256 of the model file's bytes, lower-case hex.
    pub model_sha256: String,
}

impl EngineCache {
    /// A cache for the model file at `model` in `dir` (default: [`default_dir`]).
    pub fn for_model(model: &Path, dir: Option<PathBuf>) -> std::io::Result<Self> {
        let bytes = std::fs::read(model)?;
        Ok(Self {
            dir: dir.unwrap_or_else(|| default_dir(model)),
            model_sha256: sha256_hex(&bytes),
        })
    }

    /// The file for `key` (one per model, precision, layout and profile; GPU, driver and
    /// cuDNN are checked inside, so a changed driver is a named miss that overwrites it).
    pub fn file(&self, key: &CacheKey) -> PathBuf {
        let [n, c, h, w] = key.input_shape;
        let sha = key.model_sha256.get(..16).unwrap_or(&key.model_sha256);
        let layout = match (key.nhwc, key.direct_depthwise, key.concat_in_place) {
            (false, _, _) => "nchw",
            (true, true, true) => "nhwc",
            (true, false, true) => "nhwc-cudnn-dw",
            (true, true, false) => "nhwc-copies",
            (true, false, false) => "nhwc-cudnn-dw-copies",
        };
        self.dir
            .join(format!("{sha}-{}-{layout}-{n}x{c}x{h}x{w}.json", key.math))
    }

    /// The file that records a refused build for `key`, beside [`Self::file`].
    fn refusal_file(&self, key: &CacheKey) -> PathBuf {
        self.file(key).with_extension("refused")
    }

    /// Why a build for exactly `key` was refused before (see [`Self::remember_refusal`]);
    /// `None` when nothing is recorded, or when the record is for another GPU, driver or
    /// cuDNN (which may accept what this one refused), or does not parse.
    pub fn refusal(&self, key: &CacheKey) -> Option<String> {
        let text = std::fs::read_to_string(self.refusal_file(key)).ok()?;
        let r: Refusal = serde_json::from_str(&text).ok()?;
        r.key.mismatch(key).is_none().then_some(r.reason)
    }

    /// Records that a build for `key` was refused, and why, so that a later start with the
    /// same key skips the attempt. Returns the record's path.
    pub fn remember_refusal(&self, key: &CacheKey, reason: &str) -> std::io::Result<PathBuf> {
        let path = self.refusal_file(key);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let r = Refusal {
            key: key.clone(),
            reason: reason.to_owned(),
        };
        let json = serde_json::to_string_pretty(&r).map_err(std::io::Error::other)?;
        std::fs::write(&path, json)?;
        Ok(path)
    }
}

/// A refused build: for which key, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Refusal {
    key: CacheKey,
    reason: String,
}

/// The cache directory used when none is given: `$XDG_CACHE_HOME/its/engine`, else
/// `$HOME/.cache/its/engine`, else `.engine-cache` beside the model file.
pub fn default_dir(model: &Path) -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(x) = env("XDG_CACHE_HOME") {
        return x.join("its/engine");
    }
    if let Some(h) = env("HOME") {
        return h.join(".cache/its/engine");
    }
    model
        .parent()
        .unwrap_or(Path::new("."))
        .join(".engine-cache")
}

/// sha256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Everything a cached choice depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// [`CACHE_FORMAT`] of the writer.
    pub format: u32,
    /// GPU name.
    pub gpu: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Driver: CUDA driver API version and kernel module version.
    pub driver: String,
    /// cuDNN version (`cudnnGetVersion`).
    pub cudnn: usize,
    /// sha256 of the model file.
    pub model_sha256: String,
    /// Convolution arithmetic (`fp32`, `tf32`, `fp16`).
    pub math: String,
    /// Channels-last rewrite applied.
    pub nhwc: bool,
    /// Depthwise layers on our kernel (a layer's cached "not fused" then means that kernel).
    #[serde(default)]
    pub direct_depthwise: bool,
    /// Concatenation inputs written in place and narrows read in place (views; see
    /// `engine::slices`): the plan's layers differ with them.
    #[serde(default)]
    pub concat_in_place: bool,
    /// Input shape of the profile `[n, c, h, w]`.
    pub input_shape: [usize; 4],
}

impl CacheKey {
    /// The first field in which `self` (the file's) differs from `now`, as `field: cached X,
    /// now Y`; `None` when they match.
    pub fn mismatch(&self, now: &CacheKey) -> Option<String> {
        fn d<T: fmt::Debug + PartialEq>(f: &str, a: &T, b: &T) -> Option<String> {
            (a != b).then(|| format!("{f}: cached {a:?}, now {b:?}"))
        }
        d("format", &self.format, &now.format)
            .or_else(|| d("gpu", &self.gpu, &now.gpu))
            .or_else(|| {
                d(
                    "compute capability",
                    &self.compute_capability,
                    &now.compute_capability,
                )
            })
            .or_else(|| d("driver", &self.driver, &now.driver))
            .or_else(|| d("cudnn", &self.cudnn, &now.cudnn))
            .or_else(|| d("model sha256", &self.model_sha256, &now.model_sha256))
            .or_else(|| d("math", &self.math, &now.math))
            .or_else(|| d("nhwc", &self.nhwc, &now.nhwc))
            .or_else(|| {
                d(
                    "direct depthwise",
                    &self.direct_depthwise,
                    &now.direct_depthwise,
                )
            })
            .or_else(|| {
                d(
                    "concat in place",
                    &self.concat_in_place,
                    &now.concat_in_place,
                )
            })
            .or_else(|| d("input shape", &self.input_shape, &now.input_shape))
    }
}

/// The choice for one convolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedConv {
    /// Index of the op in the plan.
    pub op: usize,
    /// What the layer computes ([`conv_signature`]), so a file that does not fit is caught.
    pub signature: String,
    /// cuDNN forward algorithm (`cudnnConvolutionFwdAlgo_t` value).
    pub algo: i32,
    /// Workspace bytes the algorithm takes.
    pub workspace: usize,
    /// Its timed device time, ms (informational).
    pub ms: f32,
    /// The fused graph's engine configuration (its position in cuDNN's heuristic order)
    /// when the layer runs fused.
    #[serde(default)]
    pub fused: Option<usize>,
    /// That fused layer's finalized cuDNN execution plan, serialized by cuDNN (its JSON
    /// representation, which carries the runtime-compiled kernel), so that a cached start
    /// restores the plan instead of compiling it again. `None` where cuDNN cannot serialize
    /// the engine; the build then finalizes configuration `fused` again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fused_plan: Option<String>,
}

/// One cache file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheFile {
    /// What the choices hold for.
    pub key: CacheKey,
    /// Per convolution, in plan order.
    pub convs: Vec<CachedConv>,
    /// Wall time of the algorithm timing that produced them, ms.
    pub timing_ms: f64,
}

/// What one convolution layer computes, as text: shapes, kernel, stride, padding, dilation,
/// groups, layout.
pub fn conv_signature(plan: &Plan, c: &Conv) -> String {
    // Strided tensors (concatenation slices) change the fused graph: their pitches count.
    let views: String = std::iter::once(("x", c.x))
        .chain(std::iter::once(("y", c.y)))
        .chain(c.residual.map(|r| ("r", r)))
        .filter_map(|(n, t)| {
            plan.tensors[t]
                .view
                .map(|v| format!(" {n}@{}/{}", v.offset, v.pitch))
        })
        .collect();
    format!(
        "x{:?} y{:?} m{} k{:?} s{:?} p{:?} d{:?} g{} {}{}{views}",
        plan.shape(c.x),
        plan.shape(c.y),
        c.m,
        c.kernel,
        c.stride,
        c.pad,
        c.dilation,
        c.group,
        if c.nhwc { "nhwc" } else { "nchw" },
        if c.residual.is_some() { " +r" } else { "" }
    )
}

/// The convolutions of `plan`: (op index, signature).
pub fn plan_convs(plan: &Plan) -> Vec<(usize, String)> {
    plan.ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op {
            Op::Conv(c) => Some((i, conv_signature(plan, c))),
            _ => None,
        })
        .collect()
}

/// Why a cache file was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheMiss {
    /// No file for this key.
    NotFound(PathBuf),
    /// The file could not be read or parsed.
    Corrupt(String),
    /// The file is for another GPU, driver, model, ...: the differing field.
    KeyMismatch(String),
    /// The file's layers do not fit the plan, or cuDNN refused a cached choice.
    PlanMismatch(String),
}

impl fmt::Display for CacheMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheMiss::NotFound(p) => write!(f, "no cache file {}", p.display()),
            CacheMiss::Corrupt(e) => write!(f, "corrupt cache file: {e}"),
            CacheMiss::KeyMismatch(e) => write!(f, "cache key differs: {e}"),
            CacheMiss::PlanMismatch(e) => write!(f, "cache does not fit the plan: {e}"),
        }
    }
}

/// Reads the file for `key` and checks it against `key` and `plan`.
pub fn load(cache: &EngineCache, key: &CacheKey, plan: &Plan) -> Result<CacheFile, CacheMiss> {
    let path = cache.file(key);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CacheMiss::NotFound(path));
        }
        Err(e) => return Err(CacheMiss::Corrupt(format!("{}: {e}", path.display()))),
    };
    let file = parse(&text).map_err(|e| CacheMiss::Corrupt(format!("{}: {e}", path.display())))?;
    if let Some(why) = file.key.mismatch(key) {
        return Err(CacheMiss::KeyMismatch(why));
    }
    check_plan(&file, plan).map_err(CacheMiss::PlanMismatch)?;
    Ok(file)
}

/// Whether the file for `key` exists and was written under that same key (format, GPU,
/// driver, cuDNN, model and options). Reads only the key, so it is quicker than [`load`],
/// and does not check the file's layers against a plan.
pub fn key_matches(cache: &EngineCache, key: &CacheKey) -> bool {
    #[derive(Deserialize)]
    struct KeyOnly {
        key: CacheKey,
    }
    let Ok(text) = std::fs::read_to_string(cache.file(key)) else {
        return false;
    };
    serde_json::from_str::<KeyOnly>(&text).is_ok_and(|f| f.key.mismatch(key).is_none())
}

/// Parses a cache file's text.
pub fn parse(text: &str) -> Result<CacheFile, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Whether `file`'s layers are exactly `plan`'s convolutions, in order.
pub fn check_plan(file: &CacheFile, plan: &Plan) -> Result<(), String> {
    let convs = plan_convs(plan);
    if convs.len() != file.convs.len() {
        return Err(format!(
            "{} convolutions cached, the plan has {}",
            file.convs.len(),
            convs.len()
        ));
    }
    for ((op, sig), c) in convs.iter().zip(&file.convs) {
        if *op != c.op || *sig != c.signature {
            return Err(format!(
                "layer at op {op} ({sig}) cached as op {} ({})",
                c.op, c.signature
            ));
        }
    }
    Ok(())
}

/// Writes `file` for its key, atomically (a temporary file renamed into place).
pub fn store(cache: &EngineCache, file: &CacheFile) -> std::io::Result<PathBuf> {
    let path = cache.file(&file.key);
    std::fs::create_dir_all(&cache.dir)?;
    // One temporary name per process and write, so that two builds of one process that
    // store the same key at once do not write into one file.
    static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("json.tmp{}-{n}", std::process::id()));
    let text = serde_json::to_string_pretty(file).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(path)
}

/// What the build did with the cache, for [`super::cuda::BuildReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CacheOutcome {
    /// No cache was asked for, or algorithms are not timed (nothing to cache).
    #[default]
    Off,
    /// The choices came from this file; no timing.
    Hit(PathBuf),
    /// Timed again, with the reason; `written` is the file written (or why writing failed).
    Miss {
        /// Why the cache was not used.
        reason: String,
        /// The file written afterwards, or the error.
        written: Result<PathBuf, String>,
    },
}

impl CacheOutcome {
    /// Whether the choices came from the cache.
    pub fn is_hit(&self) -> bool {
        matches!(self, CacheOutcome::Hit(_))
    }

    /// `hit`, `miss` or `off`.
    pub fn label(&self) -> &'static str {
        match self {
            CacheOutcome::Off => "off",
            CacheOutcome::Hit(_) => "hit",
            CacheOutcome::Miss { .. } => "miss",
        }
    }
}

impl fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheOutcome::Off => write!(f, "off"),
            CacheOutcome::Hit(p) => write!(f, "hit ({})", p.display()),
            CacheOutcome::Miss {
                reason,
                written: Ok(p),
            } => write!(f, "miss ({reason}); wrote {}", p.display()),
            CacheOutcome::Miss {
                reason,
                written: Err(e),
            } => write!(f, "miss ({reason}); not written: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        CacheKey {
            format: CACHE_FORMAT,
            gpu: "NVIDIA H200".into(),
            compute_capability: (9, 0),
            driver: "cuda 13.0, module 580.159.04".into(),
            cudnn: 91_000,
            model_sha256: sha256_hex(b"model"),
            math: "fp16".into(),
            nhwc: true,
            direct_depthwise: true,
            concat_in_place: true,
            input_shape: [8, 3, 640, 640],
        }
    }

    #[test]
    fn sha256_is_the_standard_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn every_key_field_is_named_when_it_differs() {
        let a = key();
        assert_eq!(a.mismatch(&a.clone()), None);
        type Change = Box<dyn Fn(&mut CacheKey)>;
        let cases: Vec<(&str, Change)> = vec![
            ("format", Box::new(|k| k.format += 1)),
            ("gpu", Box::new(|k| k.gpu = "NVIDIA H100".into())),
            (
                "compute capability",
                Box::new(|k| k.compute_capability.1 = 1),
            ),
            ("driver", Box::new(|k| k.driver = "cuda 13.1".into())),
            ("cudnn", Box::new(|k| k.cudnn = 90_100)),
            (
                "model sha256",
                Box::new(|k| k.model_sha256 = sha256_hex(b"other")),
            ),
            ("math", Box::new(|k| k.math = "fp32".into())),
            ("nhwc", Box::new(|k| k.nhwc = false)),
            ("direct depthwise", Box::new(|k| k.direct_depthwise = false)),
            ("concat in place", Box::new(|k| k.concat_in_place = false)),
            ("input shape", Box::new(|k| k.input_shape[0] = 1)),
        ];
        for (field, change) in cases {
            let mut b = key();
            change(&mut b);
            let why = a.mismatch(&b).unwrap_or_else(|| panic!("{field} not seen"));
            assert!(why.starts_with(field), "{field}: {why}");
        }
    }

    #[test]
    fn file_names_separate_profiles_and_options() {
        let c = EngineCache {
            dir: "/c".into(),
            model_sha256: key().model_sha256,
        };
        let a = c.file(&key());
        let mut k = key();
        k.input_shape[0] = 1;
        assert_ne!(a, c.file(&k));
        let mut k = key();
        k.nhwc = false;
        assert_ne!(a, c.file(&k));
        let mut k = key();
        k.direct_depthwise = false;
        assert_ne!(a, c.file(&k));
        let mut k = key();
        k.concat_in_place = false;
        assert_ne!(a, c.file(&k));
        // GPU and driver are checked inside the file: same name.
        let mut k = key();
        k.driver = "other".into();
        assert_eq!(a, c.file(&k));
        assert!(a.to_string_lossy().ends_with("-fp16-nhwc-8x3x640x640.json"));
    }

    #[test]
    fn a_refusal_holds_for_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = EngineCache {
            dir: dir.path().join("sub"),
            model_sha256: key().model_sha256,
        };
        assert_eq!(c.refusal(&key()), None, "nothing recorded yet");
        let path = c
            .remember_refusal(&key(), "conv 3: no fused graph")
            .unwrap();
        assert!(path.is_file());
        assert_ne!(path, c.file(&key()), "the cache file stays free");
        assert_eq!(c.refusal(&key()).as_deref(), Some("conv 3: no fused graph"));
        // Another profile has its own record; another driver may accept what this refused.
        let mut other_batch = key();
        other_batch.input_shape[0] = 1;
        assert_eq!(c.refusal(&other_batch), None);
        let mut other_driver = key();
        other_driver.driver = "cuda 13.1, module 590.1".into();
        assert_eq!(c.file(&other_driver), c.file(&key()), "same file name");
        assert_eq!(c.refusal(&other_driver), None);
        // A record that does not parse counts as none.
        std::fs::write(&path, "not json").unwrap();
        assert_eq!(c.refusal(&key()), None);
    }

    #[test]
    fn outcome_labels() {
        assert_eq!(CacheOutcome::default().label(), "off");
        assert!(CacheOutcome::Hit("/x".into()).is_hit());
        let m = CacheOutcome::Miss {
            reason: "r".into(),
            written: Err("read-only".into()),
        };
        assert_eq!(m.label(), "miss");
        assert!(m.to_string().contains("not written: read-only"));
    }
}
