//! The machine-readable schema (`proto/schema.json`), generated from the Rust types.

use schemars::schema_for;
use serde_json::{Value, json};

use crate::{
    Assignment, CameraSpec, CameraStatus, ClusterControl, ControlReply, DetectionMsg, EventMsg,
    FrameMsg, LeaderLease, ModelSwapReply, NodeInfo, NodeReport, PriorityBoost, SCHEMA_VERSION,
    SchedulerControl, WorkerStatus,
};

/// JSON Schema (draft 2020-12) of every message, keyed by message name, with the subject each
/// travels on. MessagePack maps decode to JSON-compatible values except `FrameMsg.data`, which is
/// MessagePack bin (bytes).
pub fn generate() -> Value {
    json!({
        "title": "ITS Camera AI wire messages",
        "schema_version": SCHEMA_VERSION,
        "encoding": "MessagePack map with named fields",
        "messages": {
            "FrameMsg": { "subject": "its.frames.<camera_id>", "schema": schema_for!(FrameMsg) },
            "DetectionMsg": { "subject": "its.results.<camera_id>", "schema": schema_for!(DetectionMsg) },
            "EventMsg": { "subject": "its.events.<kind>.<camera_id>", "schema": schema_for!(EventMsg) },
            "WorkerStatus": { "subject": "its.status.worker.<node_id>.<worker_id>", "schema": schema_for!(WorkerStatus) },
            "NodeStatus": { "subject": "its.status.node.<node_id>", "schema": schema_for!(NodeReport) },
            "PriorityBoost": { "subject": "its.control.priority.<camera_id>", "schema": schema_for!(PriorityBoost) },
            "CameraStatus": { "subject": "its.status.camera.<camera_id>", "schema": schema_for!(CameraStatus) },
            "SchedulerControl": { "subject": "its.control.scheduler.<node_id> (request; reply ControlReply, ModelSwapReply for swap_model)", "schema": schema_for!(SchedulerControl) },
            "ControlReply": { "subject": "reply to SchedulerControl", "schema": schema_for!(ControlReply) },
            "ModelSwapReply": { "subject": "reply to SchedulerControl swap_model", "schema": schema_for!(ModelSwapReply) },
            "CameraSpec": { "subject": "KV bucket its_cameras, key = camera id", "schema": schema_for!(CameraSpec) },
            "NodeInfo": { "subject": "KV bucket its_cluster_nodes, key = node id", "schema": schema_for!(NodeInfo) },
            "LeaderLease": { "subject": "KV bucket its_cluster_leader, key = leader", "schema": schema_for!(LeaderLease) },
            "Assignment": { "subject": "KV bucket its_cluster_assignments, key = camera id", "schema": schema_for!(Assignment) },
            "ClusterControl": { "subject": "its.control.cluster.<node_id> (request; reply ControlReply)", "schema": schema_for!(ClusterControl) },
        }
    })
}

/// The schema as the pretty-printed text committed in `proto/schema.json`.
pub fn generate_pretty() -> String {
    let mut s = serde_json::to_string_pretty(&generate()).expect("schema serialises");
    s.push('\n');
    s
}
