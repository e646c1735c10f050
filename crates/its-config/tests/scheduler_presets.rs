//! The scheduler presets, late policy and breaker keys of `[scheduler]`.

use its_config::{LatePolicySetting, SchedulerPreset, Sources, load};

fn load_with(overrides: &[&str]) -> Result<its_config::Settings, its_config::ConfigError> {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), "").unwrap();
    load(&Sources {
        file: Some(file.path()),
        env: Default::default(),
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
    })
}

#[test]
fn a_preset_sets_its_keys() {
    let s = load_with(&["scheduler.preset=low_latency"]).unwrap();
    assert_eq!(s.scheduler.preset, SchedulerPreset::LowLatency);
    let e = s.scheduler.effective();
    assert_eq!(e.batch_sizes, vec![1, 2, 4]);
    assert_eq!((e.min_batch_timeout_ms, e.max_batch_timeout_ms), (1, 5));
    assert_eq!(e.late_policy, LatePolicySetting::Drop);
    let t = load_with(&["scheduler.preset=high_throughput"])
        .unwrap()
        .scheduler
        .effective();
    assert_eq!(t.batch_sizes, vec![4, 8, 16, 32]);
    assert_eq!(t.late_policy, LatePolicySetting::Deliver);
    let custom = load_with(&["scheduler.batch_sizes=1,3"]).unwrap().scheduler;
    assert_eq!(
        custom.effective().batch_sizes,
        vec![1, 3],
        "custom keeps the keys"
    );
}

#[test]
fn a_preset_and_one_of_its_keys_together_are_refused() {
    let e = load_with(&[
        "scheduler.preset=balanced",
        "scheduler.max_batch_timeout_ms=20",
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("scheduler.max_batch_timeout_ms"), "{e}");
    assert!(e.contains("custom"), "{e}");
}

#[test]
fn breaker_and_late_policy_keys_are_checked() {
    let s = load_with(&["scheduler.late_policy=deliver", "scheduler.workers=3"]).unwrap();
    assert_eq!(s.scheduler.late_policy, LatePolicySetting::Deliver);
    assert_eq!(s.scheduler.workers, 3);
    for (set, key) in [
        ("scheduler.shed_miss_ratio=0", "scheduler.shed_miss_ratio"),
        ("scheduler.shed_miss_ratio=1.5", "scheduler.shed_miss_ratio"),
        ("scheduler.reorder_hold_ms=0", "scheduler.reorder_hold_ms"),
        ("scheduler.workers=0", "scheduler.workers"),
        (
            "scheduler.breaker_window_ms=10",
            "scheduler.breaker_window_ms",
        ),
    ] {
        let e = load_with(&[set]).unwrap_err().to_string();
        assert!(e.contains(key), "{set}: {e}");
    }
    assert!(load_with(&["scheduler.late_policy=later"]).is_err());
}
