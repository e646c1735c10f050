//! `its-loadtest`: see `its-loadtest --help` and `loadtest/README.md`.

use clap::Parser;
use its_loadtest::Args;

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ITS_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,async_nats=warn,ort=warn,its_scheduler=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let check = args.check;
    let out = args.out.clone();
    match its_loadtest::run(args) {
        Ok(report) => {
            let t = &report.totals;
            eprintln!("{}", report.title);
            eprintln!(
                "sent {} answered {} dropped {} unaccounted {} | p50 {:.1} ms p99 {:.1} ms p99.9 {:.1} ms max {:.1} ms | report in {}",
                t.sent,
                t.answered,
                t.dropped,
                t.unaccounted,
                report.latency_ms.p50_ms,
                report.latency_ms.p99_ms,
                report.latency_ms.p999_ms,
                report.latency_ms.max_ms,
                out.join("report.md").display()
            );
            if let Some(r) = &report.ramp {
                eprintln!(
                    "ramp: highest camera count meeting p99 <= {} ms: {}",
                    r.p99_bound_ms,
                    r.max_cameras_meeting_bound
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "none".into())
                );
            }
            if check && (!report.all_accounted || report.p99_within_bound == Some(false)) {
                eprintln!("check failed: unaccounted frames or p99 above the bound");
                return std::process::ExitCode::from(2);
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
