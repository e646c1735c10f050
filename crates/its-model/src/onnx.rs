//! The subset of the ONNX protobuf schema (`onnx/onnx.proto`, IR version 8) that this crate
//! writes and reads, as hand-written `prost` messages (no protoc, no generated code).
//!
//! Field numbers are those of `onnx.proto`. Fields this crate does not model (sparse
//! initializers, training info, subgraph attributes, ...) are skipped when a file is read and
//! therefore lost if it is written back.
//!
//! `onnx.proto` is proto2: repeated scalars are unpacked unless the schema says
//! `[packed = true]` (only `TensorProto.float_data`, `int32_data`, `int64_data`, `double_data`,
//! `uint64_data` do). Readers accept both encodings; the writer follows the schema so the
//! bytes match what the reference `onnx` package writes.

use prost::Message as _;

use crate::ModelError;

/// IR version written by [`model`]: 8, the one ONNX opset 17 shipped with.
pub const IR_VERSION: i64 = 8;

/// `ModelProto`: the top-level ONNX file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// ONNX IR version of the file.
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// Operator sets the graph uses (the default domain `""` with its version).
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// Tool that wrote the file.
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// Version of that tool.
    #[prost(string, tag = "3")]
    pub producer_version: String,
    /// Reverse-DNS model namespace (optional).
    #[prost(string, tag = "4")]
    pub domain: String,
    /// Model version (free integer).
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    /// Human-readable description.
    #[prost(string, tag = "6")]
    pub doc_string: String,
    /// The graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
}

/// `OperatorSetIdProto`: one operator set import.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    /// Domain; `""` is the default ONNX domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// Opset version.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `GraphProto`: nodes in topological order, weights, inputs and outputs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    /// Nodes, topologically sorted.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// Graph name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Constant tensors (weights).
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Description.
    #[prost(string, tag = "10")]
    pub doc_string: String,
    /// Graph inputs.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// Graph outputs.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    /// Types of intermediate values (optional).
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

/// `NodeProto`: one operator call.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    /// Input value names; `""` marks an omitted optional input.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Output value names.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// Node name (unique in the graph).
    #[prost(string, tag = "3")]
    pub name: String,
    /// Operator, e.g. `Conv`.
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// Attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// Description.
    #[prost(string, tag = "6")]
    pub doc_string: String,
    /// Operator domain; `""` is the default ONNX domain.
    #[prost(string, tag = "7")]
    pub domain: String,
}

/// `AttributeProto.AttributeType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum AttributeType {
    /// Unset.
    Undefined = 0,
    /// `f`.
    Float = 1,
    /// `i`.
    Int = 2,
    /// `s`.
    String = 3,
    /// `t`.
    Tensor = 4,
    /// A subgraph (not modelled here).
    Graph = 5,
    /// `floats`.
    Floats = 6,
    /// `ints`.
    Ints = 7,
    /// `strings`.
    Strings = 8,
}

/// `AttributeProto`: a named attribute of a node.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    /// Attribute name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Which of the value fields is set.
    #[prost(enumeration = "AttributeType", tag = "20")]
    pub r#type: i32,
    /// Float value.
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    /// Integer value.
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    /// String value (bytes).
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    /// Tensor value.
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// Float list.
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    /// Integer list.
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    /// String list.
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
}

/// `TensorProto.DataType` values used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DataType {
    /// Unset.
    Undefined = 0,
    /// float32.
    Float = 1,
    /// uint8.
    Uint8 = 2,
    /// int8.
    Int8 = 3,
    /// int32.
    Int32 = 6,
    /// int64.
    Int64 = 7,
    /// bool.
    Bool = 9,
    /// float16.
    Float16 = 10,
}

/// `TensorProto`: a constant tensor (initializer or attribute value).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// Shape.
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    /// Element type ([`DataType`]).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// float32 values when not in `raw_data`.
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// int32 (and smaller) values when not in `raw_data`.
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    /// int64 values when not in `raw_data`.
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    /// Tensor name (initializer: the value name nodes refer to).
    #[prost(string, tag = "8")]
    pub name: String,
    /// Little-endian packed values (what this crate writes).
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    /// Description.
    #[prost(string, tag = "12")]
    pub doc_string: String,
}

impl TensorProto {
    /// A float32 tensor stored as `raw_data`.
    pub fn from_f32(name: &str, dims: &[i64], data: &[f32]) -> Self {
        Self {
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            name: name.to_owned(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    /// An int64 tensor stored as `raw_data`.
    pub fn from_i64(name: &str, dims: &[i64], data: &[i64]) -> Self {
        Self {
            dims: dims.to_vec(),
            data_type: DataType::Int64 as i32,
            name: name.to_owned(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    /// Number of elements (product of dims; 1 for a scalar). Hostile dimensions whose product
    /// does not fit saturate at `usize::MAX`, which no tensor's data matches.
    pub fn numel(&self) -> usize {
        self.dims
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .try_fold(1usize, |a, d| a.checked_mul(d))
            .unwrap_or(usize::MAX)
    }

    /// The values of a float32 tensor, from `raw_data` or `float_data`.
    pub fn to_f32(&self) -> Result<Vec<f32>, ModelError> {
        if self.data_type != DataType::Float as i32 {
            return Err(ModelError::Onnx(format!(
                "tensor `{}` has data type {}, not float32",
                self.name, self.data_type
            )));
        }
        let values: Vec<f32> = if self.raw_data.is_empty() {
            self.float_data.clone()
        } else {
            self.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        if values.len() != self.numel() {
            return Err(ModelError::Onnx(format!(
                "tensor `{}` holds {} values for dims {:?}",
                self.name,
                values.len(),
                self.dims
            )));
        }
        Ok(values)
    }
}

/// `ValueInfoProto`: name and type of a graph input, output or intermediate value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    /// Value name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    /// Description.
    #[prost(string, tag = "3")]
    pub doc_string: String,
}

/// `TypeProto` (only the tensor case).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    /// The type.
    #[prost(oneof = "type_proto::Value", tags = "1")]
    pub value: Option<type_proto::Value>,
}

/// Nested messages of [`TypeProto`].
pub mod type_proto {
    /// `TypeProto.value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A dense tensor.
        #[prost(message, tag = "1")]
        TensorType(Tensor),
    }

    /// `TypeProto.Tensor`: element type and (partial) shape.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        /// Element type ([`DataType`](super::DataType)).
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        /// Shape; absent means unknown rank.
        #[prost(message, optional, tag = "2")]
        pub shape: Option<super::TensorShapeProto>,
    }
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// Dimensions, outermost first.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<tensor_shape_proto::Dimension>,
}

/// Nested messages of [`TensorShapeProto`].
pub mod tensor_shape_proto {
    /// One dimension: a fixed size or a symbolic name.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        /// The value.
        #[prost(oneof = "dimension::Value", tags = "1, 2")]
        pub value: Option<dimension::Value>,
    }

    /// Nested types of [`Dimension`].
    pub mod dimension {
        /// `Dimension.value`.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// Fixed size.
            #[prost(int64, tag = "1")]
            DimValue(i64),
            /// Symbolic (dynamic) size, e.g. `batch`.
            #[prost(string, tag = "2")]
            DimParam(String),
        }
    }
}

/// A dimension for [`ValueInfoProto`] shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// Fixed size.
    Fixed(i64),
    /// Symbolic size, e.g. `batch`.
    Named(String),
}

impl ValueInfoProto {
    /// A tensor value of element type `elem` and shape `dims`.
    pub fn tensor(name: &str, elem: DataType, dims: &[Dim]) -> Self {
        use tensor_shape_proto::{Dimension, dimension::Value};
        let dim = dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Dim::Fixed(v) => Value::DimValue(*v),
                    Dim::Named(s) => Value::DimParam(s.clone()),
                }),
            })
            .collect();
        Self {
            name: name.to_owned(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: elem as i32,
                    shape: Some(TensorShapeProto { dim }),
                })),
            }),
            doc_string: String::new(),
        }
    }

    /// The shape, with `None` for symbolic or missing dims; `None` when the rank is unknown.
    pub fn dims(&self) -> Option<Vec<Option<i64>>> {
        let Some(TypeProto {
            value: Some(type_proto::Value::TensorType(t)),
        }) = &self.r#type
        else {
            return None;
        };
        let shape = t.shape.as_ref()?;
        Some(
            shape
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
                    _ => None,
                })
                .collect(),
        )
    }
}

impl AttributeProto {
    /// An integer attribute.
    pub fn int(name: &str, value: i64) -> Self {
        Self {
            name: name.to_owned(),
            r#type: AttributeType::Int as i32,
            i: Some(value),
            ..Default::default()
        }
    }

    /// A float attribute.
    pub fn float(name: &str, value: f32) -> Self {
        Self {
            name: name.to_owned(),
            r#type: AttributeType::Float as i32,
            f: Some(value),
            ..Default::default()
        }
    }

    /// An integer-list attribute.
    pub fn ints(name: &str, values: &[i64]) -> Self {
        Self {
            name: name.to_owned(),
            r#type: AttributeType::Ints as i32,
            ints: values.to_vec(),
            ..Default::default()
        }
    }

    /// A string attribute.
    pub fn string(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            r#type: AttributeType::String as i32,
            s: Some(value.as_bytes().to_vec()),
            ..Default::default()
        }
    }
}

/// A model around `graph`, importing the default opset `opset`, IR version [`IR_VERSION`].
pub fn model(graph: GraphProto, opset: i64, producer: &str) -> ModelProto {
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        producer_name: producer.to_owned(),
        producer_version: env!("CARGO_PKG_VERSION").to_owned(),
        graph: Some(graph),
        ..Default::default()
    }
}

impl ModelProto {
    /// Serialises to the ONNX file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Parses ONNX file bytes (fields outside the modelled subset are skipped).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        Self::decode(bytes).map_err(|e| ModelError::Onnx(format!("not an ONNX model: {e}")))
    }

    /// Reads an ONNX file.
    pub fn read(path: &std::path::Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|io| ModelError::Io {
            path: path.to_owned(),
            io,
        })?;
        Self::from_bytes(&bytes)
    }

    /// The graph (an empty one when the file has none).
    pub fn graph(&self) -> &GraphProto {
        static EMPTY: std::sync::OnceLock<GraphProto> = std::sync::OnceLock::new();
        self.graph
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(GraphProto::default))
    }

    /// Parameters: elements of the float initializers that learned layers (`Conv`,
    /// `ConvTranspose`, `Gemm`, `MatMul`, `BatchNormalization`) take as inputs, each counted
    /// once. Constants such as anchor grids or reshape targets are not parameters.
    pub fn parameter_count(&self) -> usize {
        const LEARNED: [&str; 5] = [
            "Conv",
            "ConvTranspose",
            "Gemm",
            "MatMul",
            "BatchNormalization",
        ];
        let g = self.graph();
        let used: std::collections::HashSet<&str> = g
            .node
            .iter()
            .filter(|n| LEARNED.contains(&n.op_type.as_str()))
            .flat_map(|n| n.input.iter().map(String::as_str))
            .collect();
        g.initializer
            .iter()
            .filter(|t| t.data_type == DataType::Float as i32 && used.contains(t.name.as_str()))
            .map(TensorProto::numel)
            .fold(0usize, usize::saturating_add)
    }

    /// How many nodes of each operator type, sorted by operator name.
    pub fn op_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for n in &self.graph().node {
            *counts.entry(n.op_type.clone()).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_zero_valued_attributes() {
        let mut g = GraphProto {
            name: "g".into(),
            ..Default::default()
        };
        g.initializer
            .push(TensorProto::from_f32("w", &[2, 1], &[1.5, -2.0]));
        g.node.push(NodeProto {
            input: vec!["x".into(), "w".into()],
            output: vec!["y".into()],
            name: "n".into(),
            op_type: "Concat".into(),
            attribute: vec![AttributeProto::int("axis", 0)],
            ..Default::default()
        });
        g.input.push(ValueInfoProto::tensor(
            "x",
            DataType::Float,
            &[Dim::Named("batch".into()), Dim::Fixed(1)],
        ));
        let m = model(g, 17, "test");
        let back = ModelProto::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(back, m);
        // proto2 semantics: an explicit zero is on the wire.
        assert_eq!(back.graph().node[0].attribute[0].i, Some(0));
        assert_eq!(back.graph().initializer[0].to_f32().unwrap(), [1.5, -2.0]);
        assert_eq!(back.graph().input[0].dims(), Some(vec![None, Some(1)]));
        // `w` feeds a Concat, not a learned layer.
        assert_eq!(back.parameter_count(), 0);
        assert_eq!(back.op_counts().get("Concat"), Some(&1));
    }

    /// Found by the onnx_model fuzz target with overflow checks: declared dimensions whose
    /// product overflows panicked in `numel` (and wrapped without the checks).
    #[test]
    fn dimensions_whose_product_overflows_saturate_and_match_no_data() {
        let mut w = TensorProto::from_f32("w", &[1, 1], &[1.0]);
        w.dims = vec![1 << 40, 1 << 40];
        assert_eq!(w.numel(), usize::MAX);
        assert!(w.to_f32().is_err());
        let mut g = GraphProto::default();
        g.initializer.push(w.clone());
        g.initializer.push(TensorProto {
            name: "b".into(),
            ..w
        });
        g.node.push(NodeProto {
            input: vec!["x".into(), "w".into(), "b".into()],
            output: vec!["y".into()],
            op_type: "Conv".into(),
            ..Default::default()
        });
        let m = model(g, 17, "test");
        assert_eq!(m.parameter_count(), usize::MAX);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = ModelProto::from_bytes(&[0xff, 0xff, 0xff]).unwrap_err();
        assert!(err.to_string().contains("not an ONNX model"), "{err}");
    }
}
