//! Inputs shared by the worker tests: a small JPEG and a batch of jobs made of it.

use std::time::{Duration, Instant};

use its_proto::{Encoding, FrameMsg, Priority, SCHEMA_VERSION};
use its_worker::{FrameJob, RunBatch};

/// A 64x48 JPEG with some structure.
pub fn jpeg() -> Vec<u8> {
    its_testkit::small_jpeg(128)
}

/// `n` jobs of `data` with consecutive seqs from `first_seq`, due in 10 minutes.
pub fn batch(data: &[u8], first_seq: u64, n: u64) -> RunBatch {
    let now = Instant::now();
    RunBatch {
        jobs: (first_seq..first_seq + n)
            .map(|seq| FrameJob {
                frame: FrameMsg {
                    v: SCHEMA_VERSION,
                    camera_id: "cam".into(),
                    seq,
                    captured_at_ns: 1,
                    priority: Priority::Normal,
                    deadline_ns: None,
                    width: 64,
                    height: 48,
                    encoding: Encoding::Jpeg,
                    data: data.to_vec(),
                },
                received_at: now,
                dispatched_at: now,
                deadline: now + Duration::from_secs(600),
                attempts: 0,
            })
            .collect(),
    }
}
