//! Short load tests run by CI: the real `its-loadtest` binary against a node it starts itself
//! (a real nats-server and a real node). One with the CPU worker and the generated ONNX model,
//! one ramp with the simulated GPU. Each asserts the report exists and every frame is
//! accounted for; latency bounds are generous, since CI is a loaded 2-core machine running a
//! debug build.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Where a test writes its report: under `ITS_LOADTEST_CI_OUT` when set (scripts/test.sh
/// keeps the CI reports there), else a temporary folder.
fn out_dir(name: &str) -> (Option<tempfile::TempDir>, std::path::PathBuf) {
    match std::env::var_os("ITS_LOADTEST_CI_OUT") {
        Some(root) => {
            let dir = Path::new(&root).join(name);
            std::fs::create_dir_all(&dir).expect("create the report folder");
            (None, dir)
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            let dir = t.path().to_path_buf();
            (Some(t), dir)
        }
    }
}

fn run_loadtest(out: &Path, args: &[&str]) -> Value {
    let json = out.join("copy.json");
    let output = Command::new(env!("CARGO_BIN_EXE_its-loadtest"))
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--json")
        .arg(&json)
        .args(["--progress-secs", "5", "--check"])
        .env("ITS_LOG", "warn")
        .output()
        .expect("run its-loadtest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "its-loadtest failed ({}):\n{stderr}",
        output.status
    );
    for f in [
        "report.md",
        "report.json",
        "latency_histogram.png",
        "latency_over_time.png",
        "throughput_over_time.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing; stderr:\n{stderr}");
    }
    let png = std::fs::read(out.join("latency_histogram.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let a = std::fs::read(out.join("report.json")).unwrap();
    assert_eq!(
        a,
        std::fs::read(&json).unwrap(),
        "--json writes the same report"
    );
    serde_json::from_slice(&a).expect("report.json is JSON")
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} missing"))
}

fn assert_all_accounted(r: &Value) {
    let (sent, answered, dropped) = (
        u(r, "/totals/sent"),
        u(r, "/totals/answered"),
        u(r, "/totals/dropped"),
    );
    assert!(sent > 0, "no frames sent");
    assert_eq!(
        u(r, "/totals/unaccounted"),
        0,
        "unaccounted frames: {}",
        r["unaccounted_sample"]
    );
    assert_eq!(sent, answered + dropped);
    assert_eq!(u(r, "/totals/settled_twice"), 0);
    assert_eq!(r["all_accounted"], Value::Bool(true));
    assert!(answered > 0, "no results at all");
}

#[test]
fn twenty_cameras_on_the_cpu_worker_are_all_accounted_for() {
    let (_tmp, dir) = out_dir("cpu-fixed");
    let model = its_testkit::demo_model_dir();
    let r = run_loadtest(
        &dir,
        &[
            "--embedded-node",
            "--model-dir",
            model.to_str().unwrap(),
            "--cameras",
            "20",
            // 2 frames/s in all: what a debug build of the CPU worker keeps up with on CI.
            "--fps",
            "0.1",
            "--duration",
            "20",
            "--res-mix",
            "160x120",
            "--priority-mix",
            "urgent=5,normal=95",
            "--set",
            "scheduler.deadline_urgent_ms=60000",
            "--set",
            "scheduler.deadline_normal_ms=60000",
            "--p99-ms",
            "20000",
            "--drain-grace-secs",
            "30",
        ],
    );
    assert_all_accounted(&r);
    assert_eq!(
        u(&r, "/totals/dropped"),
        0,
        "drops: {}",
        r["drops_from_events"]
    );
    assert!(f(&r, "/latency_ms/p99_ms") <= 20000.0);
    assert_eq!(r["p99_within_bound"], Value::Bool(true));
    assert!(r["latency_by_priority_ms"]["urgent"].is_object());
    assert!(r["latency_by_priority_ms"]["normal"].is_object());
    assert_eq!(r["cameras"].as_array().unwrap().len(), 20);
    assert_eq!(r["simulated_gpu"], Value::Null);
    assert!(
        r["workers"][0]["device"] == "cpu",
        "workers: {}",
        r["workers"]
    );
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.starts_with("# ITS load test: fixed mode, 20 cameras"),
        "{md}"
    );
}

#[test]
fn a_simulated_gpu_ramp_says_so_on_its_first_line() {
    let (_tmp, dir) = out_dir("simgpu-ramp");
    let r = run_loadtest(
        &dir,
        &[
            "--embedded-node",
            "--simulated-gpu",
            "linear:1ms+0.2ms/frame",
            "--mode",
            "ramp",
            "--ramp-start",
            "5",
            "--ramp-step",
            "5",
            "--ramp-max",
            "10",
            "--step-secs",
            "3",
            "--warmup-secs",
            "1",
            "--fps",
            "10",
            "--res-mix",
            "160x120",
            "--p99-ms",
            "5000",
            "--max-drop-pct",
            "5",
            "--set",
            "scheduler.deadline_normal_ms=5000",
            "--set",
            "scheduler.deadline_urgent_ms=5000",
        ],
    );
    assert_all_accounted(&r);
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let first = md.lines().next().unwrap();
    assert!(
        first.starts_with("# SIMULATED GPU (cost model linear:1ms+0.2ms/frame)"),
        "{first}"
    );
    assert!(r["title"].as_str().unwrap().starts_with("SIMULATED GPU"));
    let steps = r["ramp"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "steps: {steps:?}");
    assert_eq!(
        u(&r, "/ramp/max_cameras_meeting_bound"),
        10,
        "steps: {steps:?}"
    );
    assert!(
        r["workers"][0]["device"]
            .as_str()
            .unwrap()
            .starts_with("simulated-gpu"),
        "workers: {}",
        r["workers"]
    );
}
