//! Which node publishes a frame's result while a camera moves (make-before-break).
//!
//! During a planned move (rebalance, drain, overload relief) both the previous node and the new
//! one are subscribed to the camera's frames, so both receive every frame of the window and
//! both could publish its result. They must not: the results stream carries each (camera, seq)
//! once. Comparing notes over NATS would race, so the two nodes instead apply the same pure rule
//! to the same data, and agree without talking:
//!
//! - the cutover instant is `written_at_ns + handover` of the [`Assignment`] that moved the
//!   camera (written once by the leader, read by both nodes);
//! - a frame captured before the cutover (`captured_at_ns`, stamped once by the camera) is the
//!   previous node's to publish, a frame captured at or after it is the new node's.
//!
//! The new node sees the assignment within one tick and subscribes at once, so with
//! `tick < handover` it is subscribed before the cutover; the previous node keeps its
//! subscription for `2 × handover` after it sees the move, past the cutover plus transit. A move
//! away from a dead node carries no `previous_node` (nobody is left to publish), so the new node
//! publishes everything at once.
//!
//! [`ResultGate`] applies the rule, then a [`SeqDedup`] that lets through the first result of
//! each (camera, seq) on this node (a frame read twice, e.g. across a resubscription).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use its_proto::Assignment;
use tokio::sync::watch;

use crate::dedup::SeqDedup;

/// This node's side of one camera's move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The camera moves away from this node: publish frames captured before the cutover.
    Leaving,
    /// The camera moves to this node from a live one: publish frames captured from the cutover.
    Arriving,
}

/// One camera's move as seen by one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handover {
    /// Which side this node is on.
    pub side: Side,
    /// Capture time (unix ns) from which the new node publishes.
    pub cutover_ns: u64,
}

impl Handover {
    /// This node's side of `a` (an assignment it obeys), if the move concerns it: `me` is the new
    /// node of a move from a live node, or the previous node of a move elsewhere.
    pub fn of(a: &Assignment, me: &str, handover_ns: u64) -> Option<Handover> {
        let previous = a.previous_node.as_deref().filter(|p| *p != a.node_id)?;
        let side = if a.node_id == me {
            Side::Arriving
        } else if previous == me {
            Side::Leaving
        } else {
            return None;
        };
        Some(Handover {
            side,
            cutover_ns: a.written_at_ns.saturating_add(handover_ns),
        })
    }

    /// Whether this node publishes the result of a frame captured at `captured_at_ns`.
    pub fn publishes(&self, captured_at_ns: u64) -> bool {
        match self.side {
            Side::Leaving => captured_at_ns < self.cutover_ns,
            Side::Arriving => captured_at_ns >= self.cutover_ns,
        }
    }
}

/// The publisher's verdict on one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Publish it.
    Publish,
    /// The other node of a handover publishes this frame.
    OtherNode,
    /// This node already published this (camera, seq).
    Duplicate,
}

/// Decides, per result, whether this node publishes it: the handover rule for cameras in a
/// move, then first-result-wins per (camera, seq). Cheap to clone; one per node, consulted by
/// the scheduler's single publisher task.
#[derive(Clone)]
pub struct ResultGate {
    handovers: watch::Receiver<BTreeMap<String, Handover>>,
    dedup: Arc<Mutex<SeqDedup>>,
}

impl std::fmt::Debug for ResultGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultGate").finish_non_exhaustive()
    }
}

/// Sequence numbers remembered per camera by the gate's [`SeqDedup`].
pub const DEDUP_WINDOW: u64 = 1024;

impl ResultGate {
    /// A gate following the cluster agent's handovers.
    pub fn new(handovers: watch::Receiver<BTreeMap<String, Handover>>) -> Self {
        Self {
            handovers,
            dedup: Arc::new(Mutex::new(SeqDedup::new(DEDUP_WINDOW))),
        }
    }

    /// The verdict on the result of frame `seq` of `camera`, captured at `captured_at_ns`.
    pub fn judge(&self, camera: &str, seq: u64, captured_at_ns: u64) -> Verdict {
        if let Some(h) = self.handovers.borrow().get(camera)
            && !h.publishes(captured_at_ns)
        {
            return Verdict::OtherNode;
        }
        let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        if dedup.admit(camera, seq) {
            Verdict::Publish
        } else {
            Verdict::Duplicate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(to: &str, from: Option<&str>, at: u64) -> Assignment {
        Assignment {
            v: 1,
            camera_id: "c".into(),
            node_id: to.into(),
            previous_node: from.map(Into::into),
            fence: 1,
            written_at_ns: at,
        }
    }

    #[test]
    fn both_sides_agree_on_every_frame() {
        let a = moved("new", Some("old"), 1_000);
        let old = Handover::of(&a, "old", 500).unwrap();
        let new = Handover::of(&a, "new", 500).unwrap();
        assert_eq!(old.side, Side::Leaving);
        assert_eq!(new.side, Side::Arriving);
        for t in [0, 999, 1_000, 1_499, 1_500, 1_501, 10_000] {
            assert!(
                old.publishes(t) ^ new.publishes(t),
                "exactly one side publishes a frame captured at {t}"
            );
        }
        assert!(old.publishes(1_499) && new.publishes(1_500));
    }

    #[test]
    fn moves_without_a_live_previous_node_are_not_handovers() {
        assert_eq!(Handover::of(&moved("new", None, 1), "new", 500), None);
        assert_eq!(Handover::of(&moved("new", Some("new"), 1), "new", 5), None);
        assert_eq!(
            Handover::of(&moved("new", Some("old"), 1), "third", 5),
            None
        );
    }

    #[test]
    fn gate_applies_the_handover_then_first_result_wins() {
        let (tx, rx) = watch::channel(BTreeMap::new());
        let gate = ResultGate::new(rx);
        assert_eq!(gate.judge("c", 1, 10), Verdict::Publish);
        assert_eq!(gate.judge("c", 1, 10), Verdict::Duplicate);
        tx.send_modify(|m| {
            m.insert(
                "c".into(),
                Handover {
                    side: Side::Arriving,
                    cutover_ns: 100,
                },
            );
        });
        assert_eq!(gate.judge("c", 2, 99), Verdict::OtherNode);
        assert_eq!(gate.judge("c", 3, 100), Verdict::Publish);
        assert_eq!(gate.judge("other", 2, 0), Verdict::Publish);
    }
}
