//! [`ModelError`]: everything that can go wrong reading or writing model files.

use std::path::PathBuf;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{}: {io}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, so not also a `source`).
        io: std::io::Error,
    },
    /// The ONNX bytes or a tensor in them are malformed.
    #[error("onnx: {0}")]
    Onnx(String),
    /// A Darknet `.cfg` line or section is invalid.
    #[error("{file}:{line}: {message}")]
    Cfg {
        /// The cfg file (as given).
        file: String,
        /// 1-based line number (0 when the problem is not tied to a line).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The network the cfg describes cannot be built (bad layer reference, shape mismatch).
    #[error("layer {layer} ({kind}): {message}")]
    Layer {
        /// 0-based layer index (the `[net]` section not counted, as Darknet counts).
        layer: usize,
        /// Section name, e.g. `route`.
        kind: String,
        /// What is wrong.
        message: String,
    },
    /// The `.weights` file does not match the cfg.
    #[error("{}: {message}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The class names file does not match the cfg.
    #[error("{}: {message}", path.display())]
    Names {
        /// The names file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A synthetic-model request is invalid.
    #[error("synth: {0}")]
    Synth(String),
}
