#!/usr/bin/env python3
"""Writes ONNX's own backend node tests for the ops Weft's ONNX frontend claims.

The test cases come from the `onnx` package (`onnx.backend.test.case.node`), built in
memory and written out in the usual layout:

    tests/onnx-node/<test name>/model.onnx
    tests/onnx-node/<test name>/test_data_set_<k>/input_<i>.pb, output_<i>.pb

A case is taken when its (first) node's op type is claimed, i.e. listed in
frontends/onnx/src/import.rs `SUPPORTED`. `_expanded` variants are skipped: they test an
op's function body, which is made of other ops. Test data that ONNX gives as a
`TensorProto` (the element types NumPy has no dtype for: every `Cast` case) is written as
it is. Every case not written is counted under its reason in tests/onnx-node/skipped.txt,
which the conformance test copies into the manifest, so nothing is dropped silently.

Usage: pip install onnx numpy && python3 scripts/make_onnx_node_tests.py
(the tests/onnx-node/manifest.txt of expected results is written by the Rust test with
WEFT_BLESS=1).
"""
import os
import re
import shutil
import sys
import warnings
from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.environ.get("WEFT_ONNX_NODE_OUT") or os.path.join(ROOT, "tests", "onnx-node")


def claimed_ops():
    src = open(os.path.join(ROOT, "frontends", "onnx", "src", "import.rs")).read()
    block = src[src.index("pub const SUPPORTED"):]
    block = block[: block.index("];")]
    return set(re.findall(r'"([A-Za-z]+)"', block))


def as_proto(arr, name):
    """A test-data value as a named TensorProto, or None when it is not a tensor."""
    if isinstance(arr, onnx.TensorProto):
        t = onnx.TensorProto()
        t.CopyFrom(arr)
        t.name = name
        return t
    if isinstance(arr, (np.ndarray, np.generic)):
        return numpy_helper.from_array(np.asarray(arr), name)
    return None  # sequences, optionals


def skip_reason(case, claimed):
    nodes = case.model.graph.node
    if not nodes:
        return "the model has no node"
    if "_expanded" in case.name:
        return "an `_expanded` variant (tests a function body made of other ops)"
    if nodes[0].domain not in ("", "ai.onnx"):
        return "op of a non-default domain"
    if nodes[0].op_type not in claimed:
        return "op not claimed by the ONNX frontend"
    arrays = [a for inputs, outputs in case.data_sets for a in list(inputs) + list(outputs)]
    if not all(isinstance(a, (np.ndarray, np.generic, onnx.TensorProto)) for a in arrays):
        return "test data holds a sequence or an optional, not tensors"
    return None


def main():
    warnings.simplefilter("ignore")
    claimed = claimed_ops()
    for name in os.listdir(OUT) if os.path.isdir(OUT) else []:
        path = os.path.join(OUT, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
    os.makedirs(OUT, exist_ok=True)
    written = 0
    skipped = Counter()
    for case in collect_testcases():
        reason = skip_reason(case, claimed)
        if reason is not None:
            skipped[reason] += 1
            continue
        d = os.path.join(OUT, case.name)
        os.makedirs(d)
        onnx.save(case.model, os.path.join(d, "model.onnx"))
        for k, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(d, f"test_data_set_{k}")
            os.makedirs(ds)
            for kind, infos, arrays in (
                ("input", case.model.graph.input, inputs),
                ("output", case.model.graph.output, outputs),
            ):
                for i, (info, arr) in enumerate(zip(infos, arrays)):
                    t = as_proto(arr, info.name)
                    with open(os.path.join(ds, f"{kind}_{i}.pb"), "wb") as f:
                        f.write(t.SerializeToString())
        written += 1
    total = written + sum(skipped.values())
    with open(os.path.join(OUT, "skipped.txt"), "w") as f:
        f.write(
            f"# onnx {onnx.__version__}: {total} node test cases, {written} written, "
            f"{sum(skipped.values())} skipped\n"
        )
        for reason, n in sorted(skipped.items()):
            f.write(f"# skipped {n}: {reason}\n")
    print(f"wrote {written} node tests for {len(claimed)} claimed ops to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
