//! Test harness. Starts a real `nats-server` per test on a free port with JetStream in a
//! temporary directory; no bus is ever mocked. Every wait in a test goes through [`within`].

use std::future::Future;
use std::time::Duration;

use its_bus::{Bus, LocalNatsServer};
use its_config::NatsSettings;

/// The nats-server executable: `ITS_NATS_SERVER` or `nats-server` on PATH.
pub fn nats_server_bin() -> String {
    std::env::var("ITS_NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

/// A nats-server for one test, killed and cleaned up on drop.
#[derive(Debug)]
pub struct TestNats {
    /// The server process.
    pub server: LocalNatsServer,
}

impl TestNats {
    /// Starts a server; panics with what to install if it cannot.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Starts a server with extra arguments (e.g. `["--auth", "t0k3n"]`).
    pub fn start_with_args(args: &[&str]) -> Self {
        let server = LocalNatsServer::start_with_args(&nats_server_bin(), None, args)
            .unwrap_or_else(|e| panic!("test needs a nats-server (run scripts/setup.sh): {e}"));
        TestNats { server }
    }

    /// The client URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Connects a client with default settings.
    pub async fn bus(&self) -> Bus {
        within(
            10,
            "connect to test nats",
            its_bus::connect(&NatsSettings::default(), &self.url(), "test"),
        )
        .await
        .expect("connect to test nats-server")
    }
}

/// Awaits `fut`, failing the test if it takes more than `secs` seconds.
pub async fn within<F: Future>(secs: u64, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s waiting for: {what}"),
    }
}

/// The workspace root.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The generated demo model (`models/generated/tiny-yolo`); fails the test with what to run
/// when it is missing.
pub fn demo_model_dir() -> std::path::PathBuf {
    let dir = workspace_root().join("models/generated/tiny-yolo");
    assert!(
        dir.join("model.toml").exists(),
        "{} is missing: run scripts/setup.sh (or python3 tools/gen_tiny_yolo.py)",
        dir.display()
    );
    dir
}

/// Settings from the built-in defaults and `overrides` (`section.key=value`) only: no
/// configuration file and no environment, so a developer's its.toml or ITS__ variables cannot
/// change a test.
pub fn settings(overrides: &[String]) -> its_config::Settings {
    let empty = std::env::temp_dir().join(format!("its-test-empty-{}.toml", std::process::id()));
    std::fs::write(&empty, "").expect("write an empty config file");
    its_config::load(&its_config::Sources {
        file: Some(&empty),
        env: Default::default(),
        overrides: overrides.to_vec(),
    })
    .unwrap_or_else(|e| panic!("test settings are invalid: {e}"))
}
