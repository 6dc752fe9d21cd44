"""Tracing a module to ONNX and quantizing the graph: the one way xdistil does both.

Used by `xdistil.deployable` (deployable exports: logits only) and `xdistil.engines` (the
teacher as a labeling engine: logits and chosen hidden states), so the exporter's settings,
the checks and the quantizer's quirks are handled in one place. torch and onnx are imported
here, onnxruntime only when quantizing.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

INPUTS = ("input_ids", "attention_mask")
LARGE = 1_800_000_000
"""Bytes from which a graph keeps its weights as external data (the protobuf limit is 2 GB)."""


def trace(module: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path, opset: int,
          outputs: Sequence[str]) -> None:
    """Trace ``module`` ((input_ids, attention_mask) -> the tensors named ``outputs``) on the padded
    ``example`` into the ONNX file ``path`` with the TorchScript exporter (``dynamo=False``; it
    handles every model kind here in torch 2.13), dynamic batch and sequence axes on every input
    and output, constant folding; then weights are read straight from their initializers
    (`bypass_weight_identities`) and the graph is checked."""
    import onnx

    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter is deprecated in favour of dynamo (still supported in 2.13) and
        # the tracer warns about Python bools in HF masking code that do not depend on data
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), dynamo=False, opset_version=opset, input_names=list(INPUTS),
                          output_names=list(outputs), dynamic_axes=dict.fromkeys([*INPUTS, *outputs], axes),
                          do_constant_folding=True)
    model = onnx.load(str(path), load_external_data=False)
    if bypass_weight_identities(model):
        onnx.save(model, str(path))
    onnx.checker.check_model(str(path))  # by path: works for models over 2 GB (external data) too
    check_dynamic_axes(model, path)


def bypass_weight_identities(model) -> int:
    """Read weights straight from their initializer where the exporter put an Identity in between.

    A weight used twice (the CNN's block, applied once per iteration) is exported as one
    initializer plus an Identity per further use; onnxruntime's quantizer quantizes only a
    MatMul whose weight *is* an initializer, so those uses stayed fp32. Returns how many
    Identity nodes were removed (0: the model is unchanged)."""
    weights = {i.name for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    alias = {n.output[0]: n.input[0] for n in model.graph.node
             if n.op_type == "Identity" and n.input[0] in weights and n.output[0] not in outputs}
    if not alias:
        return 0
    kept = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        for k, name in enumerate(node.input):
            if name in alias:
                node.input[k] = alias[name]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return len(alias)


def check_dynamic_axes(model, path: Path) -> None:
    """Inputs and outputs must keep symbolic batch / sequence axes (int8 tools have been known to fix them)."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) < 2 or not all(d.dim_param for d in dims[:2]):
            shape = [d.dim_param or d.dim_value for d in dims]
            raise RuntimeError(f"{path.name}: {value.name} lost its dynamic axes (shape {shape})")


def quantize(src: Path, dst: Path, **options) -> None:
    """onnxruntime's dynamic quantization (QInt8 weights) of ``src`` into ``dst``, with ``options``
    for `quantize_dynamic` (which ops, per channel, exclusions), checked."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()  # the quantizer logs every tensor it skips on the root logger
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         use_external_data_format=src.stat().st_size > LARGE, **options)
    finally:
        root.setLevel(level)
    check_dynamic_axes(onnx.load(str(dst), load_external_data=False), dst)
