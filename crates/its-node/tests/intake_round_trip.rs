//! The frame intake's synchronisation with the server (`its_bus::Bus::round_trip`),
//! made deterministic with a proxy that delays one connection's bytes to the server: a flush
//! returns as soon as the bytes are in the socket, so without a round trip the server sees a
//! SUB or the last PUBs too late (it keeps no order between two connections). Real nats-server.

use std::time::Duration;

use actix_rt::net::{TcpListener, TcpStream};
use futures::StreamExt;
use its_bus::Bus;
use its_config::NatsSettings;
use its_testkit::{TestNats, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// How late the proxied connection's bytes reach the server.
const DELAY: Duration = Duration::from_millis(400);

/// Listens on 127.0.0.1 and forwards each connection to `upstream` (host:port); what the client
/// sends reaches the server `DELAY` late, in order; the server's answers pass at once.
async fn delaying_proxy(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let server = TcpStream::connect(&upstream).await.unwrap();
            let (mut client_rd, mut client_wr) = client.into_split();
            let (mut server_rd, mut server_wr) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
            });
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match client_rd.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tx
                                .send((Instant::now() + DELAY, buf[..n].to_vec()))
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            });
            tokio::spawn(async move {
                while let Some((at, bytes)) = rx.recv().await {
                    tokio::time::sleep_until(at).await;
                    if server_wr.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("nats://{addr}")
}

async fn connect(url: &str, name: &str) -> Bus {
    within(
        10,
        "connect",
        its_bus::connect(&NatsSettings::default(), url, name),
    )
    .await
    .unwrap()
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("nats://").to_owned()
}

#[actix_rt::test]
async fn a_frame_published_once_the_subscription_is_confirmed_is_delivered() {
    let nats = TestNats::start();
    let slow = delaying_proxy(host_port(&nats.url())).await;
    let intake = connect(&slow, "intake").await;
    let publisher = nats.bus().await;

    let mut sub = intake.subscribe("its.frames.*").await.unwrap();
    // What Node::start waits for before it returns (a flush would return before the SUB
    // reached the server).
    let started = Instant::now();
    intake.round_trip().await.unwrap();
    assert!(
        started.elapsed() >= DELAY,
        "the round trip went through the server"
    );

    publisher
        .publish_raw("its.frames.cam".into(), b"frame".to_vec().into())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let msg = within(
        5,
        "the frame published after the SUB was confirmed",
        sub.next(),
    )
    .await
    .unwrap();
    assert_eq!(msg.subject.as_str(), "its.frames.cam");
}

#[actix_rt::test]
async fn every_frame_published_before_the_stop_is_in_the_buffer_when_the_intake_drains() {
    let nats = TestNats::start();
    let slow = delaying_proxy(host_port(&nats.url())).await;
    // The cameras' connection is the late one; the intake's is direct.
    let cameras = connect(&slow, "cameras").await;
    let intake = nats.bus().await;
    let mut sub = intake.subscribe("its.frames.*").await.unwrap();
    intake.round_trip().await.unwrap();

    const FRAMES: usize = 20;
    for i in 0..FRAMES {
        cameras
            .publish_raw(format!("its.frames.cam-{}", i % 3), vec![7u8; 4096].into())
            .await
            .unwrap();
    }
    cameras.flush().await.unwrap();
    // What Node::shutdown does before it stops the intake: the server has routed the cameras'
    // frames, then the intake's connection has read them.
    cameras.round_trip().await.unwrap();
    intake.round_trip().await.unwrap();

    // What run_intake does on the stop: drain, then read to the end of the buffer.
    sub.drain().await.unwrap();
    let mut read = 0;
    while within(10, "the drained subscription to end", sub.next())
        .await
        .is_some()
    {
        read += 1;
    }
    assert_eq!(read, FRAMES);
}
