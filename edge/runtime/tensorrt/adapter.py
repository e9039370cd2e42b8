"""The only module that imports ``tensorrt`` and ``pycuda``: engine building, INT8
calibrators and engine execution, written against NVIDIA's documented Python API for
TensorRT 8.5 (JetPack 5) and 10.x (JetPack 6) with one code path.

Rules that keep one path valid for both: tensors by name (``num_io_tensors``,
``get_tensor_name``, ``set_tensor_address``, ``set_input_shape``, ``execute_async_v3``; no
binding indices), ``build_serialized_network`` (no ``build_engine``), memory-pool limits (no
``max_workspace_size``), and the EXPLICIT_BATCH flag only where 8.x needs it. Names used
here are checked against both versions' compiled bindings and typed against the
``tensorrt-stubs`` package (tests/test_tensorrt_api.py).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import pycuda.driver as cuda
import tensorrt as trt

log = logging.getLogger(__name__)

TRT_VERSION: str = trt.__version__
TRT_MAJOR = int(TRT_VERSION.split(".")[0])
Shape = Tuple[int, ...]


class TensorRTError(RuntimeError):
    """TensorRT refused to parse, build, deserialize or run."""


class _Logger(trt.ILogger):
    """TensorRT's messages into Python logging; errors are kept for the exception text."""

    LEVELS: ClassVar[Dict[trt.ILogger.Severity, int]] = {
        trt.ILogger.Severity.INTERNAL_ERROR: logging.ERROR,
        trt.ILogger.Severity.ERROR: logging.ERROR,
        trt.ILogger.Severity.WARNING: logging.WARNING,
        trt.ILogger.Severity.INFO: logging.DEBUG,
        trt.ILogger.Severity.VERBOSE: logging.DEBUG}

    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.errors: List[str] = []

    def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
        level = self.LEVELS.get(severity, logging.INFO)
        if level >= logging.ERROR:
            self.errors.append(msg)
        log.log(level, "TensorRT: %s", msg)


_LOGGER: Optional[_Logger] = None


def trt_logger() -> _Logger:
    """One logger per process, as TensorRT requires."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = _Logger()
    return _LOGGER


# ------------------------------------------------------------------ CUDA context
class CudaDevice:
    """The GPU's primary context (shared with every other CUDA user in the process),
    retained once and pushed onto whichever thread runs CUDA work."""

    _lock = threading.Lock()
    _instance: Optional[CudaDevice] = None

    def __init__(self, ordinal: int = 0):
        cuda.init()
        self.device = cuda.Device(ordinal)
        self.context = self.device.retain_primary_context()

    @classmethod
    def get(cls) -> CudaDevice:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def identity(self) -> str:
        """GPU name and compute capability, part of an engine's cache key."""
        major, minor = self.device.compute_capability()
        return f"{self.device.name()} sm{major}{minor}"

    def push(self) -> None:
        self.context.push()

    @staticmethod
    def pop() -> None:
        cuda.Context.pop()


class _Pushed:
    """``with _Pushed(device):`` makes the primary context current on this thread."""

    def __init__(self, device: CudaDevice):
        self.device = device

    def __enter__(self) -> CudaDevice:
        self.device.push()
        return self.device

    def __exit__(self, *exc: object) -> None:
        self.device.pop()


# ------------------------------------------------------------------ building
@dataclass
class Profile:
    """min/opt/max shape per dynamic input."""

    shapes: Dict[str, Tuple[Shape, Shape, Shape]]


@dataclass
class CalibrationFeed:
    """Implicit INT8: batches for TensorRT's calibrator and where its cache lives."""

    algorithm: str  # entropy (IInt8EntropyCalibrator2) | minmax (IInt8MinMaxCalibrator)
    batches: Callable[[], Iterator[np.ndarray]]  # NCHW float32, ``batch_size`` each
    batch_size: int
    cache_path: Path


@dataclass
class BuildSpec:
    """What ``build_engine`` makes: precision, profiles, DLA, workspace, caches."""

    precision: str = "fp16"  # fp32 | fp16 | int8
    profiles: List[Profile] = field(default_factory=list)
    workspace_mb: int = 1024
    dla_core: int = -1  # -1: GPU only; else DLA core with GPU fallback
    timing_cache: Optional[Path] = None
    calibration: Optional[CalibrationFeed] = None  # implicit INT8 (not for QDQ models)


def _network_flags() -> int:
    if TRT_MAJOR >= 10:
        return 0  # explicit batch is the only mode; the flag is deprecated
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _parse(builder: trt.Builder, onnx_path: Path) -> Tuple[trt.INetworkDefinition, trt.OnnxParser]:
    network = builder.create_network(_network_flags())
    parser = trt.OnnxParser(network, trt_logger())
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"{onnx_path}: the ONNX parser refused it: {errors}")
    return network, parser


def _shape(dims: trt.Dims) -> Shape:
    return tuple(dims[i] for i in range(len(dims)))


def _configure(builder: trt.Builder, spec: BuildSpec,
               calibrator: Optional[trt.IInt8Calibrator]) -> trt.IBuilderConfig:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
    if spec.precision in ("fp16", "int8") and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)  # layers INT8 cannot take run in FP16
    if spec.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if calibrator is not None:
            config.int8_calibrator = calibrator
    for shapes in spec.profiles:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.shapes.items():
            profile.set_shape(name, trt.Dims(list(low)), trt.Dims(list(opt)),
                              trt.Dims(list(high)))
        config.add_optimization_profile(profile)
        if calibrator is not None:
            config.set_calibration_profile(profile)
    if spec.dla_core >= 0:
        if builder.num_DLA_cores <= spec.dla_core:
            raise TensorRTError(f"dla_core {spec.dla_core}: this device has "
                                f"{builder.num_DLA_cores} DLA cores")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = spec.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return config


def build_engine(onnx_path: Path, spec: BuildSpec,
                 progress: Optional[Callable[[str], None]] = None) -> bytes:
    """ONNX file -> serialized engine (bytes). Reads and updates ``spec.timing_cache``."""
    feed = spec.calibration if spec.precision == "int8" else None
    calibrator = _Calibrator.make(feed) if feed is not None else None
    with _Pushed(CudaDevice.get()):
        try:
            return _build(onnx_path, spec, calibrator, progress)
        finally:
            if calibrator is not None:
                calibrator.release()


def _build(onnx_path: Path, spec: BuildSpec, calibrator: Optional[_Calibrator],
           progress: Optional[Callable[[str], None]]) -> bytes:
    builder = trt.Builder(trt_logger())
    network, _parser = _parse(builder, onnx_path)
    config = _configure(builder, spec, calibrator.calibrator if calibrator else None)
    cache_blob = spec.timing_cache.read_bytes() if spec.timing_cache and \
        spec.timing_cache.is_file() else b""
    timing_cache = config.create_timing_cache(cache_blob)
    config.set_timing_cache(timing_cache, False)
    if progress is not None and TRT_MAJOR >= 10:  # the progress API is new in 10.0
        config.progress_monitor = _progress_monitor(progress)
    trt_logger().errors.clear()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"{onnx_path}: engine build failed: "
                            + ("; ".join(trt_logger().errors) or "see the TensorRT log"))
    if spec.timing_cache is not None:
        spec.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        spec.timing_cache.write_bytes(bytes(timing_cache.serialize()))
    return bytes(serialized)


def _progress_monitor(report: Callable[[str], None]) -> trt.IProgressMonitor:
    class Monitor(trt.IProgressMonitor):
        """Reports each build phase and step (TensorRT 10's progress API)."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.steps: Dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            self.steps[phase_name] = num_steps
            report(f"{phase_name}: started ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            report(f"{phase_name}: {step + 1}/{self.steps.get(phase_name, '?')}")
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            report(f"{phase_name}: done")

    return Monitor()


# ------------------------------------------------------------------ calibrators
class _Calibrator:
    """An IInt8EntropyCalibrator2 or IInt8MinMaxCalibrator fed through pycuda from a
    CalibrationFeed, reading and writing TensorRT's calibration cache; frees its buffer."""

    def __init__(self, calibrator: trt.IInt8Calibrator, holder: Dict[str, cuda.DeviceAllocation]):
        self.calibrator = calibrator
        self._holder = holder

    @classmethod
    def make(cls, feed: CalibrationFeed) -> _Calibrator:
        bases = {"entropy": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}
        if feed.algorithm not in bases:
            raise TensorRTError(f"calibration algorithm {feed.algorithm!r}: choose one of "
                                f"{', '.join(bases)}")
        base = bases[feed.algorithm]
        holder: Dict[str, cuda.DeviceAllocation] = {}

        class Calibrator(base):  # type: ignore[valid-type,misc]
            def __init__(self) -> None:
                base.__init__(self)
                self.source = feed.batches()

            def get_batch_size(self) -> int:
                return feed.batch_size

            def get_batch(self, names: List[str]) -> Optional[List[int]]:
                batch = next(self.source, None)
                if batch is None:
                    return None  # calibration data exhausted
                batch = np.ascontiguousarray(batch, dtype=np.float32)
                if "input" not in holder:
                    holder["input"] = cuda.mem_alloc(batch.nbytes)
                cuda.memcpy_htod(holder["input"], batch)
                return [int(holder["input"])]

            def read_calibration_cache(self) -> Optional[bytes]:
                path = feed.cache_path
                return path.read_bytes() if path.is_file() else None

            def write_calibration_cache(self, cache: bytes) -> None:
                feed.cache_path.parent.mkdir(parents=True, exist_ok=True)
                feed.cache_path.write_bytes(bytes(cache))

        return cls(Calibrator(), holder)

    def release(self) -> None:
        for allocation in self._holder.values():
            allocation.free()
        self._holder.clear()


# ------------------------------------------------------------------ execution
@dataclass
class _Binding:
    name: str
    dtype: np.dtype
    host: np.ndarray  # page-locked
    device: cuda.DeviceAllocation
    capacity: int  # bytes


@dataclass
class TensorInfo:
    name: str
    is_input: bool
    shape: Shape  # -1 for a dynamic axis
    dtype: np.dtype


class EngineRunner:
    """One deserialized engine with its execution context and stream. Call ``run`` from any
    thread: the primary context is pushed for the call, and calls are serialized."""

    def __init__(self, engine_blob: bytes, where: str):
        self.device = CudaDevice.get()
        self._lock = threading.Lock()
        self._bindings: Dict[str, _Binding] = {}
        with _Pushed(self.device):
            self.runtime = trt.Runtime(trt_logger())
            engine = self.runtime.deserialize_cuda_engine(engine_blob)
            if engine is None:
                raise TensorRTError(f"{where}: TensorRT cannot deserialize it (built by another "
                                    "TensorRT version or for another GPU, or corrupt)")
            self.engine: trt.ICudaEngine = engine
            self.context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
        self.tensors = [self._info(self.engine.get_tensor_name(i))
                        for i in range(self.engine.num_io_tensors)]

    def _info(self, name: str) -> TensorInfo:
        return TensorInfo(name, self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                          _shape(self.engine.get_tensor_shape(name)),
                          np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))))

    def _binding(self, info: TensorInfo, shape: Shape) -> _Binding:
        """A pinned host buffer and a device buffer big enough for ``shape``; grown, not shrunk."""
        nbytes = int(np.prod(shape)) * info.dtype.itemsize
        binding = self._bindings.get(info.name)
        if binding is None or binding.capacity < nbytes:
            if binding is not None:
                binding.device.free()
            capacity = max(nbytes, 1)
            binding = _Binding(info.name, info.dtype,
                               cuda.pagelocked_empty(capacity // info.dtype.itemsize, info.dtype),
                               cuda.mem_alloc(capacity), capacity)
            self._bindings[info.name] = binding
            self.context.set_tensor_address(info.name, int(binding.device))
        return binding

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with self._lock, _Pushed(self.device):
            for info in self.tensors:
                if info.is_input:
                    array = np.ascontiguousarray(feeds[info.name], dtype=info.dtype)
                    binding = self._binding(info, array.shape)
                    if not self.context.set_input_shape(info.name, array.shape):
                        raise TensorRTError(f"input {info.name}: shape {array.shape} is outside "
                                            "the engine's optimisation profile")
                    staged = binding.host[:array.size]
                    staged[:] = array.ravel()
                    cuda.memcpy_htod_async(binding.device, staged, self.stream)
            outputs: Dict[str, np.ndarray] = {}
            for info in self.tensors:
                if not info.is_input:
                    shape = _shape(self.context.get_tensor_shape(info.name))
                    binding = self._binding(info, shape)
                    outputs[info.name] = binding.host[:int(np.prod(shape))].reshape(shape)
            if not self.context.execute_async_v3(self.stream.handle):
                raise TensorRTError("execute_async_v3 failed: " + "; ".join(trt_logger().errors))
            for name in outputs:
                binding = self._bindings[name]
                cuda.memcpy_dtoh_async(binding.host, binding.device, self.stream)
            self.stream.synchronize()
            # copies: the pinned buffers are reused by the next call
            return {name: array.copy() for name, array in outputs.items()}

    def close(self) -> None:
        """Free device buffers, then context, engine and runtime, in that order."""
        with self._lock, _Pushed(self.device):
            self.stream.synchronize()
            for binding in self._bindings.values():
                binding.device.free()
            self._bindings.clear()
            del self.context
            del self.engine
            del self.runtime


def device_identity() -> str:
    return CudaDevice.get().identity()
