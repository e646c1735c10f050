//! Synthetic traffic scenes: vehicle-like boxes moving along the lanes of a road seen from
//! above, deterministic by seed. Frames are rendered once and replayed, so hundreds of
//! cameras cost little CPU.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use rand::{RngExt, SeedableRng, rngs::StdRng};

use crate::CameraError;

/// What to render.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SceneSpec {
    /// Frame width, pixels.
    pub width: u32,
    /// Frame height, pixels.
    pub height: u32,
    /// Seed: the same spec renders the same frames.
    pub seed: u64,
    /// Frames in the loop.
    pub frames: u32,
    /// JPEG quality 1-100.
    pub jpeg_quality: u8,
}

struct Vehicle {
    lane: usize,
    x0: f32,
    speed: f32,
    len: f32,
    wid: f32,
    colour: [u8; 3],
}

/// A rendered loop of JPEG frames.
#[derive(Debug, Clone)]
pub struct SyntheticScene {
    /// Frame width, pixels.
    pub width: u32,
    /// Frame height, pixels.
    pub height: u32,
    /// Encoded frames, replayed in order.
    pub jpegs: Vec<Vec<u8>>,
}

const GRASS: [u8; 3] = [70, 118, 62];
const ASPHALT: [u8; 3] = [88, 88, 92];
const MARKING: [u8; 3] = [235, 235, 225];

impl SyntheticScene {
    /// Renders and encodes the loop.
    pub fn render(spec: &SceneSpec) -> Result<Self, CameraError> {
        if spec.width < 16 || spec.height < 16 || spec.frames == 0 {
            return Err(CameraError::Scene(format!(
                "{}x{} with {} frames (need at least 16x16 and 1 frame)",
                spec.width, spec.height, spec.frames
            )));
        }
        let (w, h) = (spec.width as usize, spec.height as usize);
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let lanes = 4usize;
        let road_top = h as f32 * 0.3;
        let road_h = h as f32 * 0.4;
        let lane_h = road_h / lanes as f32;
        let vehicles: Vec<Vehicle> = (0..10)
            .map(|_| {
                let lane = rng.random_range(0..lanes);
                let dir = if lane < lanes / 2 { -1.0 } else { 1.0 };
                Vehicle {
                    lane,
                    x0: rng.random_range(0.0..w as f32),
                    speed: dir * rng.random_range(0.004..0.012) * w as f32,
                    len: rng.random_range(0.05..0.12) * w as f32,
                    wid: lane_h * rng.random_range(0.5..0.75),
                    colour: [rng.random(), rng.random(), rng.random()],
                }
            })
            .collect();
        let mut background = vec![0u8; w * h * 3];
        for y in 0..h {
            let yf = y as f32;
            let on_road = yf >= road_top && yf < road_top + road_h;
            for x in 0..w {
                let mut c = if on_road { ASPHALT } else { GRASS };
                if on_road {
                    let in_lane = (yf - road_top) % lane_h;
                    let dash = (x / (w / 24).max(1)) % 2 == 0;
                    if in_lane < (h as f32 * 0.006).max(1.0) && yf > road_top + 1.0 && dash {
                        c = MARKING;
                    }
                }
                background[(y * w + x) * 3..][..3].copy_from_slice(&c);
            }
        }
        let mut jpegs = Vec::with_capacity(spec.frames as usize);
        let mut frame = background.clone();
        for t in 0..spec.frames {
            frame.copy_from_slice(&background);
            for v in &vehicles {
                let span = w as f32 + v.len;
                let x = (v.x0 + v.speed * t as f32).rem_euclid(span) - v.len;
                let y = road_top + lane_h * (v.lane as f32 + 0.5) - v.wid / 2.0;
                fill(&mut frame, w, h, x, y, v.len, v.wid, v.colour);
                // A windscreen, so objects have some inner structure.
                let ws = v.len * 0.2;
                let wx = if v.speed > 0.0 {
                    x + v.len * 0.65
                } else {
                    x + v.len * 0.15
                };
                fill(
                    &mut frame,
                    w,
                    h,
                    wx,
                    y + v.wid * 0.15,
                    ws,
                    v.wid * 0.7,
                    [30, 40, 55],
                );
            }
            let mut out = Vec::new();
            jpeg_encoder::Encoder::new(&mut out, spec.jpeg_quality.clamp(1, 100))
                .encode(
                    &frame,
                    spec.width as u16,
                    spec.height as u16,
                    jpeg_encoder::ColorType::Rgb,
                )
                .map_err(|e| CameraError::Encode {
                    width: spec.width,
                    height: spec.height,
                    detail: e.to_string(),
                })?;
            jpegs.push(out);
        }
        Ok(SyntheticScene {
            width: spec.width,
            height: spec.height,
            jpegs,
        })
    }
}

/// Rendered scenes shared between cameras with the same [`SceneSpec`]: a scene is rendered
/// once (off the async threads) and dropped when no camera uses it any more.
#[derive(Debug, Clone, Default)]
pub struct SceneCache {
    scenes: Arc<tokio::sync::Mutex<HashMap<SceneSpec, Weak<SyntheticScene>>>>,
}

impl SceneCache {
    /// The scene for `spec`, rendering it if no camera holds it now.
    pub async fn get(&self, spec: SceneSpec) -> Result<Arc<SyntheticScene>, CameraError> {
        let mut map = self.scenes.lock().await;
        if let Some(s) = map.get(&spec).and_then(Weak::upgrade) {
            return Ok(s);
        }
        map.retain(|_, w| w.strong_count() > 0);
        let key = spec.clone();
        let scene = tokio::task::spawn_blocking(move || SyntheticScene::render(&spec))
            .await
            .map_err(|e| CameraError::Scene(format!("renderer failed: {e}")))??;
        let scene = Arc::new(scene);
        map.insert(key, Arc::downgrade(&scene));
        Ok(scene)
    }
}

#[allow(clippy::too_many_arguments)]
fn fill(buf: &mut [u8], w: usize, h: usize, x: f32, y: f32, bw: f32, bh: f32, c: [u8; 3]) {
    let x0 = x.max(0.0) as usize;
    let y0 = y.max(0.0) as usize;
    let x1 = ((x + bw).max(0.0) as usize).min(w);
    let y1 = ((y + bh).max(0.0) as usize).min(h);
    for yy in y0..y1 {
        for xx in x0..x1 {
            buf[(yy * w + xx) * 3..][..3].copy_from_slice(&c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> SceneSpec {
        SceneSpec {
            width: 320,
            height: 180,
            seed,
            frames: 3,
            jpeg_quality: 80,
        }
    }

    #[test]
    fn same_seed_same_frames_other_seed_other_frames() {
        let a = SyntheticScene::render(&spec(5)).unwrap();
        let b = SyntheticScene::render(&spec(5)).unwrap();
        let c = SyntheticScene::render(&spec(6)).unwrap();
        assert_eq!(a.jpegs, b.jpegs);
        assert_ne!(a.jpegs, c.jpegs);
        assert_ne!(a.jpegs[0], a.jpegs[1], "vehicles move between frames");
    }

    #[test]
    fn frames_are_valid_jpegs_of_the_requested_size() {
        let s = SyntheticScene::render(&spec(1)).unwrap();
        for j in &s.jpegs {
            let mut d = zune_jpeg::JpegDecoder::new(j);
            d.decode_headers().unwrap();
            let info = d.info().unwrap();
            assert_eq!((info.width, info.height), (320, 180));
        }
    }

    #[test]
    fn tiny_or_empty_scenes_are_refused() {
        assert!(
            SyntheticScene::render(&SceneSpec {
                width: 8,
                ..spec(1)
            })
            .is_err()
        );
        assert!(
            SyntheticScene::render(&SceneSpec {
                frames: 0,
                ..spec(1)
            })
            .is_err()
        );
    }
}
