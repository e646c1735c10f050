//! `its model ...`: model-file tools (import, synth).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

/// `its model` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Import a model from another framework's files.
    Import {
        #[command(subcommand)]
        format: ImportFormat,
    },
    /// Write the public YOLO11n or YOLOv8n architecture with deterministic random weights
    /// (model.onnx with YOLOv8-layout output, model.toml): for engine tests and speed runs;
    /// its detections are meaningless.
    Synth {
        /// Architecture: yolo11n or yolov8n.
        #[arg(long)]
        arch: its_model::synth::Arch,
        /// Seed of the random weights (same seed, same file).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Square input size, a multiple of 32.
        #[arg(long, default_value_t = 640)]
        imgsz: usize,
        /// Number of classes (80 gets the COCO names).
        #[arg(long, default_value_t = 80)]
        classes: usize,
        /// Output model directory (created).
        #[arg(long, short = 'o')]
        out: PathBuf,
    },
}

/// Formats `its model import` reads.
#[derive(Debug, Subcommand)]
pub enum ImportFormat {
    /// Darknet cfg + weights + class names (YOLOv3, YOLOv3-tiny, YOLOv4-tiny) to a model
    /// directory (model.onnx with decoded YOLOv5-layout output, model.toml).
    Darknet {
        /// The .cfg file.
        cfg: PathBuf,
        /// The .weights file.
        weights: PathBuf,
        /// Class names, one per line (e.g. coco.names).
        names: PathBuf,
        /// Output model directory (created).
        #[arg(long, short = 'o')]
        out: PathBuf,
    },
}

/// Runs one `its model` subcommand; progress goes to stderr.
pub fn run(command: &ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Import {
            format:
                ImportFormat::Darknet {
                    cfg,
                    weights,
                    names,
                    out,
                },
        } => {
            let r = its_model::darknet::import(cfg, weights, names, out)
                .context("darknet import failed")?;
            eprintln!(
                "imported {} (weights format {}.{}.{}): {} layers, {:.2} M parameters, input {}x{}, output [batch, {}, {}] -> {}",
                r.name,
                r.header.major,
                r.header.minor,
                r.header.revision,
                r.layers,
                r.parameters as f64 / 1e6,
                r.input.0,
                r.input.1,
                r.output.0,
                r.output.1,
                out.display()
            );
            Ok(())
        }
        ModelCommand::Synth {
            arch,
            seed,
            imgsz,
            classes,
            out,
        } => {
            let spec = its_model::synth::SynthSpec {
                arch: *arch,
                seed: *seed,
                imgsz: *imgsz,
                classes: *classes,
            };
            let r = its_model::synth::write(&spec, out)
                .with_context(|| format!("cannot write {} to {}", arch.name(), out.display()))?;
            eprintln!(
                "wrote {} (seed {seed}): {} nodes, {:.2} M parameters, input {imgsz}x{imgsz}, output [batch, {}, {}] -> {}",
                arch.name(),
                r.nodes,
                r.parameters as f64 / 1e6,
                r.output.0,
                r.output.1,
                out.display()
            );
            Ok(())
        }
    }
}
