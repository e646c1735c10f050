//! CPU reference pre-processing: JPEG decode and letterbox.
//!
//! **This is the oracle for the GPU path.** The fused CUDA letterbox kernel must reproduce
//! [`letterbox_into`] exactly as documented there (same size rounding, same padding split,
//! same sampling formula), up to floating-point rounding.

use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use crate::EngineError;

/// Pad value of the letterbox border, as a float: 114 / 255 (the YOLO grey).
pub const PAD_VALUE: f32 = 114.0 / 255.0;

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `R G B R G B ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// An image filled with one colour.
    pub fn filled(width: u32, height: u32, rgb: [u8; 3]) -> Self {
        let n = width as usize * height as usize;
        let mut data = Vec::with_capacity(n * 3);
        for _ in 0..n {
            data.extend_from_slice(&rgb);
        }
        Self {
            width,
            height,
            data,
        }
    }

    /// The pixel at column `x`, row `y`.
    ///
    /// # Panics
    /// If `(x, y)` is outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside image"
        );
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Checks non-zero size and `data.len() == width * height * 3`.
    pub fn check(&self) -> Result<(), EngineError> {
        if self.width == 0 || self.height == 0 {
            return Err(EngineError::EmptyImage {
                width: self.width,
                height: self.height,
            });
        }
        let expected = self.width as usize * self.height as usize * 3;
        if self.data.len() != expected {
            return Err(EngineError::ImageBufferSize {
                width: self.width,
                height: self.height,
                expected,
                found: self.data.len(),
            });
        }
        Ok(())
    }
}

/// Size limits applied when decoding, so a hostile or broken frame cannot ask for gigabytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width in pixels.
    pub max_width: u32,
    /// Largest accepted height in pixels.
    pub max_height: u32,
}

impl Default for DecodeLimits {
    /// 7680 x 4320 (8K UHD).
    fn default() -> Self {
        Self {
            max_width: 7680,
            max_height: 4320,
        }
    }
}

/// Decodes a JPEG to RGB with [`DecodeLimits::default`]. See [`decode_jpeg_with_limits`].
pub fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, EngineError> {
    decode_jpeg_with_limits(bytes, &DecodeLimits::default())
}

/// Decodes a JPEG (baseline or progressive, any colour space zune-jpeg reads) to 8-bit RGB.
///
/// Errors: [`EngineError::JpegDecode`] for corrupt or non-JPEG data,
/// [`EngineError::EmptyImage`] for a zero dimension, [`EngineError::ImageTooLarge`] when a
/// dimension exceeds `limits` (checked from the header, before decoding the pixels).
pub fn decode_jpeg_with_limits(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<RgbImage, EngineError> {
    // zune's own limits are set to the format's maximum (u16) so that our check, with our
    // error, is the one that fires.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = JpegDecoder::new_with_options(bytes, options);
    decoder
        .decode_headers()
        .map_err(|e| EngineError::JpegDecode(e.to_string()))?;
    let (width, height) = decoder
        .dimensions()
        .map(|(w, h)| {
            (
                u32::try_from(w).unwrap_or(u32::MAX),
                u32::try_from(h).unwrap_or(u32::MAX),
            )
        })
        .ok_or_else(|| EngineError::JpegDecode("no frame header".to_owned()))?;
    if width == 0 || height == 0 {
        return Err(EngineError::EmptyImage { width, height });
    }
    if width > limits.max_width || height > limits.max_height {
        return Err(EngineError::ImageTooLarge {
            width,
            height,
            max_width: limits.max_width,
            max_height: limits.max_height,
        });
    }
    let data = decoder
        .decode()
        .map_err(|e| EngineError::JpegDecode(e.to_string()))?;
    // zune-jpeg 0.4 honours the RGB request for colour images but returns grayscale JPEGs
    // as one channel: expand those here.
    let data = match decoder.get_output_colorspace() {
        Some(ColorSpace::RGB) => data,
        Some(ColorSpace::Luma) => data.iter().flat_map(|&v| [v, v, v]).collect(),
        other => {
            return Err(EngineError::JpegDecode(format!(
                "decoder produced {other:?} instead of rgb"
            )));
        }
    };
    let image = RgbImage {
        width,
        height,
        data,
    };
    image.check()?;
    Ok(image)
}

/// Where the resized image sits inside the model input, and how to map back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Resize factor, original -> model input: `min(target_w / w, target_h / h)`.
    pub scale: f32,
    /// Columns of padding on the left.
    pub pad_x: u32,
    /// Rows of padding on the top.
    pub pad_y: u32,
    /// Width of the resized image inside the input: `round(w * scale)`.
    pub new_width: u32,
    /// Height of the resized image inside the input: `round(h * scale)`.
    pub new_height: u32,
    /// Original frame width.
    pub src_width: u32,
    /// Original frame height.
    pub src_height: u32,
}

impl Letterbox {
    /// Computes the geometry of letterboxing a `src_w` x `src_h` image into
    /// `target_w` x `target_h`:
    ///
    /// ```text
    /// scale      = min(target_w as f32 / src_w as f32, target_h as f32 / src_h as f32)   (f32)
    /// new_width  = clamp(round(src_w as f32 * scale), 1, target_w)   round: half away from zero
    /// new_height = clamp(round(src_h as f32 * scale), 1, target_h)
    /// pad_x      = (target_w - new_width) / 2                        integer division (floor)
    /// pad_y      = (target_h - new_height) / 2
    /// ```
    ///
    /// The extra column / row of an odd padding goes to the right / bottom.
    ///
    /// # Panics
    /// If any size is zero.
    pub fn new(src_w: u32, src_h: u32, target_w: u32, target_h: u32) -> Self {
        assert!(
            src_w > 0 && src_h > 0 && target_w > 0 && target_h > 0,
            "letterbox sizes must be non-zero (src {src_w}x{src_h}, target {target_w}x{target_h})"
        );
        let scale = (target_w as f32 / src_w as f32).min(target_h as f32 / src_h as f32);
        let new_width = ((src_w as f32 * scale).round() as u32).clamp(1, target_w);
        let new_height = ((src_h as f32 * scale).round() as u32).clamp(1, target_h);
        Self {
            scale,
            pad_x: (target_w - new_width) / 2,
            pad_y: (target_h - new_height) / 2,
            new_width,
            new_height,
            src_width: src_w,
            src_height: src_h,
        }
    }

    /// Maps a point in model-input pixels (continuous coordinates, e.g. a box corner) to
    /// original-frame pixels, clamped to the frame:
    ///
    /// ```text
    /// x_orig = clamp((x - pad_x) / scale, 0, src_width)
    /// y_orig = clamp((y - pad_y) / scale, 0, src_height)
    /// ```
    pub fn to_original(&self, x: f32, y: f32) -> (f32, f32) {
        let ox = (x - self.pad_x as f32) / self.scale;
        let oy = (y - self.pad_y as f32) / self.scale;
        (
            ox.clamp(0.0, self.src_width as f32),
            oy.clamp(0.0, self.src_height as f32),
        )
    }
}

/// Letterboxes `img` into a `target_w` x `target_h` planar float tensor.
///
/// `dst` receives one image in CHW order (`dst[c * target_h * target_w + y * target_w + x]`,
/// channel 0 = R, 1 = G, 2 = B), values scaled to 0..1. Geometry is [`Letterbox::new`].
///
/// For each destination pixel `(x, y)`:
///
/// * outside `[pad_x, pad_x + new_width) x [pad_y, pad_y + new_height)`: all three
///   channels are [`PAD_VALUE`] (114 / 255);
/// * inside: bilinear sample of the source with the pixel-centre convention, computed in f32:
///
/// ```text
/// u  = x - pad_x,   v = y - pad_y                       (integers)
/// sx = clamp((u + 0.5) / scale - 0.5, 0, src_w - 1)
/// sy = clamp((v + 0.5) / scale - 0.5, 0, src_h - 1)
/// x0 = floor(sx),   x1 = min(x0 + 1, src_w - 1),   fx = sx - x0
/// y0 = floor(sy),   y1 = min(y0 + 1, src_h - 1),   fy = sy - y0
/// top    = p(x0, y0) * (1 - fx) + p(x1, y0) * fx
/// bottom = p(x0, y1) * (1 - fx) + p(x1, y1) * fx
/// value  = (top * (1 - fy) + bottom * fy) / 255
/// ```
///
/// where `p` is the source byte of that channel as f32. The same `scale` is used on both
/// axes (not `new_width / src_w`), so the mapping is exactly the inverse of
/// [`Letterbox::to_original`] at pixel centres.
///
/// Returns the geometry, needed to map detections back.
///
/// # Panics
/// If `dst.len() != 3 * target_w * target_h`, if a size is zero, or if `img.data` is too
/// short for its size (use [`RgbImage::check`] first on untrusted images).
pub fn letterbox_into(img: &RgbImage, target_w: u32, target_h: u32, dst: &mut [f32]) -> Letterbox {
    let lb = Letterbox::new(img.width, img.height, target_w, target_h);
    let (tw, th) = (target_w as usize, target_h as usize);
    let plane = tw * th;
    assert_eq!(
        dst.len(),
        3 * plane,
        "letterbox destination must hold 3 * {target_w} * {target_h} floats"
    );
    assert!(
        img.data.len() >= img.width as usize * img.height as usize * 3,
        "image buffer too short for {}x{}",
        img.width,
        img.height
    );

    dst.fill(PAD_VALUE);

    let (sw, sh) = (img.width as usize, img.height as usize);
    let max_x = (sw - 1) as f32;
    let max_y = (sh - 1) as f32;
    let inv = 1.0 / 255.0;
    let (pad_x, pad_y) = (lb.pad_x as usize, lb.pad_y as usize);

    // Horizontal taps depend only on the column: compute them once.
    let taps: Vec<(usize, usize, f32)> = (0..lb.new_width as usize)
        .map(|u| {
            let sx = ((u as f32 + 0.5) / lb.scale - 0.5).clamp(0.0, max_x);
            let x0 = sx.floor();
            let fx = sx - x0;
            let x0 = x0 as usize;
            (x0, (x0 + 1).min(sw - 1), fx)
        })
        .collect();

    let (r_plane, rest) = dst.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    for v in 0..lb.new_height as usize {
        let sy = ((v as f32 + 0.5) / lb.scale - 0.5).clamp(0.0, max_y);
        let y0f = sy.floor();
        let fy = sy - y0f;
        let y0 = y0f as usize;
        let y1 = (y0 + 1).min(sh - 1);
        let row0 = &img.data[y0 * sw * 3..(y0 + 1) * sw * 3];
        let row1 = &img.data[y1 * sw * 3..(y1 + 1) * sw * 3];
        let out_row = (pad_y + v) * tw + pad_x;
        for (u, &(x0, x1, fx)) in taps.iter().enumerate() {
            let o = out_row + u;
            for (c, plane) in [&mut *r_plane, &mut *g_plane, &mut *b_plane]
                .into_iter()
                .enumerate()
            {
                let p00 = f32::from(row0[x0 * 3 + c]);
                let p10 = f32::from(row0[x1 * 3 + c]);
                let p01 = f32::from(row1[x0 * 3 + c]);
                let p11 = f32::from(row1[x1 * 3 + c]);
                let top = p00 * (1.0 - fx) + p10 * fx;
                let bottom = p01 * (1.0 - fx) + p11 * fx;
                plane[o] = (top * (1.0 - fy) + bottom * fy) * inv;
            }
        }
    }
    lb
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    /// 4x2 image, pixel (x, y) = [10x + 1, 100y + 2, 7].
    fn four_by_two() -> RgbImage {
        let mut data = Vec::new();
        for y in 0..2u8 {
            for x in 0..4u8 {
                data.extend_from_slice(&[10 * x + 1, 100 * y + 2, 7]);
            }
        }
        RgbImage {
            width: 4,
            height: 2,
            data,
        }
    }

    #[test]
    fn geometry_of_4x2_into_8x8() {
        // scale = min(8/4, 8/2) = 2; new = 8x4; pad_x = 0, pad_y = (8 - 4) / 2 = 2.
        let lb = Letterbox::new(4, 2, 8, 8);
        assert_eq!(lb.scale, 2.0);
        assert_eq!((lb.new_width, lb.new_height), (8, 4));
        assert_eq!((lb.pad_x, lb.pad_y), (0, 2));
    }

    #[test]
    fn geometry_rounds_new_size_and_floors_padding() {
        // 2x1 into 5x5: scale = min(2.5, 5) = 2.5; new_h = round(2.5) = 3 (half away from
        // zero); pad_y = (5 - 3) / 2 = 1; new_w = 5, pad_x = 0.
        let lb = Letterbox::new(2, 1, 5, 5);
        assert_eq!(lb.scale, 2.5);
        assert_eq!((lb.new_width, lb.new_height), (5, 3));
        assert_eq!((lb.pad_x, lb.pad_y), (0, 1));
        // 4x2 into 8x9: scale 2, new 8x4, pad_y = floor(5 / 2) = 2 (3 rows at the bottom).
        let lb = Letterbox::new(4, 2, 8, 9);
        assert_eq!((lb.new_height, lb.pad_y), (4, 2));
        // 1280x720 into 640x640: scale 0.5, new 640x360, pad_y 140.
        let lb = Letterbox::new(1280, 720, 640, 640);
        assert_eq!(
            (lb.scale, lb.new_width, lb.new_height, lb.pad_x, lb.pad_y),
            (0.5, 640, 360, 0, 140)
        );
        // Tall frame: 100x400 into 64x64: scale 0.16, new 16x64, pad_x 24.
        let lb = Letterbox::new(100, 400, 64, 64);
        assert_eq!(
            (lb.new_width, lb.new_height, lb.pad_x, lb.pad_y),
            (16, 64, 24, 0)
        );
    }

    #[test]
    fn letterbox_4x2_into_8x8_pad_rows_and_exact_pixels() {
        let img = four_by_two();
        let mut dst = vec![-1.0; 3 * 64];
        let lb = letterbox_into(&img, 8, 8, &mut dst);
        assert_eq!((lb.pad_x, lb.pad_y), (0, 2));
        let at = |c: usize, x: usize, y: usize| dst[c * 64 + y * 8 + x];

        // Rows 0, 1, 6, 7 are padding in every channel.
        for c in 0..3 {
            for y in [0, 1, 6, 7] {
                for x in 0..8 {
                    assert_eq!(at(c, x, y), 114.0 / 255.0, "pad at c{c} ({x},{y})");
                }
            }
        }
        // dst (0, 2): u = 0 -> sx = 0.5/2 - 0.5 = -0.25 -> 0; v = 0 -> sy -> 0: p(0, 0).
        assert!(close(at(0, 0, 2), 1.0 / 255.0));
        assert!(close(at(1, 0, 2), 2.0 / 255.0));
        assert!(close(at(2, 0, 2), 7.0 / 255.0));
        // dst (1, 2): sx = 1.5/2 - 0.5 = 0.25: R = 0.75 * 1 + 0.25 * 11 = 3.5.
        assert!(close(at(0, 1, 2), 3.5 / 255.0));
        // dst (2, 3): sx = 2.5/2 - 0.5 = 0.75, sy = 1.5/2 - 0.5 = 0.25.
        // R = 0.25 * 1 + 0.75 * 11 = 8.5 (R does not vary with y).
        // G = 0.75 * 2 + 0.25 * 102 = 27.
        assert!(close(at(0, 2, 3), 8.5 / 255.0));
        assert!(close(at(1, 2, 3), 27.0 / 255.0));
        // dst (7, 5): sx = 7.5/2 - 0.5 = 3.25 -> clamp 3; sy = 3.5/2 - 0.5 = 1.25 -> 1:
        // p(3, 1) = [31, 102, 7].
        assert!(close(at(0, 7, 5), 31.0 / 255.0));
        assert!(close(at(1, 7, 5), 102.0 / 255.0));
        // dst (4, 4): sx = 4.5/2 - 0.5 = 1.75, sy = 2.5/2 - 0.5 = 0.75.
        // R = 0.25 * 11 + 0.75 * 21 = 18.5; G = 0.25 * 2 + 0.75 * 102 = 77.
        assert!(close(at(0, 4, 4), 18.5 / 255.0));
        assert!(close(at(1, 4, 4), 77.0 / 255.0));
        assert!(close(at(2, 4, 4), 7.0 / 255.0));
    }

    #[test]
    fn letterbox_pads_columns_for_tall_images() {
        // 1x2 image into 4x4: scale = min(4, 2) = 2, new 2x4, pad_x = 1.
        let img = RgbImage {
            width: 1,
            height: 2,
            data: vec![0, 0, 0, 255, 255, 255],
        };
        let mut dst = vec![0.0; 3 * 16];
        let lb = letterbox_into(&img, 4, 4, &mut dst);
        assert_eq!(
            (lb.pad_x, lb.pad_y, lb.new_width, lb.new_height),
            (1, 0, 2, 4)
        );
        for y in 0..4 {
            assert_eq!(dst[y * 4], PAD_VALUE);
            assert_eq!(dst[y * 4 + 3], PAD_VALUE);
        }
        // Row v: sy = (v + 0.5)/2 - 0.5 -> 0 (clamped), 0.25, 0.75, 1 (clamped).
        let expected = [0.0, 0.25, 0.75, 1.0];
        for (v, e) in expected.iter().enumerate() {
            assert!(close(dst[v * 4 + 1], *e), "row {v}: {}", dst[v * 4 + 1]);
            assert!(close(dst[v * 4 + 2], *e), "row {v}: {}", dst[v * 4 + 2]);
        }
    }

    #[test]
    fn identity_letterbox_copies_pixels() {
        // Same size: scale 1, sx = x exactly, so values are the bytes / 255.
        let img = four_by_two();
        let mut dst = vec![0.0; 3 * 8];
        let lb = letterbox_into(&img, 4, 2, &mut dst);
        assert_eq!((lb.scale, lb.pad_x, lb.pad_y), (1.0, 0, 0));
        for y in 0..2u32 {
            for x in 0..4u32 {
                let p = img.pixel(x, y);
                for c in 0..3 {
                    let v = dst[c * 8 + y as usize * 4 + x as usize];
                    assert!(close(v, f32::from(p[c]) / 255.0));
                }
            }
        }
    }

    #[test]
    fn to_original_inverts_the_letterbox() {
        // 1280x720 into 640x640: scale 0.5, pad_y 140.
        let lb = Letterbox::new(1280, 720, 640, 640);
        assert_eq!(lb.to_original(0.0, 140.0), (0.0, 0.0));
        assert_eq!(lb.to_original(320.0, 320.0), (640.0, 360.0));
        assert_eq!(lb.to_original(640.0, 500.0), (1280.0, 720.0));
        // Points in the padding clamp to the frame edge.
        assert_eq!(lb.to_original(10.0, 0.0), (20.0, 0.0));
        assert_eq!(lb.to_original(700.0, 639.0), (1280.0, 720.0));
        // 4x2 into 8x8 (scale 2, pad_y 2): input (5, 4) -> (2.5, 1).
        let lb = Letterbox::new(4, 2, 8, 8);
        assert_eq!(lb.to_original(5.0, 4.0), (2.5, 1.0));
    }

    #[test]
    #[should_panic(expected = "3 * 8 * 8")]
    fn letterbox_rejects_wrong_destination_size() {
        let mut dst = vec![0.0; 10];
        letterbox_into(&four_by_two(), 8, 8, &mut dst);
    }

    #[test]
    fn check_rejects_bad_buffers() {
        let mut img = four_by_two();
        assert!(img.check().is_ok());
        img.data.pop();
        assert!(matches!(
            img.check(),
            Err(EngineError::ImageBufferSize {
                expected: 24,
                found: 23,
                ..
            })
        ));
        let empty = RgbImage {
            width: 0,
            height: 3,
            data: vec![],
        };
        assert!(matches!(empty.check(), Err(EngineError::EmptyImage { .. })));
    }
}
