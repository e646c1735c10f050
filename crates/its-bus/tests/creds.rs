//! `.creds` files (NATS decentralised auth: operator → account → user JWTs) against a real
//! nats-server in operator mode, with every key and JWT made at test time: a user of an account
//! the server knows connects and messages flow; a user of another account, or a JWT without its
//! own seed, is refused at connect as an authentication error; a missing file is a config error
//! naming `nats.creds_file`.

use futures::StreamExt;
use its_bus::{Bus, BusError, connect};
use its_config::NatsSettings;
use its_testkit::jwt::{Operator, creds};
use its_testkit::{TestNats, within};

fn with_creds(path: &std::path::Path) -> NatsSettings {
    NatsSettings {
        creds_file: path.display().to_string(),
        // An authentication refusal must come at once, not after retries.
        connect_attempts: 5,
        ..NatsSettings::default()
    }
}

async fn round_trip(bus: &Bus) {
    let mut sub = bus.subscribe("its.test.creds").await.unwrap();
    bus.flush().await.unwrap();
    bus.publish_raw("its.test.creds".into(), "hello".into())
        .await
        .unwrap();
    let msg = within(5, "the message back", sub.next()).await.unwrap();
    assert_eq!(&msg.payload[..], b"hello");
}

/// A refusal that must be an authentication error, given at the first attempt; its text.
async fn refused_auth(settings: &NatsSettings, url: &str) -> String {
    let err = within(10, "connect refused", connect(settings, url, "test"))
        .await
        .expect_err("connect must be refused");
    assert!(
        matches!(err, BusError::Auth { .. }),
        "refused at once as an authentication error, not retried: {err}"
    );
    let text = err.to_string();
    assert!(
        text.to_lowercase().contains("authorization violation"),
        "the server's reason is in the error: {text}"
    );
    eprintln!("refused: {text}");
    text
}

#[tokio::test]
async fn a_creds_file_of_a_known_account_connects_and_messages_flow() {
    let operator = Operator::new("its");
    let system = operator.account("SYS");
    let app = operator.account("ITS");
    let (nats, dir) = TestNats::start_operator(&operator, &[&system, &app]);

    let node = app.user("node");
    let path = node.write_creds(dir.path(), "node");
    let bus = within(
        10,
        "connect with the creds file",
        connect(&with_creds(&path), &nats.url(), "t"),
    )
    .await
    .expect("a user of a preloaded account connects");
    round_trip(&bus).await;

    // Without credentials an operator-mode server admits no one.
    let anonymous = NatsSettings {
        connect_attempts: 5,
        ..NatsSettings::default()
    };
    refused_auth(&anonymous, &nats.url()).await;
}

#[tokio::test]
async fn a_foreign_creds_file_is_refused_as_an_authentication_error() {
    let operator = Operator::new("its");
    let system = operator.account("SYS");
    let app = operator.account("ITS");
    let (nats, dir) = TestNats::start_operator(&operator, &[&system, &app]);

    // An account of the same operator that the server was not given.
    let unknown = operator.account("unknown");
    let path = unknown.user("stray").write_creds(dir.path(), "stray");
    refused_auth(&with_creds(&path), &nats.url()).await;

    // An account of another operator, signing a user in an account of the same name.
    let foreign = Operator::new("intruder").account("ITS");
    let path = foreign.user("node").write_creds(dir.path(), "foreign");
    refused_auth(&with_creds(&path), &nats.url()).await;

    // A valid user JWT with someone else's seed: the nonce signature does not match the JWT.
    let node = app.user("node");
    let thief = app.user("thief");
    let path = dir.path().join("stolen.creds");
    std::fs::write(&path, creds(node.jwt(), &thief.seed())).unwrap();
    refused_auth(&with_creds(&path), &nats.url()).await;

    // The rightful owner of that JWT still connects.
    let path = node.write_creds(dir.path(), "node");
    let bus = within(
        10,
        "connect with the creds file",
        connect(&with_creds(&path), &nats.url(), "t"),
    )
    .await
    .expect("the owner of the JWT connects");
    round_trip(&bus).await;
}

/// Connecting with `path` as the creds file fails before any connection is tried (the URL is
/// a closed port) with a file error of `nats.creds_file`; its text.
async fn creds_file_error(path: &std::path::Path) -> String {
    let err = within(
        10,
        "connect fails",
        connect(&with_creds(path), "nats://127.0.0.1:1", "t"),
    )
    .await
    .expect_err("a bad creds file fails");
    assert!(
        matches!(
            err,
            BusError::File {
                what: "nats.creds_file",
                ..
            }
        ),
        "a file error of nats.creds_file: {err}"
    );
    let text = err.to_string();
    assert!(text.contains("nats.creds_file"), "{text}");
    text
}

#[tokio::test]
async fn a_missing_or_unreadable_creds_file_is_a_config_error_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.creds");
    let text = creds_file_error(&missing).await;
    assert!(text.contains(&missing.display().to_string()), "{text}");

    // A file that is not a creds file: the same error, saying what is wrong with it.
    let garbage = dir.path().join("garbage.creds");
    std::fs::write(&garbage, "not a creds file\n").unwrap();
    let text = creds_file_error(&garbage).await;
    assert!(
        text.contains("JWT"),
        "says the JWT cannot be parsed: {text}"
    );
}
