//! [`OrtEngine`]: the ONNX Runtime engine (`ort` with `load-dynamic`).
//!
//! ONNX Runtime is a shared library loaded at run time (see [`find_onnxruntime`]) and
//! initialised once per process; every [`OrtEngine`] shares that environment.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider, ExecutionProviderDispatch};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::engine::{Engine, RawOutput};
use crate::manifest::{InputSpec, ModelManifest, OutputFormat};

/// Environment variable naming the ONNX Runtime shared library.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// An ONNX Runtime execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProviderKind {
    /// MLAS on the CPU; always available.
    Cpu,
    /// NVIDIA CUDA (needs onnxruntime-gpu and the CUDA / cuDNN libraries).
    Cuda,
    /// NVIDIA TensorRT (needs onnxruntime-gpu built with TensorRT, and TensorRT itself).
    Tensorrt,
}

impl ExecutionProviderKind {
    /// The config spelling: `cpu`, `cuda`, `tensorrt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Tensorrt => "tensorrt",
        }
    }
}

impl fmt::Display for ExecutionProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to run a model with ONNX Runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrtOptions {
    /// The ONNX Runtime shared library; `None` searches for it (see [`find_onnxruntime`]).
    pub ort_dylib: Option<PathBuf>,
    /// Threads inside one operator; 0 lets ONNX Runtime choose (one per physical core).
    pub intra_threads: usize,
    /// Execution providers in order of preference; CPU is always the last resort inside
    /// ONNX Runtime for operators the others do not take. Empty means `[cpu]`.
    pub execution_providers: Vec<ExecutionProviderKind>,
    /// When a requested GPU provider is unavailable: `false` fails the load with
    /// [`EngineError::ExecutionProviderUnavailable`]; `true` logs a warning and runs without it.
    pub allow_fallback: bool,
    /// GPU ordinal for the CUDA and TensorRT providers.
    pub device_id: u32,
}

impl Default for OrtOptions {
    fn default() -> Self {
        Self {
            ort_dylib: None,
            intra_threads: 0,
            execution_providers: vec![ExecutionProviderKind::Cpu],
            allow_fallback: false,
            device_id: 0,
        }
    }
}

/// Finds the ONNX Runtime shared library, in this order:
///
/// 1. `explicit` (from config, `engine.ort_dylib`);
/// 2. the `ORT_DYLIB_PATH` environment variable, when set and non-empty;
/// 3. `<dir>/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*` for
///    `dir` in the current directory and its ancestors, then the running executable's
///    directory and its ancestors (so `cargo test` in a crate finds the workspace's venv).
///
/// An explicit or environment path that does not exist is an error, not a reason to keep
/// searching: it is what the operator asked for.
pub fn find_onnxruntime(explicit: Option<&Path>) -> Result<PathBuf, EngineError> {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    find_onnxruntime_with(explicit, std::env::var_os(ORT_DYLIB_ENV), &roots)
}

/// [`find_onnxruntime`] with its environment passed in: `env_value` is the value of
/// `ORT_DYLIB_PATH` and `search_roots` the directories whose `.venv` is searched, in order.
pub fn find_onnxruntime_with(
    explicit: Option<&Path>,
    env_value: Option<OsString>,
    search_roots: &[PathBuf],
) -> Result<PathBuf, EngineError> {
    if let Some(path) = explicit {
        return existing_file(path);
    }
    if let Some(value) = env_value.filter(|v| !v.is_empty()) {
        return existing_file(Path::new(&value));
    }
    let mut searched = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for root in search_roots {
        if !seen.insert(root.clone()) {
            continue;
        }
        let lib = root.join(".venv").join("lib");
        searched.push(lib.join("python3*/site-packages/onnxruntime/capi/libonnxruntime.so*"));
        if let Some(found) = search_venv_lib(&lib) {
            return Ok(found);
        }
    }
    Err(EngineError::OrtLibraryNotFound { searched })
}

fn existing_file(path: &Path) -> Result<PathBuf, EngineError> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(EngineError::OrtLibraryNotFound {
            searched: vec![path.to_path_buf()],
        })
    }
}

/// `<lib>/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*`, the first match in
/// name order of both globs (so `python3.10` before `python3.12`, `libonnxruntime.so` before
/// `libonnxruntime.so.1.32.0`).
fn search_venv_lib(lib: &Path) -> Option<PathBuf> {
    let sorted_names = |dir: &Path, prefix: &str| -> Vec<OsString> {
        let mut names: Vec<OsString> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with(prefix))
            .collect();
        names.sort();
        names
    };
    for py in sorted_names(lib, "python3") {
        let capi = lib.join(py).join("site-packages/onnxruntime/capi");
        for name in sorted_names(&capi, "libonnxruntime.so") {
            let path = capi.join(name);
            if path.is_file() {
                return Some(path);
            }
        }
    }
    None
}

struct OrtRuntime {
    dylib: PathBuf,
    env: Environment,
}

/// The process-wide ONNX Runtime: loaded once, never unloaded.
static RUNTIME: Mutex<Option<OrtRuntime>> = Mutex::new(None);

/// Loads ONNX Runtime and creates the process-wide environment on first use; later calls
/// return the same environment. Asking for a different library once one is loaded is
/// [`EngineError::OrtAlreadyInitialised`].
///
/// Returns the library path in use and the environment.
pub fn ort_environment(explicit: Option<&Path>) -> Result<(PathBuf, Environment), EngineError> {
    let mut runtime = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(rt) = runtime.as_ref() {
        if let Some(requested) = explicit
            && !same_file(requested, &rt.dylib)
        {
            return Err(EngineError::OrtAlreadyInitialised {
                loaded: rt.dylib.clone(),
                requested: requested.to_path_buf(),
            });
        }
        return Ok((rt.dylib.clone(), rt.env.clone()));
    }
    let dylib = find_onnxruntime(explicit)?;
    let builder = ort::init_from(&dylib).map_err(|e| EngineError::OrtLoad {
        path: dylib.clone(),
        message: e.to_string(),
    })?;
    let env = builder
        .with_name("its-engine")
        .with_telemetry(false)
        .build()
        .map_err(|e| EngineError::OrtLoad {
            path: dylib.clone(),
            message: e.to_string(),
        })?;
    tracing::info!(dylib = %dylib.display(), "onnxruntime loaded");
    *runtime = Some(OrtRuntime {
        dylib: dylib.clone(),
        env: env.clone(),
    });
    Ok((dylib, env))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// An [`Engine`] running an ONNX model with ONNX Runtime.
pub struct OrtEngine {
    session: Session,
    input: InputSpec,
    name: String,
    providers: Vec<ExecutionProviderKind>,
}

impl fmt::Debug for OrtEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrtEngine")
            .field("name", &self.name)
            .field("input", &self.input)
            .finish_non_exhaustive()
    }
}

fn ort_err<E: fmt::Display>(context: &'static str) -> impl FnOnce(E) -> EngineError {
    move |e| EngineError::Ort {
        context,
        message: e.to_string(),
    }
}

impl OrtEngine {
    /// Loads `model_path`, checks its interface against `manifest` (see [`check_model_io`])
    /// and prepares the execution providers from `options`.
    pub fn load(
        model_path: &Path,
        manifest: &ModelManifest,
        options: &OrtOptions,
    ) -> Result<Self, EngineError> {
        manifest.validate()?;
        if !model_path.is_file() {
            return Err(EngineError::ManifestRead {
                path: model_path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "model file not found"),
            });
        }
        let (_dylib, env) = ort_environment(options.ort_dylib.as_deref())?;
        let (dispatch, providers) = resolve_providers(&env, options)?;

        let mut builder = Session::builder(&env).map_err(ort_err("creating a session"))?;
        if options.intra_threads > 0 {
            builder = builder
                .with_intra_threads(options.intra_threads)
                .map_err(ort_err("setting intra-op threads"))?;
        }
        builder = builder.with_execution_providers(dispatch).map_err(|e| {
            match providers.iter().find(|p| **p != ExecutionProviderKind::Cpu) {
                Some(p) => EngineError::ExecutionProviderUnavailable {
                    provider: p.as_str(),
                    reason: e.to_string(),
                },
                None => EngineError::Ort {
                    context: "registering execution providers",
                    message: e.to_string(),
                },
            }
        })?;
        let session = builder
            .commit_from_file(model_path)
            .map_err(ort_err("loading the model"))?;

        let describe = |outlets: &[ort::value::Outlet]| -> Vec<TensorDesc> {
            outlets
                .iter()
                .map(|o| match o.dtype() {
                    ValueType::Tensor { ty, shape, .. } => TensorDesc {
                        name: o.name().to_owned(),
                        is_f32: *ty == TensorElementType::Float32,
                        element: ty.to_string(),
                        dims: shape.iter().copied().collect(),
                    },
                    other => TensorDesc {
                        name: o.name().to_owned(),
                        is_f32: false,
                        element: other.to_string(),
                        dims: Vec::new(),
                    },
                })
                .collect()
        };
        check_model_io(
            &describe(session.inputs()),
            &describe(session.outputs()),
            manifest,
        )
        .map_err(|detail| EngineError::ModelMismatch {
            path: model_path.to_path_buf(),
            detail,
        })?;

        let name = format!(
            "ort[{}]:{}",
            providers
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(","),
            manifest.name
        );
        tracing::info!(engine = %name, model = %model_path.display(), "model loaded");
        Ok(Self {
            session,
            input: manifest.input,
            name,
            providers,
        })
    }

    /// The execution providers registered for this session, in order (after fallback).
    pub fn providers(&self) -> &[ExecutionProviderKind] {
        &self.providers
    }
}

/// Builds the provider list. A GPU provider is usable when ONNX Runtime reports it as
/// compiled in *and* it registers on a scratch session builder (which is where missing CUDA,
/// cuDNN or TensorRT libraries show up). An unusable provider fails the load, or with
/// `allow_fallback` is dropped with a warning. The CPU provider is always appended last.
fn resolve_providers(
    env: &Environment,
    options: &OrtOptions,
) -> Result<(Vec<ExecutionProviderDispatch>, Vec<ExecutionProviderKind>), EngineError> {
    let device_id = i32::try_from(options.device_id).unwrap_or(i32::MAX);
    let mut dispatch = Vec::new();
    let mut kinds = Vec::new();
    for &kind in &options.execution_providers {
        if kinds.contains(&kind) {
            continue;
        }
        let (available, ep) = match kind {
            ExecutionProviderKind::Cpu => {
                dispatch.push(ep::CPU::default().build());
                kinds.push(kind);
                continue;
            }
            ExecutionProviderKind::Cuda => (
                ep::CUDA::is_available(),
                ep::CUDA::default().with_device_id(device_id).build(),
            ),
            ExecutionProviderKind::Tensorrt => (
                ep::TensorRT::is_available(),
                ep::TensorRT::default().with_device_id(device_id).build(),
            ),
        };
        let ep = ep.error_on_failure();
        let problem = match available {
            Ok(true) => Session::builder(env)
                .and_then(|mut scratch| ep.register(&mut scratch))
                .err()
                .map(|e| e.to_string()),
            Ok(false) => Some("this onnxruntime build does not include it".to_owned()),
            Err(e) => Some(e.to_string()),
        };
        match problem {
            None => {
                dispatch.push(ep);
                kinds.push(kind);
            }
            Some(reason) if options.allow_fallback => {
                tracing::warn!(provider = %kind, %reason, "execution provider unavailable, falling back");
            }
            Some(reason) => {
                return Err(EngineError::ExecutionProviderUnavailable {
                    provider: kind.as_str(),
                    reason,
                });
            }
        }
    }
    if !kinds.contains(&ExecutionProviderKind::Cpu) {
        dispatch.push(ep::CPU::default().build());
        kinds.push(ExecutionProviderKind::Cpu);
    }
    Ok((dispatch, kinds))
}

/// A model input or output as far as [`check_model_io`] cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDesc {
    /// Tensor name.
    pub name: String,
    /// Element type is float32.
    pub is_f32: bool,
    /// Element type, for messages.
    pub element: String,
    /// Dimensions; negative = dynamic.
    pub dims: Vec<i64>,
}

/// Checks a model's interface against its manifest:
///
/// * exactly one input, float32, rank 4 `[batch, 3, height, width]`, with channels 3 and
///   spatial dims equal to the manifest's input size or dynamic;
/// * at least one output; the first is float32, rank 3, and its per-anchor dimension is
///   `4 + C` (yolov8, dim 1) or `5 + C` (yolov5, dim 2), or dynamic.
///
/// Returns a description of the first mismatch.
pub fn check_model_io(
    inputs: &[TensorDesc],
    outputs: &[TensorDesc],
    manifest: &ModelManifest,
) -> Result<(), String> {
    let fits = |dim: i64, want: usize| dim < 0 || dim as u64 == want as u64;
    let [input] = inputs else {
        return Err(format!(
            "model has {} inputs, expected exactly 1",
            inputs.len()
        ));
    };
    if !input.is_f32 {
        return Err(format!(
            "input `{}` is {}, expected float32",
            input.name, input.element
        ));
    }
    let [_, c, h, w] = input.dims[..] else {
        return Err(format!(
            "input `{}` has shape {:?}, expected rank 4 [batch, 3, height, width]",
            input.name, input.dims
        ));
    };
    if !fits(c, 3) {
        return Err(format!(
            "input `{}` has {c} channels, expected 3",
            input.name
        ));
    }
    let (mw, mh) = (
        manifest.input.width as usize,
        manifest.input.height as usize,
    );
    if !fits(h, mh) || !fits(w, mw) {
        return Err(format!(
            "input `{}` is {w}x{h} (width x height), manifest says {mw}x{mh}",
            input.name
        ));
    }
    let Some(output) = outputs.first() else {
        return Err("model has no outputs".to_owned());
    };
    if !output.is_f32 {
        return Err(format!(
            "output `{}` is {}, expected float32",
            output.name, output.element
        ));
    }
    let format = manifest.output.format;
    let [_, d1, d2] = output.dims[..] else {
        return Err(format!(
            "output `{}` has shape {:?}, expected rank 3 ({})",
            output.name,
            output.dims,
            layout_words(format)
        ));
    };
    let per_anchor = manifest.values_per_anchor();
    let (found, box_values) = match format {
        OutputFormat::Yolov8 => (d1, 4),
        OutputFormat::Yolov5 => (d2, 5),
    };
    if !fits(found, per_anchor) {
        return Err(format!(
            "output `{}` has {found} values per anchor ({}), expected {box_values} + {} classes = {per_anchor}",
            output.name,
            layout_words(format),
            manifest.num_classes()
        ));
    }
    Ok(())
}

fn layout_words(format: OutputFormat) -> &'static str {
    match format {
        OutputFormat::Yolov8 => "yolov8: [batch, 4 + classes, anchors]",
        OutputFormat::Yolov5 => "yolov5: [batch, anchors, 5 + classes]",
    }
}

impl Engine for OrtEngine {
    fn input(&self) -> InputSpec {
        self.input
    }

    fn run(&mut self, input: &[f32], batch: usize) -> Result<RawOutput, EngineError> {
        let expected = batch * self.input.image_len();
        if batch == 0 || input.len() != expected {
            return Err(EngineError::InputSize {
                batch,
                expected,
                found: input.len(),
            });
        }
        let shape = [
            batch,
            3,
            self.input.height as usize,
            self.input.width as usize,
        ];
        let tensor = TensorRef::from_array_view((shape, input))
            .map_err(ort_err("creating the input tensor"))?;
        let outputs = self
            .session
            .run(ort::inputs![tensor])
            .map_err(ort_err("running the model"))?;
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(ort_err("reading the output tensor"))?;
        Ok(RawOutput {
            data: data.to_vec(),
            shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"not really a library").unwrap();
    }

    #[test]
    fn explicit_path_wins_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libonnxruntime.so");
        touch(&lib);
        let other = dir.path().join("other.so");
        touch(&other);
        let got = find_onnxruntime_with(Some(&lib), Some(other.clone().into()), &[]).unwrap();
        assert_eq!(got, lib);
        let missing = dir.path().join("missing.so");
        match find_onnxruntime_with(Some(&missing), Some(other.into()), &[]) {
            Err(EngineError::OrtLibraryNotFound { searched }) => {
                assert_eq!(searched, vec![missing])
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn env_var_is_second_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("x.so");
        touch(&lib);
        assert_eq!(
            find_onnxruntime_with(None, Some(lib.clone().into()), &[]).unwrap(),
            lib
        );
        let missing = dir.path().join("nope.so");
        assert!(matches!(
            find_onnxruntime_with(None, Some(missing.into()), &[]),
            Err(EngineError::OrtLibraryNotFound { .. })
        ));
    }

    #[test]
    fn venv_search_walks_roots_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let child = root.join("crates/x");
        std::fs::create_dir_all(&child).unwrap();
        let lib = root
            .join(".venv/lib/python3.12/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0");
        touch(&lib);
        // Not a match: wrong name in capi, and a python2 directory.
        touch(&root.join(".venv/lib/python3.12/site-packages/onnxruntime/capi/libother.so"));
        touch(&root.join(".venv/lib/python2.7/site-packages/onnxruntime/capi/libonnxruntime.so"));
        let roots: Vec<PathBuf> = child.ancestors().map(Path::to_path_buf).collect();
        // An empty env var is ignored.
        assert_eq!(
            find_onnxruntime_with(None, Some(OsString::new()), &roots).unwrap(),
            lib
        );
    }

    #[test]
    fn not_found_lists_what_was_searched() {
        let dir = tempfile::tempdir().unwrap();
        let roots = vec![dir.path().to_path_buf(), dir.path().to_path_buf()];
        let err = find_onnxruntime_with(None, None, &roots).unwrap_err();
        let EngineError::OrtLibraryNotFound { searched } = &err else {
            panic!("unexpected {err:?}");
        };
        // Duplicate roots are searched once.
        assert_eq!(searched.len(), 1);
        let msg = err.to_string();
        assert!(
            msg.starts_with("onnxruntime shared library not found (searched: "),
            "{msg}"
        );
        assert!(
            msg.contains(".venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*")
        );
        assert!(msg.contains("scripts/setup.sh"), "{msg}");
    }

    fn manifest(format: &str, classes: usize) -> ModelManifest {
        let names: Vec<String> = (0..classes).map(|i| format!("\"c{i}\"")).collect();
        ModelManifest::parse(&format!(
            "name = \"m\"\nversion = \"1\"\nclasses = [{}]\n[input]\nwidth = 640\nheight = 480\n[output]\nformat = \"{format}\"\n",
            names.join(", ")
        ))
        .unwrap()
    }

    fn desc(dims: &[i64]) -> TensorDesc {
        TensorDesc {
            name: "t".into(),
            is_f32: true,
            element: "f32".into(),
            dims: dims.to_vec(),
        }
    }

    #[test]
    fn model_io_accepts_matching_and_dynamic_dims() {
        let m = manifest("yolov8", 80);
        assert_eq!(
            check_model_io(&[desc(&[1, 3, 480, 640])], &[desc(&[1, 84, 6300])], &m),
            Ok(())
        );
        assert_eq!(
            check_model_io(&[desc(&[-1, 3, -1, -1])], &[desc(&[-1, -1, -1])], &m),
            Ok(())
        );
        let m5 = manifest("yolov5", 2);
        assert_eq!(
            check_model_io(&[desc(&[-1, 3, 480, 640])], &[desc(&[-1, 100, 7])], &m5),
            Ok(())
        );
    }

    #[test]
    fn model_io_reports_each_mismatch() {
        let m = manifest("yolov8", 80);
        let good_in = [desc(&[1, 3, 480, 640])];
        let good_out = [desc(&[1, 84, 6300])];
        let err = |i: &[TensorDesc], o: &[TensorDesc]| check_model_io(i, o, &m).unwrap_err();

        assert!(err(&[], &good_out).contains("0 inputs"));
        assert!(err(&[good_in[0].clone(), good_in[0].clone()], &good_out).contains("2 inputs"));
        let mut not_f32 = good_in[0].clone();
        not_f32.is_f32 = false;
        assert!(err(&[not_f32], &good_out).contains("expected float32"));
        assert!(err(&[desc(&[3, 480, 640])], &good_out).contains("rank 4"));
        assert!(err(&[desc(&[1, 1, 480, 640])], &good_out).contains("1 channels"));
        let e = err(&[desc(&[1, 3, 640, 640])], &good_out);
        assert!(e.contains("640x640") && e.contains("640x480"), "{e}");
        assert!(err(&good_in, &[]).contains("no outputs"));
        assert!(err(&good_in, &[desc(&[84, 6300])]).contains("rank 3"));
        let e = err(&good_in, &[desc(&[1, 85, 6300])]);
        assert!(
            e.contains("85 values per anchor") && e.contains("4 + 80 classes = 84"),
            "{e}"
        );
        // yolov5 reads the last dim.
        let m5 = manifest("yolov5", 80);
        let e = check_model_io(&good_in, &[desc(&[1, 6300, 84])], &m5).unwrap_err();
        assert!(e.contains("5 + 80 classes = 85"), "{e}");
    }

    #[test]
    fn options_deserialize_with_defaults() {
        let o: OrtOptions =
            toml::from_str("execution_providers = [\"cuda\", \"tensorrt\"]\nallow_fallback = true")
                .unwrap();
        assert_eq!(
            o.execution_providers,
            vec![ExecutionProviderKind::Cuda, ExecutionProviderKind::Tensorrt]
        );
        assert!(o.allow_fallback);
        assert_eq!((o.intra_threads, o.device_id, o.ort_dylib), (0, 0, None));
        assert!(toml::from_str::<OrtOptions>("providers = []").is_err());
        assert!(toml::from_str::<OrtOptions>("execution_providers = [\"rocm\"]").is_err());
    }
}
