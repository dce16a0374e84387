#!/usr/bin/env python3
"""Exports tiny randomly initialised Hugging Face models to ONNX with onnxruntime's outputs.

    tests/onnx-models/<name>/model.onnx
    tests/onnx-models/<name>/input_ids.npy
    tests/onnx-models/<name>/test_data_set_0/input_0.pb, output_0.pb

Models: Llama with grouped-query attention, Qwen2 (QKV bias), Mixtral (8 experts, top-2,
`experts_implementation="batched_mm"`), GPT-2 and a BERT encoder (its output is the last
hidden state rather than logits), each with 2 layers, hidden 64 and a 256-token vocabulary, exported with `torch.onnx.export(..., dynamo=True)` at batch 1,
sequence 8. Weights come from `torch.manual_seed(0)`, inputs from a fixed numpy seed, so a
rerun with the same library versions reproduces the files.

Usage: pip install torch transformers onnxscript onnx onnxruntime numpy
       python3 scripts/export_hf_fixtures.py [name ...]
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "onnx-models")
BATCH, SEQ, VOCAB = 1, 8, 256

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
    use_cache=False,
    tie_word_embeddings=False,
)


def configs():
    return {
        "llama-gqa": transformers.LlamaConfig(num_key_value_heads=2, **COMMON),
        "qwen2": transformers.Qwen2Config(num_key_value_heads=2, **COMMON),
        "mixtral": transformers.MixtralConfig(
            num_key_value_heads=2,
            num_local_experts=8,
            num_experts_per_tok=2,
            experts_implementation="batched_mm",
            **COMMON,
        ),
        "gpt2": transformers.GPT2Config(
            vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64, use_cache=False
        ),
        "bert": transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=64,
        ),
    }


class LogitsOnly(torch.nn.Module):
    """The model with only `input_ids` in and `logits` out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        out = self.model(input_ids=input_ids)
        # Causal LMs give logits; an encoder (BERT) its last hidden state.
        return out.logits if hasattr(out, "logits") else out.last_hidden_state


def export(name, config):
    torch.manual_seed(0)
    if config.model_type == "bert":
        model = transformers.AutoModel.from_config(config).eval()
    else:
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
    wrapped = LogitsOnly(model)
    ids = np.random.default_rng(7).integers(0, VOCAB, (BATCH, SEQ)).astype(np.int64)
    output = "last_hidden_state" if config.model_type == "bert" else "logits"
    d = os.path.join(OUT, name)
    ds = os.path.join(d, "test_data_set_0")
    os.makedirs(ds, exist_ok=True)
    path = os.path.join(d, "model.onnx")
    with torch.no_grad():
        program = torch.onnx.export(
            wrapped,
            (torch.from_numpy(ids),),
            dynamo=True,
            input_names=["input_ids"],
            output_names=[output],
        )
    program.save(path, external_data=False)
    onnx.checker.check_model(path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {"input_ids": ids})
    with torch.no_grad():
        reference = wrapped(torch.from_numpy(ids)).numpy()
    gap = float(np.abs(logits - reference).max())
    np.save(os.path.join(d, "input_ids.npy"), ids)
    open(os.path.join(ds, "input_0.pb"), "wb").write(
        numpy_helper.from_array(ids, "input_ids").SerializeToString()
    )
    open(os.path.join(ds, "output_0.pb"), "wb").write(
        numpy_helper.from_array(logits, output).SerializeToString()
    )
    ops = sorted({n.op_type for n in onnx.load(path).graph.node})
    size = os.path.getsize(path)
    print(f"{name}: {size} bytes, onnxruntime vs torch max |diff| {gap:.2e}, ops: {' '.join(ops)}")


def main():
    wanted = sys.argv[1:] or list(configs())
    for name, config in configs().items():
        if name in wanted:
            export(name, config)


if __name__ == "__main__":
    main()
