//! `its`: the ITS Camera AI node.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use its_config::{Settings, Sources};
use its_node::Node;

mod annotate;
mod engine_cmd;
mod model_cmd;

/// ITS Camera AI: live traffic-camera streams to object detections over NATS.
#[derive(Debug, Parser)]
#[command(name = "its", version, about)]
struct Cli {
    /// Configuration file (default: ./its.toml when present).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override a setting, e.g. `--set cameras.fps=5` (repeatable; lists comma-separated).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node. With no NATS URL configured it starts a local nats-server, runs the
    /// synthetic cameras and the CPU worker, and prints a status line per second.
    Run {
        /// NATS server URL (overrides nats.url).
        #[arg(long)]
        nats_url: Option<String>,
        /// Number of synthetic cameras (overrides cameras.synthetic_count).
        #[arg(long)]
        cameras: Option<u32>,
        /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
    },
    /// Run the detector on JPEG images and print what it finds (boxes in original pixels).
    Detect {
        /// Model directory (model.toml + ONNX file); default engine.model_dir.
        #[arg(long)]
        model: Option<PathBuf>,
        /// One JSON object per image instead of text.
        #[arg(long)]
        json: bool,
        /// Also write a copy of each image with its detections drawn on it to this
        /// directory (`<stem>.jpg`).
        #[arg(long, value_name = "OUT_DIR")]
        annotate: Option<PathBuf>,
        /// JPEG files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Model files: import a Darknet model, write synthetic YOLO graphs.
    Model {
        #[command(subcommand)]
        command: model_cmd::ModelCommand,
    },
    /// The native GPU engine: build, bench or check (against ONNX Runtime) a model.
    Engine {
        #[command(subcommand)]
        command: engine_cmd::EngineCommand,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (defaults, file, environment, flags) as TOML,
    /// secrets redacted.
    Print,
}

fn load(cli: &Cli, extra: Vec<String>) -> anyhow::Result<Settings> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut overrides = cli.overrides.clone();
    overrides.extend(extra);
    Ok(its_config::load(&Sources {
        file: cli.config.as_deref(),
        env,
        overrides,
    })?)
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Config {
            command: ConfigCommand::Print,
        } => {
            let settings = load(&cli, vec![])?;
            print!("{}", settings.to_toml_redacted());
            Ok(())
        }
        Command::Model { command } => model_cmd::run(command),
        Command::Engine { command } => engine_cmd::run(command),
        Command::Detect {
            model,
            json,
            annotate,
            images,
        } => {
            let settings = load(&cli, vec![])?;
            let model_dir = model
                .clone()
                .unwrap_or_else(|| settings.engine.model_dir.clone());
            detect(&settings, &model_dir, images, *json, annotate.as_deref())
        }
        Command::Run {
            nats_url,
            cameras,
            duration,
        } => {
            let mut extra = Vec::new();
            if let Some(u) = nats_url {
                extra.push(format!("nats.url={u}"));
            }
            if let Some(n) = cameras {
                extra.push(format!("cameras.synthetic_count={n}"));
            }
            let settings = load(&cli, extra)?;
            let telemetry = its_node::telemetry::init(&settings.telemetry)?;
            let duration = duration.map(Duration::from_secs_f64);
            let result = actix::System::new().block_on(run(settings, duration));
            // Every exit of `run` (Ctrl-C, SIGTERM, --duration, a failed start or shutdown)
            // comes here: the spans still queued go to the collector before the process ends.
            let flushed = telemetry.shutdown();
            result?;
            Ok(flushed?)
        }
    }
}

#[allow(clippy::print_stdout)]
fn detect(
    settings: &Settings,
    model_dir: &std::path::Path,
    images: &[PathBuf],
    json: bool,
    annotate_dir: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let mut detector = its_engine::Detector::load(model_dir, &its_node::ort_options(settings))
        .with_context(|| format!("cannot load the model in {}", model_dir.display()))?;
    let classes = detector.manifest().classes.clone();
    for path in images {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let img = its_engine::decode_jpeg(&bytes)
            .with_context(|| format!("cannot decode {}", path.display()))?;
        let out = detector.detect(std::slice::from_ref(&img))?.remove(0);
        let name = |id: u32| classes.get(id as usize).map(String::as_str).unwrap_or("?");
        if let Some(dir) = annotate_dir {
            annotate::write(dir, path, &img, &out.detections, &classes)?;
        }
        if json {
            let dets: Vec<serde_json::Value> = out
                .detections
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "class_id": d.class_id, "class_name": name(d.class_id), "score": d.score,
                        "box": [d.x1, d.y1, d.x2, d.y2],
                    })
                })
                .collect();
            let line = serde_json::json!({
                "image": path.display().to_string(), "width": img.width, "height": img.height,
                "infer_ms": out.infer_ns as f64 / 1e6, "detections": dets,
            });
            println!("{line}");
        } else {
            println!(
                "{} ({}x{}): {} detection(s)",
                path.display(),
                img.width,
                img.height,
                out.detections.len()
            );
            for d in &out.detections {
                println!(
                    "  {:<14} {:.2}  [{:.0}, {:.0}, {:.0}, {:.0}]",
                    name(d.class_id),
                    d.score,
                    d.x1,
                    d.y1,
                    d.x2,
                    d.y2
                );
            }
        }
    }
    Ok(())
}

async fn run(settings: Settings, duration: Option<Duration>) -> anyhow::Result<()> {
    let node = Node::start(settings)
        .await
        .context("cannot start the node")?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let until = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
        _ = sigterm.recv() => tracing::info!("SIGTERM"),
        _ = until => tracing::info!("duration reached"),
    }
    let report = node.shutdown().await.context("shutdown")?;
    let s = &report.status;
    let drops: u64 = s.drops.values().sum();
    eprintln!(
        "stopped: {} frames received, {} results published, {} dropped {:?}, {} in flight",
        s.frames_received, s.results_published, drops, s.drops, s.in_flight
    );
    Ok(())
}
