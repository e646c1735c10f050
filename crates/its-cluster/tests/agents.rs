//! Three cluster agents against a real nats-server with 30 cameras in the registry: every
//! camera served by exactly one node, a crashed node's cameras move, a leader crash hands the
//! lease over, a new node takes its share, and a drained node ends with none.

use std::time::Duration;

use its_bus::Bus;
use its_cluster::{AgentConfig, AgentState, ClusterAgent, PlacementParams};
use its_proto::{CAMERAS_BUCKET, CameraSpec, ClusterControl, ControlReply, Priority};
use its_testkit::{TestNats, within};
use tokio::sync::watch;

fn config(id: &str) -> AgentConfig {
    AgentConfig {
        node_id: id.into(),
        capacity_fps: 200.0,
        gpus: 0,
        tick: Duration::from_millis(200),
        lease_ttl: Duration::from_millis(1000),
        handover: Duration::from_millis(300),
        params: PlacementParams::default(),
    }
}

async fn camera_registry(bus: &Bus, n: usize) {
    let kv = bus.kv::<CameraSpec>(CAMERAS_BUCKET, 1).await.unwrap();
    for i in 0..n {
        let mut spec = CameraSpec::new(format!("cam-{i:02}"), "synthetic://road", 5.0);
        if i < 3 {
            spec.priority = Priority::Emergency;
        }
        kv.put(&spec.id, &spec).await.unwrap();
    }
}

/// Waits until the union of the given agents' sets is every camera, each exactly once.
async fn until_partitioned(states: &[&watch::Receiver<AgentState>], n: usize) -> Vec<usize> {
    loop {
        let sets: Vec<_> = states.iter().map(|s| s.borrow().cameras.clone()).collect();
        let total: usize = sets.iter().map(|s| s.len()).sum();
        let union: std::collections::BTreeSet<_> = sets.iter().flatten().collect();
        if total == n && union.len() == n {
            return sets.iter().map(|s| s.len()).collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn placement_failover_join_and_drain() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    within(10, "registry", camera_registry(&bus, 30)).await;

    let mut agents = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let b = nats.bus().await;
        agents.push(
            within(10, "agent start", ClusterAgent::start(b, config(id)))
                .await
                .unwrap(),
        );
    }
    let states: Vec<_> = agents.iter().map(|a| a.state()).collect();
    let counts = within(20, "30 cameras over 3 nodes", async {
        loop {
            let c = until_partitioned(&states.iter().collect::<Vec<_>>(), 30).await;
            // within the hysteresis: 0.1 of 200 frames/s is 4 cameras of 5 frames/s
            if c.iter().max().unwrap() - c.iter().min().unwrap() <= 4 {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(counts.iter().all(|&n| n >= 8), "{counts:?}");

    // crash the leader: the lease moves and its cameras are served by the others
    let leader = states.iter().position(|s| s.borrow().leader).unwrap();
    let old_fence = states[leader].borrow().fence;
    let crashed = agents.remove(leader);
    crashed.abort();
    let states: Vec<_> = agents.iter().map(|a| a.state()).collect();
    within(20, "cameras of the crashed leader served again", async {
        until_partitioned(&states.iter().collect::<Vec<_>>(), 30).await
    })
    .await;
    within(10, "new leader with a newer term", async {
        loop {
            if states
                .iter()
                .any(|s| s.borrow().leader && s.borrow().fence > old_fence)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // a node joins: it takes a share, and the others keep the rest
    let b = nats.bus().await;
    agents.push(
        within(10, "agent start", ClusterAgent::start(b, config("n4")))
            .await
            .unwrap(),
    );
    let states: Vec<_> = agents.iter().map(|a| a.state()).collect();
    within(20, "load spreads to the new node", async {
        loop {
            let c = until_partitioned(&states.iter().collect::<Vec<_>>(), 30).await;
            if c[2] >= 5 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // drain the new node through the control subject
    let reply: ControlReply = within(
        10,
        "drain request",
        bus.request_msg(
            its_proto::cluster::control_cluster("n4"),
            &ClusterControl::Drain,
            Duration::from_secs(5),
        ),
    )
    .await
    .unwrap();
    assert!(reply.ok, "{}", reply.message);
    within(20, "drained node serves nothing", async {
        loop {
            let c = until_partitioned(&states.iter().collect::<Vec<_>>(), 30).await;
            if c[2] == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for a in agents {
        within(10, "agent stop", a.stop()).await;
    }
}

/// A drain moves cameras make-before-break: for every frame of a moved camera exactly one of
/// the two nodes' result gates publishes it. A crash moves cameras with no handover: the new
/// node publishes every frame at once.
#[tokio::test]
async fn handover_gives_each_frame_to_exactly_one_node() {
    use its_cluster::Verdict;
    use its_proto::Assignment;
    use its_proto::cluster::ASSIGNMENTS_BUCKET;

    let nats = TestNats::start();
    let bus = nats.bus().await;
    within(10, "registry", camera_registry(&bus, 6)).await;
    let mut agents = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let b = nats.bus().await;
        agents.push(
            within(10, "agent start", ClusterAgent::start(b, config(id)))
                .await
                .unwrap(),
        );
    }
    let states: Vec<_> = agents.iter().map(|a| a.state()).collect();
    let gates: Vec<_> = agents.iter().map(|a| a.result_gate()).collect();
    within(20, "6 cameras over 3 nodes", async {
        loop {
            let c = until_partitioned(&states.iter().collect::<Vec<_>>(), 6).await;
            if c.iter().all(|&n| n >= 1) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let moved: Vec<String> = states[0].borrow().cameras.iter().cloned().collect();
    let reply: ControlReply = bus
        .request_msg(
            its_proto::cluster::control_cluster("n1"),
            &ClusterControl::Drain,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(reply.ok);
    let assignments = bus.kv::<Assignment>(ASSIGNMENTS_BUCKET, 1).await.unwrap();
    let handover_ns = config("n1").handover.as_nanos() as u64;
    let mut seq = 0u64;
    for camera in &moved {
        let a = within(10, "the drained camera's new assignment", async {
            loop {
                if let Some(a) = assignments.get(camera).await.unwrap().and_then(|e| e.value)
                    && a.node_id != "n1"
                {
                    return a;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert_eq!(a.previous_node.as_deref(), Some("n1"), "{a:?}");
        let to = ["n1", "n2", "n3"]
            .iter()
            .position(|n| *n == a.node_id)
            .unwrap();
        let cutover = a.written_at_ns + handover_ns;
        // both gates know of the move once the old node holds back a frame after the cutover
        // and the new node one before it
        within(10, "both gates know of the move", async {
            loop {
                seq += 1;
                let old = gates[0].judge(camera, seq, cutover + 1);
                let new = gates[to].judge(camera, seq, cutover - 1);
                if old == Verdict::OtherNode && new == Verdict::OtherNode {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        // frames are judged once captured: wait until the last of them is in the past, so
        // both nodes' rounds have confirmed their view past it
        within(10, "past the cutover", async {
            while its_cluster::now_ns() <= cutover + 1 + 300_000_000 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        for at in [cutover - 1_000_000, cutover - 1, cutover, cutover + 1] {
            seq += 1;
            let old = gates[0].judge(camera, seq, at) == Verdict::Publish;
            let new = gates[to].judge(camera, seq, at) == Verdict::Publish;
            assert!(
                old ^ new,
                "{camera}: frame captured at {at}: old {old}, new {new}"
            );
            // and a second copy on the same node is a duplicate
            let g = if old { &gates[0] } else { &gates[to] };
            assert_eq!(g.judge(camera, seq, at), Verdict::Duplicate);
        }
    }

    // crash n2: its cameras go to n3 without a handover (nobody is left to publish)
    let lost: Vec<String> = states[1].borrow().cameras.iter().cloned().collect();
    assert!(!lost.is_empty());
    agents.remove(1).abort();
    for camera in &lost {
        let a = within(20, "the crashed node's camera reassigned", async {
            loop {
                if let Some(a) = assignments.get(camera).await.unwrap().and_then(|e| e.value)
                    && a.node_id == "n3"
                {
                    return a;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert_eq!(a.previous_node, None, "{a:?}");
        seq += 1;
        // n3 publishes at once: from the write on, with no handover window
        within(10, "the new node serves it", async {
            while !states[2].borrow().cameras.contains(camera) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert_eq!(
            gates[2].judge(camera, seq, a.written_at_ns),
            Verdict::Publish
        );
        seq += 1;
        assert_eq!(
            gates[2].judge(camera, seq, a.written_at_ns - 1),
            Verdict::OtherNode
        );
    }
    for a in agents {
        within(10, "agent stop", a.stop()).await;
    }
}
