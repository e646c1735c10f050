//! Property tests of the placement function: every camera lands on an eligible node, a
//! placement fed back in does not move anything (no flapping), and Emergency cameras are
//! spread.

use std::collections::BTreeMap;

use its_cluster::{CameraDemand, NodeView, PlacementParams, place};
use its_proto::Priority;
use proptest::prelude::*;

fn nodes_strategy() -> impl Strategy<Value = Vec<NodeView>> {
    prop::collection::vec((10u32..400, any::<bool>(), 0u8..10, 0u8..10), 1..7).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (cap, alive, drain, over))| NodeView {
                id: format!("n{i}"),
                capacity_fps: f64::from(cap),
                alive: alive || i == 0,
                draining: drain == 0,
                overloaded: over == 0,
            })
            .collect()
    })
}

fn cameras_strategy() -> impl Strategy<Value = Vec<CameraDemand>> {
    prop::collection::vec((0usize..4, 1u32..30), 0..60).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (p, fps))| CameraDemand {
                id: format!("cam{i:03}"),
                priority: Priority::ALL[p],
                fps: f64::from(fps),
            })
            .collect()
    })
}

fn eligible(n: &NodeView) -> bool {
    n.alive && !n.draining
}

proptest! {
    #[test]
    fn every_camera_on_an_eligible_node_and_stable(
        nodes in nodes_strategy(),
        cams in cameras_strategy(),
        seed in prop::collection::vec(0usize..7, 60),
    ) {
        // an arbitrary current assignment, partly on nodes that are no longer eligible
        let current: BTreeMap<String, String> = cams
            .iter()
            .zip(&seed)
            .filter(|(_, s)| **s < nodes.len())
            .map(|(c, s)| (c.id.clone(), nodes[*s].id.clone()))
            .collect();
        let params = PlacementParams::default();
        let p = place(&nodes, &cams, &current, params);
        let any_eligible = nodes.iter().any(eligible);
        if any_eligible {
            prop_assert!(p.unplaced.is_empty());
            prop_assert_eq!(p.assignments.len(), cams.len());
        } else {
            prop_assert_eq!(p.unplaced.len(), cams.len());
        }
        for n in p.assignments.values() {
            let node = nodes.iter().find(|x| &x.id == n).unwrap();
            prop_assert!(eligible(node), "camera on ineligible node {}", n);
        }
        // fed back in with the overload reports cleared, nothing moves: no flapping
        let calm: Vec<NodeView> = nodes
            .iter()
            .cloned()
            .map(|mut n| {
                n.overloaded = false;
                n
            })
            .collect();
        let settled = place(&calm, &cams, &p.assignments, params);
        let again = place(&calm, &cams, &settled.assignments, params);
        prop_assert!(again.moves.is_empty(), "flapping: {:?}", again.moves);
    }

    #[test]
    fn emergency_cameras_are_spread(
        n_nodes in 1usize..6,
        n_emergency in 0usize..20,
        n_normal in 0usize..30,
    ) {
        let nodes: Vec<NodeView> = (0..n_nodes)
            .map(|i| NodeView {
                id: format!("n{i}"),
                capacity_fps: 100.0,
                alive: true,
                draining: false,
                overloaded: false,
            })
            .collect();
        let cams: Vec<CameraDemand> = (0..n_emergency + n_normal)
            .map(|i| CameraDemand {
                id: format!("cam{i:03}"),
                priority: if i < n_emergency { Priority::Emergency } else { Priority::Normal },
                fps: 5.0,
            })
            .collect();
        let p = place(&nodes, &cams, &BTreeMap::new(), PlacementParams::default());
        let mut per = vec![0usize; n_nodes];
        for c in cams.iter().filter(|c| c.priority == Priority::Emergency) {
            let n = &p.assignments[&c.id];
            per[nodes.iter().position(|x| &x.id == n).unwrap()] += 1;
        }
        let (lo, hi) = (per.iter().min().unwrap(), per.iter().max().unwrap());
        prop_assert!(hi - lo <= 1, "emergency per node {:?}", per);
    }
}
