//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Each message says what to do about it.
///
/// Callers match on variants, never on message text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    // --- ONNX Runtime library and session ---------------------------------------------
    /// No ONNX Runtime shared library was found.
    #[error(
        "onnxruntime shared library not found (searched: {}); run scripts/setup.sh, or `pip install onnxruntime` and set engine.ort_dylib",
        join_paths(searched)
    )]
    OrtLibraryNotFound {
        /// Every path or pattern that was tried, in order.
        searched: Vec<PathBuf>,
    },

    /// The shared library exists but could not be loaded as ONNX Runtime.
    #[error(
        "cannot load onnxruntime from {}: {message}; point engine.ort_dylib (or ORT_DYLIB_PATH) at an onnxruntime >= 1.24 library for this platform",
        path.display()
    )]
    OrtLoad {
        /// The library that failed to load.
        path: PathBuf,
        /// Why, as reported by the loader.
        message: String,
    },

    /// ONNX Runtime is process-global: it was already loaded from another file.
    #[error(
        "onnxruntime is already initialised in this process from {}, cannot switch to {}; use a single engine.ort_dylib per process",
        loaded.display(),
        requested.display()
    )]
    OrtAlreadyInitialised {
        /// The library in use.
        loaded: PathBuf,
        /// The library that was asked for afterwards.
        requested: PathBuf,
    },

    /// An ONNX Runtime call failed.
    #[error(
        "onnxruntime failed while {context}: {message}; check the model file and the onnxruntime version"
    )]
    Ort {
        /// What we were doing.
        context: &'static str,
        /// ONNX Runtime's message.
        message: String,
    },

    /// Another engine implementation (the native GPU engine) failed.
    #[error("{engine} failed: {message}")]
    Backend {
        /// The engine's name.
        engine: String,
        /// What failed.
        message: String,
    },

    /// A requested execution provider is not usable and fallback is off.
    #[error(
        "execution provider {provider} is unavailable: {reason}; install an onnxruntime build with it (and its CUDA libraries), or set engine.allow_fallback = true to run on cpu"
    )]
    ExecutionProviderUnavailable {
        /// `cuda` or `tensorrt`.
        provider: &'static str,
        /// Why it is unusable.
        reason: String,
    },

    // --- manifest ------------------------------------------------------------------------
    /// `model.toml` (or the model file it names) could not be read.
    #[error(
        "cannot read {}: {source}; run `python3 tools/gen_tiny_yolo.py` or point the model directory at one holding model.toml and its model file",
        path.display()
    )]
    ManifestRead {
        /// The file that could not be read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// `model.toml` is not valid TOML or has unknown / missing / mistyped keys.
    #[error("invalid model manifest {}: {message}; fix the file (see its-engine's manifest module for the keys)", path.display())]
    ManifestParse {
        /// The manifest file (empty when parsed from a string).
        path: PathBuf,
        /// The TOML parser's message.
        message: String,
    },

    /// The manifest's input size has a zero dimension.
    #[error(
        "model manifest input size {width}x{height} has a zero dimension; set input.width and input.height to the model's input size"
    )]
    ZeroInputSize {
        /// `input.width`.
        width: u32,
        /// `input.height`.
        height: u32,
    },

    /// The manifest lists no classes.
    #[error("model manifest has an empty class list; list the model's class names in `classes`")]
    EmptyClasses,

    /// A threshold is outside 0..1 (or not a number).
    #[error("model manifest {name} = {value} is outside 0..=1; set it to a value between 0 and 1")]
    ThresholdOutOfRange {
        /// `score_threshold` or `iou_threshold`.
        name: &'static str,
        /// The value found.
        value: f32,
    },

    /// `max_detections` is zero.
    #[error("model manifest max_detections is 0; set it to at least 1 (300 is usual)")]
    ZeroMaxDetections,

    // --- model interface (checked at load) -------------------------------------------------
    /// The model's inputs or outputs do not match the manifest (or what this crate can run).
    #[error("model {} does not match its manifest: {detail}; regenerate the model or fix model.toml", path.display())]
    ModelMismatch {
        /// The model file.
        path: PathBuf,
        /// What differs, e.g. "output has 83 rows, expected 4 + 80 classes = 84".
        detail: String,
    },

    // --- images -------------------------------------------------------------------------
    /// The JPEG data is corrupt or unsupported.
    #[error("cannot decode jpeg: {0}; the frame is corrupt or not a jpeg, drop it as undecodable")]
    JpegDecode(String),

    /// The image has a zero dimension.
    #[error(
        "image is {width}x{height}, a zero dimension; the frame is empty, drop it as undecodable"
    )]
    EmptyImage {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },

    /// The image is larger than the configured limit.
    #[error(
        "image is {width}x{height}, larger than the limit {max_width}x{max_height}; lower the camera resolution or raise the decode limits"
    )]
    ImageTooLarge {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Configured maximum width.
        max_width: u32,
        /// Configured maximum height.
        max_height: u32,
    },

    /// An [`RgbImage`](crate::RgbImage)'s buffer does not hold width * height * 3 bytes.
    #[error(
        "image buffer holds {found} bytes but {width}x{height} rgb needs {expected}; build RgbImage with data.len() == width * height * 3"
    )]
    ImageBufferSize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Bytes needed.
        expected: usize,
        /// Bytes present.
        found: usize,
    },

    // --- running ------------------------------------------------------------------------
    /// The batch is empty or the input slice length does not match batch * 3 * H * W.
    #[error(
        "engine input holds {found} floats, expected {expected} for batch {batch}; pass batch * 3 * height * width floats with batch >= 1"
    )]
    InputSize {
        /// Batch size asked for.
        batch: usize,
        /// Floats needed.
        expected: usize,
        /// Floats given.
        found: usize,
    },

    /// The engine returned an output whose shape does not fit the manifest's format.
    #[error(
        "engine output shape {found:?} does not fit {expected}; the model does not match its manifest, regenerate it or fix model.toml"
    )]
    OutputShape {
        /// What was expected, in words.
        expected: String,
        /// The shape returned.
        found: Vec<usize>,
    },
}

fn join_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
