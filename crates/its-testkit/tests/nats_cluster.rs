//! A 3-server NATS cluster: a client connected to one server only reconnects to another when
//! that server dies, and a bucket replicated on all three keeps working through the other two.

use std::time::Duration;

use futures::StreamExt;
use its_config::NatsSettings;
use its_testkit::{TestNatsCluster, within};

#[tokio::test]
async fn clients_and_replicated_buckets_survive_a_server_loss() {
    let mut cluster = TestNatsCluster::start(3).await;
    let all = cluster.bus().await;
    let first = cluster.servers[0].as_ref().unwrap().url();
    // connected to server 0 alone: it learns of the others from the cluster
    let lone = within(
        10,
        "connect to server 0",
        its_bus::connect(&NatsSettings::default(), &first, "lone"),
    )
    .await
    .unwrap();
    let kv = lone
        .kv_replicated::<u64>("its_test_replicated", 1, 3)
        .await
        .unwrap();
    kv.put("k", &1).await.unwrap();
    assert_eq!(lone.health().snapshot().connects, 1);

    cluster.kill(0);
    within(20, "the lone client reconnected elsewhere", async {
        while lone.health().snapshot().connects < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // messages flow between the two clients through the remaining servers
    let mut sub = lone.subscribe("its.test.after").await.unwrap();
    lone.flush().await.unwrap();
    within(20, "a message through the surviving servers", async {
        loop {
            all.publish_raw("its.test.after".into(), "x".into())
                .await
                .unwrap();
            if tokio::time::timeout(Duration::from_millis(200), sub.next())
                .await
                .is_ok()
            {
                return;
            }
        }
    })
    .await;
    // and the replicated bucket still reads and writes
    within(30, "the replicated bucket after the loss", async {
        loop {
            if kv.put("k", &2).await.is_ok()
                && kv.get("k").await.ok().flatten().and_then(|e| e.value) == Some(2)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}
