//! The admin API's limits over real HTTP and raw TCP against a real nats-server: mutating
//! requests are rate limited per client address (429 with `Retry-After`, reads unaffected), a
//! client that does not finish its headers or its body in `admin.request_timeout_ms` is cut off.

use std::time::{Duration, Instant};

use its_admin::{AdminServer, MUTATION_BURST};
use its_config::{AdminRole, AdminSettings, AdminToken, Secret};
use its_testkit::{TestNats, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OPERATOR: &str = "operator-limits-0123456789";

fn settings() -> AdminSettings {
    AdminSettings {
        enabled: true,
        bind: "127.0.0.1:0".into(),
        workers: 1,
        tokens: vec![AdminToken {
            name: "operator-test".into(),
            role: AdminRole::Operator,
            token: Secret(OPERATOR.into()),
        }],
        request_timeout_ms: 500,
        ..AdminSettings::default()
    }
}

fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish()
}

/// Status and `Retry-After` of one request.
async fn call(c: &awc::Client, method: awc::http::Method, url: &str) -> (u16, Option<u64>) {
    let mut resp = c
        .request(method, url)
        .insert_header(("Authorization", format!("Bearer {OPERATOR}")))
        .send()
        .await
        .unwrap();
    let _ = resp.body().await.unwrap();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (resp.status().as_u16(), retry)
}

#[actix_rt::test]
async fn mutating_requests_are_rate_limited_per_client() {
    let nats = TestNats::start();
    let server = AdminServer::start(&settings(), nats.bus().await)
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());
    let c = client();
    let burst = MUTATION_BURST as usize;

    // Deleting cameras that do not exist: admitted changes answer 404, refused ones 429.
    let mut admitted = 0;
    let mut refused = None;
    for n in 0..burst * 2 {
        let (status, retry) = call(
            &c,
            awc::http::Method::DELETE,
            &format!("{base}/api/v1/cameras/none-{n}"),
        )
        .await;
        match status {
            404 => admitted += 1,
            429 => {
                refused = Some(retry.expect("a 429 says when to retry"));
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let retry_after = refused.expect("the burst was refused beyond its limit");
    assert!(
        admitted >= burst && admitted < burst * 2,
        "{admitted} admitted"
    );
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");

    // Reads are not limited while changes are.
    let (status, _) = call(
        &c,
        awc::http::Method::GET,
        &format!("{base}/api/v1/cameras"),
    )
    .await;
    assert_eq!(status, 200);

    // After Retry-After a change is admitted again.
    let limited_at = Instant::now();
    let again = within(10, "a change admitted after Retry-After", async {
        loop {
            let (status, retry) = call(
                &c,
                awc::http::Method::DELETE,
                &format!("{base}/api/v1/cameras/none-x"),
            )
            .await;
            if status != 429 {
                return status;
            }
            tokio::time::sleep(Duration::from_secs(retry.unwrap_or(1))).await;
        }
    })
    .await;
    assert_eq!(again, 404);
    assert!(limited_at.elapsed() <= Duration::from_secs(retry_after + 1));
    server.stop().await;
}

/// Sends `head` on a raw connection and returns what the server answered before it closed the
/// connection, and when it closed it.
async fn send_and_wait_for_close(addr: std::net::SocketAddr, head: &str) -> (String, Duration) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    within(10, "the server to close a stalled request", async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

#[actix_rt::test]
async fn stalled_headers_and_bodies_are_cut_off() {
    let nats = TestNats::start();
    let server = AdminServer::start(&settings(), nats.bus().await)
        .await
        .unwrap();
    let addr = server.local_addr();

    // Headers never finished (slowloris): the connection is closed after the timeout.
    let (answer, after) =
        send_and_wait_for_close(addr, "GET /api/v1/cameras HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        after >= Duration::from_millis(400),
        "closed after {after:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // Headers complete, body promised but never sent: 408 problem after the timeout.
    let head = format!(
        "POST /api/v1/cameras HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"id\":"
    );
    // The head timeout (actix's own, from accept) and the body timeout (ours) are both 500
    // ms. On a loaded machine the server's one worker can get to the connection only after
    // the head timeout fired, and then answers actix's bare 408 at once: the body case was
    // not reached. Only that answer is retried, at most three times.
    let mut attempt = 0;
    let (answer, after) = loop {
        attempt += 1;
        let (answer, after) = send_and_wait_for_close(addr, &head).await;
        let head_timed_out =
            answer.starts_with("HTTP/1.1 408") && !answer.contains("application/problem+json");
        if !head_timed_out || attempt == 3 {
            break (answer, after);
        }
        eprintln!("attempt {attempt}: the head timeout fired first ({after:?}); again");
    };
    assert!(
        after >= Duration::from_millis(400),
        "answered after {after:?}: {answer}"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");

    // The server still serves a well-behaved client.
    let (status, _) = call(
        &client(),
        awc::http::Method::GET,
        &format!("http://{addr}/api/v1/cameras"),
    )
    .await;
    assert_eq!(status, 200);
    server.stop().await;
}
