//! Frame quality on the GPU over a sample grid (`kernels/quality.cu`): brightness, contrast
//! and sharpness (RMS luma gradient) per frame, combined on the host into a 0..1 score.
//! CPU oracle: [`reference`].

use cudarc::driver::{
    CudaFunction, CudaStream, CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg,
};

use crate::context::QUALITY_SRC;
use crate::{FrameRef, GpuContext, GpuError};

/// Most frames per launch (`QS_MAX_FRAMES`).
pub const MAX_FRAMES: usize = 64;
/// Sample grid size per axis (`QS_GRID`).
pub const GRID: u32 = 128;
const THREADS: u32 = 256;

/// Brightness in [`EXPOSURE_OK`] scores 1; it falls linearly to 0 over [`EXPOSURE_RAMP`]
/// beyond either end.
pub const EXPOSURE_OK: (f32, f32) = (0.25, 0.75);
/// Width of the exposure ramp.
pub const EXPOSURE_RAMP: f32 = 0.2;
/// Contrast (luma standard deviation) at which the contrast term saturates at 1.
pub const CONTRAST_FULL: f32 = 0.15;
/// Sharpness (RMS luma step between neighbouring pixels) at which the term saturates at 1.
pub const SHARPNESS_FULL: f32 = 0.05;
/// Score under which a frame is reported as poor quality.
pub const POOR_QUALITY: f32 = 0.35;

/// Quality measures of one frame, each on a 0..1 luma scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityReport {
    /// Mean luma.
    pub brightness: f32,
    /// Standard deviation of luma.
    pub contrast: f32,
    /// RMS of the horizontal and vertical luma steps.
    pub sharpness: f32,
}

/// Why a frame scored low.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualityIssue {
    /// Brightness under the exposure window.
    Dark,
    /// Brightness over the exposure window.
    Overexposed,
    /// Sharpness under half of [`SHARPNESS_FULL`].
    Blurred,
    /// Contrast under half of [`CONTRAST_FULL`].
    LowContrast,
}

impl QualityReport {
    /// The combined score: `exposure * sqrt(contrast_term * sharpness_term)`, where
    /// exposure is 1 inside [`EXPOSURE_OK`] and ramps to 0 over [`EXPOSURE_RAMP`], and the
    /// other two terms are `min(1, value / full)`.
    pub fn score(&self) -> f32 {
        let (lo, hi) = EXPOSURE_OK;
        let off = (lo - self.brightness).max(self.brightness - hi).max(0.0);
        let exposure = (1.0 - off / EXPOSURE_RAMP).clamp(0.0, 1.0);
        let c = (self.contrast / CONTRAST_FULL).clamp(0.0, 1.0);
        let s = (self.sharpness / SHARPNESS_FULL).clamp(0.0, 1.0);
        exposure * (c * s).sqrt()
    }

    /// The main issue of a frame whose score is under [`POOR_QUALITY`], else None.
    pub fn issue(&self) -> Option<QualityIssue> {
        if self.score() >= POOR_QUALITY {
            return None;
        }
        let (lo, hi) = EXPOSURE_OK;
        if self.brightness < lo - EXPOSURE_RAMP / 2.0 {
            Some(QualityIssue::Dark)
        } else if self.brightness > hi + EXPOSURE_RAMP / 2.0 {
            Some(QualityIssue::Overexposed)
        } else if self.sharpness < SHARPNESS_FULL / 2.0 {
            Some(QualityIssue::Blurred)
        } else {
            Some(QualityIssue::LowContrast)
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct QFrame {
    offset: u64,
    width: i32,
    height: i32,
    pitch: i32,
    pad: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct QBatch {
    f: [QFrame; MAX_FRAMES],
}

// SAFETY: plain-old-data, #[repr(C)], laid out as `QBatch` in quality.cu (24 bytes/frame).
unsafe impl DeviceRepr for QBatch {}
const _: () = assert!(std::mem::size_of::<QFrame>() == 24);

/// The compiled quality kernel of one device.
#[derive(Debug, Clone)]
pub struct QualityKernel {
    func: CudaFunction,
}

impl QualityKernel {
    /// Compiles (once per device, cached) and loads the kernel.
    pub fn load(gpu: &GpuContext) -> Result<Self, GpuError> {
        Ok(Self {
            func: gpu.function(QUALITY_SRC, "frame_quality")?,
        })
    }

    /// Enqueues the measures of `frames` (in `input`) into `out` (3 floats per frame:
    /// brightness, contrast, sharpness) on `stream`.
    pub fn launch(
        &self,
        stream: &CudaStream,
        input: &CudaView<'_, u8>,
        frames: &[FrameRef],
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), GpuError> {
        if frames.is_empty() || frames.len() > MAX_FRAMES {
            return Err(GpuError::InvalidInput(format!(
                "{} frames in one quality launch (1..={MAX_FRAMES})",
                frames.len()
            )));
        }
        if out.len() < 3 * frames.len() {
            return Err(GpuError::InvalidInput("quality output too small".into()));
        }
        let mut table = QBatch {
            f: [QFrame::default(); MAX_FRAMES],
        };
        for (i, f) in frames.iter().enumerate() {
            let end = f.offset
                + u64::from(f.height.saturating_sub(1)) * u64::from(f.pitch)
                + 3 * u64::from(f.width);
            if f.width == 0
                || f.height == 0
                || u64::from(f.pitch) < 3 * u64::from(f.width)
                || f.pitch > i32::MAX as u32
                || end > input.len() as u64
            {
                return Err(GpuError::InvalidInput(format!(
                    "frame {i}: {}x{} pitch {} at {} does not fit the {}-byte input",
                    f.width,
                    f.height,
                    f.pitch,
                    f.offset,
                    input.len()
                )));
            }
            table.f[i] = QFrame {
                offset: f.offset,
                width: f.width as i32,
                height: f.height as i32,
                pitch: f.pitch as i32,
                pad: 0,
            };
        }
        let mut b = stream.launch_builder(&self.func);
        b.arg(input).arg(&table).arg(out);
        let cfg = LaunchConfig {
            grid_dim: (frames.len() as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match `frame_quality(src, QBatch, out)`; every frame's sampled
        // bytes lie inside `input` (checked above), out holds 3 floats per frame.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}

/// Reads back `n` reports written by [`QualityKernel::launch`] (3 floats each).
pub fn reports_from(values: &[f32]) -> Vec<QualityReport> {
    values
        .chunks_exact(3)
        .map(|v| QualityReport {
            brightness: v[0],
            contrast: v[1],
            sharpness: v[2],
        })
        .collect()
}

/// CPU oracle in f64.
pub mod reference {
    use super::{GRID, QualityReport};
    use crate::HostFrame;

    /// The measures of one frame, exactly as the kernel defines them.
    pub fn measure(frame: &HostFrame<'_>) -> QualityReport {
        let (w, h) = (frame.width as usize, frame.height as usize);
        let nx = w.min(GRID as usize);
        let ny = h.min(GRID as usize);
        let luma = |x: usize, y: usize| {
            let p = &frame.data[y * frame.pitch + 3 * x..];
            (0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])) / 255.0
        };
        let (mut sl, mut sl2, mut sg) = (0.0f64, 0.0f64, 0.0f64);
        for j in 0..ny {
            let y = j * h / ny;
            for i in 0..nx {
                let x = i * w / nx;
                let l = luma(x, y);
                let gx = luma((x + 1).min(w - 1), y) - l;
                let gy = luma(x, (y + 1).min(h - 1)) - l;
                sl += l;
                sl2 += l * l;
                sg += gx * gx + gy * gy;
            }
        }
        let n = (nx * ny) as f64;
        let mean = sl / n;
        QualityReport {
            brightness: mean as f32,
            contrast: (sl2 / n - mean * mean).max(0.0).sqrt() as f32,
            sharpness: (sg / n).sqrt() as f32,
        }
    }
}
