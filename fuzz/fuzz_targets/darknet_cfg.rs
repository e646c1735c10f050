//! The Darknet importer: a `.cfg` text and a `.weights` file (the input is the cfg, a NUL byte,
//! then the weights bytes). Parsing, shape checks, reading the weights and building the ONNX
//! graph give a network or an error, never a panic; what builds has the output the cfg says.
#![no_main]

use std::path::Path;

use its_model::darknet::{Network, read_weights, to_onnx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (cfg, weights) = match data.iter().position(|b| *b == 0) {
        Some(n) => (&data[..n], &data[n + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(cfg);
    let Ok(net) = Network::parse(&text, "fuzz.cfg") else {
        return;
    };
    let _ = net.classes();
    let (Ok(shapes), Ok(counts)) = (net.shapes(), net.weight_counts()) else {
        return;
    };
    assert_eq!(shapes.len(), net.layers.len());
    let _ = net.output_rows();
    let Ok((_, convs)) = read_weights(weights, Path::new("fuzz.weights"), &net) else {
        return;
    };
    // The file held exactly the floats the cfg asks for.
    let floats: usize = counts.iter().map(|(_, n)| n).sum();
    assert!(
        matches!(weights.len() - floats * 4, 16 | 20),
        "header + floats"
    );
    assert_eq!(convs.len(), counts.len());
    if let Ok(model) = to_onnx(&net, &convs, "fuzz") {
        // What the importer writes reads back.
        let back = its_model::onnx::ModelProto::from_bytes(&model.to_bytes()).expect("round trip");
        assert_eq!(back.parameter_count(), model.parameter_count());
    }
});
