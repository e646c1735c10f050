//! JPEG payloads for the simulated cameras: pre-rendered synthetic road scenes per resolution
//! (the renderer of `its-camera`), or the JPEG files of a directory (frames extracted from a
//! video, e.g. `ffmpeg -i clip.mp4 -q:v 3 dir/%05d.jpg`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use its_camera::{SceneSpec, SyntheticScene};

use crate::LoadError;
use crate::mix::Resolution;

/// One encoded frame.
#[derive(Debug, Clone)]
pub struct Jpeg {
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// The JPEG bytes.
    pub data: Arc<Vec<u8>>,
}

/// Loops of frames; a camera replays one loop.
#[derive(Debug, Clone)]
pub struct PayloadSet {
    /// Loops per resolution (synthetic), or one loop under every key (directory).
    loops: BTreeMap<Resolution, Vec<Arc<Vec<Jpeg>>>>,
    /// The directory's loop, when frames come from files.
    dir: Option<Arc<Vec<Jpeg>>>,
}

impl PayloadSet {
    /// Renders `scenes` different scenes of `frames` frames for each resolution.
    pub fn synthetic(
        resolutions: &[Resolution],
        scenes: u32,
        frames: u32,
        jpeg_quality: u8,
        seed: u64,
    ) -> Result<Self, LoadError> {
        let mut loops = BTreeMap::new();
        for &res in resolutions {
            let mut per_res = Vec::new();
            for s in 0..scenes.max(1) {
                let spec = SceneSpec {
                    width: res.width,
                    height: res.height,
                    seed: seed.wrapping_add(s as u64 * 7919),
                    frames: frames.max(1),
                    jpeg_quality,
                };
                let scene = SyntheticScene::render(&spec)
                    .map_err(|e| LoadError::Payload(format!("{}: {e}", res.label())))?;
                let jpegs = scene
                    .jpegs
                    .into_iter()
                    .map(|data| Jpeg {
                        width: res.width,
                        height: res.height,
                        data: Arc::new(data),
                    })
                    .collect();
                per_res.push(Arc::new(jpegs));
            }
            loops.insert(res, per_res);
        }
        Ok(PayloadSet { loops, dir: None })
    }

    /// Reads every `*.jpg` / `*.jpeg` in `dir` (sorted by name) as one loop shared by all
    /// cameras; sizes come from the JPEG headers.
    pub fn from_dir(dir: &Path) -> Result<Self, LoadError> {
        let err = |e: String| LoadError::Payload(format!("{}: {e}", dir.display()));
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| err(e.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")
                })
            })
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(err("no .jpg or .jpeg files".into()));
        }
        let mut frames = Vec::with_capacity(paths.len());
        for p in paths {
            let data = std::fs::read(&p).map_err(|e| err(format!("{}: {e}", p.display())))?;
            let (width, height) =
                jpeg_size(&data).map_err(|e| err(format!("{}: {e}", p.display())))?;
            frames.push(Jpeg {
                width,
                height,
                data: Arc::new(data),
            });
        }
        Ok(PayloadSet {
            loops: BTreeMap::new(),
            dir: Some(Arc::new(frames)),
        })
    }

    /// The loop camera `camera` of resolution `res` replays.
    pub fn loop_for(&self, res: Resolution, camera: usize) -> Arc<Vec<Jpeg>> {
        if let Some(d) = &self.dir {
            return d.clone();
        }
        let loops = &self.loops[&res];
        loops[camera % loops.len()].clone()
    }

    /// Whether frames come from a directory rather than the renderer.
    pub fn from_files(&self) -> bool {
        self.dir.is_some()
    }

    /// Mean and largest JPEG size per resolution label, bytes.
    pub fn sizes(&self) -> BTreeMap<String, (u64, u64)> {
        let mut out = BTreeMap::new();
        let all: Vec<&Jpeg> = match &self.dir {
            Some(d) => d.iter().collect(),
            None => self
                .loops
                .values()
                .flatten()
                .flat_map(|l| l.iter())
                .collect(),
        };
        let mut acc: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for j in all {
            let label = Resolution {
                width: j.width,
                height: j.height,
            }
            .label();
            let e = acc.entry(label).or_default();
            e.0 += j.data.len() as u64;
            e.1 += 1;
            e.2 = e.2.max(j.data.len() as u64);
        }
        for (k, (sum, n, max)) in acc {
            out.insert(k, (sum / n.max(1), max));
        }
        out
    }

    /// The largest JPEG, bytes.
    pub fn largest(&self) -> usize {
        self.sizes()
            .values()
            .map(|(_, m)| *m as usize)
            .max()
            .unwrap_or(0)
    }
}

/// Reads the size of a JPEG from its headers.
fn jpeg_size(data: &[u8]) -> Result<(u32, u32), String> {
    let mut d = zune_jpeg::JpegDecoder::new(data);
    d.decode_headers()
        .map_err(|e| format!("not a JPEG: {e:?}"))?;
    let info = d.info().ok_or("no JPEG header")?;
    Ok((info.width as u32, info.height as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_loops_have_the_requested_sizes_and_directories_are_read() {
        let res = [
            Resolution::parse("64x48").unwrap(),
            Resolution::parse("32x32").unwrap(),
        ];
        let set = PayloadSet::synthetic(&res, 2, 3, 80, 1).unwrap();
        let l = set.loop_for(res[0], 1);
        assert_eq!(l.len(), 3);
        assert!(l.iter().all(|j| (j.width, j.height) == (64, 48)));
        assert_eq!(set.sizes().len(), 2);

        let dir = tempfile::tempdir().unwrap();
        for (i, j) in l.iter().enumerate() {
            std::fs::write(dir.path().join(format!("{i:03}.jpg")), j.data.as_slice()).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "skip me").unwrap();
        let files = PayloadSet::from_dir(dir.path()).unwrap();
        assert!(files.from_files());
        let l2 = files.loop_for(res[1], 0);
        assert_eq!(l2.len(), 3);
        assert_eq!((l2[0].width, l2[0].height), (64, 48));

        std::fs::write(dir.path().join("bad.jpg"), "not a jpeg").unwrap();
        assert!(PayloadSet::from_dir(dir.path()).is_err());
    }
}
