//! JPEG decoding against images encoded in the test with `jpeg-encoder`.

use its_engine::{DecodeLimits, EngineError, decode_jpeg, decode_jpeg_with_limits};
use jpeg_encoder::{ColorType, Encoder};

/// `width` x `height`, left half pure red, right half pure blue.
fn red_blue(width: u16, height: u16) -> Vec<u8> {
    let mut rgb = Vec::new();
    for _ in 0..height {
        for x in 0..width {
            rgb.extend_from_slice(if x < width / 2 {
                &[255, 0, 0]
            } else {
                &[0, 0, 255]
            });
        }
    }
    rgb
}

fn encode(data: &[u8], width: u16, height: u16, color: ColorType) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::new(&mut out, 95)
        .encode(data, width, height, color)
        .unwrap();
    out
}

fn near(actual: [u8; 3], expected: [u8; 3], tol: u8) -> bool {
    actual
        .iter()
        .zip(expected)
        .all(|(a, e)| a.abs_diff(e) <= tol)
}

#[test]
fn decodes_size_and_colours() {
    let jpeg = encode(&red_blue(64, 48), 64, 48, ColorType::Rgb);
    let img = decode_jpeg(&jpeg).unwrap();
    assert_eq!(
        (img.width, img.height, img.data.len()),
        (64, 48, 64 * 48 * 3)
    );
    // Away from the red/blue edge (x = 32) colours survive q95 within a small error.
    for y in [0, 20, 47] {
        for x in [0, 10, 24] {
            assert!(
                near(img.pixel(x, y), [255, 0, 0], 12),
                "({x},{y}) = {:?}",
                img.pixel(x, y)
            );
        }
        for x in [40, 50, 63] {
            assert!(
                near(img.pixel(x, y), [0, 0, 255], 12),
                "({x},{y}) = {:?}",
                img.pixel(x, y)
            );
        }
    }
}

#[test]
fn odd_sizes_decode_to_their_size() {
    let jpeg = encode(&red_blue(17, 5), 17, 5, ColorType::Rgb);
    let img = decode_jpeg(&jpeg).unwrap();
    assert_eq!((img.width, img.height, img.data.len()), (17, 5, 17 * 5 * 3));
}

#[test]
fn grayscale_is_expanded_to_rgb() {
    let luma: Vec<u8> = (0..32 * 16)
        .map(|i| if i % 32 < 16 { 40 } else { 200 })
        .collect();
    let jpeg = encode(&luma, 32, 16, ColorType::Luma);
    let img = decode_jpeg(&jpeg).unwrap();
    assert_eq!(img.data.len(), 32 * 16 * 3);
    let [r, g, b] = img.pixel(4, 8);
    assert_eq!((r, g), (g, b), "grey must have equal channels");
    assert!(r.abs_diff(40) <= 8, "{r}");
    assert!(img.pixel(28, 8)[0].abs_diff(200) <= 8);
}

#[test]
fn corrupt_data_is_an_error() {
    for bad in [
        &b""[..],
        b"definitely not a jpeg",
        &[0xFF, 0xD8, 0xFF, 0x00, 0x13, 0x37],
    ] {
        assert!(
            matches!(decode_jpeg(bad), Err(EngineError::JpegDecode(_))),
            "{bad:?} decoded"
        );
    }
    // A real JPEG cut inside its headers.
    let jpeg = encode(&red_blue(64, 48), 64, 48, ColorType::Rgb);
    let err = decode_jpeg(&jpeg[..40]).unwrap_err();
    assert!(matches!(err, EngineError::JpegDecode(_)), "{err}");
    assert!(err.to_string().starts_with("cannot decode jpeg: "), "{err}");
}

#[test]
fn oversized_frames_are_rejected_from_the_header() {
    let jpeg = encode(&red_blue(64, 48), 64, 48, ColorType::Rgb);
    let limits = DecodeLimits {
        max_width: 63,
        max_height: 1000,
    };
    match decode_jpeg_with_limits(&jpeg, &limits) {
        Err(EngineError::ImageTooLarge {
            width: 64,
            height: 48,
            max_width: 63,
            max_height: 1000,
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
    let limits = DecodeLimits {
        max_width: 64,
        max_height: 47,
    };
    assert!(matches!(
        decode_jpeg_with_limits(&jpeg, &limits),
        Err(EngineError::ImageTooLarge { .. })
    ));
    let limits = DecodeLimits {
        max_width: 64,
        max_height: 48,
    };
    assert!(decode_jpeg_with_limits(&jpeg, &limits).is_ok());
}
