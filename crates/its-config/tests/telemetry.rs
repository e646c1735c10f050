//! The `[telemetry]` keys: log format, OTLP endpoint, sampling, service name.

use its_config::{LogFormat, Sources, load};

fn load_with(
    env: &[(&str, &str)],
    overrides: &[&str],
) -> Result<its_config::Settings, its_config::ConfigError> {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), "").unwrap();
    load(&Sources {
        file: Some(file.path()),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
    })
}

fn refused(overrides: &[&str], key: &str) -> String {
    let e = load_with(&[], overrides).unwrap_err().to_string();
    assert!(e.contains(key), "{overrides:?}: {e}");
    e
}

#[test]
fn defaults_are_text_logs_and_no_traces() {
    let t = load_with(&[], &[]).unwrap().telemetry;
    assert_eq!(t.log_format, LogFormat::Text);
    assert_eq!(t.otlp_endpoint, "");
    assert_eq!(t.sampling_ratio, 1.0);
    assert_eq!(t.service_name, "its-node");
}

#[test]
fn every_layer_sets_the_keys_and_print_shows_them() {
    let s = load_with(
        &[
            ("ITS__TELEMETRY__LOG_FORMAT", "json"),
            ("ITS__TELEMETRY__SAMPLING_RATIO", "0.25"),
        ],
        &[
            "telemetry.otlp_endpoint=http://collector:4318/v1/traces",
            "telemetry.service_name=edge-7",
        ],
    )
    .unwrap();
    let t = &s.telemetry;
    assert_eq!(t.log_format, LogFormat::Json);
    assert_eq!(t.sampling_ratio, 0.25);
    assert_eq!(t.otlp_endpoint, "http://collector:4318/v1/traces");
    assert_eq!(t.service_name, "edge-7");
    let printed = s.to_toml_redacted();
    for line in [
        "[telemetry]",
        "log_format = \"json\"",
        "otlp_endpoint = \"http://collector:4318/v1/traces\"",
        "sampling_ratio = 0.25",
        "service_name = \"edge-7\"",
    ] {
        assert!(printed.contains(line), "{line} missing from:\n{printed}");
    }
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    let e = refused(&["telemetry.log_format=xml"], "log_format");
    assert!(e.contains("xml"), "{e}");
    refused(
        &["telemetry.sampling_ratio=1.5"],
        "telemetry.sampling_ratio",
    );
    refused(
        &["telemetry.sampling_ratio=-0.1"],
        "telemetry.sampling_ratio",
    );
    let e = refused(
        &["telemetry.otlp_endpoint=https://collector:4318/v1/traces"],
        "telemetry.otlp_endpoint",
    );
    assert!(e.contains("http://"), "says what is allowed: {e}");
    refused(
        &["telemetry.otlp_endpoint=collector:4318"],
        "telemetry.otlp_endpoint",
    );
    refused(&["telemetry.service_name= "], "telemetry.service_name");
    refused(
        &["telemetry.export_timeout_ms=5"],
        "telemetry.export_timeout_ms",
    );
    refused(&["telemetry.sample_ratio=0.5"], "sample_ratio");
}

#[test]
fn zero_sampling_is_allowed() {
    let t = load_with(&[], &["telemetry.sampling_ratio=0"])
        .unwrap()
        .telemetry;
    assert_eq!(t.sampling_ratio, 0.0);
}
