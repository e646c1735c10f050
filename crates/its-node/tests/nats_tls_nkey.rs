//! The node over a nats-server that requires mutual TLS, and over one that admits only listed
//! nkeys, with certificates and nkeys made at test time (its-testkit): a synthetic camera's
//! frames come back as results to a subscriber under its own identity, and a node with a
//! wrong identity fails start-up with an error that says what was refused.

use futures::StreamExt;
use its_node::Node;
use its_proto::subjects;
use its_testkit::{TestNats, TestPki, nkey_user, within};

const FRAMES: u64 = 4;

fn node_settings(url: &str, identity: &[String]) -> its_config::Settings {
    let mut o = vec![
        format!("nats.url={url}"),
        "nats.connect_attempts=3".into(),
        "cameras.synthetic_count=1".into(),
        "cameras.fps=10".into(),
        "cameras.width=160".into(),
        "cameras.height=120".into(),
        format!("cameras.max_frames={FRAMES}"),
        "scheduler.deadline_normal_ms=60000".into(),
        "status.print=false".into(),
        "scheduler.batch_sizes=1,4".into(),
        format!(
            "engine.model_dir={}",
            its_testkit::demo_model_dir().display()
        ),
    ];
    o.extend(identity.iter().cloned());
    its_testkit::settings(&o)
}

/// Runs a node with `identity` until its camera's frames are results, which `subscriber`
/// (connected under its own identity) must all get.
async fn runs_end_to_end(url: &str, identity: &[String], subscriber: its_bus::Bus) {
    let mut results = subscriber.subscribe(subjects::RESULTS_ALL).await.unwrap();
    subscriber.flush().await.unwrap();
    let node = within(60, "node start", Node::start(node_settings(url, identity)))
        .await
        .expect("the node starts with the right identity");
    within(60, "the camera's frames", node.cameras_finished()).await;
    let report = within(60, "shutdown", node.shutdown()).await.unwrap();
    // Every frame the camera published is a result (a camera's very first frame may be
    // counted `behind` while the engine warms up, so the count is the node's).
    let st = &report.status;
    assert!(st.results_published > 0, "{st:?}");
    assert_eq!(st.frames_received, st.results_published, "{st:?}");
    for _ in 0..st.results_published {
        within(30, "a result", results.next()).await.unwrap();
    }
}

async fn start_fails(url: &str, identity: &[String]) -> String {
    let err = within(
        60,
        "node start refused",
        Node::start(node_settings(url, identity)),
    )
    .await
    .expect_err("a wrong identity fails start-up");
    let text = err.to_string();
    eprintln!("refused: {text}");
    text
}

fn tls_identity(pki: &TestPki, client: (String, String)) -> Vec<String> {
    vec![
        "nats.tls_required=true".into(),
        format!("nats.tls_ca_file={}", pki.ca_file()),
        format!("nats.tls_cert_file={}", client.0),
        format!("nats.tls_key_file={}", client.1),
    ]
}

fn tls_bus_settings(pki: &TestPki, client: (String, String)) -> its_config::NatsSettings {
    its_config::NatsSettings {
        tls_required: true,
        tls_ca_file: pki.ca_file(),
        tls_cert_file: client.0,
        tls_key_file: client.1,
        ..its_config::NatsSettings::default()
    }
}

#[actix_rt::test]
async fn the_node_runs_over_mutual_tls_and_a_foreign_certificate_is_refused() {
    let pki = TestPki::new("its");
    let nats = TestNats::start_tls(&pki, true);
    let subscriber = within(
        10,
        "subscriber over mTLS",
        its_bus::connect(
            &tls_bus_settings(&pki, pki.client("subscriber")),
            &nats.url(),
            "subscriber",
        ),
    )
    .await
    .unwrap();
    runs_end_to_end(
        &nats.url(),
        &tls_identity(&pki, pki.client("node")),
        subscriber,
    )
    .await;

    let intruder = TestPki::new("intruder");
    let text = start_fails(&nats.url(), &tls_identity(&pki, intruder.client("node"))).await;
    assert!(
        text.contains("TLS with NATS") && text.contains("UnknownCA"),
        "{text}"
    );
}

#[actix_rt::test]
async fn the_node_runs_with_an_nkey_and_an_unlisted_nkey_is_refused() {
    let (node_key, node_seed) = nkey_user();
    let (sub_key, sub_seed) = nkey_user();
    let (nats, _dir) = TestNats::start_nkeys(&[&node_key, &sub_key]);
    let subscriber = within(
        10,
        "subscriber with its nkey",
        its_bus::connect(
            &its_config::NatsSettings {
                nkey_seed: its_config::Secret(sub_seed),
                ..its_config::NatsSettings::default()
            },
            &nats.url(),
            "subscriber",
        ),
    )
    .await
    .unwrap();
    runs_end_to_end(
        &nats.url(),
        &[format!("nats.nkey_seed={node_seed}")],
        subscriber,
    )
    .await;

    let (_, stranger) = nkey_user();
    let text = start_fails(&nats.url(), &[format!("nats.nkey_seed={stranger}")]).await;
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(
        !text.contains(&stranger),
        "the seed is never printed: {text}"
    );
}
