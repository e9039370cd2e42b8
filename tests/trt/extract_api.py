"""List the names that TensorRT's compiled Python bindings define, per version, without TensorRT.

The bindings wheels (``tensorrt-bindings==8.6.1`` for JetPack 5's API, ``tensorrt-cu12-bindings
==10.3.0`` for JetPack 6) download from PyPI, but their module cannot be imported without the
native libraries. pybind11 keeps every class, method, property and enum member name as a C
string in ``tensorrt.so``, and the package's ``__init__.py`` adds a few Python helpers, so both
are read as text. Output: tests/trt/api-<version>.txt, one name per line, read by
tests/runtime/test_tensorrt_api.py. Usage:

    python tests/trt/extract_api.py [wheel ...]   # default: pip download both wheels
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Set

WHEELS = ["tensorrt-bindings==8.6.1", "tensorrt-cu12-bindings==10.3.0"]
HERE = Path(__file__).resolve().parent
IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]{1,63}(?![A-Za-z0-9_])")


def compiled_names(blob: bytes) -> Set[str]:
    """Identifier-like C strings, without C++ mangled symbols."""
    return {m.decode() for m in IDENTIFIER.findall(blob) if not m.startswith(b"_Z")}


def python_names(source: str) -> Set[str]:
    """Top-level functions, classes and assignments of the package's ``__init__.py``."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def extract(wheel: Path) -> None:
    version = wheel.name.split("-")[1]
    with zipfile.ZipFile(wheel) as archive:
        so = next(n for n in archive.namelist() if re.search(r"tensorrt[^/]*\.so$", n))
        init = next(n for n in archive.namelist() if n.endswith("/__init__.py"))
        names = compiled_names(archive.read(so)) | python_names(archive.read(init).decode())
    out = HERE / f"api-{version}.txt"
    out.write_text(f"# names in {wheel.name} ({so}, {init}); tests/trt/extract_api.py\n"
                   + "\n".join(sorted(names)) + "\n")
    print(f"{out}: {len(names)} names")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheels = [Path(a) for a in sys.argv[1:]]
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--python-version", "3.11", "--only-binary=:all:", "-d", tmp, *WHEELS],
                           check=True)
            wheels = sorted(Path(tmp).glob("*.whl"))
        for wheel in wheels:
            extract(wheel)


if __name__ == "__main__":
    main()
