//! JPEG payloads as workers decode them: header parsing and decoding of arbitrary bytes never
//! panic, and a decoded image respects the limits.
#![no_main]

use its_engine::{DecodeLimits, decode_jpeg_with_limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_width: 1024,
        max_height: 1024,
    };
    if let Ok(img) = decode_jpeg_with_limits(data, &limits) {
        assert!(img.width >= 1 && img.width <= limits.max_width);
        assert!(img.height >= 1 && img.height <= limits.max_height);
        assert_eq!(img.data.len(), img.width as usize * img.height as usize * 3);
    }
});
