//! The per-camera rate limit keys of `[scheduler]`: defaults, layering and their checks.

use its_config::{Sources, load};

fn load_with(overrides: &[&str]) -> Result<its_config::Settings, its_config::ConfigError> {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        file.path(),
        "[scheduler]\nmax_camera_fps = 30\ncamera_burst_frames = 15\n",
    )
    .unwrap();
    load(&Sources {
        file: Some(file.path()),
        env: Default::default(),
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
    })
}

#[test]
fn camera_rate_keys_default_layer_and_are_checked() {
    let d = its_config::SchedulerSettings::default();
    assert_eq!(
        (d.max_camera_fps, d.camera_burst_frames),
        (120, 60),
        "the highest declarable camera rate, and half a second of it"
    );
    assert_eq!(
        d.max_camera_fps as f32,
        its_proto::registry::MAX_FPS,
        "no registered camera is held by the default"
    );
    let s = load_with(&[]).unwrap().scheduler;
    assert_eq!((s.max_camera_fps, s.camera_burst_frames), (30, 15));
    let s = load_with(&["scheduler.max_camera_fps=0"])
        .unwrap()
        .scheduler;
    assert_eq!(s.max_camera_fps, 0, "0 turns the limit off");
    for (set, key) in [
        ("scheduler.max_camera_fps=10001", "scheduler.max_camera_fps"),
        (
            "scheduler.camera_burst_frames=0",
            "scheduler.camera_burst_frames",
        ),
        (
            "scheduler.camera_burst_frames=10001",
            "scheduler.camera_burst_frames",
        ),
    ] {
        let e = load_with(&[set]).unwrap_err().to_string();
        assert!(e.contains(key), "{set}: {e}");
    }
    assert!(load_with(&["scheduler.max_camera_fps=-1"]).is_err());
}
