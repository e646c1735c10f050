//! Node liveness from heartbeats in the KV bucket `its_cluster_nodes`.

use its_proto::{NodeInfo, cluster::DEAD_AFTER_HEARTBEATS};

use crate::placement::NodeView;

/// True while the node's last heartbeat is younger than [`DEAD_AFTER_HEARTBEATS`] of its own
/// heartbeat intervals at `now_ns` (unix nanoseconds, the judging node's clock).
pub fn is_alive(info: &NodeInfo, now_ns: u64) -> bool {
    let limit = u64::from(info.heartbeat_ms.max(1)) * 1_000_000 * u64::from(DEAD_AFTER_HEARTBEATS);
    now_ns.saturating_sub(info.heartbeat_at_ns) < limit
}

/// The placement view of a heartbeat.
pub fn view(info: &NodeInfo, now_ns: u64) -> NodeView {
    NodeView {
        id: info.node_id.clone(),
        capacity_fps: info.capacity_fps,
        alive: is_alive(info, now_ns),
        draining: info.draining,
        overloaded: info.overloaded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_after_three_missed_heartbeats() {
        let info = NodeInfo {
            v: 1,
            node_id: "n1".into(),
            gpus: 0,
            capacity_fps: 100.0,
            load_fps: 0.0,
            cameras: 0,
            draining: false,
            drained: false,
            overloaded: false,
            heartbeat_at_ns: 1_000_000_000,
            heartbeat_ms: 500,
        };
        assert!(is_alive(&info, 1_000_000_000 + 1_499_000_000));
        assert!(!is_alive(&info, 1_000_000_000 + 1_500_000_000));
        assert!(
            is_alive(&info, 0),
            "a clock behind the heartbeat is not death"
        );
        assert!(view(&info, 1_000_000_000).alive);
    }
}
