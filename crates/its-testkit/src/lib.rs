//! Test harness. Starts a real `nats-server` per test on a free port with JetStream in a
//! temporary directory; no bus is ever mocked. Every wait in a test goes through [`within`].

use std::future::Future;
use std::time::Duration;

use its_bus::{Bus, LocalNatsServer};
use its_config::NatsSettings;

pub mod jwt;
pub mod roles;

/// A 64x48 JPEG with some structure (a gradient, not flat), for tests that need a frame the
/// decoder accepts; `blue` varies the picture between tests.
pub fn small_jpeg(blue: u8) -> Vec<u8> {
    let (w, h) = (64u16, 48u16);
    let img: Vec<u8> = (0..w as usize * h as usize)
        .flat_map(|i| [(i % 251) as u8, (i / 64 * 5) as u8, blue])
        .collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 80)
        .encode(&img, w, h, jpeg_encoder::ColorType::Rgb)
        .expect("encode a 64x48 RGB picture");
    out
}

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

/// A cluster of nats-servers for one test: each on its own client port and cluster (route)
/// port on 127.0.0.1, routes to all the others, JetStream with its own store directory. Killed
/// and cleaned up on drop.
#[derive(Debug)]
pub struct TestNatsCluster {
    /// The servers; `None` once killed.
    pub servers: Vec<Option<LocalNatsServer>>,
}

/// The KV buckets the cluster mode uses, to be created with replicas on a [`TestNatsCluster`].
pub const CLUSTER_BUCKETS: [&str; 5] = [
    "its_cameras",
    "its_camera_leases",
    "its_cluster_nodes",
    "its_cluster_assignments",
    "its_cluster_leader",
];

impl TestNatsCluster {
    /// Starts `n` servers forming one cluster and waits until JetStream accepts a bucket
    /// replicated on all of them; panics with what to install if a server cannot start.
    pub async fn start(n: usize) -> Self {
        let ports = free_ports(n);
        let mut servers = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let routes: Vec<String> = ports
                .iter()
                .filter(|p| *p != port)
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            let args = [
                "-n".to_owned(),
                format!("its-test-{i}"),
                "--cluster_name".to_owned(),
                "its-test".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{port}"),
                "--routes".to_owned(),
                routes.join(","),
            ];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let server = LocalNatsServer::start_with_args(&nats_server_bin(), None, &args)
                .unwrap_or_else(|e| panic!("test needs a nats-server (run scripts/setup.sh): {e}"));
            servers.push(Some(server));
        }
        let cluster = TestNatsCluster { servers };
        let bus = cluster.bus().await;
        within(60, "JetStream of the NATS cluster ready", async {
            loop {
                match bus.kv_replicated::<u8>("its_test_ready", 1, n).await {
                    Ok(_) => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        })
        .await;
        cluster
    }

    /// Every live server's client URL, comma-separated (the form `nats.url` takes).
    pub fn url(&self) -> String {
        self.servers
            .iter()
            .flatten()
            .map(LocalNatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Connects a client to all live servers.
    pub async fn bus(&self) -> Bus {
        within(
            10,
            "connect to the test nats cluster",
            its_bus::connect(&NatsSettings::default(), &self.url(), "test"),
        )
        .await
        .expect("connect to the test nats cluster")
    }

    /// Creates the cluster mode's buckets ([`CLUSTER_BUCKETS`]) replicated on every server, so
    /// they survive the loss of one.
    pub async fn replicated_cluster_buckets(&self, bus: &Bus) {
        let n = self.servers.len();
        for b in CLUSTER_BUCKETS {
            within(30, "create a replicated bucket", async {
                loop {
                    match bus.kv_replicated::<u8>(b, 1, n).await {
                        Ok(_) => return,
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
            .await;
        }
    }

    /// Kills server `i` as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut s) = self.servers[i].take() {
            s.kill();
        }
    }
}

/// `n` distinct free TCP ports on 127.0.0.1 (bound together, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
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

/// A copy of the demo model in `dir` whose manifest says `version` (for model swap tests).
pub fn demo_model_version(dir: &std::path::Path, version: &str) -> std::path::PathBuf {
    let src = demo_model_dir();
    let dst = dir.join(format!("tiny-yolo-{version}"));
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(src.join("model.onnx"), dst.join("model.onnx")).unwrap();
    let manifest = std::fs::read_to_string(src.join("model.toml")).unwrap();
    assert!(manifest.contains("version = \"1\""), "{manifest}");
    std::fs::write(
        dst.join("model.toml"),
        manifest.replace("version = \"1\"", &format!("version = \"{version}\"")),
    )
    .unwrap();
    dst
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

/// TLS certificates made at test time (rcgen): a CA, a server certificate for 127.0.0.1 and
/// `localhost`, and client certificates, each as PEM files in one temporary directory.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestPki {
    /// A new CA named `name`; its certificate is `ca.pem`.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca.pem");
        TestPki { dir, ca }
    }

    /// The CA certificate file.
    pub fn ca_file(&self) -> String {
        self.path("ca.pem")
    }

    /// A file of this directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn issue(&self, name: &str, sans: Vec<String>, usage: rcgen::ExtendedKeyUsagePurpose) {
        let mut params = rcgen::CertificateParams::new(sans).expect("certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).expect("write cert");
        std::fs::write(self.path(&format!("{name}-key.pem")), key.serialize_pem())
            .expect("write key");
    }

    /// A server certificate for 127.0.0.1 and `localhost`: `(cert file, key file)`.
    pub fn server(&self, name: &str) -> (String, String) {
        self.issue(
            name,
            vec!["127.0.0.1".into(), "localhost".into()],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        );
        (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}-key.pem")),
        )
    }

    /// A client certificate: `(cert file, key file)`.
    pub fn client(&self, name: &str) -> (String, String) {
        self.issue(name, Vec::new(), rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}-key.pem")),
        )
    }
}

impl TestNats {
    /// A server that requires TLS with a certificate from `pki` and, with `verify`, a client
    /// certificate from the same CA (mutual TLS).
    pub fn start_tls(pki: &TestPki, verify: bool) -> Self {
        let (cert, key) = pki.server("nats-server");
        let conf = format!(
            "tls {{\n  cert_file: \"{cert}\"\n  key_file: \"{key}\"\n  ca_file: \"{}\"\n  verify: {verify}\n  timeout: 2\n}}\n",
            pki.ca_file()
        );
        let path = pki.path("tls.conf");
        std::fs::write(&path, conf).expect("write tls.conf");
        Self::start_with_args(&["-c", &path])
    }

    /// A server whose only users are the nkeys (public keys, `U…`) given.
    pub fn start_nkeys(users: &[&str]) -> (Self, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let list: Vec<String> = users
            .iter()
            .map(|u| format!("    {{ nkey: \"{u}\" }}"))
            .collect();
        let conf = format!(
            "authorization {{\n  users: [\n{}\n  ]\n}}\n",
            list.join("\n")
        );
        let path = dir.path().join("nkeys.conf");
        std::fs::write(&path, conf).expect("write nkeys.conf");
        let nats = Self::start_with_args(&["-c", path.to_str().expect("utf-8 path")]);
        (nats, dir)
    }
}

/// A new nkey user identity made at test time: `(public key U…, seed SU…)`.
pub fn nkey_user() -> (String, String) {
    let kp = nkeys::KeyPair::new_user();
    (kp.public_key(), kp.seed().expect("an nkey user seed"))
}
