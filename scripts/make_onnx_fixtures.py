#!/usr/bin/env python3
"""Writes small ONNX models and onnxruntime's outputs for them, as test fixtures.

    tests/onnx-models/<name>/model.onnx
    tests/onnx-models/<name>/test_data_set_0/input_<i>.pb, output_<i>.pb

Usage: pip install onnx onnxruntime numpy && python3 scripts/make_onnx_fixtures.py
The inputs are drawn from a fixed seed, so rerunning reproduces the same files.
"""
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "onnx-models")


def write(name, model, feeds):
    onnx.checker.check_model(model)
    d = os.path.join(OUT, name)
    ds = os.path.join(d, "test_data_set_0")
    os.makedirs(ds, exist_ok=True)
    onnx.save(model, os.path.join(d, "model.onnx"))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, feeds)
    for i, info in enumerate(model.graph.input):
        t = numpy_helper.from_array(feeds[info.name], info.name)
        open(os.path.join(ds, f"input_{i}.pb"), "wb").write(t.SerializeToString())
    for i, (info, arr) in enumerate(zip(model.graph.output, outs)):
        t = numpy_helper.from_array(arr, info.name)
        open(os.path.join(ds, f"output_{i}.pb"), "wb").write(t.SerializeToString())


def mlp():
    rng = np.random.default_rng(1234)
    vocab, hidden, ffn, classes, batch, seq = 50, 16, 32, 5, 2, 7

    def w(*shape, scale=0.2):
        return rng.normal(0, scale, shape).astype(np.float32)

    inits = [
        numpy_helper.from_array(w(vocab, hidden, scale=1.0), "embed"),
        numpy_helper.from_array(1 + w(hidden, scale=0.1), "ln_scale"),
        numpy_helper.from_array(w(hidden, scale=0.1), "ln_bias"),
        numpy_helper.from_array(w(hidden, ffn), "w1"),
        numpy_helper.from_array(w(ffn, scale=0.1), "b1"),
        numpy_helper.from_array(w(ffn, classes), "w2"),
        numpy_helper.from_array(np.array([batch * seq, classes], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([batch, seq, classes], dtype=np.int64), "out_shape"),
    ]
    nodes = [
        helper.make_node("Gather", ["embed", "ids"], ["emb"], axis=0),
        helper.make_node("LayerNormalization", ["emb", "ln_scale", "ln_bias"], ["ln"], axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["ln", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Gelu", ["hb"], ["g"]),
        helper.make_node("MatMul", ["g", "w2"], ["logits3"]),
        helper.make_node("Reshape", ["logits3", "flat_shape"], ["flat"]),
        helper.make_node("Softmax", ["flat"], ["probs_flat"], axis=-1),
        helper.make_node("Reshape", ["probs_flat", "out_shape"], ["probs"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [batch, seq])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, seq, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    ids = rng.integers(0, vocab, (batch, seq)).astype(np.int64)
    write("mlp", model, {"ids": ids})


if __name__ == "__main__":
    mlp()
