"""A fake ``pycuda.driver`` that enforces the contract real CUDA would: a context current on
the calling thread for every CUDA call, page-locked host memory for async copies, async work
done only when the stream is synchronized, and every allocation freed exactly once."""

from __future__ import annotations

import threading
from typing import Callable, ClassVar, Dict, List, Optional

import numpy as np


class LogicError(RuntimeError):  # pycuda's name for API misuse
    pass


class State:
    initialised = False
    next_address = 0x7F0000000000
    memory: ClassVar[Dict[int, bytearray]] = {}
    freed: ClassVar[List[int]] = []
    stacks = threading.local()
    pushes = 0


def reset() -> None:
    State.initialised = False
    State.memory = {}
    State.freed = []
    State.stacks = threading.local()
    State.pushes = 0
    STREAMS.clear()


def _stack() -> list:
    if not hasattr(State.stacks, "items"):
        State.stacks.items = []
    return State.stacks.items


def _require_context() -> None:
    if not State.initialised:
        raise LogicError("cuInit has not been called")
    if not _stack():
        raise LogicError("no CUDA context is current on this thread")


def init() -> None:
    State.initialised = True


class Context:
    def push(self) -> None:
        State.pushes += 1
        _stack().append(self)

    @staticmethod
    def pop() -> None:
        if not _stack():
            raise LogicError("context stack is empty")
        _stack().pop()


class Device:
    def __init__(self, ordinal: int):
        if not State.initialised:
            raise LogicError("cuInit has not been called")
        self.ordinal = ordinal

    def name(self) -> str:
        return "Fake Orin"

    def compute_capability(self):
        return (8, 7)

    def retain_primary_context(self) -> Context:
        return Context()


class DeviceAllocation:
    def __init__(self, nbytes: int):
        _require_context()
        self.address = State.next_address
        State.next_address += max(nbytes, 1) + 256
        State.memory[self.address] = bytearray(nbytes)

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        _require_context()
        if self.address not in State.memory:
            raise LogicError("double free")
        del State.memory[self.address]
        State.freed.append(self.address)


def mem_alloc(nbytes: int) -> DeviceAllocation:
    return DeviceAllocation(int(nbytes))


class PinnedArray(np.ndarray):
    """What pagelocked_empty returns; slices and views stay pinned."""


def pagelocked_empty(shape, dtype) -> PinnedArray:
    _require_context()
    return np.zeros(shape, dtype).view(PinnedArray)


def device_bytes(address: int) -> bytearray:
    for start, buffer in State.memory.items():
        if start <= address < start + max(len(buffer), 1):
            return buffer
    raise LogicError(f"address {address:#x} is not allocated")


STREAMS: Dict[int, Stream] = {}


class Stream:
    def __init__(self) -> None:
        _require_context()
        self.pending: List[Callable[[], None]] = []
        self.handle = id(self)
        STREAMS[self.handle] = self

    def enqueue(self, work: Callable[[], None]) -> None:
        _require_context()
        self.pending.append(work)

    def synchronize(self) -> None:
        _require_context()
        for work in self.pending:
            work()
        self.pending.clear()


def _htod(dest: DeviceAllocation, src: np.ndarray) -> None:
    data = np.ascontiguousarray(src).tobytes()
    target = State.memory[int(dest)]
    if len(data) > len(target):
        raise LogicError(f"copy of {len(data)} bytes into a {len(target)}-byte allocation")
    target[:len(data)] = data


def _dtoh(dest: np.ndarray, src: DeviceAllocation) -> None:
    flat = dest.reshape(-1).view(np.uint8)
    source = State.memory[int(src)]
    flat[:] = np.frombuffer(bytes(source[:flat.size]), np.uint8)


def memcpy_htod(dest: DeviceAllocation, src: np.ndarray) -> None:
    _require_context()
    _htod(dest, src)


def _pinned(array: np.ndarray) -> None:
    if not isinstance(array, PinnedArray):
        raise LogicError("async copies need page-locked host memory")


def memcpy_htod_async(dest: DeviceAllocation, src: np.ndarray, stream: Stream) -> None:
    _pinned(src)
    stream.enqueue(lambda: _htod(dest, src))  # reads the buffer when the stream runs


def memcpy_dtoh_async(dest: np.ndarray, src: DeviceAllocation, stream: Stream) -> None:
    _pinned(dest)
    stream.enqueue(lambda: _dtoh(dest, src))


def live_allocations() -> int:
    return len(State.memory)


def current_context() -> Optional[Context]:
    stack = _stack()
    return stack[-1] if stack else None
