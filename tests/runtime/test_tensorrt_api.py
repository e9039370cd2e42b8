"""The TensorRT adapter checked without TensorRT: typed against the tensorrt-stubs package, and
every TensorRT name it uses present in the compiled bindings of 8.6.1 and 10.3.0."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

import pytest

from conftest import ROOT

ADAPTER = ROOT / "edge" / "runtime" / "tensorrt" / "adapter.py"
TRT_DIR = ROOT / "tests" / "trt"
VERSIONS = ("8.6.1", "10.3.0")
# Names the adapter uses only behind `TRT_MAJOR >= 10` (the progress API is new in 10.0).
ONLY_10 = {"IProgressMonitor", "progress_monitor"}
# Gone in TensorRT 10 (or never to be used): the adapter must not mention them.
REMOVED = {"build_engine", "max_workspace_size", "get_binding_index", "execute_async_v2",
           "execute_v2", "num_bindings", "get_binding_shape", "set_binding_shape",
           "binding_is_input", "max_batch_size"}


def api(version: str) -> Set[str]:
    lines = (TRT_DIR / f"api-{version}.txt").read_text().splitlines()
    return {line for line in lines if line and not line.startswith("#")}


def present(name: str, names: Set[str]) -> bool:
    """As a whole string, or as the tail after "_" of a longer one: the linker shares the
    tails of equal-ending strings (TensorIOMode.INPUT is stored inside CONDITIONAL_INPUT)."""
    return name in names or any(n.endswith("_" + name) for n in names)


def stub_names() -> Set[str]:
    """Every class, method, property and enum member the stubs declare."""
    tree = ast.parse((TRT_DIR / "stubs/tensorrt_bindings/tensorrt.pyi").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("__")}


def used_names(source: str) -> Dict[str, int]:
    """Names the adapter reads off ``trt``, and every attribute name it uses that the stubs
    know as TensorRT API (methods and properties on builders, engines, contexts, ...)."""
    tree = ast.parse(source)
    known = stub_names() | {"nptype", "__version__"}
    used: Dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            root = node
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id == "trt" or node.attr in known:
                used.setdefault(node.attr, node.lineno)
    return used


@pytest.mark.parametrize("version", VERSIONS)
def test_every_tensorrt_name_the_adapter_uses_exists_in_the_compiled_bindings(version):
    names = api(version)
    used = used_names(ADAPTER.read_text())
    assert {"build_serialized_network", "execute_async_v3", "set_tensor_address",
            "set_input_shape", "IInt8EntropyCalibrator2", "set_memory_pool_limit"} <= set(used)
    expected_missing = ONLY_10 if version.startswith("8.") else set()
    missing = {n: line for n, line in used.items()
               if not present(n, names) and n not in expected_missing}
    assert not missing, f"not in tensorrt {version}: {missing}"
    for name in expected_missing:  # the version gate is really needed
        assert not present(name, names)


def test_the_extracted_lists_tell_the_versions_apart():
    old, new = api("8.6.1"), api("10.3.0")
    assert "build_engine" in old and "build_engine" not in new
    assert "get_binding_index" in old and "get_binding_index" not in new
    assert "IProgressMonitor" in new and "IProgressMonitor" not in old
    assert {"nptype", "__version__"} <= old & new  # from the packages' __init__.py


def test_the_adapter_uses_no_removed_api_and_is_the_only_tensorrt_importer():
    used = used_names(ADAPTER.read_text())
    assert not REMOVED & set(used)
    importers = []
    for path in list((ROOT / "edge").rglob("*.py")) + list((ROOT / "calibration").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(m.split(".")[0] in ("tensorrt", "pycuda") for m in modules):
                importers.append(path.relative_to(ROOT).as_posix())
    assert sorted(set(importers)) == ["edge/runtime/tensorrt/adapter.py"]


def mypy(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file",
                           str(TRT_DIR / "mypy.ini"), str(path)],
                          cwd=ROOT, capture_output=True, text=True, check=False)


def test_mypy_checks_the_adapter_against_the_tensorrt_stubs(tmp_path):
    result = mypy(ADAPTER)
    assert result.returncode == 0, result.stdout + result.stderr
    # the same check catches a call TensorRT 10 no longer has
    broken = tmp_path / "broken_adapter.py"
    broken.write_text(ADAPTER.read_text().replace(
        "builder.build_serialized_network(network, config)",
        "builder.build_engine(network, config)"))
    result = mypy(broken)
    assert result.returncode == 1 and '"Builder" has no attribute "build_engine"' in result.stdout
