//! Device context: driver/NVRTC presence checks, run-time kernel compilation, module cache.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, Weak};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream};
use cudarc::nvrtc::{CompileError, CompileOptions, compile_ptx_with_opts};

use crate::GpuError;

/// A CUDA kernel source file from `kernels/`, embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// File name, used as the cache key and in error messages.
    pub name: &'static str,
    /// CUDA C source.
    pub source: &'static str,
}

/// `kernels/letterbox.cu`.
pub const LETTERBOX_SRC: KernelSource = KernelSource {
    name: "letterbox.cu",
    source: include_str!("../../../kernels/letterbox.cu"),
};

/// `kernels/postprocess.cu`.
pub const POSTPROCESS_SRC: KernelSource = KernelSource {
    name: "postprocess.cu",
    source: include_str!("../../../kernels/postprocess.cu"),
};

/// `kernels/quality.cu`.
pub const QUALITY_SRC: KernelSource = KernelSource {
    name: "quality.cu",
    source: include_str!("../../../kernels/quality.cu"),
};

/// `kernels/engine.cu` (the native inference engine's kernels).
pub const ENGINE_SRC: KernelSource = KernelSource {
    name: "engine.cu",
    source: include_str!("../../../kernels/engine.cu"),
};

/// `kernels/engine.cu` with FP16 activation buffers (`ENGINE_F16`).
pub const ENGINE_F16_SRC: KernelSource = KernelSource {
    name: "engine_f16.cu",
    source: concat!(
        "#define ENGINE_F16 1\n",
        include_str!("../../../kernels/engine.cu")
    ),
};

/// Every kernel file of the crate (the compile test walks this list).
pub const ALL_KERNELS: &[KernelSource] = &[
    LETTERBOX_SRC,
    POSTPROCESS_SRC,
    QUALITY_SRC,
    ENGINE_SRC,
    ENGINE_F16_SRC,
];

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic while loading the library".to_string()
    }
}

/// Checks that the CUDA driver library can be loaded, without panicking when it cannot.
pub fn driver_available() -> Result<(), GpuError> {
    // cudarc's dynamic loading panics on a missing library; probe first, and still catch a
    // panic (e.g. a driver too old to have a symbol cudarc needs).
    // SAFETY: only tries to dlopen the library by name.
    let present = catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() })
        .map_err(|p| GpuError::NoDriver(panic_message(p.as_ref())))?;
    if present {
        Ok(())
    } else {
        Err(GpuError::NoDriver(
            "libcuda.so could not be loaded (no NVIDIA driver on this machine)".into(),
        ))
    }
}

/// CUDA devices on this machine; an error when there is no usable driver.
pub fn device_count() -> Result<usize, GpuError> {
    driver_available()?;
    let n = catch_unwind(CudaContext::device_count)
        .map_err(|p| GpuError::NoDriver(panic_message(p.as_ref())))??;
    Ok(n.max(0) as usize)
}

/// Checks that the NVRTC library can be loaded, without panicking when it cannot.
pub fn nvrtc_available() -> Result<(), GpuError> {
    // SAFETY: only tries to dlopen the library by name.
    let present = catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() })
        .map_err(|p| GpuError::NoNvrtc(panic_message(p.as_ref())))?;
    if present {
        Ok(())
    } else {
        Err(GpuError::NoNvrtc(
            "libnvrtc.so.13 could not be loaded (set LD_LIBRARY_PATH to CUDA's lib64)".into(),
        ))
    }
}

/// Compiles a kernel file to PTX for a virtual architecture (`compute_XY`); the driver
/// finishes the job when the module is loaded. Needs NVRTC but no driver and no GPU.
pub fn compile_kernel(
    src: KernelSource,
    compute_capability: (i32, i32),
) -> Result<String, GpuError> {
    nvrtc_available()?;
    let (major, minor) = compute_capability;
    let opts = CompileOptions {
        name: Some(src.name.to_string()),
        options: vec![
            format!("--gpu-architecture=compute_{major}{minor}"),
            "--std=c++17".to_string(),
        ],
        ..Default::default()
    };
    let compiled = catch_unwind(AssertUnwindSafe(|| compile_ptx_with_opts(src.source, opts)))
        .map_err(|p| GpuError::NoNvrtc(panic_message(p.as_ref())))?;
    match compiled {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(CompileError::CompileError { log, .. }) => Err(GpuError::Compile {
            kernel: src.name,
            log: log.to_string_lossy().into_owned(),
        }),
        Err(e) => Err(GpuError::Compile {
            kernel: src.name,
            log: e.to_string(),
        }),
    }
}

struct Inner {
    ctx: Arc<CudaContext>,
    name: String,
    compute_capability: (i32, i32),
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Read-only device buffers by the sha256 of their bytes (engine weights), held weakly:
    /// a buffer lives while some execution context uses it.
    shared: Mutex<HashMap<[u8; 32], Weak<CudaSlice<u8>>>>,
}

/// What [`GpuContext::shared_buffer`] did for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedBuffer {
    /// The bytes were uploaded (first holder).
    Uploaded,
    /// A buffer with the same bytes already lived on this GPU and is shared.
    Reused,
}

/// One CUDA device: its context and the kernel modules loaded on it (compiled once, cached).
/// Cheap to clone.
#[derive(Clone)]
pub struct GpuContext {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("ordinal", &self.inner.ctx.ordinal())
            .field("name", &self.inner.name)
            .field("compute_capability", &self.inner.compute_capability)
            .finish()
    }
}

impl GpuContext {
    /// Opens device `ordinal`. Fails with [`GpuError::NoDriver`] where no CUDA driver is
    /// installed and [`GpuError::NoDevice`] where the driver sees no such device; never panics.
    pub fn new(ordinal: usize) -> Result<Self, GpuError> {
        driver_available()?;
        let created = catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|p| GpuError::NoDriver(panic_message(p.as_ref())))?;
        let ctx = created.map_err(|e| GpuError::NoDevice {
            ordinal,
            reason: e.to_string(),
        })?;
        // This crate orders its work with explicit streams and synchronisation; cudarc's
        // per-buffer event tracking would add event records to every launch.
        // SAFETY: no buffer of this context exists yet, so none relies on tracking.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name()?;
        let compute_capability = ctx.compute_capability()?;
        tracing::info!(ordinal, device = %name, ?compute_capability, "cuda context created");
        Ok(Self {
            inner: Arc::new(Inner {
                ctx,
                name,
                compute_capability,
                modules: Mutex::new(HashMap::new()),
                shared: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The cudarc context.
    pub fn cuda(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn device_name(&self) -> &str {
        &self.inner.name
    }

    /// (major, minor) compute capability.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.inner.compute_capability
    }

    /// A new non-default stream on this device.
    pub fn new_stream(&self) -> Result<Arc<CudaStream>, GpuError> {
        Ok(self.inner.ctx.new_stream()?)
    }

    /// The module compiled from `src`, compiled and loaded on first use, then cached.
    pub fn module(&self, src: KernelSource) -> Result<Arc<CudaModule>, GpuError> {
        let mut modules = self
            .inner
            .modules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = modules.get(src.name) {
            return Ok(m.clone());
        }
        let ptx = compile_kernel(src, self.inner.compute_capability)?;
        let module = self
            .inner
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))?;
        tracing::debug!(kernel = src.name, "kernel module loaded");
        modules.insert(src.name, module.clone());
        Ok(module)
    }

    /// A read-only device buffer holding `bytes`: the one already on this GPU when another
    /// holder asked for the same bytes (by sha256) and still holds it, else a new upload on
    /// `stream`, complete when this returns. So the weights of a model are on the GPU once,
    /// however many batch profiles and streams build execution contexts of it. The caller
    /// must not write to the buffer.
    pub fn shared_buffer(
        &self,
        stream: &Arc<CudaStream>,
        bytes: &[u8],
    ) -> Result<(Arc<CudaSlice<u8>>, SharedBuffer), GpuError> {
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(bytes).into();
        let mut shared = self
            .inner
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(b) = shared.get(&key).and_then(Weak::upgrade) {
            return Ok((b, SharedBuffer::Reused));
        }
        shared.retain(|_, w| w.strong_count() > 0);
        let b = Arc::new(stream.clone_htod(bytes)?);
        // Other streams read it without an event: the upload is finished first.
        stream.synchronize()?;
        shared.insert(key, Arc::downgrade(&b));
        Ok((b, SharedBuffer::Uploaded))
    }

    /// Function `name` of the kernel file `src`.
    pub fn function(&self, src: KernelSource, name: &str) -> Result<CudaFunction, GpuError> {
        Ok(self.module(src)?.load_function(name)?)
    }
}
