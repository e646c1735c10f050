//! `its model ...`: model-file tools (import, synth).

use std::fmt::Write as _;
use std::io::Write as _;
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
    /// Print an ONNX file's inputs, outputs, opset, parameter count and operator counts.
    Inspect {
        /// The .onnx file, or a model directory holding model.onnx.
        path: PathBuf,
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
        ModelCommand::Inspect { path } => inspect(path),
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

fn dims_text(v: &its_model::onnx::ValueInfoProto) -> String {
    use its_model::onnx::{TypeProto, tensor_shape_proto::dimension::Value, type_proto};
    let Some(TypeProto {
        value: Some(type_proto::Value::TensorType(t)),
    }) = &v.r#type
    else {
        return "?".into();
    };
    let Some(shape) = &t.shape else {
        return "[?]".into();
    };
    let dims: Vec<String> = shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(Value::DimValue(n)) => n.to_string(),
            Some(Value::DimParam(p)) => p.clone(),
            None => "?".into(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

fn inspect(path: &std::path::Path) -> anyhow::Result<()> {
    let file = if path.is_dir() {
        path.join("model.onnx")
    } else {
        path.to_owned()
    };
    let model = its_model::onnx::ModelProto::read(&file)
        .with_context(|| format!("cannot inspect {}", file.display()))?;
    let g = model.graph();
    let mut text = String::new();
    let opsets: Vec<String> = model
        .opset_import
        .iter()
        .map(|o| {
            format!(
                "{}:{}",
                if o.domain.is_empty() {
                    "ai.onnx"
                } else {
                    &o.domain
                },
                o.version
            )
        })
        .collect();
    writeln!(
        text,
        "{}: ir {}, opset {}, producer {:?}",
        file.display(),
        model.ir_version,
        opsets.join(" "),
        model.producer_name
    )?;
    for v in &g.input {
        writeln!(text, "  input  {} {}", v.name, dims_text(v))?;
    }
    for v in &g.output {
        writeln!(text, "  output {} {}", v.name, dims_text(v))?;
    }
    writeln!(
        text,
        "  {} nodes, {} initializers, {} parameters",
        g.node.len(),
        g.initializer.len(),
        model.parameter_count()
    )?;
    for (op, n) in model.op_counts() {
        writeln!(text, "  {op:<20} {n}")?;
    }
    // A closed pipe (`| head`) ends the output quietly.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
