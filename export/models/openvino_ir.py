"""OpenVINO IR v5 (``.xml`` graph + ``.bin`` weights) -> ONNX, for Open Model Zoo's
``face-reidentification-retail-0095`` face encoder.

Current OpenVINO no longer reads IR v5, so this is a small reader of its own: the XML lists every
layer (type, attributes, port shapes, and the byte offset and size of its blobs in the .bin) and
the edges between layer ports. Supported layers: Input, ScaleShift, Convolution (grouped too),
PReLU, Eltwise sum/mul (numpy broadcasting), Pooling avg, Activation sigmoid. ``torch_reference``
runs the same IR layer by layer with ``torch.nn.functional``, independently of the ONNX builder,
so tests can check the conversion tensor by tensor.

Usage: ``python -m jetkiosk.export.models.openvino_ir SRC_DIR OUT.onnx``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.runtime.manifest import sha256_file

CONVERTER_VERSION = 1
PRODUCER_NAME = "jetkiosk.export.openvino_ir"  # in the shipped ONNX file: kept as first written
OPSET = 17
# ONNX IR version 8 is the one that goes with opset 17 (onnx 1.12): older runtimes read it.
ONNX_IR_VERSION = 8

# The files in ../shared/models/face-reid-0095 (an IR v5 release from a public copy in
# ch-tseng/SunplusIT_Facial_Punch_v2 at commit 89024e88; see that README).
SOURCE_SHA256 = {
    "face-reidentification-retail-0095.bin":
        "3289078133e40e4263f682ded2a26a500905abb0fd7b943f41ca8037a4f3fe21",
    "face-reidentification-retail-0095.xml":
        "c45948e5865726a7994ae72049f5b95d977dc0302d08028503868184c68edf91",
}

LAYER_TYPES = ("Input", "ScaleShift", "Convolution", "PReLU", "Eltwise", "Pooling", "Activation")
_BLOB_DTYPES: Dict[str, np.dtype] = {"FP16": np.dtype("<f2"), "FP32": np.dtype("<f4")}


@dataclass
class IRLayer:
    """One IR layer; ``weights``/``biases`` are float32, already in their final shape."""

    id: int
    name: str
    type: str
    attrs: Dict[str, str]
    inputs: List[int]  # producer layer ids, in input-port order
    input_shapes: List[Tuple[int, ...]]
    output_shape: Tuple[int, ...]
    weights: Optional[np.ndarray] = None
    biases: Optional[np.ndarray] = None

    def blob(self, kind: str) -> np.ndarray:
        """``weights`` or ``biases``, which must be present."""
        value = getattr(self, kind)
        if value is None:
            raise ModelError(f"layer {self.id} ({self.type}): no {kind}")
        return value

    def ints(self, key: str) -> List[int]:
        """A comma-separated integer attribute, e.g. ``kernel="3,3"`` -> [3, 3]."""
        return [int(v) for v in self.attrs[key].split(",")]


@dataclass
class IRNetwork:
    """An IR graph: layers in topological order, and what was read from the .bin."""

    name: str
    layers: List[IRLayer]
    output_id: int
    xml_path: Path
    bin_path: Path
    bin_size: int
    # (offset, size, "layer-id/weights|biases") of every blob read from the .bin
    blob_ranges: List[Tuple[int, int, str]] = field(default_factory=list)
    source_sha256: Dict[str, str] = field(default_factory=dict)

    def layer(self, layer_id: int) -> IRLayer:
        """The layer with IR id ``layer_id``."""
        for layer in self.layers:
            if layer.id == layer_id:
                return layer
        raise KeyError(layer_id)


def _children(el: ET.Element, tag: str) -> List[ET.Element]:
    """The children of ``el``'s ``<tag>`` element (none when it is absent)."""
    sub = el.find(tag)
    return [] if sub is None else list(sub)


def _shape(port: ET.Element) -> Tuple[int, ...]:
    return tuple(int(dim.text or "") for dim in port.findall("dim"))


def _check_attrs(layer: ET.Element, where: str, ltype: str, attrs: Dict[str, str]) -> None:
    """Refuse attribute values this converter does not implement."""
    if ltype == "Eltwise":
        if attrs.get("operation") not in ("sum", "mul"):
            raise ModelError(f"{where}: Eltwise operation {attrs.get('operation')!r} "
                             "is not supported (sum, mul)")
        coeff = attrs.get("coeff", "")
        if coeff and any(float(c) != 1.0 for c in coeff.split(",")):
            raise ModelError(f"{where}: Eltwise coefficients {coeff!r} are not supported")
    elif ltype == "Activation" and attrs.get("type") != "sigmoid":
        raise ModelError(f"{where}: Activation type {attrs.get('type')!r} is not supported "
                         "(sigmoid)")
    elif ltype == "Pooling" and attrs.get("pool-method") != "avg":
        raise ModelError(f"{where}: Pooling method {attrs.get('pool-method')!r} is not "
                         "supported (avg)")
    elif ltype == "Convolution":
        missing = [k for k in ("kernel", "output", "strides", "pads_begin", "pads_end")
                   if k not in attrs]
        if missing:
            raise ModelError(f"{where}: Convolution lacks {', '.join(missing)}")
        if attrs.get("auto_pad", "") not in ("", "explicit"):
            raise ModelError(f"{where}: Convolution auto_pad={attrs['auto_pad']!r} "
                             "is not supported")
    if len(_children(layer, "output")) != 1:
        raise ModelError(f"{where}: exactly one output port expected")


def _blob_shape(ltype: str, attrs: Dict[str, str], in_shapes: List[Tuple[int, ...]],
                kind: str) -> Tuple[int, ...]:
    """The shape a layer's blob must have (checked against its byte size)."""
    channels = in_shapes[0][1] if in_shapes and len(in_shapes[0]) > 1 else 0
    if ltype == "Convolution":
        out_c = int(attrs["output"])
        if kind == "biases":
            return (out_c,)
        group = int(attrs.get("group", "1"))
        kernel = [int(v) for v in attrs["kernel"].split(",")]
        return (out_c, channels // group, *kernel)
    if ltype == "ScaleShift":
        return (channels,)
    if ltype == "PReLU" and kind == "weights":
        return (1,) if attrs.get("channel_shared", "0") == "1" else (channels,)
    raise ModelError(f"{ltype} layers do not take a {kind} blob")


def read_ir(xml_path: Path) -> IRNetwork:
    """Read an IR v5 ``.xml`` and the ``.bin`` beside it (same stem)."""
    xml_path = Path(xml_path)
    bin_path = xml_path.with_suffix(".bin")
    try:
        xml_bytes = xml_path.read_bytes()
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as e:
        raise ModelError(f"{xml_path}: malformed XML ({e})") from None
    except OSError as e:
        raise ModelError(f"{xml_path}: cannot read ({e.strerror})") from None
    if root.tag != "net" or root.get("version") != "5":
        raise ModelError(f"{xml_path}: not an OpenVINO IR version 5 file "
                         f"(<{root.tag} version={root.get('version')!r}>)")
    try:
        blob_bytes = bin_path.read_bytes()
    except OSError as e:
        raise ModelError(f"{bin_path}: cannot read the weights ({e.strerror})") from None
    layers_el, edges_el = root.find("layers"), root.find("edges")
    if layers_el is None or edges_el is None:
        raise ModelError(f"{xml_path}: no <layers> or <edges>")

    # producer of each (to-layer, to-port)
    feeds: Dict[Tuple[int, int], int] = {}
    try:
        for edge in edges_el.findall("edge"):
            key = (int(edge.get("to-layer", "")), int(edge.get("to-port", "")))
            if key in feeds:
                raise ModelError(f"{xml_path}: layer {key[0]} port {key[1]} has two producers")
            feeds[key] = int(edge.get("from-layer", ""))
    except ValueError:
        raise ModelError(f"{xml_path}: an <edge> without integer layer/port ids") from None

    net = IRNetwork(root.get("name", xml_path.stem), [], -1, xml_path, bin_path,
                    len(blob_bytes), [], {xml_path.name: hashlib.sha256(xml_bytes).hexdigest(),
                                          bin_path.name: hashlib.sha256(blob_bytes).hexdigest()})
    by_id: Dict[int, IRLayer] = {}
    for el in layers_el.findall("layer"):
        ltype, lname = el.get("type", ""), el.get("name", "")
        try:
            lid = int(el.get("id", ""))
        except ValueError:
            raise ModelError(f"{xml_path}: layer {lname!r} without an integer id") from None
        where = f"{xml_path.name}: layer {lid} ({lname!r}, {ltype})"
        if ltype not in LAYER_TYPES:
            raise ModelError(f"{where}: unknown layer type {ltype!r} "
                             f"(supported: {', '.join(LAYER_TYPES)})")
        if lid in by_id:
            raise ModelError(f"{where}: duplicate layer id")
        data = el.find("data")
        attrs = dict(data.attrib) if data is not None else {}
        _check_attrs(el, where, ltype, attrs)
        try:
            in_ports = sorted(_children(el, "input"), key=lambda p: int(p.get("id", "")))
            in_shapes = [_shape(p) for p in in_ports]
            out_shape = _shape(_children(el, "output")[0])
            inputs = [feeds[(lid, int(p.get("id", "")))] for p in in_ports]
        except KeyError:
            raise ModelError(f"{where}: an input port has no incoming edge") from None
        except ValueError:
            raise ModelError(f"{where}: a port id or dim is not an integer") from None
        layer = IRLayer(lid, lname, ltype, attrs, inputs, in_shapes, out_shape)
        dtype = _BLOB_DTYPES.get(el.get("precision", root.get("precision", "FP32")))
        for blob in _children(el, "blobs"):
            if blob.tag not in ("weights", "biases"):
                raise ModelError(f"{where}: unexpected blob <{blob.tag}>")
            bdtype = _BLOB_DTYPES.get(blob.get("precision", ""), dtype)
            if bdtype is None:
                raise ModelError(f"{where}: blob precision {el.get('precision')!r} "
                                 "is not supported (FP16, FP32)")
            try:
                offset, size = int(blob.get("offset", "")), int(blob.get("size", ""))
            except ValueError:
                raise ModelError(f"{where}: {blob.tag} without an integer offset/size") from None
            if offset < 0 or size <= 0 or offset + size > len(blob_bytes):
                raise ModelError(f"{where}: {blob.tag} blob at bytes {offset}..{offset + size} "
                                 f"runs past the end of {bin_path.name} ({len(blob_bytes)} "
                                 "bytes): truncated or mismatched .bin")
            try:
                shape = _blob_shape(ltype, attrs, in_shapes, blob.tag)
            except ModelError as e:
                raise ModelError(f"{where}: {e}") from None
            count = int(np.prod(shape))
            if count * bdtype.itemsize != size:
                raise ModelError(f"{where}: {blob.tag} blob has {size} bytes, expected "
                                 f"{count} x {bdtype.itemsize} for shape {list(shape)}")
            values = np.frombuffer(blob_bytes, bdtype, count, offset).astype(np.float32)
            setattr(layer, blob.tag, values.reshape(shape))
            net.blob_ranges.append((offset, size, f"{lid}/{blob.tag}"))
        if ltype in ("Convolution", "ScaleShift", "PReLU") and layer.weights is None:
            raise ModelError(f"{where}: no weights blob")
        if ltype == "ScaleShift" and layer.biases is None:
            raise ModelError(f"{where}: no biases blob")
        by_id[lid] = layer

    for (to_layer, _), from_layer in feeds.items():
        if to_layer not in by_id or from_layer not in by_id:
            raise ModelError(f"{xml_path}: an edge names a missing layer "
                             f"({from_layer} -> {to_layer})")
    net.layers = _topological(by_id, xml_path)
    consumed = {src for layer in net.layers for src in layer.inputs}
    outputs = [layer.id for layer in net.layers if layer.id not in consumed]
    inputs = [layer.id for layer in net.layers if layer.type == "Input"]
    if len(outputs) != 1 or len(inputs) != 1:
        raise ModelError(f"{xml_path}: expected one input and one output layer, found inputs "
                         f"{inputs} and outputs {outputs}")
    net.output_id = outputs[0]
    return net


def _topological(by_id: Dict[int, IRLayer], xml_path: Path) -> List[IRLayer]:
    """Kahn's algorithm, ties broken by layer id (deterministic)."""
    pending = {lid: len(set(layer.inputs)) for lid, layer in by_id.items()}
    users: Dict[int, List[int]] = {lid: [] for lid in by_id}
    for lid, layer in by_id.items():
        for src in sorted(set(layer.inputs)):
            users[src].append(lid)
    ready = sorted(lid for lid, n in pending.items() if n == 0)
    order: List[IRLayer] = []
    while ready:
        lid = ready.pop(0)
        order.append(by_id[lid])
        for user in users[lid]:
            pending[user] -= 1
            if pending[user] == 0:
                ready.append(user)
        ready.sort()
    if len(order) != len(by_id):
        raise ModelError(f"{xml_path}: the graph has a cycle")
    return order


def onnx_tensor_name(layer: IRLayer) -> str:
    """The ONNX tensor that holds ``layer``'s output (``input`` for the Input layer)."""
    return "input" if layer.type == "Input" else f"l{layer.id}_{layer.type.lower()}"


def to_onnx(net: IRNetwork, path: Path) -> None:
    """Write ``net`` as an ONNX model (opset 17, FP32, input ``input`` [batch, 3, 128, 128],
    output ``embeddings`` [batch, D]); same ``net`` -> byte-identical file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: List[Any] = []
    inits: List[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    in_shape: Tuple[int, ...] = ()
    for layer in net.layers:
        out = onnx_tensor_name(layer)
        src = [onnx_tensor_name(net.layer(i)) for i in layer.inputs]
        node_name = f"{layer.type}_{layer.id}"
        if layer.type == "Input":
            in_shape = layer.output_shape
            continue
        if layer.type == "ScaleShift":
            scale = const(f"{out}.scale", layer.blob("weights").reshape(1, -1, 1, 1))
            shift = const(f"{out}.shift", layer.blob("biases").reshape(1, -1, 1, 1))
            nodes.append(helper.make_node("Mul", [src[0], scale], [f"{out}.scaled"],
                                          name=f"{node_name}_mul"))
            nodes.append(helper.make_node("Add", [f"{out}.scaled", shift], [out],
                                          name=f"{node_name}_add"))
        elif layer.type == "Convolution":
            ins = [src[0], const(f"{out}.weight", layer.blob("weights"))]
            if layer.biases is not None:
                ins.append(const(f"{out}.bias", layer.biases))
            nodes.append(helper.make_node(
                "Conv", ins, [out], name=node_name, kernel_shape=layer.ints("kernel"),
                strides=layer.ints("strides"), pads=layer.ints("pads_begin") + layer.ints(
                    "pads_end"), dilations=layer.ints("dilations") if "dilations" in layer.attrs
                else [1] * len(layer.ints("kernel")), group=int(layer.attrs.get("group", "1"))))
        elif layer.type == "PReLU":
            slope = layer.blob("weights")
            if slope.size > 1:
                slope = slope.reshape(-1, 1, 1)
            nodes.append(helper.make_node("PRelu", [src[0], const(f"{out}.slope", slope)],
                                          [out], name=node_name))
        elif layer.type == "Eltwise":
            op = {"sum": "Add", "mul": "Mul"}[layer.attrs["operation"]]
            acc = src[0]
            for k, other in enumerate(src[1:], 1):
                step = out if k == len(src) - 1 else f"{out}.{k}"
                nodes.append(helper.make_node(op, [acc, other], [step], name=f"{node_name}_{k}"))
                acc = step
        elif layer.type == "Activation":
            nodes.append(helper.make_node("Sigmoid", src, [out], name=node_name))
        elif layer.type == "Pooling":
            kernel, pads = layer.ints("kernel"), layer.ints("pads_begin") + layer.ints("pads_end")
            if list(layer.input_shapes[0][2:]) == kernel and not any(pads):
                nodes.append(helper.make_node("GlobalAveragePool", src, [out], name=node_name))
            else:
                nodes.append(helper.make_node(
                    "AveragePool", src, [out], name=node_name, kernel_shape=kernel,
                    strides=layer.ints("strides"), pads=pads,
                    count_include_pad=0 if layer.attrs.get("exclude-pad") == "true" else 1,
                    ceil_mode=1 if layer.attrs.get("rounding_type") == "ceil" else 0))
        else:  # pragma: no cover - read_ir refuses other types
            raise ModelError(f"layer {layer.id}: cannot convert {layer.type}")
    final = net.layer(net.output_id)
    nodes.append(helper.make_node("Flatten", [onnx_tensor_name(final)], ["embeddings"],
                                  name="Flatten_embeddings", axis=1))
    width = int(np.prod(final.output_shape[1:]))
    graph = helper.make_graph(
        nodes, net.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *in_shape[1:]])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", width])],
        initializer=inits)
    model = helper.make_model(graph, producer_name=PRODUCER_NAME,
                              producer_version=str(CONVERTER_VERSION),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = ONNX_IR_VERSION
    model.doc_string = (f"{net.name}: converted from OpenVINO IR v5 by {PRODUCER_NAME} "
                        f"{CONVERTER_VERSION}; input BGR 0-255, output not L2-normalised")
    meta = {"converter": PRODUCER_NAME, "converter_version": str(CONVERTER_VERSION),
            "source_model": net.name, "source_format": "OpenVINO IR v5"}
    for fname, digest in sorted(net.source_sha256.items()):
        meta[f"source_sha256:{fname}"] = digest
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    Path(path).write_bytes(model.SerializeToString(deterministic=True))


def torch_reference(net: IRNetwork, dtype: Any = None) -> Callable[[Any], Dict[int, Any]]:
    """An independent ``torch.nn.functional`` run of ``net``: the returned function maps an
    NCHW input tensor to {layer id: that layer's output} for every layer."""
    import torch
    import torch.nn.functional as F

    dtype = dtype or torch.float32
    params = {(layer.id, kind): torch.from_numpy(getattr(layer, kind)).to(dtype)
              for layer in net.layers for kind in ("weights", "biases")
              if getattr(layer, kind) is not None}

    def run(x: Any) -> Dict[int, Any]:
        out: Dict[int, Any] = {}
        for layer in net.layers:
            w, b = params.get((layer.id, "weights")), params.get((layer.id, "biases"))
            xs = [out[i] for i in layer.inputs]
            if layer.type == "Input":
                y = x.to(dtype)
            elif layer.type == "ScaleShift":
                assert w is not None and b is not None
                y = xs[0] * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
            elif layer.type == "Convolution":
                assert w is not None
                (pt, pl), (pb, pr) = layer.ints("pads_begin"), layer.ints("pads_end")
                y = F.conv2d(F.pad(xs[0], (pl, pr, pt, pb)), w, b, stride=layer.ints("strides"),
                             dilation=layer.ints("dilations") if "dilations" in layer.attrs
                             else 1, groups=int(layer.attrs.get("group", "1")))
            elif layer.type == "PReLU":
                assert w is not None
                y = F.prelu(xs[0], w)
            elif layer.type == "Eltwise":
                y = xs[0]
                for other in xs[1:]:
                    y = y + other if layer.attrs["operation"] == "sum" else y * other
            elif layer.type == "Activation":
                y = torch.sigmoid(xs[0])
            elif layer.type == "Pooling":
                (pt, pl), (pb, pr) = layer.ints("pads_begin"), layer.ints("pads_end")
                if (pt, pl) != (pb, pr):
                    raise NotImplementedError("asymmetric pooling pads")
                y = F.avg_pool2d(xs[0], layer.ints("kernel"), layer.ints("strides"), (pt, pl),
                                 ceil_mode=layer.attrs.get("rounding_type") == "ceil",
                                 count_include_pad=layer.attrs.get("exclude-pad") != "true")
            else:
                raise ModelError(f"layer {layer.id}: no reference for {layer.type}")
            if tuple(y.shape[1:]) != tuple(layer.output_shape[1:]):
                raise ModelError(f"layer {layer.id} ({layer.type}): reference shape "
                                 f"{list(y.shape)}, the IR says {list(layer.output_shape)}")
            out[layer.id] = y
        return out

    return run


def find_sources(src_dir: Path) -> Tuple[Path, Path]:
    """The one ``.xml`` in ``src_dir`` and the ``.bin`` beside it."""
    xmls = sorted(Path(src_dir).glob("*.xml"))
    if len(xmls) != 1:
        raise ModelError(f"{src_dir}: expected one OpenVINO .xml, found {len(xmls)}")
    bin_path = xmls[0].with_suffix(".bin")
    if not bin_path.is_file():
        raise ModelError(f"{src_dir}: {bin_path.name} is missing beside {xmls[0].name}")
    return xmls[0], bin_path


def convert(src_dir: Path, out: Path) -> Dict[str, str]:
    """Check the source checksums, convert ``src_dir``'s IR to ``out`` (written atomically);
    returns {source file name: sha256}."""
    xml_path, bin_path = find_sources(Path(src_dir))
    digests: Dict[str, str] = {}
    for path in (bin_path, xml_path):
        expected = SOURCE_SHA256.get(path.name)
        if expected is None:
            raise ModelError(f"{path}: not a known source file ({', '.join(SOURCE_SHA256)})")
        digest = sha256_file(path)
        if digest != expected:
            raise ModelError(f"{path}: sha256 {digest} does not match the expected {expected} "
                             "(corrupt or a different release)")
        digests[path.name] = digest
    net = read_ir(xml_path)
    if net.source_sha256 != digests:
        raise ModelError(f"{src_dir}: the source files changed while being read")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        to_onnx(net, Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return digests


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``SRC_DIR OUT.onnx``: convert, print the source checksums; 1 on a ModelError."""
    parser = argparse.ArgumentParser(prog="python -m jetkiosk.export.models.openvino_ir",
                                     description="OpenVINO IR v5 face-reid-0095 -> ONNX")
    parser.add_argument("src_dir", type=Path, metavar="SRC_DIR")
    parser.add_argument("out", type=Path, metavar="OUT.onnx")
    args = parser.parse_args(argv)
    try:
        digests = convert(args.src_dir, args.out)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (converter version {CONVERTER_VERSION})")
    for name, digest in sorted(digests.items()):
        print(f"  source {name} sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
