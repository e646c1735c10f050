//! Bounded buffer pools: device memory keyed by shape bucket (power-of-two byte sizes) and
//! pinned host memory for staging. A buffer taken from a pool goes back to it when dropped;
//! in steady state (same batch profiles over and over) every take is a hit and nothing is
//! allocated. Stats (hits, misses, bytes held, high-water mark) feed WorkerStatus and metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::{CudaSlice, CudaStream, PinnedHostSlice};

use crate::{GpuContext, GpuError};

/// Smallest bucket: requests under this size share one bucket.
pub const MIN_BUCKET_BYTES: usize = 4096;

/// The bucket (allocation size) for a request of `bytes`.
pub fn bucket_for(bytes: usize) -> usize {
    bytes.max(MIN_BUCKET_BYTES).next_power_of_two()
}

/// Counters of one pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Takes served from a free buffer.
    pub hits: u64,
    /// Takes that allocated.
    pub misses: u64,
    /// Buffers freed instead of kept because the pool was at its bound.
    pub evictions: u64,
    /// Bytes allocated and held by the pool (in use + free).
    pub bytes_held: usize,
    /// Bytes of buffers handed out right now.
    pub bytes_in_use: usize,
    /// Largest `bytes_held` seen.
    pub high_water_bytes: usize,
}

impl PoolStats {
    /// hits / (hits + misses), 1.0 before the first take.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            1.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

struct Shelf<B> {
    free: HashMap<usize, Vec<B>>,
    stats: PoolStats,
    max_bytes: usize,
}

impl<B> Shelf<B> {
    fn new(max_bytes: usize) -> Self {
        Self {
            free: HashMap::new(),
            stats: PoolStats::default(),
            max_bytes,
        }
    }

    /// A free buffer of `bucket` bytes, or None (a miss: the caller allocates, then calls
    /// `allocated`).
    fn take(&mut self, bucket: usize) -> Option<B> {
        let b = self.free.get_mut(&bucket).and_then(Vec::pop);
        if b.is_some() {
            self.stats.hits += 1;
            self.stats.bytes_in_use += bucket;
        }
        b
    }

    /// Makes room for a new buffer of `bucket` bytes (dropping free buffers of other sizes
    /// if the bound needs it), then counts it.
    fn allocated(&mut self, bucket: usize) -> Vec<B> {
        let mut dropped = Vec::new();
        while self.stats.bytes_held + bucket > self.max_bytes {
            let Some((&size, _)) = self.free.iter().find(|(_, v)| !v.is_empty()) else {
                break;
            };
            if let Some(b) = self.free.get_mut(&size).and_then(Vec::pop) {
                self.stats.bytes_held -= size;
                self.stats.evictions += 1;
                dropped.push(b);
            }
        }
        self.stats.misses += 1;
        self.stats.bytes_held += bucket;
        self.stats.bytes_in_use += bucket;
        self.stats.high_water_bytes = self.stats.high_water_bytes.max(self.stats.bytes_held);
        dropped
    }

    /// A buffer handed back: kept if within the bound, otherwise returned to be freed.
    fn give(&mut self, bucket: usize, b: B) -> Option<B> {
        self.stats.bytes_in_use -= bucket;
        if self.stats.bytes_held > self.max_bytes {
            self.stats.bytes_held -= bucket;
            self.stats.evictions += 1;
            return Some(b);
        }
        self.free.entry(bucket).or_default().push(b);
        None
    }
}

/// A bounded pool of device buffers on one stream's device, keyed by power-of-two bucket.
/// Cheap to clone (shared). A buffer goes back when its handle drops, which can be before
/// the device has finished with it: share one pool only among users of one stream, whose
/// ordering makes the reuse safe (one pool per worker stream).
#[derive(Clone)]
pub struct DevicePool {
    stream: Arc<CudaStream>,
    shelf: Arc<Mutex<Shelf<CudaSlice<u8>>>>,
}

impl std::fmt::Debug for DevicePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevicePool")
            .field("stats", &self.stats())
            .finish()
    }
}

/// A device buffer borrowed from a [`DevicePool`]; goes back on drop. Holds at least the
/// bytes asked for (the whole bucket).
pub struct PooledDevice {
    buf: Option<CudaSlice<u8>>,
    bucket: usize,
    len: usize,
    shelf: Arc<Mutex<Shelf<CudaSlice<u8>>>>,
}

impl std::fmt::Debug for PooledDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledDevice")
            .field("len", &self.len)
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl PooledDevice {
    /// Bytes asked for.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether zero bytes were asked for.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying allocation (bucket-sized).
    pub fn slice(&self) -> &CudaSlice<u8> {
        // Invariant: `buf` is Some until drop.
        self.buf.as_ref().expect("pooled buffer present until drop")
    }

    /// The underlying allocation, mutable.
    pub fn slice_mut(&mut self) -> &mut CudaSlice<u8> {
        self.buf.as_mut().expect("pooled buffer present until drop")
    }
}

impl Drop for PooledDevice {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            let freed = self
                .shelf
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .give(self.bucket, b);
            drop(freed);
        }
    }
}

impl DevicePool {
    /// A pool allocating on `stream` (and its device), holding at most `max_bytes`.
    pub fn new(stream: Arc<CudaStream>, max_bytes: usize) -> Self {
        Self {
            stream,
            shelf: Arc::new(Mutex::new(Shelf::new(max_bytes))),
        }
    }

    /// A buffer of at least `bytes` (contents undefined: write before reading).
    pub fn take(&self, bytes: usize) -> Result<PooledDevice, GpuError> {
        let bucket = bucket_for(bytes);
        let mut shelf = self.shelf.lock().unwrap_or_else(PoisonError::into_inner);
        let buf = match shelf.take(bucket) {
            Some(b) => b,
            None => {
                let dropped = shelf.allocated(bucket);
                drop(shelf);
                drop(dropped);
                // SAFETY: pooled buffers are documented as uninitialised; every user writes
                // a region (kernel, memset or copy) before reading it.
                match unsafe { self.stream.alloc::<u8>(bucket) } {
                    Ok(b) => b,
                    Err(e) => {
                        let mut shelf = self.shelf.lock().unwrap_or_else(PoisonError::into_inner);
                        shelf.stats.misses -= 1;
                        shelf.stats.bytes_held -= bucket;
                        shelf.stats.bytes_in_use -= bucket;
                        return Err(e.into());
                    }
                }
            }
        };
        Ok(PooledDevice {
            buf: Some(buf),
            bucket,
            len: bytes,
            shelf: self.shelf.clone(),
        })
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        self.shelf
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stats
    }
}

/// A bounded pool of pinned (page-locked) host buffers for staging copies.
#[derive(Clone)]
pub struct PinnedPool {
    gpu: GpuContext,
    shelf: Arc<Mutex<Shelf<PinnedHostSlice<u8>>>>,
}

impl std::fmt::Debug for PinnedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedPool")
            .field("stats", &self.stats())
            .finish()
    }
}

/// A pinned host buffer borrowed from a [`PinnedPool`]; goes back on drop.
pub struct PooledPinned {
    buf: Option<PinnedHostSlice<u8>>,
    bucket: usize,
    len: usize,
    shelf: Arc<Mutex<Shelf<PinnedHostSlice<u8>>>>,
}

impl std::fmt::Debug for PooledPinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledPinned")
            .field("len", &self.len)
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl PooledPinned {
    /// Bytes asked for.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether zero bytes were asked for.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying pinned allocation (bucket-sized).
    pub fn slice(&self) -> &PinnedHostSlice<u8> {
        self.buf.as_ref().expect("pooled buffer present until drop")
    }

    /// The underlying pinned allocation, mutable.
    pub fn slice_mut(&mut self) -> &mut PinnedHostSlice<u8> {
        self.buf.as_mut().expect("pooled buffer present until drop")
    }
}

impl Drop for PooledPinned {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            let freed = self
                .shelf
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .give(self.bucket, b);
            drop(freed);
        }
    }
}

impl PinnedPool {
    /// A pool of pinned buffers on `gpu`, holding at most `max_bytes`.
    pub fn new(gpu: &GpuContext, max_bytes: usize) -> Self {
        Self {
            gpu: gpu.clone(),
            shelf: Arc::new(Mutex::new(Shelf::new(max_bytes))),
        }
    }

    /// A pinned buffer of at least `bytes` (contents undefined).
    pub fn take(&self, bytes: usize) -> Result<PooledPinned, GpuError> {
        let bucket = bucket_for(bytes);
        let mut shelf = self.shelf.lock().unwrap_or_else(PoisonError::into_inner);
        let buf = match shelf.take(bucket) {
            Some(b) => b,
            None => {
                let dropped = shelf.allocated(bucket);
                drop(shelf);
                drop(dropped);
                // SAFETY: documented as uninitialised; users write before they read.
                match unsafe { self.gpu.cuda().alloc_pinned::<u8>(bucket) } {
                    Ok(b) => b,
                    Err(e) => {
                        let mut shelf = self.shelf.lock().unwrap_or_else(PoisonError::into_inner);
                        shelf.stats.misses -= 1;
                        shelf.stats.bytes_held -= bucket;
                        shelf.stats.bytes_in_use -= bucket;
                        return Err(e.into());
                    }
                }
            }
        };
        Ok(PooledPinned {
            buf: Some(buf),
            bucket,
            len: bytes,
            shelf: self.shelf.clone(),
        })
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        self.shelf
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_with_a_floor() {
        assert_eq!(bucket_for(0), MIN_BUCKET_BYTES);
        assert_eq!(bucket_for(4097), 8192);
        assert_eq!(bucket_for(1 << 20), 1 << 20);
    }

    #[test]
    fn shelf_counts_hits_misses_and_respects_the_bound() {
        let mut s: Shelf<u32> = Shelf::new(3 * 4096);
        assert!(s.take(4096).is_none());
        assert!(s.allocated(4096).is_empty());
        assert!(s.give(4096, 1).is_none());
        assert_eq!(s.take(4096), Some(1));
        assert_eq!((s.stats.hits, s.stats.misses), (1, 1));
        assert!(s.give(4096, 1).is_none());
        // An 8 KiB buffer fits next to the free 4 KiB one (12 KiB bound).
        assert!(s.take(8192).is_none());
        assert!(s.allocated(8192).is_empty());
        assert_eq!(s.stats.bytes_held, 3 * 4096);
        // Another 8 KiB: the free 4 KiB buffer is evicted, still over: held goes to 20 KiB
        // while in use, and the extra buffer is freed when it comes back.
        assert!(s.take(8192).is_none());
        assert_eq!(s.allocated(8192), vec![1]);
        assert_eq!(s.stats.high_water_bytes, 4 * 4096);
        assert_eq!(s.give(8192, 2), Some(2));
        assert!(s.give(8192, 3).is_none());
        assert_eq!(s.stats.bytes_held, 2 * 4096);
        assert_eq!(s.stats.bytes_in_use, 0);
        assert_eq!(s.stats.evictions, 2);
    }
}
