//! FrameMsg as a node receives it: any bytes on any frame subject give a frame or a typed
//! error, never a panic, and an accepted frame satisfies every check decode_frame promises.
#![no_main]

use its_proto::{decode_frame, limits, subjects};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the subject's camera token, so the id check is exercised too.
    let (subject, body) = match data.split_first() {
        Some((b, rest)) if b % 2 == 0 => (subjects::frames("cam-1"), rest),
        Some((_, rest)) => (subjects::frames("cam-2"), rest),
        None => (subjects::frames("cam-1"), data),
    };
    if let Ok(frame) = decode_frame(body, &subject, limits::MAX_FRAME_BYTES) {
        assert_eq!(subjects::last_token(&subject), frame.camera_id);
        assert!(frame.width >= 1 && frame.width <= limits::MAX_FRAME_DIM);
        assert!(frame.height >= 1 && frame.height <= limits::MAX_FRAME_DIM);
        assert!(!frame.data.is_empty());
        assert!(body.len() <= limits::MAX_FRAME_BYTES);
    }
});
