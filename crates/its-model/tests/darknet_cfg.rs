//! Darknet cfg / weights parsing: errors name the file, line or layer; geometry follows
//! Darknet; a small imported network runs in ONNX Runtime with any batch size.

use std::path::Path;

use its_engine::{Engine, ModelManifest, OrtEngine, OrtOptions};
use its_model::ModelError;
use its_model::darknet::{Layer, Network, read_weights};
use its_model::onnx::ModelProto;

/// 3 -> conv 4 (stride 2) -> maxpool 2/1 -> conv 1x1 to 2 anchors * (5 + 2 classes) -> yolo.
const SMALL: &str = "
[net]
# training keys are accepted and ignored
batch=64
width=16
height = 8
channels=3
momentum=0.9

[convolutional]
batch_normalize=1
filters=4
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[convolutional]
size=1
stride=1
pad=1
filters=14
activation=linear

[yolo]
mask = 0,1
anchors = 10,14,  23,27,  37,58
classes=2
num=3
jitter=.3
ignore_thresh = .7
random=1
";

fn cfg_err(text: &str) -> (usize, String) {
    match Network::parse(text, "t.cfg") {
        Err(ModelError::Cfg {
            file,
            line,
            message,
        }) => {
            assert_eq!(file, "t.cfg");
            (line, message)
        }
        other => panic!("expected a cfg error, got {other:?}"),
    }
}

#[test]
fn parses_layers_and_darknet_geometry() {
    let net = Network::parse(SMALL, "t.cfg").unwrap();
    assert_eq!((net.width, net.height), (16, 8));
    assert_eq!(net.layers.len(), 4);
    assert_eq!(
        net.layers[1],
        Layer::MaxPool {
            size: 2,
            stride: 1,
            padding: 1
        }
    );
    // conv stride 2 halves 8x16 to 4x8; maxpool size 2 stride 1 keeps 4x8.
    assert_eq!(
        net.shapes().unwrap(),
        [(4, 4, 8), (4, 4, 8), (14, 4, 8), (14, 4, 8)]
    );
    assert_eq!(net.output_rows().unwrap(), 2 * 4 * 8);
    match &net.layers[3] {
        Layer::Yolo {
            anchors, classes, ..
        } => {
            assert_eq!(anchors, &[(10.0, 14.0), (23.0, 27.0)]);
            assert_eq!(*classes, 2);
        }
        other => panic!("{other:?}"),
    }
    // conv0: 4 biases + 3 * 4 BN + 4 * 3 * 3 * 3 weights; conv2: 14 + 14 * 4.
    assert_eq!(
        net.weight_counts().unwrap(),
        [(0, 4 + 12 + 108), (2, 14 + 56)]
    );
}

#[test]
fn stride_one_maxpool_pads_right_and_bottom_only() {
    let dir = tempfile::tempdir().unwrap();
    write_small(dir.path(), 0);
    its_model::darknet::import(
        &dir.path().join("t.cfg"),
        &dir.path().join("t.weights"),
        &dir.path().join("t.names"),
        &dir.path().join("out"),
    )
    .unwrap();
    let model = ModelProto::read(&dir.path().join("out/model.onnx")).unwrap();
    let pool = model
        .graph()
        .node
        .iter()
        .find(|n| n.op_type == "MaxPool")
        .unwrap();
    let pads = pool.attribute.iter().find(|a| a.name == "pads").unwrap();
    assert_eq!(pads.ints, [0, 0, 1, 1], "[top, left, bottom, right]");
}

#[test]
fn unknown_sections_and_keys_are_errors_with_line_numbers() {
    let (line, msg) = cfg_err(&SMALL.replace("[maxpool]", "[region]"));
    assert_eq!(line, 18);
    assert!(msg.contains("unsupported section [region]"), "{msg}");

    let (line, msg) = cfg_err(&SMALL.replace("activation=leaky", "activation=leaky\nflipped=1"));
    assert_eq!(line, 17);
    assert!(
        msg.contains("unknown key `flipped` in [convolutional]"),
        "{msg}"
    );

    let (_, msg) = cfg_err(&SMALL.replace("activation=leaky", "activation=gelu"));
    assert!(msg.contains("unsupported activation `gelu`"), "{msg}");

    let (line, msg) = cfg_err(&SMALL.replace("filters=4", "filters=four"));
    assert_eq!(line, 12);
    assert!(
        msg.contains("`filters=four` is not a valid number"),
        "{msg}"
    );

    let (_, msg) = cfg_err(&SMALL.replace("random=1", "random=1\nnew_coords=1"));
    assert!(msg.contains("new_coords=1 is not supported"), "{msg}");
}

#[test]
fn malformed_structure_is_an_error() {
    let (line, msg) = cfg_err("width=3\n[net]\n");
    assert_eq!(line, 1);
    assert!(msg.contains("before the first [section]"), "{msg}");

    let (line, msg) = cfg_err(&SMALL.replace("size=3", "size=3\nsize=5"));
    assert_eq!(line, 14);
    assert!(msg.contains("`size` is set twice"), "{msg}");

    let (_, msg) = cfg_err("[convolutional]\nfilters=1\n");
    assert!(msg.contains("first section must be [net]"), "{msg}");

    let (line, msg) = cfg_err("[net]\nwidth=8\nheight=8\nthis line has no equals\n");
    assert_eq!(line, 4);
    assert!(msg.contains("expected `key=value`"), "{msg}");

    let (_, msg) = cfg_err(&SMALL.replace("channels=3", "channels=1"));
    assert!(msg.contains("only 3-channel"), "{msg}");

    let (line, msg) = cfg_err(&SMALL.replace("filters=4", "filters=99999999999999"));
    assert_eq!(line, 12);
    assert!(msg.contains("is larger than 16384"), "{msg}");
}

#[test]
fn bad_references_and_shapes_are_errors() {
    let routed = SMALL.replace("[maxpool]", "[route]\nlayers=5\n[maxpool]");
    let (_, msg) = cfg_err(&routed);
    assert!(msg.contains("not an earlier layer"), "{msg}");

    let (_, msg) = cfg_err(&SMALL.replace("mask = 0,1", "mask = 0,3"));
    assert!(msg.contains("mask index 3 is not below num=3"), "{msg}");

    // 14 channels feed a head that now needs 2 * (5 + 3) = 16.
    match Network::parse(&SMALL.replace("classes=2", "classes=3"), "t.cfg") {
        Err(ModelError::Layer {
            layer: 3,
            kind,
            message,
        }) => {
            assert_eq!(kind, "yolo");
            assert!(message.contains("needs 16"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    // Only a [route] may follow a [yolo] layer.
    let after_head = format!("{SMALL}\n[maxpool]\nsize=2\nstride=2\n");
    match Network::parse(&after_head, "t.cfg") {
        Err(ModelError::Layer {
            layer: 4, message, ..
        }) => {
            assert!(message.contains("follows a [yolo] layer"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    let no_head = &SMALL[..SMALL.find("[yolo]").unwrap()];
    assert!(matches!(
        Network::parse(no_head, "t.cfg"),
        Err(ModelError::Cfg { file, message, .. })
            if file == "t.cfg" && message.contains("no [yolo] layer")
    ));
}

/// Writes t.cfg, t.names and a t.weights with deterministic values (BN variances positive)
/// plus `extra` trailing floats.
fn write_small(dir: &Path, extra: usize) {
    let net = Network::parse(SMALL, "t.cfg").unwrap();
    let floats: usize = net.weight_counts().unwrap().iter().map(|(_, n)| n).sum();
    let mut bytes = Vec::new();
    for v in [0i32, 2, 0] {
        bytes.extend(v.to_le_bytes());
    }
    bytes.extend(1000u64.to_le_bytes());
    for i in 0..floats + extra {
        // Values in -0.5..0.5; conv0's BN variances (floats 12..16) in 0.5..1.
        let v = ((i * 37 % 101) as f32 / 101.0) - 0.5;
        let v = if (12..16).contains(&i) {
            v.abs() + 0.5
        } else {
            v
        };
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(dir.join("t.cfg"), SMALL).unwrap();
    std::fs::write(dir.join("t.weights"), bytes).unwrap();
    std::fs::write(dir.join("t.names"), "car\nbus\n").unwrap();
}

#[test]
fn weights_must_match_the_cfg_exactly() {
    let net = Network::parse(SMALL, "t.cfg").unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_small(dir.path(), 0);
    let path = dir.path().join("t.weights");
    let bytes = std::fs::read(&path).unwrap();
    let (header, convs) = read_weights(&bytes, &path, &net).unwrap();
    assert_eq!((header.major, header.minor, header.seen), (0, 2, 1000));
    assert_eq!(convs.len(), 2);
    assert_eq!(convs[1].weight.len(), 14 * 4);

    // One float short: the last convolution is truncated.
    let err = read_weights(&bytes[..bytes.len() - 4], &path, &net).unwrap_err();
    assert!(
        matches!(&err, ModelError::Weights { message, .. } if message.contains("truncated: layer 2")),
        "{err}"
    );
    // Left-over floats: the weights belong to another cfg.
    let mut longer = bytes.clone();
    longer.extend(1.0f32.to_le_bytes());
    let err = read_weights(&longer, &path, &net).unwrap_err();
    assert!(err.to_string().contains("size mismatch"), "{err}");
    assert!(err.to_string().contains("4 bytes left over"), "{err}");
    // Format 0.1 has a 4-byte `seen`: the same floats behind a 16-byte header.
    let mut old = Vec::new();
    for v in [0i32, 1, 0, 7] {
        old.extend(v.to_le_bytes());
    }
    old.extend(&bytes[20..]);
    let (header, convs_old) = read_weights(&old, &path, &net).unwrap();
    assert_eq!(header.seen, 7);
    assert_eq!(convs_old, convs);
    // Too short for any header; text instead of weights.
    assert!(read_weights(&bytes[..10], &path, &net).is_err());
    let err = read_weights(SMALL.as_bytes(), &path, &net).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn names_must_match_the_class_count() {
    let dir = tempfile::tempdir().unwrap();
    write_small(dir.path(), 0);
    std::fs::write(dir.path().join("t.names"), "car\n").unwrap();
    let err = its_model::darknet::import(
        &dir.path().join("t.cfg"),
        &dir.path().join("t.weights"),
        &dir.path().join("t.names"),
        &dir.path().join("out"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("1 class names") && err.to_string().contains("classes=2"),
        "{err}"
    );
}

#[test]
fn imported_small_network_runs_with_dynamic_batch() {
    let dir = tempfile::tempdir().unwrap();
    write_small(dir.path(), 0);
    let out = dir.path().join("out");
    let report = its_model::darknet::import(
        &dir.path().join("t.cfg"),
        &dir.path().join("t.weights"),
        &dir.path().join("t.names"),
        &out,
    )
    .unwrap();
    assert_eq!(report.output, (64, 7));
    let manifest = ModelManifest::load(&out).unwrap();
    assert_eq!(manifest.classes, ["car", "bus"]);
    assert_eq!((manifest.input.width, manifest.input.height), (16, 8));
    let mut engine = OrtEngine::load(
        &manifest.model_path(&out),
        &manifest,
        &OrtOptions::default(),
    )
    .unwrap();
    for batch in [1, 3] {
        let input: Vec<f32> = (0..batch * 3 * 8 * 16)
            .map(|i| (i % 255) as f32 / 255.0)
            .collect();
        let raw = engine.run(&input, batch).unwrap();
        assert_eq!(raw.shape, [batch, 64, 7]);
        // Row 0: anchor (10, 14) at cell (0, 0) of a stride-2 grid (16 / 8 across, 8 / 4 down):
        // centre inside the cell, size a positive multiple of the anchor, probabilities in 0..1.
        let r = &raw.data[..7];
        assert!(
            (0.0..2.0).contains(&r[0]) && (0.0..2.0).contains(&r[1]),
            "{r:?}"
        );
        assert!(r[2] > 0.0 && r[3] > 0.0, "{r:?}");
        assert!(r[4..].iter().all(|p| (0.0..=1.0).contains(p)), "{r:?}");
        assert!(raw.data.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn yolov4_tiny_constructs_route_groups_and_scale_x_y() {
    // YOLOv4-tiny's CSP split: route groups=2 group_id=1 keeps the second half of the channels;
    // its heads use scale_x_y.
    let cfg = SMALL
        .replace(
            "[maxpool]",
            "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n\n[route]\nlayers=-1,-2\n\n[maxpool]",
        )
        .replace("random=1", "random=1\nscale_x_y = 1.05");
    let net = Network::parse(&cfg, "t.cfg").unwrap();
    assert_eq!(
        net.layers[1],
        Layer::Route {
            layers: vec![0],
            groups: 2,
            group_id: 1
        }
    );
    let shapes = net.shapes().unwrap();
    // conv 4 channels -> group 1 of 2 keeps 2 -> concat of that and the conv: 2 + 4.
    assert_eq!(&shapes[..3], [(4, 4, 8), (2, 4, 8), (6, 4, 8)]);
    let convs: Vec<_> = net.weight_counts().unwrap();
    let floats: usize = convs.iter().map(|(_, n)| n).sum();
    let mut bytes = Vec::new();
    for v in [0i32, 2, 0] {
        bytes.extend(v.to_le_bytes());
    }
    bytes.extend(0u64.to_le_bytes());
    for i in 0..floats {
        let v = if (12..16).contains(&i) { 1.0f32 } else { 0.01 };
        bytes.extend(v.to_le_bytes());
    }
    let (_, weights) = read_weights(&bytes, Path::new("t.weights"), &net).unwrap();
    let model = its_model::darknet::to_onnx(&net, &weights, "v4").unwrap();
    let ops = model.op_counts();
    assert_eq!(ops.get("Slice"), Some(&1));
    // The head: scale_x_y adds a Mul and an Add to the usual grid Add.
    assert_eq!(ops.get("Add"), Some(&2));
    let slice = model
        .graph()
        .node
        .iter()
        .find(|n| n.op_type == "Slice")
        .unwrap();
    let starts = model
        .graph()
        .initializer
        .iter()
        .find(|t| t.name == slice.input[1])
        .unwrap();
    assert_eq!(starts.raw_data, 2i64.to_le_bytes());
}

#[test]
fn small_yolov4_style_net_agrees_with_the_numpy_reference() {
    // Route groups, scale_x_y, a stride-1 maxpool, BN folding: run by tests/darknet_ref.py
    // on its own and compared with the imported graph in ONNX Runtime.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup.sh",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    write_small(dir.path(), 0);
    let cfg = SMALL
        .replace(
            "[maxpool]",
            "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n\n[route]\nlayers=-1,-2\n\n[maxpool]",
        )
        .replace("random=1", "random=1\nscale_x_y = 1.05");
    std::fs::write(dir.path().join("t.cfg"), &cfg).unwrap();
    // Weights for this cfg: same scheme as `write_small`.
    let net = Network::parse(&cfg, "t.cfg").unwrap();
    let floats: usize = net.weight_counts().unwrap().iter().map(|(_, n)| n).sum();
    let mut bytes = Vec::new();
    for v in [0i32, 2, 0] {
        bytes.extend(v.to_le_bytes());
    }
    bytes.extend(0u64.to_le_bytes());
    for i in 0..floats {
        let v = ((i * 37 % 101) as f32 / 101.0) - 0.5;
        let v = if (12..16).contains(&i) {
            v.abs() + 0.5
        } else {
            v * 2.0
        };
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(dir.path().join("t.weights"), bytes).unwrap();
    its_model::darknet::import(
        &dir.path().join("t.cfg"),
        &dir.path().join("t.weights"),
        &dir.path().join("t.names"),
        &dir.path().join("out"),
    )
    .unwrap();
    let out = std::process::Command::new(&python)
        .arg(root.join("tests/darknet_ref.py"))
        .arg(dir.path().join("t.cfg"))
        .arg(dir.path().join("t.weights"))
        .arg(dir.path().join("out/model.onnx"))
        .args(["--batch", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "darknet_ref.py: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"shape\": [3, 64, 7]"), "{stdout}");
}
