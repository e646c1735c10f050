//! The node report on `its.status.node.<node_id>` is NodeStatus with the connection's health
//! beside its fields: old and new readers and writers understand each other.

use std::collections::BTreeMap;

use its_proto::{NodeReport, NodeStatus, SCHEMA_VERSION, decode, encode};

fn status() -> NodeStatus {
    NodeStatus {
        v: SCHEMA_VERSION,
        node_id: "n1".into(),
        at_ns: 7,
        frames_received: 10,
        results_published: 8,
        in_flight: 1,
        drops: BTreeMap::from([("queue_full".to_owned(), 1)]),
        queue_depth: BTreeMap::from([("normal".to_owned(), 1)]),
        latency_p50_ns: 3,
        latency_p99_ns: 4,
        breaker: "closed".into(),
        batch_sizes: BTreeMap::from([("4".to_owned(), 2)]),
    }
}

#[test]
fn a_report_is_a_node_status_with_the_slow_consumer_count_beside_it() {
    let report = NodeReport {
        status: status(),
        nats_slow_consumer_events: 3,
    };
    let bytes = encode(&report).unwrap();
    // One flat map: a NodeStatus reader sees every field it knows.
    let as_status: NodeStatus = decode(&bytes).unwrap();
    assert_eq!(as_status, status());
    let back: NodeReport = decode(&bytes).unwrap();
    assert_eq!(back, report);
    let map: BTreeMap<String, serde::de::IgnoredAny> = decode(&bytes).unwrap();
    assert!(map.contains_key("nats_slow_consumer_events"));
    assert!(map.contains_key("frames_received"));
    assert!(!map.contains_key("status"));
}

#[test]
fn a_report_from_an_older_node_reads_zero_slow_consumer_events() {
    let bytes = encode(&status()).unwrap();
    let report: NodeReport = decode(&bytes).unwrap();
    assert_eq!(report.status, status());
    assert_eq!(report.nats_slow_consumer_events, 0);
}
