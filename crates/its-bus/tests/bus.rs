use futures::StreamExt;
use its_bus::{BusError, connect};
use its_config::{NatsSettings, Secret};
use its_proto::{EventKind, EventMsg, SCHEMA_VERSION};
use its_testkit::{TestNats, TestNatsCluster, within};
use serde::{Deserialize, Serialize};

fn event(n: u64) -> EventMsg {
    EventMsg {
        v: SCHEMA_VERSION,
        kind: EventKind::Camera,
        camera_id: "c1".into(),
        node_id: "n1".into(),
        at_ns: n,
        seq: Some(n),
        reason: None,
        message: "streaming".into(),
    }
}

#[tokio::test]
async fn typed_messages_travel_through_a_real_server() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let mut sub = bus
        .subscribe(its_proto::subjects::EVENTS_ALL)
        .await
        .unwrap();
    bus.flush().await.unwrap();
    for n in 0..3 {
        bus.publish_msg(
            its_proto::subjects::events(EventKind::Camera, "c1"),
            &event(n),
        )
        .await
        .unwrap();
    }
    for n in 0..3 {
        let msg = within(5, "event", sub.next()).await.unwrap();
        assert_eq!(msg.subject.as_str(), "its.events.camera.c1");
        let got: EventMsg = its_proto::decode(&msg.payload).unwrap();
        assert_eq!(got, event(n));
    }
}

#[tokio::test]
async fn headers_travel_with_a_message_and_bad_ones_are_refused() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let mut sub = bus.subscribe("its.test.headers").await.unwrap();
    bus.flush().await.unwrap();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned();
    let headers = vec![
        ("traceparent".to_owned(), tp.clone()),
        ("tracestate".to_owned(), "its=1".to_owned()),
    ];
    bus.publish_msg_with_headers("its.test.headers".into(), &headers, &event(7))
        .await
        .unwrap();
    // No headers: a plain message, and message_headers is empty.
    bus.publish_msg_with_headers("its.test.headers".into(), &[], &event(8))
        .await
        .unwrap();
    let msg = within(5, "message with headers", sub.next()).await.unwrap();
    let got: EventMsg = its_proto::decode(&msg.payload).unwrap();
    assert_eq!(got, event(7));
    let mut h = its_bus::message_headers(&msg);
    h.sort();
    assert_eq!(
        h,
        vec![
            ("traceparent".to_owned(), tp),
            ("tracestate".to_owned(), "its=1".to_owned())
        ]
    );
    let msg = within(5, "message without headers", sub.next())
        .await
        .unwrap();
    assert!(its_bus::message_headers(&msg).is_empty());
    assert_eq!(
        its_proto::decode::<EventMsg>(&msg.payload).unwrap(),
        event(8)
    );

    for bad in [
        vec![("bad:name".to_owned(), "v".to_owned())],
        vec![("x-ok".to_owned(), "line\r\nbreak".to_owned())],
    ] {
        let e = bus
            .publish_raw_with_headers("its.test.headers".into(), &bad, "x".into())
            .await
            .unwrap_err();
        assert!(matches!(e, BusError::Publish { .. }), "{e}");
    }
}

#[tokio::test]
async fn connect_retries_until_the_server_appears() {
    // Reserve a port, then start connecting before any server listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let settings = NatsSettings {
        connect_attempts: 0,
        connect_backoff_ms: 50,
        ..Default::default()
    };
    let task = tokio::spawn({
        let url = url.clone();
        async move { connect(&settings, &url, "retry-test").await }
    });
    // The server comes up on exactly that port, after the client started trying.
    let child = std::process::Command::new(its_testkit::nats_server_bin())
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(child);
    let bus = within(20, "connect with retry", task)
        .await
        .unwrap()
        .unwrap();
    assert!(bus.is_connected());
}

#[tokio::test]
async fn connect_gives_up_after_the_configured_attempts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let settings = NatsSettings {
        connect_attempts: 3,
        connect_backoff_ms: 10,
        ..Default::default()
    };
    let err = within(20, "connect failure", connect(&settings, &url, "t"))
        .await
        .unwrap_err();
    match &err {
        BusError::Connect {
            attempts, url: u, ..
        } => {
            assert_eq!(*attempts, 3);
            assert_eq!(u, &url);
        }
        other => panic!("expected a connect error, got {other}"),
    }
}

#[tokio::test]
async fn token_auth_is_used_and_a_wrong_token_is_refused() {
    let nats = TestNats::start_with_args(&["--auth", "right-token"]);
    let good = NatsSettings {
        token: Secret("right-token".into()),
        ..Default::default()
    };
    let bus = within(10, "connect", connect(&good, &nats.url(), "t"))
        .await
        .unwrap();
    assert!(bus.is_connected());
    let bad = NatsSettings {
        token: Secret("wrong".into()),
        connect_attempts: 5,
        ..Default::default()
    };
    let err = within(20, "refusal", connect(&bad, &nats.url(), "t"))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Auth { .. }), "{err}");
}

#[tokio::test]
async fn user_and_password_auth() {
    let nats = TestNats::start_with_args(&["--user", "ops", "--pass", "pw"]);
    let good = NatsSettings {
        user: "ops".into(),
        password: Secret("pw".into()),
        ..Default::default()
    };
    within(10, "connect", connect(&good, &nats.url(), "t"))
        .await
        .unwrap();
    let anonymous = NatsSettings {
        connect_attempts: 2,
        connect_backoff_ms: 10,
        ..Default::default()
    };
    let err = within(20, "refusal", connect(&anonymous, &nats.url(), "t"))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Auth { .. }), "{err}");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CameraEntry {
    url: String,
    fps: f64,
}

#[tokio::test]
async fn kv_registry_put_get_cas_and_watch() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let kv = within(10, "open kv", bus.kv::<CameraEntry>("its_test_cameras", 1))
        .await
        .unwrap();
    let a = CameraEntry {
        url: "rtsp://a".into(),
        fps: 10.0,
    };
    let rev = kv.create("cam-a", &a).await.unwrap();
    assert!(
        kv.create("cam-a", &a).await.is_err(),
        "create must refuse an existing key"
    );
    let got = kv.get("cam-a").await.unwrap().unwrap();
    assert_eq!(got.value.as_ref(), Some(&a));
    assert_eq!(got.revision, rev);
    let b = CameraEntry {
        url: "rtsp://b".into(),
        fps: 5.0,
    };
    let rev2 = kv.update("cam-a", &b, rev).await.unwrap();
    assert!(
        kv.update("cam-a", &a, rev).await.is_err(),
        "stale revision must be refused"
    );
    let mut watch = kv.watch().await.unwrap();
    let first = within(5, "watch initial", watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.key.as_str(), first.value, first.revision),
        ("cam-a", Some(b), rev2)
    );
    kv.delete("cam-a").await.unwrap();
    let gone = within(5, "watch delete", watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.value, None);
    assert_eq!(kv.get("cam-a").await.unwrap(), None);
    assert!(kv.keys().await.unwrap().is_empty());
}

/// On a bucket replicated over three servers, a read from the stream's leader sees every
/// acknowledged write at once (what a node's round relies on to learn that a camera moved),
/// and reads a delete and a missing key as nothing, as `get` does.
#[tokio::test]
async fn kv_reads_from_the_leader_see_each_acknowledged_write() {
    let nats = TestNatsCluster::start(3).await;
    let bus = nats.bus().await;
    let kv = within(30, "open a replicated kv", async {
        loop {
            match bus
                .kv_replicated::<CameraEntry>("its_test_leader_reads", 1, 3)
                .await
            {
                Ok(kv) => return kv,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    })
    .await;
    assert_eq!(kv.get_from_leader("cam-x").await.unwrap(), None);
    for i in 0..20 {
        let v = CameraEntry {
            url: format!("rtsp://cam/{i}"),
            fps: f64::from(i),
        };
        let rev = kv.put("cam-x", &v).await.unwrap();
        let got = kv.get_from_leader("cam-x").await.unwrap().unwrap();
        assert_eq!(
            (got.key.as_str(), got.value.as_ref(), got.revision),
            ("cam-x", Some(&v), rev)
        );
    }
    kv.delete("cam-x").await.unwrap();
    assert_eq!(kv.get_from_leader("cam-x").await.unwrap(), None);
    assert_eq!(kv.get("cam-x").await.unwrap(), None);
}

/// A role that may read a bucket only by direct get (a roles file older than the leader reads)
/// gets an error from a read from the leader that quotes the server's refusal, naming the
/// subject to allow; its direct gets still work.
#[tokio::test]
async fn a_leader_read_refused_by_the_role_names_the_permission() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("auth.conf");
    std::fs::write(
        &conf,
        r#"authorization {
  users = [
    { user: "ops", password: "pw" }
    { user: "reader", password: "pw", permissions: {
        publish = { allow = ["$JS.API.INFO", "$JS.API.STREAM.INFO.KV_its_test_perm",
                             "$JS.API.DIRECT.GET.KV_its_test_perm.>"] }
        subscribe = { allow = ["_INBOX.>"] } } }
  ]
}
"#,
    )
    .unwrap();
    let nats = TestNats::start_with_args(&["-c", conf.to_str().unwrap()]);
    let open_as = |user: &'static str| {
        let settings = NatsSettings {
            user: user.into(),
            password: Secret("pw".into()),
            ..Default::default()
        };
        let url = nats.url();
        async move {
            let bus = within(10, "connect", connect(&settings, &url, "t"))
                .await
                .unwrap();
            within(10, "open kv", bus.kv::<CameraEntry>("its_test_perm", 1))
                .await
                .unwrap()
        }
    };
    let v = CameraEntry {
        url: "rtsp://a".into(),
        fps: 1.0,
    };
    open_as("ops").await.put("cam-a", &v).await.unwrap();
    let kv = open_as("reader").await;
    assert_eq!(kv.get("cam-a").await.unwrap().unwrap().value, Some(v));
    let err = kv.get_from_leader("cam-a").await.unwrap_err().to_string();
    assert!(
        err.contains("refused this connection's identity")
            && err.contains("$JS.API.STREAM.MSG.GET.KV_its_test_perm"),
        "{err}"
    );
}
