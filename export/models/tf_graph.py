"""Read constants out of a frozen TensorFlow GraphDef without TensorFlow.

The protobuf classes come from ``tensorboard.compat.proto``, which carries TensorFlow's
``graph_pb2`` without TensorFlow itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from jetkiosk.edge.core.errors import ModelError

# TensorFlow DataType enum values we meet in frozen inference graphs.
_DTYPES = {1: np.float32, 3: np.int32, 9: np.int64}


class FrozenGraph:
    """A parsed frozen graph: its nodes by name and its constants as arrays."""

    def __init__(self, path: Path):
        from tensorboard.compat.proto import graph_pb2

        graph = graph_pb2.GraphDef()
        try:
            graph.ParseFromString(Path(path).read_bytes())
        except Exception as exc:  # protobuf raises DecodeError or RuntimeError
            raise ModelError(f"{path}: not a TensorFlow GraphDef ({exc})") from exc
        if not graph.node:
            raise ModelError(f"{path}: TensorFlow GraphDef has no nodes")
        self.path = Path(path)
        self.nodes = {node.name: node for node in graph.node}
        self.constants: Dict[str, np.ndarray] = {
            name: self._array(node) for name, node in self.nodes.items() if node.op == "Const"
        }

    @staticmethod
    def _array(node) -> np.ndarray:
        tensor = node.attr["value"].tensor
        dtype = _DTYPES.get(tensor.dtype)
        if dtype is None:
            raise ModelError(f"constant {node.name}: unsupported dtype {tensor.dtype}")
        shape = [dim.size for dim in tensor.tensor_shape.dim]
        if tensor.tensor_content:
            return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape).copy()
        values = tensor.float_val if dtype is np.float32 else (
            tensor.int_val if dtype is np.int32 else tensor.int64_val)
        array = np.array(values, dtype=dtype)
        if array.size == 1:
            return np.full(shape, array.item(), dtype=dtype)
        if int(np.prod(shape)) == array.size:
            return array.reshape(shape)
        return array  # a list written without its shape (e.g. Reshape targets)

    def constant(self, name: str) -> np.ndarray:
        try:
            return self.constants[name]
        except KeyError:
            raise ModelError(f"{self.path.name}: constant {name!r} is missing") from None
