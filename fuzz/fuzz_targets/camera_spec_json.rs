//! Admin API request bodies: a camera as JSON. Parsing and validation never panic, and a spec
//! that validates has a usable id and URL scheme.
#![no_main]

use its_proto::CameraSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = serde_json::from_slice::<CameraSpec>(data)
        && spec.validate().is_ok()
    {
        assert!(its_proto::subjects::is_valid_id(&spec.id));
        assert!(spec.scheme().is_some());
        assert!(spec.fps.is_finite() && spec.fps > 0.0);
    }
});
