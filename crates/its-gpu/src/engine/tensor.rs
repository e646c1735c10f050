//! Host tensors for constant folding and the CPU reference executor, and the index arithmetic
//! (strides, broadcasting) that the CUDA kernels repeat.

use crate::engine::EngineBuildError;

/// Element data of a host tensor: the graphs we run hold floats, and int64 shape arithmetic
/// that folds away at build time.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// float32 values.
    F32(Vec<f32>),
    /// int64 values (also used for int32 and bool, which only appear in shape arithmetic).
    I64(Vec<i64>),
}

/// A dense row-major host tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Data,
}

impl HostTensor {
    /// A float tensor.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self {
            shape,
            data: Data::F32(data),
        }
    }

    /// An int64 tensor.
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self {
            shape,
            data: Data::I64(data),
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as int64 (floats truncated), for shape-like inputs.
    pub fn as_i64(&self) -> Vec<i64> {
        match &self.data {
            Data::I64(v) => v.clone(),
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }

    /// The values as float32.
    pub fn as_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Gathers elements by source index into a tensor of `shape`.
    pub fn gather_flat(&self, shape: Vec<usize>, idx: &[usize]) -> Self {
        let data = match &self.data {
            Data::F32(v) => Data::F32(idx.iter().map(|&i| v[i]).collect()),
            Data::I64(v) => Data::I64(idx.iter().map(|&i| v[i]).collect()),
        };
        Self { shape, data }
    }
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The numpy-style broadcast of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, EngineBuildError> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(EngineBuildError::Shape(format!(
                "shapes {a:?} and {b:?} do not broadcast"
            )));
        };
    }
    Ok(out)
}

/// Strides to read a tensor of `shape` broadcast to `out` (0 on broadcast dimensions),
/// with as many entries as `out` has dimensions.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let s = strides(shape);
    let pad = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < pad || shape[i - pad] == 1 {
                0
            } else {
                s[i - pad]
            }
        })
        .collect()
}

/// For every element of `out` (row-major), the index into a tensor read with `in_strides`.
pub fn broadcast_index(out: &[usize], in_strides: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let os = strides(out);
    (0..n)
        .map(|i| {
            let mut rem = i;
            let mut src = 0;
            for d in 0..out.len() {
                let c = rem / os[d];
                rem %= os[d];
                src += c * in_strides[d];
            }
            src
        })
        .collect()
}

/// Source index of every element of a transpose by `perm` of a tensor of `shape`.
pub fn transpose_index(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let in_s = strides(shape);
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let st: Vec<usize> = perm.iter().map(|&p| in_s[p]).collect();
    let idx = broadcast_index(&out, &st);
    (out, idx)
}

/// Normalises a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize, EngineBuildError> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        return Err(EngineBuildError::Shape(format!(
            "axis {axis} out of range for rank {rank}"
        )));
    }
    Ok(a as usize)
}

/// The agreement metric of `its engine check` and the engine tests: the largest
/// `|ours - reference|` over the largest `|reference|` (YOLO outputs mix pixel boxes and
/// probabilities, so one scale for the whole tensor).
pub fn relative_error(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len(), "tensors of different sizes");
    let scale = reference.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    ours.iter()
        .zip(reference)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

/// `n` deterministic image-like values in 0..1 (xorshift from `seed`).
pub fn sample_input(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}
