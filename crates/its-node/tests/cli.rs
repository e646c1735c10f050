//! The `its` binary as a user runs it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn its() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_its"));
    // Run in an empty directory so no its.toml of the developer's is picked up.
    let dir = std::env::temp_dir().join(format!("its-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("ITS__") {
            c.env_remove(k);
        }
    }
    c
}

fn model_dir() -> PathBuf {
    its_testkit::demo_model_dir()
}

#[test]
fn help_lists_the_subcommands() {
    let out = its().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run") && text.contains("config"), "{text}");
}

#[test]
fn a_bad_value_fails_start_up_naming_the_key() {
    let out = its()
        .args(["run", "--set", "cameras.fps=0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cameras.fps") && err.contains("0.1 to 120"),
        "{err}"
    );

    let out = its()
        .args(["config", "print"])
        .env("ITS__SCHEDULER__BATCH_SIZES", "8,4")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scheduler.batch_sizes") && err.contains("ascending"),
        "{err}"
    );

    let out = its()
        .args(["run", "--set", "cameras.fsp=3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fsp"));
}

#[test]
fn config_print_shows_effective_values_and_redacts_secrets() {
    let out = its()
        .args(["config", "print", "--set", "cameras.fps=7.5"])
        .env("ITS__NATS__TOKEN", "tok-123-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[cameras]") && text.contains("fps = 7.5"),
        "{text}"
    );
    assert!(
        !text.contains("tok-123-secret") && text.contains("<redacted>"),
        "{text}"
    );
}

#[test]
fn sigterm_stops_the_embedded_default_in_order() {
    let mut child = its()
        .args(["run", "--cameras", "2"])
        .args(["--set", "cameras.width=320", "--set", "cameras.height=240"])
        .args([
            "--set",
            "status.interval_ms=200",
            "--set",
            "scheduler.deadline_normal_ms=60000",
        ])
        .args([
            "--set",
            &format!("engine.model_dir={}", model_dir().display()),
        ])
        .env("ITS_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Wait for a status line showing results, then ask it to stop.
    let mut log = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no status line with results; log:\n{}", log.join("\n")));
        let done = line.starts_with("[its") && !line.contains(" out 0 ");
        log.push(line);
        if done {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        rest.push(line);
    }
    let exit = child.wait().unwrap();
    let text = rest.join("\n");
    assert!(exit.success(), "exit {exit:?}; log:\n{text}");
    let order = [
        "SIGTERM",
        "stopping cameras",
        "draining the frame subscription",
        "finishing queued",
        "draining nats",
        "stopped:",
    ];
    let mut at = 0;
    for step in order {
        let pos = text[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing or out of order in:\n{text}"));
        at += pos;
    }
    assert!(text.contains(", 0 in flight"), "{text}");
}

#[test]
fn detect_prints_boxes_inside_each_image() {
    let dir = tempfile_dir("detect");
    let scene = its_camera::SyntheticScene::render(&its_camera::SceneSpec {
        width: 480,
        height: 272,
        seed: 3,
        frames: 2,
        jpeg_quality: 85,
    })
    .unwrap();
    let mut paths = Vec::new();
    for (i, j) in scene.jpegs.iter().enumerate() {
        let p = dir.join(format!("frame{i}.jpg"));
        std::fs::write(&p, j).unwrap();
        paths.push(p);
    }
    let out = its()
        .args(["detect", "--json", "--model"])
        .arg(model_dir())
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let classes = std::fs::read_to_string(model_dir().join("model.toml")).unwrap();
    for l in &lines {
        assert_eq!(
            (l["width"].as_u64(), l["height"].as_u64()),
            (Some(480), Some(272))
        );
        for d in l["detections"].as_array().unwrap() {
            let b: Vec<f64> = d["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert!(0.0 <= b[0] && b[0] <= b[2] && b[2] <= 480.0, "{d}");
            assert!(0.0 <= b[1] && b[1] <= b[3] && b[3] <= 272.0, "{d}");
            let name = d["class_name"].as_str().unwrap();
            assert!(
                classes.contains(&format!("\"{name}\"")),
                "{name} not in the manifest"
            );
        }
    }

    // A file that is not a JPEG: a clear error naming it, non-zero exit.
    let bad = dir.join("not-a.jpg");
    std::fs::write(&bad, b"hello").unwrap();
    let out = its()
        .args(["detect", "--model"])
        .arg(model_dir())
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-a.jpg"));
}

fn tempfile_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("its-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
