"""A fake ``tensorrt`` (8.6 or 10.3 API, by ``configure``) that enforces the contract of the
documented Python API and really runs the model: an "engine" is the ONNX file plus the build
settings, executed with ONNX Runtime reading and writing the fake pycuda device memory.

Enforced: explicit-batch network flags per version; no removed APIs (no ``build_engine``,
``max_workspace_size``, binding indices); builder-config attributes limited to real ones;
optimisation profiles that cover every dynamic input with min <= opt <= max; input shapes set
and every tensor address bound before ``execute_async_v3``; a CUDA context current for every
call that touches the GPU; calibrators driven as TensorRT drives them.
"""

from __future__ import annotations

import enum
import json
import struct
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
import onnxruntime as ort
from pycuda import driver as cuda

__version__ = "10.3.0"
MAGIC = b"FAKETRT\n"
BUILDS: List[Dict[str, object]] = []  # every build: flags, profiles, calibration, ...


def configure(version: str, dla_cores: int = 0) -> None:
    global __version__
    __version__ = version
    Builder.num_DLA_cores = dla_cores
    BUILDS.clear()


def _major() -> int:
    return int(__version__.split(".")[0])


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass


Logger = ILogger


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    GPU_FALLBACK = 3


class DeviceType(enum.IntEnum):
    GPU = 0
    DLA = 1


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0


class Dims(tuple):
    """trt.Dims(list) -> a shape; a plain tuple here."""


def nptype(dtype: DataType) -> type:
    return {DataType.FLOAT: np.float32}[dtype]


class _Tensor:
    def __init__(self, name: str, shape: Tuple[int, ...]):
        self.name, self.shape = name, shape


class INetworkDefinition:
    def __init__(self, flags: int):
        self.flags = flags
        self.onnx: Optional[bytes] = None
        self._inputs: List[_Tensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, index: int) -> _Tensor:
        return self._inputs[index]


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger):
        self.network, self.errors = network, []

    def parse(self, model: bytes, path: Optional[str] = None) -> bool:
        try:
            proto = onnx.load_from_string(model)
            onnx.checker.check_model(proto)
        except Exception as exc:  # noqa: BLE001 - the real parser reports, it does not raise
            self.errors.append(f"ONNX parse error: {exc}")
            return False
        self.network.onnx = model
        inits = {i.name for i in proto.graph.initializer}
        for value in proto.graph.input:
            if value.name in inits:
                continue
            dims = tuple(d.dim_value if d.dim_value > 0 else -1
                         for d in value.type.tensor_type.shape.dim)
            self.network._inputs.append(_Tensor(value.name, dims))
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: Dict[str, Tuple[tuple, tuple, tuple]] = {}

    def set_shape(self, name: str, low, opt, high) -> None:
        low, opt, high = tuple(low), tuple(opt), tuple(high)
        if not all(a <= b <= c for a, b, c in zip(low, opt, high)) or \
                not len(low) == len(opt) == len(high):
            raise ValueError(f"profile for {name}: need min <= opt <= max, got {low} {opt} {high}")
        self.shapes[name] = (low, opt, high)


class ITimingCache:
    def __init__(self, blob: bytes):
        self.entries = int(blob.decode() or "0") if blob else 0

    def serialize(self) -> bytes:
        return str(self.entries + 1).encode()


class IInt8Calibrator:
    def __init__(self) -> None:
        pass


class IInt8EntropyCalibrator2(IInt8Calibrator):
    algorithm = "EntropyCalibration2"


class IInt8MinMaxCalibrator(IInt8Calibrator):
    algorithm = "MinMaxCalibration"


class IBuilderConfig:
    __slots__ = (
        "DLA_core",
        "_progress_monitor",
        "calibration_profile",
        "default_device_type",
        "flags",
        "int8_calibrator",
        "pool_limits",
        "profiles",
        "timing_cache",
    )

    def __init__(self) -> None:
        self.flags: set = set()
        self.pool_limits: Dict[int, int] = {}
        self.profiles: List[IOptimizationProfile] = []
        self.calibration_profile = None
        self.int8_calibrator = None
        self.default_device_type = DeviceType.GPU
        self.DLA_core = -1
        self.timing_cache: Optional[ITimingCache] = None
        self._progress_monitor = None

    @property
    def progress_monitor(self):
        return self._progress_monitor

    @progress_monitor.setter
    def progress_monitor(self, monitor) -> None:
        if _major() < 10:
            raise AttributeError("'IBuilderConfig' object has no attribute 'progress_monitor'")
        self._progress_monitor = monitor

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self.pool_limits[int(pool)] = size

    def set_flag(self, flag: BuilderFlag) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
        self.calibration_profile = profile
        return True

    def create_timing_cache(self, blob: bytes) -> ITimingCache:
        return ITimingCache(blob)

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self.timing_cache = cache
        return True


class IProgressMonitor:
    def __init__(self) -> None:
        pass


def _scale_hex(amax: float) -> str:
    return struct.pack(">f", amax / 127.0).hex()


class Builder:
    num_DLA_cores = 0
    platform_has_fast_fp16 = True

    def __init__(self, logger: ILogger):
        cuda._require_context()

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        explicit = 1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        if _major() < 10 and not flags & explicit:
            raise RuntimeError("TensorRT 8 parses ONNX only into an EXPLICIT_BATCH network")
        if _major() >= 10 and flags:
            raise RuntimeError("EXPLICIT_BATCH is deprecated in TensorRT 10 and must not be set")
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def _calibrate(self, network: INetworkDefinition, config: IBuilderConfig) -> Dict[str, float]:
        calibrator = config.int8_calibrator
        cached = calibrator.read_calibration_cache()
        if cached:
            header = bytes(cached).decode().splitlines()[0]
            if header == f"TRT-{_version_int()}-{calibrator.algorithm}":
                return {"from_cache": 1.0}
        names = [t.name for t in network._inputs]
        batch = calibrator.get_batch_size()
        amax = 0.0
        batches = 0
        while True:
            pointers = calibrator.get_batch(names)
            if not pointers:
                break
            shape = config.calibration_profile.shapes[names[0]][1] if \
                config.calibration_profile else network._inputs[0].shape
            shape = (batch,) + tuple(shape[1:])
            count = int(np.prod(shape))
            raw = bytes(cuda.device_bytes(int(pointers[0]))[:count * 4])
            amax = max(amax, float(np.abs(np.frombuffer(raw, np.float32)).max()))
            batches += 1
        if batches == 0:
            raise RuntimeError("calibrator gave no batches")
        text = f"TRT-{_version_int()}-{calibrator.algorithm}\n{names[0]}: {_scale_hex(amax)}\n"
        calibrator.write_calibration_cache(text.encode())
        return {"batches": float(batches), "amax": amax}

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig):
        cuda._require_context()
        if WORKSPACE_REQUIRED and int(MemoryPoolType.WORKSPACE) not in config.pool_limits:
            raise RuntimeError("no workspace limit set")
        profiles = {}
        for tensor in network._inputs:
            if -1 in tensor.shape:
                covering = [p for p in config.profiles if tensor.name in p.shapes]
                if not covering:
                    raise RuntimeError(f"dynamic input {tensor.name} has no optimisation profile")
                profiles[tensor.name] = [list(s) for s in covering[0].shapes[tensor.name]]
        if config.default_device_type == DeviceType.DLA and \
                not (0 <= config.DLA_core < self.num_DLA_cores):
            raise RuntimeError("DLA core out of range")
        calibration = self._calibrate(network, config) if BuilderFlag.INT8 in config.flags and \
            config.int8_calibrator is not None else None
        monitor = config.progress_monitor if _major() >= 10 else None
        if monitor is not None:
            monitor.phase_start("Building engine", None, 2)
            for step in range(2):
                if not monitor.step_complete("Building engine", step):
                    return None
            monitor.phase_finish("Building engine")
        record = {"version": __version__, "flags": network.flags,
                  "builder_flags": sorted(f.name for f in config.flags),
                  "profiles": profiles, "device": config.default_device_type.name,
                  "dla_core": config.DLA_core, "calibration": calibration}
        BUILDS.append(record)
        header = json.dumps(record).encode()
        return MAGIC + struct.pack("<I", len(header)) + header + network.onnx


def _version_int() -> int:
    major, minor, patch = (int(v) for v in __version__.split(".")[:3])
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


WORKSPACE_REQUIRED = True


class ICudaEngine:
    def __init__(self, record: dict, model: bytes):
        self.record = record
        self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: tuple(d if isinstance(d, int) else -1 for d in i.shape)
                       for i in self.session.get_inputs()}
        self.outputs = {o.name: tuple(d if isinstance(d, int) else -1 for d in o.shape)
                        for o in self.session.get_outputs()}
        self.names = list(self.inputs) + list(self.outputs)

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
        return self.inputs.get(name) or self.outputs[name]

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType.FLOAT

    def create_execution_context(self) -> IExecutionContext:
        cuda._require_context()
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine):
        self.engine = engine
        self.shapes: Dict[str, Tuple[int, ...]] = {}
        self.addresses: Dict[str, int] = {}
        self._out_shapes: Dict[tuple, Dict[str, Tuple[int, ...]]] = {}
        self.executions = 0

    def set_input_shape(self, name: str, shape) -> bool:
        shape = tuple(shape)
        profile = self.engine.record["profiles"].get(name)
        if profile is not None:
            low, _, high = profile
            if not all(a <= s <= b for a, s, b in zip(low, shape, high)):
                return False
        self.shapes[name] = shape
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        if name not in self.engine.names:
            raise KeyError(name)
        self.addresses[name] = int(address)
        return True

    def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
        if name in self.engine.inputs:
            return self.shapes.get(name, self.engine.inputs[name])
        if set(self.shapes) != set(self.engine.inputs):
            raise RuntimeError("output shape asked before every input shape was set")
        key = tuple(sorted(self.shapes.items()))
        if key not in self._out_shapes:
            feeds = {n: np.zeros(s, np.float32) for n, s in self.shapes.items()}
            outs = self.engine.session.run(list(self.engine.outputs), feeds)
            self._out_shapes[key] = {n: o.shape for n, o in zip(self.engine.outputs, outs)}
        return self._out_shapes[key][name]

    def execute_async_v3(self, stream_handle: int) -> bool:
        cuda._require_context()
        missing = [n for n in self.engine.names if n not in self.addresses]
        if missing or set(self.shapes) != set(self.engine.inputs):
            raise RuntimeError(f"execute_async_v3: unbound tensors {missing} or unset shapes")
        stream = cuda.STREAMS[stream_handle]
        shapes = dict(self.shapes)

        def work() -> None:
            feeds = {}
            for name, shape in shapes.items():
                count = int(np.prod(shape))
                raw = bytes(cuda.device_bytes(self.addresses[name])[:count * 4])
                feeds[name] = np.frombuffer(raw, np.float32).reshape(shape)
            outs = self.engine.session.run(list(self.engine.outputs), feeds)
            for name, value in zip(self.engine.outputs, outs):
                data = np.ascontiguousarray(value, np.float32).tobytes()
                target = cuda.device_bytes(self.addresses[name])
                if len(data) > len(target):
                    raise RuntimeError(f"output {name}: buffer too small")
                target[:len(data)] = data

        stream.enqueue(work)
        self.executions += 1
        return True


class Runtime:
    def __init__(self, logger: ILogger):
        cuda._require_context()

    def deserialize_cuda_engine(self, blob: bytes) -> Optional[ICudaEngine]:
        cuda._require_context()
        blob = bytes(blob)
        if not blob.startswith(MAGIC):
            return None
        try:
            size = struct.unpack("<I", blob[len(MAGIC):len(MAGIC) + 4])[0]
            start = len(MAGIC) + 4
            record = json.loads(blob[start:start + size])
        except (struct.error, ValueError):
            return None  # TensorRT logs an error and returns None for a corrupt engine
        if record["version"] != __version__:
            return None  # engines do not cross TensorRT versions
        return ICudaEngine(record, blob[start + size:])
