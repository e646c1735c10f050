use std::collections::HashMap;

use its_config::{ConfigError, Sources, load};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn no_file() -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(f.path(), "").unwrap();
    f
}

#[test]
fn later_layers_win() {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        file.path(),
        "[cameras]\nfps = 5.0\nwidth = 640\n[scheduler]\nbatch_sizes = [1, 2]\n",
    )
    .unwrap();
    let s = load(&Sources {
        file: Some(file.path()),
        env: env(&[
            ("ITS__CAMERAS__WIDTH", "800"),
            ("ITS__SCHEDULER__BATCH_SIZES", "1,8,16"),
            ("OTHER", "ignored"),
        ]),
        overrides: vec!["cameras.width=1024".into()],
    })
    .unwrap();
    assert_eq!(s.cameras.fps, 5.0, "file beats defaults");
    assert_eq!(s.scheduler.batch_sizes, vec![1, 8, 16], "env beats file");
    assert_eq!(s.cameras.width, 1024, "override beats env");
    assert_eq!(s.cameras.height, 720, "defaults fill the rest");
}

fn err_text(e: ConfigError) -> String {
    e.to_string()
}

#[test]
fn a_bad_value_names_the_key_the_value_and_what_is_allowed() {
    let f = no_file();
    let e = err_text(
        load(&Sources {
            file: Some(f.path()),
            env: env(&[("ITS__SCHEDULER__MAX_BATCH_TIMEOUT_MS", "5000")]),
            overrides: vec![],
        })
        .unwrap_err(),
    );
    assert!(e.contains("scheduler.max_batch_timeout_ms"), "{e}");
    assert!(e.contains("5000"), "{e}");
    assert!(e.contains("to 1000"), "{e}");
}

#[test]
fn a_wrongly_typed_value_names_the_key() {
    let f = no_file();
    let e = err_text(
        load(&Sources {
            file: Some(f.path()),
            env: env(&[("ITS__CAMERAS__WIDTH", "wide")]),
            overrides: vec![],
        })
        .unwrap_err(),
    );
    assert!(e.contains("cameras.width"), "{e}");
    assert!(e.contains("wide"), "{e}");
}

#[test]
fn unknown_keys_are_rejected() {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), "[cameras]\nfsp = 5.0\n").unwrap();
    let e = err_text(
        load(&Sources {
            file: Some(file.path()),
            ..Default::default()
        })
        .unwrap_err(),
    );
    assert!(e.contains("fsp"), "{e}");
}

#[test]
fn bad_overrides_are_refused() {
    let f = no_file();
    let e = load(&Sources {
        file: Some(f.path()),
        env: HashMap::new(),
        overrides: vec!["no-equals-sign".into()],
    })
    .unwrap_err();
    assert!(matches!(e, ConfigError::BadOverride(_)), "{e}");
}

#[test]
fn printing_redacts_secrets() {
    let f = no_file();
    let s = load(&Sources {
        file: Some(f.path()),
        env: env(&[("ITS__NATS__TOKEN", "s3cr3t-token")]),
        overrides: vec![],
    })
    .unwrap();
    assert_eq!(s.nats.token.get(), Some("s3cr3t-token"));
    let printed = s.to_toml_redacted();
    assert!(!printed.contains("s3cr3t-token"), "{printed}");
    assert!(printed.contains("<redacted>"), "{printed}");
    assert!(!format!("{s:?}").contains("s3cr3t-token"));
}

#[test]
fn toml_text_layers_over_defaults_and_is_validated() {
    let s = its_config::from_toml_str("[scheduler]\ndeadline_normal_ms = 250\n").unwrap();
    assert_eq!(s.scheduler.deadline_normal_ms, 250);
    assert_eq!(
        s.node.id,
        its_config::Settings::default().node.id,
        "untouched keys keep their defaults"
    );
    let unknown = its_config::from_toml_str("[scheduler]\nno_such_key = 1\n").unwrap_err();
    assert!(err_text(unknown).contains("no_such_key"));
    assert!(its_config::from_toml_str("[scheduler\n").is_err());
}
