//! Shared test helpers: a real MJPEG/snapshot HTTP server on tokio, the GStreamer RTSP server
//! child, JPEG makers and snapshot polling.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use its_bus::Bus;
use its_camera::{
    CameraEnv, CameraSnapshot, CameraSupervisor, GetSupervisorSnapshot, RestartPolicy,
    SupervisorSnapshot,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A solid-colour JPEG.
pub fn jpeg(w: u16, h: u16, shade: u8) -> Vec<u8> {
    let img = vec![shade; w as usize * h as usize * 3];
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 80)
        .encode(&img, w, h, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    out
}

/// Test camera environment: short timeouts and backoff, no quarantine.
pub fn env(bus: Bus, ingest: &str) -> CameraEnv {
    let mut env = CameraEnv::new(bus, ingest);
    env.source.read_timeout = Duration::from_millis(1500);
    env.source.synthetic_loop_frames = 3;
    env.restart = RestartPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(500),
        quarantine_failures: 0,
        ..RestartPolicy::default()
    };
    env.status_interval = Duration::from_millis(300);
    env
}

/// Polls the supervisor until `pred` holds for camera `id`; returns that snapshot.
pub async fn wait_camera(
    sup: &Addr<CameraSupervisor>,
    id: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&CameraSnapshot) -> bool,
) -> CameraSnapshot {
    its_testkit::within(secs, what, async {
        loop {
            let snap = sup.send(GetSupervisorSnapshot).await.unwrap();
            if let Some(c) = snap.cameras.iter().find(|c| c.camera_id == id)
                && pred(c)
            {
                return c.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Polls the supervisor until `pred` holds.
pub async fn wait_sup(
    sup: &Addr<CameraSupervisor>,
    secs: u64,
    what: &str,
    pred: impl Fn(&SupervisorSnapshot) -> bool,
) -> SupervisorSnapshot {
    its_testkit::within(secs, what, async {
        loop {
            let snap = sup.send(GetSupervisorSnapshot).await.unwrap();
            if pred(&snap) {
                return snap;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// One step of what the MJPEG server sends on each connection, repeated forever.
#[derive(Clone, Debug)]
pub enum Step {
    /// A part with this body (a JPEG or garbage).
    Part(Vec<u8>),
    /// Send nothing more, keep the connection open.
    Stall,
}

/// An HTTP server: `/stream` answers a multipart MJPEG stream of `script` (looped, one step
/// every `gap`), `/snapshot` the first JPEG of the script.
pub struct HttpCam {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HttpCam {
    pub async fn start(script: Vec<Step>, gap: Duration) -> HttpCam {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(script);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let script = script.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let req = String::from_utf8_lossy(&req);
                    if req.starts_with("GET /snapshot") {
                        let Some(Step::Part(body)) = script.first() else {
                            return;
                        };
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.write_all(body).await;
                        return;
                    }
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\nConnection: close\r\n\r\n";
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    loop {
                        for step in script.iter() {
                            match step {
                                Step::Part(body) => {
                                    let part = format!(
                                        "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                                        body.len()
                                    );
                                    if sock.write_all(part.as_bytes()).await.is_err()
                                        || sock.write_all(body).await.is_err()
                                        || sock.write_all(b"\r\n").await.is_err()
                                    {
                                        return;
                                    }
                                }
                                Step::Stall => {
                                    // Hold the connection until the client goes away.
                                    let _ = sock.read(&mut buf).await;
                                    return;
                                }
                            }
                            tokio::time::sleep(gap).await;
                        }
                    }
                });
            }
        });
        HttpCam { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for HttpCam {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GStreamer's RTSP server (tests/rtsp_server.py under the system python3), killed on drop.
pub struct RtspServer {
    child: Child,
    pub port: u16,
}

impl RtspServer {
    pub fn start(port: u16) -> RtspServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rtsp_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .args([script, &port.to_string(), "320", "240", "10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start /usr/bin/python3 tests/rtsp_server.py (run scripts/setup.sh)");
        let mut out = child.stdout.take().unwrap();
        let mut line = [0u8; 6];
        use std::io::Read;
        out.read_exact(&mut line).unwrap_or_else(|e| {
            panic!("RTSP test server did not start ({e}): run scripts/setup.sh for gstreamer1.0-rtsp, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-ugly")
        });
        assert_eq!(&line, b"ready\n", "RTSP test server failed to listen");
        RtspServer { child, port }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/test", self.port)
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A child process killed when the test ends, passing or not.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
