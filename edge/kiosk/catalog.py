"""The styles a kiosk can show: bundled ones and any trained into the models directory.

A style is a ``style-<name>.json`` manifest (task ``style-transfer``) with its ONNX file;
one in the models directory overrides a bundled one of the same name. Networks are loaded
lazily, on first use, and kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from ..core.config import Config
from ..core.errors import ModelError, StyleError
from ..runtime.backend import resolve
from ..runtime.manifest import load_precision
from .model import TASK, StyleModel

BUNDLED = Path(__file__).parent / "styles"


def _manifests(folder: Path) -> Dict[str, Path]:
    found: Dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("style-*.json")):
        if "." in path.stem:  # a quantized variant (style-x.int8.json) or a gate report
            continue
        try:
            task = json.loads(path.read_text()).get("task")
        except (ValueError, UnicodeDecodeError, AttributeError) as exc:
            raise ModelError(f"{path}: style manifest is not a JSON object ({exc})") from exc
        if task == TASK:
            found[path.stem[len("style-"):]] = path
    return found


class StyleCatalog:
    """Style name -> network, from the given folders (earlier folders win)."""

    def __init__(self, folders: Iterable[Path], backend: str = "auto",
                 config: Optional[Config] = None):
        self.backend = backend
        self.config = config or Config()
        self.paths: Dict[str, Path] = {}
        for folder in reversed(list(folders)):
            self.paths.update(_manifests(Path(folder)))
        self._loaded: Dict[str, StyleModel] = {}

    @property
    def names(self) -> List[str]:
        return sorted(self.paths)

    def check(self, name: str) -> str:
        if name not in self.paths:
            raise StyleError(f"unknown style {name!r} (available: {', '.join(self.names)})")
        return name

    def get(self, name: str) -> StyleModel:
        """The loaded network for ``name``; a corrupt model is a ModelError naming its file."""
        if name not in self._loaded:
            manifest = load_precision(self.paths[self.check(name)], self.config.models.precision,
                                      resolve(self.backend))
            self._loaded[name] = StyleModel(manifest, self.backend, self.config)
        return self._loaded[name]

    def add(self, model: StyleModel) -> None:
        """Offer an already-loaded network under its name."""
        if model.manifest.path is not None:
            self.paths[model.name] = model.manifest.path
        self._loaded[model.name] = model

    def close(self) -> None:
        for model in self._loaded.values():
            model.close()
        self._loaded.clear()
