//! NATS subject names. The only place subject strings are spelled.

use crate::limits::MAX_CAMERA_ID_LEN;

/// Prefix of every subject this system uses.
pub const ROOT: &str = "its";

/// `its.frames.<camera_id>`: FrameMsg published by ingest.
pub fn frames(camera_id: &str) -> String {
    format!("{ROOT}.frames.{camera_id}")
}
/// Wildcard over the frames of every camera.
pub const FRAMES_ALL: &str = "its.frames.*";

/// `its.results.<camera_id>`: DetectionMsg published by GPU nodes.
pub fn results(camera_id: &str) -> String {
    format!("{ROOT}.results.{camera_id}")
}
/// Wildcard over the results of every camera.
pub const RESULTS_ALL: &str = "its.results.*";

/// `its.events.<kind>.<camera_id>`: EventMsg.
pub fn events(kind: crate::EventKind, camera_id: &str) -> String {
    format!("{ROOT}.events.{}.{camera_id}", kind.as_str())
}
/// Wildcard over every event.
pub const EVENTS_ALL: &str = "its.events.>";

/// `its.status.worker.<node_id>.<worker_id>`: WorkerStatus, about every 0.5 s.
pub fn worker_status(node_id: &str, worker_id: &str) -> String {
    format!("{ROOT}.status.worker.{node_id}.{worker_id}")
}
/// `its.status.node.<node_id>`: NodeStatus, every second.
pub fn node_status(node_id: &str) -> String {
    format!("{ROOT}.status.node.{node_id}")
}
/// `its.status.camera.<camera_id>`: CameraStatus, about every second.
pub fn camera_status(camera_id: &str) -> String {
    format!("{ROOT}.status.camera.{camera_id}")
}
/// `its.control.scheduler.<node_id>`: SchedulerControl requests.
pub fn control_scheduler(node_id: &str) -> String {
    format!("{ROOT}.control.scheduler.{node_id}")
}
/// Wildcard over every status message.
pub const STATUS_ALL: &str = "its.status.>";

/// `its.control.priority.<camera_id>`: PriorityBoost for one camera.
pub fn control_priority(camera_id: &str) -> String {
    format!("{ROOT}.control.priority.{camera_id}")
}
/// Wildcard over the priority controls of every camera.
pub const CONTROL_PRIORITY_ALL: &str = "its.control.priority.*";

/// The last token of a subject (`its.frames.cam-1` gives `cam-1`).
pub fn last_token(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or(subject)
}

/// Whether `id` is usable as one subject token and as a camera, node or worker id:
/// 1 to 64 bytes of ASCII letters, digits, `-` and `_`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CAMERA_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_single_safe_tokens() {
        assert!(is_valid_id("cam-01_A"));
        for bad in ["", "a.b", "a b", "a*", "a>", "é", &"x".repeat(65)] {
            assert!(!is_valid_id(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn subjects_are_spelled_as_documented() {
        assert_eq!(frames("c1"), "its.frames.c1");
        assert_eq!(results("c1"), "its.results.c1");
        assert_eq!(events(crate::EventKind::Error, "c1"), "its.events.error.c1");
        assert_eq!(worker_status("n1", "w0"), "its.status.worker.n1.w0");
        assert_eq!(last_token("its.frames.c1"), "c1");
    }
}
