//! The ONNX loader: any bytes give a model or an error, never a panic; what decodes is counted
//! and lowered by the native engine's plan builder (`its_gpu::engine::Plan::build`, host code,
//! no GPU needed), which also returns a plan or an error.
#![no_main]

use its_gpu::engine::Plan;
use its_model::onnx::ModelProto;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = ModelProto::from_bytes(data) else {
        return;
    };
    let _ = model.parameter_count();
    let _ = model.op_counts();
    if let Ok(plan) = Plan::build(&model, [1, 3, 32, 32]) {
        assert!(!plan.tensors.is_empty());
    }
});
