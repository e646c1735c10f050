//! TLS (server-verified and mutual) and nkey authentication against a real nats-server, with
//! certificates and nkeys made at test time: the right identity connects and messages flow,
//! a wrong one is refused at connect with an error that says what was wrong.

use futures::StreamExt;
use its_bus::{BusError, connect};
use its_config::{NatsSettings, Secret};
use its_testkit::{TestNats, TestPki, nkey_user, within};

fn tls(pki: &TestPki, client: Option<(String, String)>) -> NatsSettings {
    let mut s = NatsSettings {
        tls_required: true,
        tls_ca_file: pki.ca_file(),
        connect_attempts: 1,
        ..NatsSettings::default()
    };
    if let Some((cert, key)) = client {
        s.tls_cert_file = cert;
        s.tls_key_file = key;
    }
    s
}

async fn round_trip(bus: &its_bus::Bus) {
    let mut sub = bus.subscribe("its.test.secure").await.unwrap();
    bus.flush().await.unwrap();
    bus.publish_raw("its.test.secure".into(), "hello".into())
        .await
        .unwrap();
    let msg = within(5, "the message back", sub.next()).await.unwrap();
    assert_eq!(&msg.payload[..], b"hello");
}

async fn refused(settings: &NatsSettings, url: &str) -> String {
    let err = within(20, "connect refused", connect(settings, url, "test"))
        .await
        .expect_err("connect must be refused");
    err.to_string()
}

/// A refusal that must be a TLS error, given at the first attempt; its text.
async fn refused_tls(settings: &NatsSettings, url: &str) -> String {
    let settings = NatsSettings {
        connect_attempts: 5,
        ..settings.clone()
    };
    let err = within(20, "connect refused", connect(&settings, url, "test"))
        .await
        .expect_err("connect must be refused");
    assert!(matches!(err, BusError::Tls { .. }), "a TLS error: {err}");
    let text = err.to_string();
    assert!(
        text.contains("nats.tls_ca_file"),
        "says what to check: {text}"
    );
    eprintln!("refused: {text}");
    text
}

#[tokio::test]
async fn tls_with_a_server_certificate_of_our_ca() {
    let pki = TestPki::new("its");
    let nats = TestNats::start_tls(&pki, false);
    let bus = within(
        10,
        "connect over TLS",
        connect(&tls(&pki, None), &nats.url(), "t"),
    )
    .await
    .expect("a client trusting the CA connects");
    round_trip(&bus).await;

    // A client that does not trust the server's CA refuses the server.
    let other = TestPki::new("other");
    let err = refused_tls(&tls(&other, None), &nats.url()).await;
    assert!(err.contains("UnknownIssuer"), "{err}");
    // A client without TLS settings is upgraded by the server, and does not trust it either
    // (not retried: connect_attempts is 5).
    let plain = NatsSettings {
        connect_attempts: 5,
        ..NatsSettings::default()
    };
    let err = refused_tls(&plain, &nats.url()).await;
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn mutual_tls_admits_a_client_certificate_of_our_ca_only() {
    let pki = TestPki::new("its");
    let nats = TestNats::start_tls(&pki, true);
    let good = tls(&pki, Some(pki.client("node")));
    let bus = within(10, "connect with mTLS", connect(&good, &nats.url(), "t"))
        .await
        .expect("a client certificate of the CA is admitted");
    round_trip(&bus).await;

    // No client certificate, and one signed by another CA: both refused.
    let err = refused_tls(&tls(&pki, None), &nats.url()).await;
    assert!(err.contains("CertificateRequired"), "{err}");
    let other = TestPki::new("intruder");
    let err = refused_tls(&tls(&pki, Some(other.client("intruder"))), &nats.url()).await;
    assert!(err.contains("UnknownCA"), "{err}");
}

#[tokio::test]
async fn nkey_auth_admits_the_listed_key_and_refuses_another() {
    let (public, seed) = nkey_user();
    let (nats, _dir) = TestNats::start_nkeys(&[&public]);
    let good = NatsSettings {
        nkey_seed: Secret(seed),
        connect_attempts: 1,
        ..NatsSettings::default()
    };
    let bus = within(
        10,
        "connect with the nkey",
        connect(&good, &nats.url(), "t"),
    )
    .await
    .expect("the listed nkey connects");
    round_trip(&bus).await;

    let (_, stranger) = nkey_user();
    let bad = NatsSettings {
        nkey_seed: Secret(stranger),
        connect_attempts: 5,
        ..NatsSettings::default()
    };
    let err = within(10, "refused", connect(&bad, &nats.url(), "t"))
        .await
        .expect_err("an unlisted nkey is refused");
    assert!(
        matches!(err, BusError::Auth { .. }),
        "refused at once as an authentication error, not retried: {err}"
    );
    let anonymous = NatsSettings {
        connect_attempts: 1,
        ..NatsSettings::default()
    };
    let err = refused(&anonymous, &nats.url()).await;
    assert!(err.contains("refused the credentials"), "{err}");
}
