//! [`NativeEngine`]: the CUDA engine behind its-engine's [`Engine`] seam, so a
//! [`its_engine::Detector`] (letterbox, decode, NMS) runs on it exactly as on ONNX Runtime.
//! One execution context per batch size seen, built on first use and kept.

use std::collections::HashMap;

use its_engine::{Engine, EngineError, InputSpec, RawOutput};
use its_model::onnx::ModelProto;

use super::{CudaEngine, EngineBuildError, EngineCache, EngineOptions, Plan};
use crate::GpuContext;

/// The native engine for one model on one GPU.
pub struct NativeEngine {
    gpu: GpuContext,
    model: ModelProto,
    input: InputSpec,
    options: EngineOptions,
    contexts: HashMap<usize, CudaEngine>,
    name: String,
    cache: Option<EngineCache>,
}

impl std::fmt::Debug for NativeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeEngine")
            .field("name", &self.name)
            .field("profiles", &self.contexts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

// SAFETY: the engine owns its CUDA stream, buffers and cuDNN handle and is used by one thread
// at a time (`&mut self` for every run); cuDNN handles and CUDA contexts may move between
// threads as long as calls on them do not overlap.
#[allow(unsafe_code)]
unsafe impl Send for NativeEngine {}

impl NativeEngine {
    /// An engine for `model` taking `input`; execution contexts are built per batch size on
    /// first use. `batches` are built now (the profiles the scheduler will send).
    pub fn new(
        gpu: GpuContext,
        model: ModelProto,
        input: InputSpec,
        options: EngineOptions,
        batches: &[usize],
        name: &str,
    ) -> Result<Self, EngineBuildError> {
        Self::new_cached(gpu, model, input, options, batches, name, None)
    }

    /// [`Self::new`] with the engine cache file (`cache`, e.g.
    /// [`EngineCache::for_model`] of the model file): every execution context takes its cuDNN
    /// algorithms from the cache when it matches, and writes it when it does not.
    pub fn new_cached(
        gpu: GpuContext,
        model: ModelProto,
        input: InputSpec,
        options: EngineOptions,
        batches: &[usize],
        name: &str,
        cache: Option<EngineCache>,
    ) -> Result<Self, EngineBuildError> {
        let mut e = Self {
            cache,
            name: format!("native[{:?}]:{name}", options.math).to_lowercase(),
            gpu,
            model,
            input,
            options,
            contexts: HashMap::new(),
        };
        // The profiles asked for now are built together (see CudaEngine::build_all); any
        // other batch size is built on first use.
        let mut plans = Vec::with_capacity(batches.len());
        let mut sizes = Vec::with_capacity(batches.len());
        for &b in batches {
            if !sizes.contains(&b) {
                plans.push(Plan::build(&e.model, e.shape(b))?);
                sizes.push(b);
            }
        }
        let built = CudaEngine::build_all(&e.gpu, plans, e.options, e.cache.as_ref())?;
        for (b, ctx) in sizes.into_iter().zip(built) {
            e.log_built(b, &ctx);
            e.contexts.insert(b, ctx);
        }
        Ok(e)
    }

    fn shape(&self, batch: usize) -> [usize; 4] {
        [
            batch,
            3,
            self.input.height as usize,
            self.input.width as usize,
        ]
    }

    fn log_built(&self, batch: usize, ctx: &CudaEngine) {
        let r = ctx.report();
        tracing::info!(
            batch,
            build_ms = r.build_ms,
            activation_bytes = r.activation_bytes,
            cache = r.cache.label(),
            engine = %self.name,
            "execution context built"
        );
    }

    fn context(&mut self, batch: usize) -> Result<&mut CudaEngine, EngineBuildError> {
        if !self.contexts.contains_key(&batch) {
            let plan = Plan::build(&self.model, self.shape(batch))?;
            let ctx = match &self.cache {
                Some(c) => CudaEngine::build_cached(&self.gpu, plan, self.options, c)?,
                None => CudaEngine::build(&self.gpu, plan, self.options)?,
            };
            self.log_built(batch, &ctx);
            self.contexts.insert(batch, ctx);
        }
        Ok(self.contexts.get_mut(&batch).expect("inserted above"))
    }
}

impl Engine for NativeEngine {
    fn input(&self) -> InputSpec {
        self.input
    }

    fn run(&mut self, input: &[f32], batch: usize) -> Result<RawOutput, EngineError> {
        let name = self.name.clone();
        let err = |e: EngineBuildError| EngineError::Backend {
            engine: name.clone(),
            message: e.to_string(),
        };
        let ctx = self.context(batch).map_err(&err)?;
        let out = ctx.plan().outputs[0].1;
        let shape = ctx.plan().shape(out).to_vec();
        let mut outs = ctx.run(input).map_err(&err)?;
        Ok(RawOutput {
            data: outs.swap_remove(0),
            shape,
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}
