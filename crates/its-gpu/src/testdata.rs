//! Generated test and benchmark inputs (no downloaded images): a synthetic road scene and
//! its JPEG encoding.

use crate::GpuError;

fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An RGB u8 HWC `width` x `height` road scene: sky gradient, grey road with lane marks,
/// coloured boxes as vehicles, and sensor-like noise (so a q85 720p JPEG lands near the
/// ~100 KB of a real traffic frame).
pub fn synthetic_scene(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let mut img = vec![0u8; w * h * 3];
    let mut st = seed;
    let horizon = h * 2 / 5;
    for y in 0..h {
        for x in 0..w {
            let p = &mut img[(y * w + x) * 3..(y * w + x) * 3 + 3];
            if y < horizon {
                let t = (y * 255 / horizon.max(1)) as u8;
                p.copy_from_slice(&[90 + t / 3, 140 + t / 4, 200 + t / 6]);
            } else {
                let g = 80 + ((x * 7 + y * 3) % 23) as u8;
                p.copy_from_slice(&[g, g, g + 4]);
                let lane = (x * 4 / w.max(1)) % 4;
                if lane != 0 && (x * 4) % w.max(1) < w / 120 + 1 && (y / 20) % 2 == 0 {
                    p.copy_from_slice(&[235, 235, 220]);
                }
            }
        }
    }
    let vehicles = 6 + (mix(&mut st) % 10) as usize;
    for _ in 0..vehicles {
        let vw = (w / 16).max(1) + (mix(&mut st) as usize % (w / 8).max(1));
        let vh = vw * 2 / 3 + 1;
        let x0 = mix(&mut st) as usize % w;
        let y0 = horizon + mix(&mut st) as usize % (h - horizon).max(1);
        let c = mix(&mut st);
        let col = [
            (c & 0xff) as u8,
            ((c >> 8) & 0xff) as u8,
            ((c >> 16) & 0xff) as u8,
        ];
        for y in y0..(y0 + vh).min(h) {
            for x in x0..(x0 + vw).min(w) {
                let i = (y * w + x) * 3;
                let edge = y == y0 || x == x0 || y + 1 == (y0 + vh).min(h);
                let shade = if edge { [20, 20, 20] } else { col };
                img[i..i + 3].copy_from_slice(&shade);
            }
        }
    }
    for chunk in img.chunks_mut(8) {
        let r = mix(&mut st);
        for (k, v) in chunk.iter_mut().enumerate() {
            let n = ((r >> (8 * k)) & 0x7) as i16 - 3;
            *v = (i16::from(*v) + n).clamp(0, 255) as u8;
        }
    }
    img
}

/// Encodes RGB u8 HWC as a baseline JPEG (4:2:0 below quality 90).
pub fn encode_jpeg(rgb: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>, GpuError> {
    let (w, h) = (
        u16::try_from(width).map_err(|_| GpuError::InvalidInput("width over 65535".into()))?,
        u16::try_from(height).map_err(|_| GpuError::InvalidInput("height over 65535".into()))?,
    );
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| GpuError::InvalidInput(format!("jpeg encode: {e}")))?;
    Ok(out)
}

/// As [`encode_jpeg`], progressive coding (which nvJPEG's hardware backend does not take).
pub fn encode_jpeg_progressive(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, GpuError> {
    let (w, h) = (
        u16::try_from(width).map_err(|_| GpuError::InvalidInput("width over 65535".into()))?,
        u16::try_from(height).map_err(|_| GpuError::InvalidInput("height over 65535".into()))?,
    );
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, quality);
    enc.set_progressive(true);
    enc.encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| GpuError::InvalidInput(format!("jpeg encode: {e}")))?;
    Ok(out)
}

/// CUDA device 0 for a GPU test or bench, or `None` after printing that it was skipped (no
/// usable GPU here); with `ITS_REQUIRE_GPU=1` a missing GPU panics instead.
pub fn gpu_or_skip() -> Option<crate::GpuContext> {
    match crate::GpuContext::new(0) {
        Ok(gpu) => Some(gpu),
        Err(e) if crate::gpu_required() => panic!("ITS_REQUIRE_GPU=1 but no usable GPU: {e}"),
        Err(e) => {
            eprintln!("skipped: no CUDA device (set ITS_REQUIRE_GPU=1 to fail instead) ({e})");
            None
        }
    }
}
