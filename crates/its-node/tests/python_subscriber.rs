//! The Python example subscriber (proto/examples/subscribe.py) decodes live results using only
//! what proto/ specifies, and validates them against proto/schema.json.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;

use its_node::Node;
use its_testkit::{TestNats, within};

fn python() -> PathBuf {
    let venv = its_testkit::workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} missing: run scripts/setup.sh",
        venv.display()
    );
    venv
}

#[actix_rt::test]
async fn python_subscriber_decodes_and_validates_live_results() {
    let nats = TestNats::start();
    let settings = its_testkit::settings(&[
        format!("nats.url={}", nats.url()),
        "cameras.ids=py-a,py-b".into(),
        "cameras.fps=20".into(),
        "cameras.width=320".into(),
        "cameras.height=240".into(),
        "cameras.loop_frames=3".into(),
        "scheduler.deadline_normal_ms=60000".into(),
        "status.print=false".into(),
        format!(
            "engine.model_dir={}",
            its_testkit::demo_model_dir().display()
        ),
    ]);
    let node = within(60, "node start", Node::start(settings))
        .await
        .unwrap();

    // The cameras run until the subscriber has what it asked for.
    let child = tokio::process::Command::new(python())
        .arg(its_testkit::workspace_root().join("proto/examples/subscribe.py"))
        .args([
            "--url",
            &nats.url(),
            "--count",
            "8",
            "--json",
            "--validate",
            "--timeout",
            "90",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = within(120, "python subscriber", child.wait_with_output())
        .await
        .unwrap();
    let report = within(60, "shutdown", node.shutdown()).await.unwrap();
    assert!(
        out.status.success(),
        "subscriber failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );

    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    let mut cameras = HashSet::new();
    for l in &lines {
        let camera = l["camera_id"].as_str().unwrap();
        assert!(camera == "py-a" || camera == "py-b", "{l}");
        cameras.insert(camera.to_owned());
        assert_eq!(l["frame_width"], 320);
        assert_eq!(l["frame_height"], 240);
        assert!(l["seq"].as_u64().is_some());
        let dets = l["detections"].as_array().unwrap();
        assert_eq!(l["n_detections"].as_u64().unwrap() as usize, dets.len());
        for d in dets {
            let b: Vec<f64> = d["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert!(
                b[0] <= b[2] && b[2] <= 320.0 && b[1] <= b[3] && b[3] <= 240.0,
                "{d}"
            );
        }
        assert!(l["latency_ms"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(cameras.len(), 2, "both cameras seen: {cameras:?}");
    assert_eq!(report.status.in_flight, 0);
}
