//! Every other wire message: decoding arbitrary bytes never panics, and whatever decodes
//! re-encodes to bytes that decode to the same value.
#![no_main]

use its_proto::{
    CameraSpec, CameraStatus, ControlReply, DetectionMsg, EventMsg, NodeStatus, PriorityBoost,
    SchedulerControl, WorkerStatus, decode, encode,
};
use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(v) = decode::<T>(data) {
        let bytes = encode(&v).expect("a decoded message encodes");
        let again: T = decode(&bytes).expect("an encoded message decodes");
        // NaN floats are the one value that is not equal to itself.
        if format!("{v:?}").contains("NaN") {
            return;
        }
        assert_eq!(v, again);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    match which % 9 {
        0 => roundtrip::<DetectionMsg>(body),
        1 => roundtrip::<EventMsg>(body),
        2 => roundtrip::<NodeStatus>(body),
        3 => roundtrip::<WorkerStatus>(body),
        4 => roundtrip::<CameraStatus>(body),
        5 => roundtrip::<PriorityBoost>(body),
        6 => roundtrip::<SchedulerControl>(body),
        7 => roundtrip::<ControlReply>(body),
        _ => {
            roundtrip::<CameraSpec>(body);
            if let Ok(spec) = decode::<CameraSpec>(body) {
                let _ = spec.validate();
                let shown = spec.redacted_url();
                // No credential survives in the redacted URL's authority (text after the
                // first '/' is path, kept as it is, even when it looks like `user:pw@host`).
                if let Some((_, rest)) = shown.split_once("://") {
                    let authority = rest.split('/').next().unwrap_or("");
                    if let Some((cred, _)) = authority.rsplit_once('@') {
                        assert_eq!(cred, "***", "{shown}");
                    }
                }
            }
        }
    }
});
