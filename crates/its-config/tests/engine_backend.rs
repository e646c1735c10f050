//! `engine.backend`, `engine.native_precision` and `engine.gpu_device`: defaults, every layer,
//! and bad values refused with the key named.

use std::collections::HashMap;

use its_config::{BackendSetting, NativePrecisionSetting, Settings, Sources, load};

fn no_file() -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(f.path(), "").unwrap();
    f
}

fn with(env: &[(&str, &str)], overrides: &[&str]) -> Result<Settings, String> {
    let f = no_file();
    load(&Sources {
        file: Some(f.path()),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        overrides: overrides.iter().map(|o| o.to_string()).collect(),
    })
    .map_err(|e| e.to_string())
}

#[test]
fn the_default_is_auto_fp16_on_device_0() {
    let e = Settings::default().engine;
    assert_eq!(e.backend, BackendSetting::Auto);
    assert_eq!(e.native_precision, NativePrecisionSetting::Fp16);
    assert_eq!(e.gpu_device, 0);
    assert_eq!(e.gpu_streams, 8);
    assert!(e.gpu_devices.is_empty());
    let printed = Settings::default().to_toml_redacted();
    assert!(printed.contains("backend = \"auto\""), "{printed}");
    assert!(printed.contains("native_precision = \"fp16\""), "{printed}");
}

#[test]
fn every_layer_sets_the_backend_keys() {
    let s = its_config::from_toml_str(
        "[engine]\nbackend = \"native\"\nnative_precision = \"tf32\"\ngpu_device = 1\n",
    )
    .unwrap();
    assert_eq!(s.engine.backend, BackendSetting::Native);
    assert_eq!(s.engine.native_precision, NativePrecisionSetting::Tf32);
    assert_eq!(s.engine.gpu_device, 1);
    let s = with(
        &[("ITS__ENGINE__BACKEND", "ort")],
        &["engine.native_precision=fp32"],
    )
    .unwrap();
    assert_eq!(s.engine.backend, BackendSetting::Ort);
    assert_eq!(s.engine.native_precision, NativePrecisionSetting::Fp32);
    let s = with(
        &[("ITS__ENGINE__BACKEND", "gpu")],
        &["engine.gpu_streams=4", "engine.gpu_devices=0,1"],
    )
    .unwrap();
    assert_eq!(s.engine.backend, BackendSetting::Gpu);
    assert_eq!(s.engine.gpu_streams, 4);
    assert_eq!(s.engine.gpu_devices, vec![0, 1]);
}

#[test]
fn bad_backend_values_name_the_key() {
    let e = with(&[], &["engine.backend=tensorrt"]).unwrap_err();
    assert!(e.contains("engine.backend"), "{e}");
    assert!(e.contains("tensorrt"), "{e}");
    for allowed in ["auto", "ort", "native", "gpu"] {
        assert!(e.contains(allowed), "{e}");
    }

    let e = with(&[], &["engine.gpu_streams=0"]).unwrap_err();
    assert!(
        e.contains("engine.gpu_streams") && e.contains("1 to 32"),
        "{e}"
    );
    let e = with(&[], &["engine.gpu_devices=0,64"]).unwrap_err();
    assert!(
        e.contains("engine.gpu_devices") && e.contains("0 to 63"),
        "{e}"
    );

    let e = with(&[("ITS__ENGINE__NATIVE_PRECISION", "int8")], &[]).unwrap_err();
    assert!(e.contains("engine.native_precision"), "{e}");
    assert!(e.contains("int8"), "{e}");
    assert!(e.contains("fp16"), "{e}");

    let e = with(&[], &["engine.gpu_device=64"]).unwrap_err();
    assert!(e.contains("engine.gpu_device"), "{e}");
    assert!(e.contains("64"), "{e}");
    assert!(e.contains("0 to 63"), "{e}");

    let e = its_config::from_toml_str("[engine]\nbackend = \"Native\"\n").unwrap_err();
    assert!(e.to_string().contains("backend"), "{e}");
}
