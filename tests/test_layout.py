"""The tree shows the architecture: subpackages in layers, imports only downwards, every
package shipped, empty ``__init__.py`` files."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set

import pytest

from conftest import ROOT

# Lowest first. A module may import its own package and the packages of lower layers; packages
# that share a layer are independent of each other. calibration/ and export/ are the device's
# and the workstation's tools over edge/ (export/'s own modules are shared by its
# subpackages); the command line sits on top and wires them all.
LAYERS: List[Set[str]] = [
    {"edge.core"},
    {"edge.runtime", "edge.capture", "edge.service"},
    {"edge.faces"},
    {"edge.mqtt"},
    {"edge.node"},
    {"edge.kiosk"},
    {"calibration", "export"},
    {"export.models"},
    {"export.style"},
    {"export.encoder"},
    {"edge.cli"},
]
SOURCES = ("edge", "calibration", "export")


def layer_of(module: str) -> str:
    """The layered package a dotted module (without ``jetkiosk.``) belongs to: its top-level
    package's subpackage, or the top-level package for a module directly in it."""
    parts = module.split(".")
    return ".".join(parts[:2]) if (ROOT.joinpath(*parts[:2]) / "__init__.py").is_file() \
        else parts[0]


RANK: Dict[str, int] = {pkg: rank for rank, group in enumerate(LAYERS) for pkg in group}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = ROOT) -> List[str]:
    """Every jetkiosk module ``path`` imports, at the top or inside a function."""
    module = module_name(path, root)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found.extend(f"{target}.{a.name}" if not node.module else target
                         for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jetkiosk."):
            found.append(node.module[len("jetkiosk."):])  # type: ignore[index]
        elif isinstance(node, ast.Import):
            found.extend(a.name[len("jetkiosk."):] for a in node.names
                         if a.name.startswith("jetkiosk."))
    return found


def sources() -> List[Path]:
    return sorted(p for top in SOURCES for p in (ROOT / top).rglob("*.py"))


def upward_imports(paths: List[Path], root: Path = ROOT) -> List[str]:
    wrong = []
    for path in paths:
        own = layer_of(module_name(path, root))
        for target in imports(path, root):
            other = layer_of(target)
            if other == own or other not in RANK:  # systemd/ is data
                continue
            if RANK[other] >= RANK[own]:
                wrong.append(f"{path.relative_to(root)}: {own} imports {target} ({other})")
    return wrong


def test_every_package_has_a_layer():
    packages = {layer_of(module_name(p)) for p in sources() if p.parent != ROOT / "edge"}
    assert packages == set(RANK)


def test_imports_only_go_down_the_layers():
    assert upward_imports(sources()) == []


def test_the_check_catches_an_upward_import(tmp_path):
    """faces importing mqtt, runtime importing kiosk, sibling layers importing each other."""
    for where, line in (("edge/faces/x.py", "from ..mqtt.topics import Topics"),
                        ("edge/runtime/x.py", "from jetkiosk.edge.kiosk import catalog"),
                        ("edge/capture/x.py", "from ..runtime.backend import Backend"),
                        ("edge/node/x.py", "def f():\n    from ..cli import main")):
        path = tmp_path / where
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line + "\n")
        assert len(upward_imports([path], tmp_path)) == 1, where


def test_init_files_stay_empty():
    """No re-exports: importing a light module never drags in onnxruntime or OpenCV."""
    for path in sources():
        if path.name == "__init__.py":
            body = [n for n in ast.parse(path.read_text()).body
                    if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
            assert body == [], path


def test_every_package_is_shipped():
    """pyproject.toml lists every package (a subpackage missing there is missing from the
    wheel although the editable install finds it)."""
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(jetkiosk\.[a-z_.]+)"', text.split("packages = [", 1)[1]
                            .split("]", 1)[0]))
    wanted = {"jetkiosk." + module_name(p.parent / "__init__.py")
              for p in sources() + sorted((ROOT / "systemd").glob("__init__.py"))
              if p.name == "__init__.py"}
    assert listed == wanted


@pytest.mark.parametrize("top", SOURCES)
def test_no_flat_prefixes_stand_in_for_packages(top):
    """Module names do not repeat their package (``kiosk/kiosk_remote.py``)."""
    for path in (ROOT / top).rglob("*.py"):
        assert not path.stem.startswith(path.parent.name + "_"), path
