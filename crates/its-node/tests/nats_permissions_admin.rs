//! The admin API inside a node, under the per-role NATS permissions of `config/nats/roles.conf`
//! enforced by a real nats-server, over real HTTP to the node's admin server:
//!
//! - with `[admin.nats]` set to the `admin` identity, the node keeps the `node` identity (it is
//!   still refused a registry write of its own) while its admin API opens the registry,
//!   registers a camera, and drains and resumes a worker, with nothing refused; on shutdown the
//!   admin's connection is drained and closed;
//! - without it (the admin API shares the node's connection, so the `node` identity), the admin
//!   API cannot create the registry on a fresh server, so the node does not start, and on a
//!   server where the registry exists the server refuses the camera registration by name and
//!   the API answers 503 naming the registry bucket (not the permission).

use std::net::SocketAddr;
use std::time::Duration;

use its_bus::{Bus, Kv};
use its_node::Node;
use its_proto::{CAMERAS_BUCKET, CameraSpec};
use its_testkit::roles::{connect, server};
use its_testkit::within;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A node under the `node` identity with its admin API on a free port; `admin_identity` adds
/// `[admin.nats]` overrides.
fn node_settings(url: &str, admin_identity: &[&str]) -> its_config::Settings {
    let mut o = vec![
        format!("nats.url={url}"),
        "nats.user=node".into(),
        "nats.password=node-test-password".into(),
        "cameras.synthetic_count=0".into(),
        "scheduler.deadline_normal_ms=60000".into(),
        // Two workers: a scheduler refuses to drain its last one.
        "scheduler.workers=2".into(),
        "status.print=false".into(),
        "status.interval_ms=200".into(),
        "admin.enabled=true".into(),
        "admin.bind=127.0.0.1:0".into(),
        "admin.workers=1".into(),
        format!(
            "engine.model_dir={}",
            its_testkit::demo_model_dir().display()
        ),
    ];
    o.extend(admin_identity.iter().map(|s| s.to_string()));
    its_testkit::settings(&o)
}

const ADMIN_IDENTITY: [&str; 2] = [
    "admin.nats.user=admin",
    "admin.nats.password=admin-test-password",
];

/// One HTTP/1.1 request to the admin server; the status and the JSON body (`Null` if empty).
async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    within(30, &format!("{method} {path}"), async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
        };
        (status, json)
    })
    .await
}

/// Polls `GET path` every 50 ms until `ok` holds for its body, failing the test after `secs`.
async fn until_get(
    addr: SocketAddr,
    path: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    within(secs, what, async {
        loop {
            let (status, body) = http(addr, "GET", path, None).await;
            if status == 200 && ok(&body) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn camera_body(id: &str) -> Value {
    json!({"id": id, "url": "synthetic://road", "fps": 5, "width": 160, "height": 120})
}

/// Publishes on `subject` as `bus` and waits for the server to refuse it; the refusal's text,
/// lowercase.
async fn refused_publish(bus: &Bus, subject: &str) -> String {
    let before = bus.health().snapshot().permission_violations;
    bus.publish_raw(subject.to_owned(), b"forged".to_vec().into())
        .await
        .unwrap();
    bus.flush().await.unwrap();
    let snap = within(
        10,
        &format!("the server to refuse a publish on {subject}"),
        bus.health().wait_for(|h| h.permission_violations > before),
    )
    .await;
    snap.last_server_error
        .unwrap_or_default()
        .to_ascii_lowercase()
}

#[actix_rt::test]
async fn the_admin_api_of_a_node_under_the_node_identity_writes_the_registry_and_drains_as_admin() {
    let (nats, _dir) = server();
    let admin_check = connect(&nats, "admin").await;

    // A fresh server: the admin API creates the registry bucket at start-up, as `admin`.
    let settings = node_settings(&nats.url(), &ADMIN_IDENTITY);
    let node_id = settings.node.id.clone();
    let node = within(60, "node start", Node::start(settings))
        .await
        .expect("a node under `node` with its admin API under `admin` starts");
    let addr = node.admin_addr().expect("admin enabled");
    let admin_bus = node.admin_bus().expect("[admin.nats] set").clone();
    let registry: Kv<CameraSpec> = admin_check.kv(CAMERAS_BUCKET, 1).await.unwrap();

    // Registering a camera writes the registry.
    let (status, body) = http(
        addr,
        "POST",
        "/api/v1/cameras",
        Some(camera_body("adm-cam")),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "adm-cam", "{body}");
    let stored = registry
        .get("adm-cam")
        .await
        .unwrap()
        .and_then(|e| e.value)
        .expect("the camera is in the registry");
    assert_eq!((stored.url.as_str(), stored.fps), ("synthetic://road", 5.0));
    let (status, body) = http(addr, "GET", "/api/v1/cameras/adm-cam", None).await;
    assert_eq!(status, 200, "{body}");
    // Changing it is a registry write too.
    let mut changed = camera_body("adm-cam");
    changed["fps"] = json!(8);
    let (status, body) = http(addr, "PUT", "/api/v1/cameras/adm-cam", Some(changed)).await;
    assert_eq!(status, 200, "{body}");
    let stored = registry.get("adm-cam").await.unwrap().and_then(|e| e.value);
    assert_eq!(stored.map(|s| s.fps), Some(8.0));

    // The admin reads the workers' status (subscriptions the `node` role may not hold), and a
    // drain and a resume reach the node's scheduler and are applied.
    let workers = until_get(addr, "/api/v1/workers", 30, "both workers reported", |w| {
        w.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let id = workers[0]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with(&format!("{node_id}.")), "{id}");
    let worker = format!("/api/v1/workers/{id}");
    let (status, body) = http(addr, "POST", &format!("{worker}/drain"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    until_get(addr, &worker, 30, "the worker reported draining", |w| {
        w["draining"] == true
    })
    .await;
    let (status, body) = http(addr, "POST", &format!("{worker}/resume"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    until_get(addr, &worker, 30, "the worker reported resumed", |w| {
        w["draining"] == false
    })
    .await;

    // Nothing either connection did was refused.
    for (who, bus) in [("node", node.bus()), ("admin", &admin_bus)] {
        let h = bus.health().snapshot();
        assert_eq!(
            h.permission_violations, 0,
            "{who}: {:?}",
            h.last_server_error
        );
    }
    // The node itself is still `node`: the registry is not its to write.
    let text = refused_publish(node.bus(), &format!("$KV.{CAMERAS_BUCKET}.adm-cam")).await;
    assert!(
        text.contains("publish") && text.contains("$kv.its_cameras.adm-cam"),
        "{text}"
    );

    let report = within(60, "node shutdown", node.shutdown())
        .await
        .expect("clean shutdown, the admin's connection drained");
    assert_eq!(report.status.in_flight, 0);
    // The admin's connection was drained and closed: it takes no more messages.
    let late = admin_bus
        .publish_raw("its.admin.after-shutdown".into(), b"x".to_vec().into())
        .await;
    assert!(
        late.is_err(),
        "the admin's connection is open after shutdown"
    );
    assert_eq!(admin_bus.health().snapshot().permission_violations, 0);
}

#[actix_rt::test]
async fn an_admin_api_sharing_the_node_identity_is_refused_the_registry_write() {
    let (nats, _dir) = server();
    let admin_check = connect(&nats, "admin").await;

    // On a fresh server the shared `node` identity cannot create the registry: no node.
    let err = within(
        60,
        "node start refused",
        Node::start(node_settings(&nats.url(), &[])),
    )
    .await
    .expect_err("the admin API cannot open the registry as `node`");
    let text = err.to_string();
    assert!(text.contains(CAMERAS_BUCKET), "{text}");

    // With the registry created by the admin identity, the node starts, and its admin API
    // (the node's connection) reads the registry.
    let registry: Kv<CameraSpec> = admin_check.kv(CAMERAS_BUCKET, 1).await.unwrap();
    let node = within(
        60,
        "node start",
        Node::start(node_settings(&nats.url(), &[])),
    )
    .await
    .expect("the node starts where the registry exists");
    assert!(
        node.admin_bus().is_none(),
        "no [admin.nats]: one connection"
    );
    let addr = node.admin_addr().expect("admin enabled");
    let (status, body) = http(addr, "GET", "/api/v1/cameras", None).await;
    assert_eq!(status, 200, "{body}");

    // Registering a camera: the server refuses the write. The client sees only a missing
    // acknowledgement (a timeout); the server's refusal, which names the subject, arrives as
    // a connection event. The API answers 503 with both: the bucket and the refusal.
    let before = node.bus().health().snapshot().permission_violations;
    let (status, body) = http(
        addr,
        "POST",
        "/api/v1/cameras",
        Some(camera_body("shared-cam")),
    )
    .await;
    eprintln!("the API answers a refused registry write with {status}: {body}");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], 503, "{body}");
    let detail = body["detail"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(detail.contains(CAMERAS_BUCKET), "{body}");
    assert!(
        detail.contains("refused this connection's identity")
            && detail.contains("permissions violation")
            && detail.contains("$kv.its_cameras.shared-cam"),
        "{body}"
    );
    let snap = within(
        10,
        "the server's refusal of the registry write",
        node.bus()
            .health()
            .wait_for(|h| h.permission_violations > before),
    )
    .await;
    let refusal = snap
        .last_server_error
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        refusal.contains("permissions violation")
            && refusal.contains("publish")
            && refusal.contains("$kv.its_cameras.shared-cam"),
        "{refusal}"
    );
    assert!(
        registry.get("shared-cam").await.unwrap().is_none(),
        "nothing reached the registry"
    );

    let report = within(60, "node shutdown", node.shutdown())
        .await
        .expect("clean shutdown");
    assert_eq!(report.status.in_flight, 0);
}

#[actix_rt::test]
async fn a_bad_admin_identity_stops_start_up_naming_admin_nats() {
    let (nats, _dir) = server();
    for (bad, names) in [
        (
            [
                "admin.nats.user=admin",
                "admin.nats.password=wrong-password",
            ],
            "authorization",
        ),
        (
            [
                "admin.nats.creds_file=/nonexistent/admin.creds",
                "admin.nats.user=",
            ],
            "admin.nats.creds_file /nonexistent/admin.creds",
        ),
    ] {
        let err = within(
            30,
            "node start refused",
            Node::start(node_settings(&nats.url(), &bad)),
        )
        .await
        .expect_err("a node whose admin identity is refused does not start");
        let text = err.to_string();
        assert!(
            text.starts_with("admin API's NATS identity (admin.nats): "),
            "{text}"
        );
        assert!(text.to_ascii_lowercase().contains(names), "{bad:?}: {text}");
    }
}
