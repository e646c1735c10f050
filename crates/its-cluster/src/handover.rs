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
//! Each node keeps, per camera, the [`Window`] of capture times it publishes ([`Windows`]):
//! opened by the move to it, closed by the move away.
//!
//! The new node sees the assignment within one tick and subscribes at once, so with
//! `tick < handover` it is subscribed before the cutover; the previous node keeps its
//! subscription for `2 × handover` after it sees the move, past the cutover plus transit. A move
//! away from a dead node carries no `previous_node` (nobody is left to publish), so the new node
//! publishes at once, every frame captured from the write on; should the old node be alive after
//! all (judged dead while NATS was failing over), it stops at that same instant.
//!
//! [`ResultGate`] applies the rule, then a [`SeqDedup`] that lets through the first result of
//! each (camera, seq) on this node (a frame read twice, e.g. across a resubscription).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use its_proto::Assignment;
use tokio::sync::watch;

use crate::dedup::SeqDedup;

/// The capture times (unix ns) whose results this node publishes for one camera:
/// `from_ns <= captured < until_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// From this capture time: the write time of an assignment here without a handover, else
    /// the cutover of the move here.
    pub from_ns: u64,
    /// Until this capture time, once the camera moved away (the cutover of that move).
    pub until_ns: Option<u64>,
}

impl Window {
    /// Whether this node publishes the result of a frame captured at `captured_at_ns`.
    pub fn publishes(&self, captured_at_ns: u64) -> bool {
        captured_at_ns >= self.from_ns && self.until_ns.is_none_or(|u| captured_at_ns < u)
    }
}

/// How long a closed window is kept for results still in flight, nanoseconds.
const KEEP_CLOSED_NS: u64 = 30_000_000_000;

/// One node's publication windows, built from the assignments it obeys, round by round.
///
/// Each node keeps its own history, so a camera that moves twice in quick succession
/// (A to B, then B to C) is still partitioned: A keeps `[0, c1)`, B `[c1, c2)`, C `[c2, ..)`,
/// although the newest assignment names only B and C.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    windows: BTreeMap<String, Window>,
}

impl Windows {
    /// No camera yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in the current assignment `a` of a camera (obeyed, i.e. not fenced off), as node
    /// `me`, at wall time `now_ns`:
    /// - assigned here and no open window: open one from the cutover, when the camera comes
    ///   from a live node (`previous_node`), else from the write time;
    /// - assigned elsewhere and an open window here: close it at the cutover when the move is
    ///   from here, else at the write time: the leader judged this node dead (or this node
    ///   missed a move), and the new node publishes from the write time, so even a node wrongly
    ///   judged dead and still serving never publishes the same frame as the new one. (The new
    ///   node receives nothing much older than the write anyway: it subscribes after it.)
    pub fn observe(&mut self, a: &Assignment, me: &str, handover_ns: u64) {
        let cutover = a.written_at_ns.saturating_add(handover_ns);
        let open = self
            .windows
            .get(&a.camera_id)
            .is_some_and(|w| w.until_ns.is_none());
        if a.node_id == me {
            if !open {
                let from_ns = match a.previous_node.as_deref() {
                    Some(p) if p != me => cutover,
                    _ => a.written_at_ns,
                };
                self.windows.insert(
                    a.camera_id.clone(),
                    Window {
                        from_ns,
                        until_ns: None,
                    },
                );
            }
        } else if open && let Some(w) = self.windows.get_mut(&a.camera_id) {
            let until = if a.previous_node.as_deref() == Some(me) {
                cutover
            } else {
                a.written_at_ns
            };
            w.until_ns = Some(until.max(w.from_ns));
        }
    }

    /// Forgets windows closed long ago, and open windows of cameras no longer assigned
    /// anywhere (`assigned`: the cameras of the current assignments).
    pub fn prune(&mut self, now_ns: u64, assigned: &dyn Fn(&str) -> bool) {
        self.windows.retain(|c, w| match w.until_ns {
            Some(u) => now_ns < u.saturating_add(KEEP_CLOSED_NS),
            None => assigned(c),
        });
    }

    /// The windows now.
    pub fn get(&self) -> &BTreeMap<String, Window> {
        &self.windows
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
    /// The frame was captured after the time up to which this node's view of the assignments
    /// is confirmed (see [`ResultGate::confirmed_by`]): the camera may have been moved away
    /// from it without its knowing, so it does not publish.
    Unconfirmed,
}

/// Decides, per result, whether this node publishes it: the handover rule for cameras in a
/// move, then first-result-wins per (camera, seq). Cheap to clone; one per node, consulted by
/// the scheduler's single publisher task.
#[derive(Clone)]
pub struct ResultGate {
    windows: watch::Receiver<BTreeMap<String, Window>>,
    confirmed_until: Arc<AtomicU64>,
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
    /// A gate following the cluster agent's publication windows.
    pub fn new(windows: watch::Receiver<BTreeMap<String, Window>>) -> Self {
        Self {
            windows,
            confirmed_until: Arc::new(AtomicU64::new(u64::MAX)),
            dedup: Arc::new(Mutex::new(SeqDedup::new(DEDUP_WINDOW))),
        }
    }

    /// Publishes only frames captured before `until` (unix ns), which the cluster agent moves
    /// forward after every round that wrote its heartbeat and read the assignments. It sets it
    /// short of when the leader could judge this node dead and give its cameras away, so a node
    /// cut off from NATS (or whose rounds fail while JetStream fails over) stops publishing
    /// before another node can start: a gap in the results, never a frame published twice.
    pub fn confirmed_by(mut self, until: Arc<AtomicU64>) -> Self {
        self.confirmed_until = until;
        self
    }

    /// The verdict on the result of frame `seq` of `camera`, captured at `captured_at_ns`.
    pub fn judge(&self, camera: &str, seq: u64, captured_at_ns: u64) -> Verdict {
        if let Some(w) = self.windows.borrow().get(camera)
            && !w.publishes(captured_at_ns)
        {
            return Verdict::OtherNode;
        }
        if captured_at_ns >= self.confirmed_until.load(Ordering::Relaxed) {
            return Verdict::Unconfirmed;
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

    fn windows(me: &str, history: &[Assignment]) -> Window {
        let mut w = Windows::new();
        for a in history {
            w.observe(a, me, 500);
        }
        w.get()["c"]
    }

    #[test]
    fn each_frame_of_a_move_has_exactly_one_publisher() {
        let history = [moved("a", None, 0), moved("b", Some("a"), 1_000)];
        let (a, b) = (windows("a", &history), windows("b", &history));
        assert_eq!(a.until_ns, Some(1_500));
        assert_eq!(b.from_ns, 1_500);
        for t in [0, 999, 1_499, 1_500, 1_501, u64::MAX] {
            assert!(a.publishes(t) ^ b.publishes(t), "frame captured at {t}");
        }
    }

    #[test]
    fn a_camera_moved_twice_is_still_partitioned() {
        let history = [
            moved("a", None, 0),
            moved("b", Some("a"), 1_000),
            moved("c", Some("b"), 1_200),
        ];
        let w: Vec<Window> = ["a", "b", "c"]
            .iter()
            .map(|n| windows(n, &history))
            .collect();
        for t in [0, 1_499, 1_500, 1_699, 1_700, 10_000] {
            let n = w.iter().filter(|w| w.publishes(t)).count();
            assert_eq!(n, 1, "frame captured at {t}: {w:?}");
        }
    }

    #[test]
    fn a_move_from_a_dead_node_splits_at_the_write_and_rewrites_change_nothing() {
        let history = [moved("a", None, 0), moved("b", None, 1_000)];
        // a, judged dead but still serving, and b agree on every frame
        let (a, b) = (windows("a", &history), windows("b", &history));
        for t in [0, 999, 1_000, 1_001, 1_600] {
            assert!(a.publishes(t) ^ b.publishes(t), "frame captured at {t}");
        }
        let mut w = Windows::new();
        w.observe(&moved("b", None, 1_000), "b", 500);
        assert!(w.get()["c"].publishes(1_000));
        // a new leader rewrites the same placement under its term
        w.observe(&moved("b", None, 9_000), "b", 500);
        assert_eq!(w.get()["c"].from_ns, 1_000);
        // closed windows go after a while, open ones when the camera is gone
        w.observe(&moved("x", Some("b"), 10_000), "b", 500);
        w.prune(10_500 + KEEP_CLOSED_NS - 1, &|_| true);
        assert!(w.get().contains_key("c"));
        w.prune(10_500 + KEEP_CLOSED_NS, &|_| true);
        assert!(w.get().is_empty());
    }

    #[test]
    fn gate_applies_the_window_then_first_result_wins() {
        let (tx, rx) = watch::channel(BTreeMap::new());
        let gate = ResultGate::new(rx);
        assert_eq!(gate.judge("c", 1, 10), Verdict::Publish);
        assert_eq!(gate.judge("c", 1, 10), Verdict::Duplicate);
        tx.send_modify(|m| {
            m.insert(
                "c".into(),
                Window {
                    from_ns: 100,
                    until_ns: None,
                },
            );
        });
        assert_eq!(gate.judge("c", 2, 99), Verdict::OtherNode);
        assert_eq!(gate.judge("c", 3, 100), Verdict::Publish);
        assert_eq!(gate.judge("other", 2, 0), Verdict::Publish);
        let until = Arc::new(AtomicU64::new(200));
        let gate = gate.confirmed_by(until.clone());
        assert_eq!(gate.judge("c", 4, 200), Verdict::Unconfirmed);
        until.store(300, Ordering::Relaxed);
        assert_eq!(gate.judge("c", 4, 200), Verdict::Publish);
    }
}
