#!/usr/bin/env python3
"""Writes ONNX's own backend node tests for the ops Weft's ONNX frontend claims.

The test cases come from the `onnx` package (`onnx.backend.test.case.node`), built in
memory and written out in the usual layout:

    tests/onnx-node/<test name>/model.onnx
    tests/onnx-node/<test name>/test_data_set_<k>/input_<i>.pb, output_<i>.pb

A case is taken when its (first) node's op type is claimed, i.e. listed in
frontends/onnx/src/import.rs `SUPPORTED`. `_expanded` variants are skipped: they test an
op's function body, which is made of other ops.

Usage: pip install onnx numpy && python3 scripts/make_onnx_node_tests.py
(the tests/onnx-node/manifest.txt of expected results is written by the Rust test with
WEFT_BLESS=1).
"""
import os
import re
import shutil
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "onnx-node")


def claimed_ops():
    src = open(os.path.join(ROOT, "frontends", "onnx", "src", "import.rs")).read()
    block = src[src.index("pub const SUPPORTED"):]
    block = block[: block.index("];")]
    return set(re.findall(r'"([A-Za-z]+)"', block))


def main():
    warnings.simplefilter("ignore")
    claimed = claimed_ops()
    for name in os.listdir(OUT) if os.path.isdir(OUT) else []:
        path = os.path.join(OUT, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
    os.makedirs(OUT, exist_ok=True)
    written = 0
    for case in collect_testcases():
        nodes = case.model.graph.node
        if not nodes or nodes[0].op_type not in claimed or "_expanded" in case.name:
            continue
        if nodes[0].domain not in ("", "ai.onnx"):
            continue
        arrays = [a for inputs, outputs in case.data_sets for a in list(inputs) + list(outputs)]
        if not all(isinstance(a, (np.ndarray, np.generic)) for a in arrays):
            continue  # sequences, optionals: not tensors
        d = os.path.join(OUT, case.name)
        os.makedirs(d)
        onnx.save(case.model, os.path.join(d, "model.onnx"))
        for k, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(d, f"test_data_set_{k}")
            os.makedirs(ds)
            for i, (info, arr) in enumerate(zip(case.model.graph.input, inputs)):
                t = numpy_helper.from_array(np.asarray(arr), info.name)
                open(os.path.join(ds, f"input_{i}.pb"), "wb").write(t.SerializeToString())
            for i, (info, arr) in enumerate(zip(case.model.graph.output, outputs)):
                t = numpy_helper.from_array(np.asarray(arr), info.name)
                open(os.path.join(ds, f"output_{i}.pb"), "wb").write(t.SerializeToString())
        written += 1
    print(f"wrote {written} node tests for {len(claimed)} claimed ops to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
