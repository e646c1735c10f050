//! [`GraphBuilder`]: appends nodes and initializers in order, naming values uniquely.
//!
//! No shape inference: the caller tracks shapes it needs (the importers know them).

use std::collections::HashMap;

use crate::onnx::{
    AttributeProto, DataType, Dim, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
    model,
};

/// Builds one ONNX graph.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    counters: HashMap<String, usize>,
}

impl GraphBuilder {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            graph: GraphProto {
                name: name.to_owned(),
                ..Default::default()
            },
            counters: HashMap::new(),
        }
    }

    /// A fresh name `<prefix>_<n>` (n counts per prefix from 0).
    pub fn fresh(&mut self, prefix: &str) -> String {
        let n = self.counters.entry(prefix.to_owned()).or_default();
        let name = format!("{prefix}_{n}");
        *n += 1;
        name
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem: DataType, dims: &[Dim]) -> String {
        self.graph
            .input
            .push(ValueInfoProto::tensor(name, elem, dims));
        name.to_owned()
    }

    /// Declares a graph output (the value must be produced by some node).
    pub fn output(&mut self, name: &str, elem: DataType, dims: &[Dim]) {
        self.graph
            .output
            .push(ValueInfoProto::tensor(name, elem, dims));
    }

    /// Adds a float32 initializer named `name` and returns the name.
    pub fn init_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        debug_assert_eq!(
            dims.iter().product::<i64>() as usize,
            data.len(),
            "initializer `{name}` dims {dims:?}"
        );
        self.graph
            .initializer
            .push(TensorProto::from_f32(name, dims, data));
        name.to_owned()
    }

    /// Adds an int64 initializer named `name` and returns the name.
    pub fn init_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) -> String {
        self.graph
            .initializer
            .push(TensorProto::from_i64(name, dims, data));
        name.to_owned()
    }

    /// A float32 constant with a fresh name `<prefix>_<n>`.
    pub fn const_f32(&mut self, prefix: &str, dims: &[i64], data: &[f32]) -> String {
        let name = self.fresh(prefix);
        self.init_f32(&name, dims, data)
    }

    /// A 1-D int64 constant with a fresh name `<prefix>_<n>`.
    pub fn const_i64(&mut self, prefix: &str, data: &[i64]) -> String {
        let name = self.fresh(prefix);
        self.init_i64(&name, &[data.len() as i64], data)
    }

    /// Adds a node with explicit output names; returns them.
    pub fn node_with_outputs(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[String],
        attrs: Vec<AttributeProto>,
    ) -> Vec<String> {
        let name = self.fresh(op);
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.to_vec(),
            name,
            op_type: op.to_owned(),
            attribute: attrs,
            ..Default::default()
        });
        outputs.to_vec()
    }

    /// Adds a node with `n_out` fresh outputs `<op>_<k>.out<i>`; returns them.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        n_out: usize,
        attrs: Vec<AttributeProto>,
    ) -> Vec<String> {
        let base = self.fresh(&format!("{op}.out"));
        let outputs: Vec<String> = if n_out == 1 {
            vec![base]
        } else {
            (0..n_out).map(|i| format!("{base}.{i}")).collect()
        };
        self.node_with_outputs(op, inputs, &outputs, attrs)
    }

    /// Adds a single-output node; returns its output name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.node(op, inputs, 1, attrs).remove(0)
    }

    /// Number of nodes so far.
    pub fn node_count(&self) -> usize {
        self.graph.node.len()
    }

    /// The finished graph.
    pub fn finish(self) -> GraphProto {
        self.graph
    }

    /// The finished graph wrapped in a model importing the default opset `opset`.
    pub fn into_model(self, opset: i64, producer: &str) -> ModelProto {
        model(self.finish(), opset, producer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_nodes_in_order() {
        let mut b = GraphBuilder::new("t");
        let x = b.input("x", DataType::Float, &[Dim::Fixed(1)]);
        let a = b.op("Relu", &[&x], vec![]);
        let c = b.op("Relu", &[&a], vec![]);
        let parts = b.node("Split", &[&c], 2, vec![AttributeProto::int("axis", 0)]);
        assert_ne!(a, c);
        assert_eq!(parts.len(), 2);
        assert_ne!(parts[0], parts[1]);
        let g = b.finish();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Relu", "Relu", "Split"]);
        assert_eq!(g.node[1].input, [a]);
    }
}
