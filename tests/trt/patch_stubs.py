"""Copy the ``tensorrt-stubs`` package into tests/trt/stubs with the fixes mypy needs.

The stubs (generated from TensorRT 10.13) do not check as published: a parameter named
``in``, a parameter without a default after ones with defaults, an import of
``tensorrt_libs`` (NVIDIA's native-library wheel, which has no stubs), and a module-level
``bool: DataType`` that shadows the builtin in every annotation. Usage:

    python tests/trt/patch_stubs.py [tensorrt_stubs-*.whl]   # default: pip download it
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "10.13.0.35.1"
HERE = Path(__file__).resolve().parent
OUT = HERE / "stubs"


def download(dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest),
                    f"tensorrt-stubs=={VERSION}"], check=True)
    return next(dest.glob("tensorrt_stubs-*.whl"))


def fix_signature(line: str) -> str:
    """``in`` -> ``in_``; parameters after a defaulted one get ``= ...``."""
    line = re.sub(r"\bin: ", "in_: ", line)
    match = re.match(r"(\s*def \w+\()(.*)(\)( -> .*)?:\s*)$", line)
    if not match or "=" not in match.group(2):
        return line
    params, seen_default, depth, current = [], False, 0, ""
    for char in match.group(2) + ",":  # split on top-level commas only
        if char == "," and depth == 0:
            params.append(current.strip())
            current = ""
            continue
        depth += char in "[(" and 1 or char in "])" and -1 or 0
        current += char
    fixed = []
    for param in params:
        if "=" in param:
            seen_default = True
        elif seen_default and not param.startswith("*") and param != "/":
            param += " = ..."
        fixed.append(param)
    return match.group(1) + ", ".join(fixed) + match.group(3)


def unshadow_bool(line: str) -> str:
    """The module defines ``bool: DataType``, which shadows the builtin in annotations."""
    if line.startswith("bool:"):
        return line
    line = re.sub(r"(?<![\w.'\"`])bool(?![\w'`])", "builtins.bool", line)
    return line + "\nimport builtins" if line == "import typing" else line


def patch(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.startswith("import tensorrt_libs")]
    lines = [unshadow_bool(fix_signature(line)) for line in lines]
    return "\n".join(lines).replace("'tensorrt_libs', ", "") + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(sys.argv[1]) if len(sys.argv) > 1 else download(Path(tmp))
        shutil.rmtree(OUT, ignore_errors=True)
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.endswith(".pyi"):
                    target = OUT / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(patch(archive.read(name).decode()))
    (OUT / "SOURCE").write_text(f"tensorrt-stubs=={VERSION}, patched by tests/trt/patch_stubs.py\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
