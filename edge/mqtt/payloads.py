"""MQTT payloads: JSON with a schema version, checked against the files in ``schemas/``."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional

import fastjsonschema

from ..faces.events import SCHEMA_VERSION

SCHEMAS = Path(__file__).parent / "schemas"


def encode(payload: Dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


@functools.lru_cache(maxsize=None)
def schema(name: str) -> Dict[str, Any]:
    """The JSON Schema ``schemas/<name>.schema.json``."""
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


@functools.lru_cache(maxsize=None)
def validator(name: str) -> Callable[[Any], Any]:
    """A compiled validator; raises ``fastjsonschema.JsonSchemaException``."""
    return fastjsonschema.compile(schema(name))


def person_state(name: str, present: bool, last_seen: float, camera: str,
                 distance: Optional[float]) -> Dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "name": name, "present": present,
            "last_seen": round(last_seen, 3), "camera": camera, "distance": distance}


def face_count(camera: str, decisions: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """Counts over the live tracks' latest events."""
    decisions = list(decisions)
    known = sorted({d["name"] for d in decisions if d["decision"] == "match"})
    matched = sum(d["decision"] == "match" for d in decisions)
    return {"schema": SCHEMA_VERSION, "camera": camera, "timestamp": round(time.time(), 3),
            "faces": len(decisions), "known": matched, "unknown": len(decisions) - matched,
            "people": known}


def response(target: str, action: Optional[str], request_id: Optional[str], ok: bool,
             error: Optional[str] = None, result: Optional[Dict[str, Any]] = None,
             ) -> Dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "request_id": request_id, "target": target,
            "action": action, "ok": ok, "error": error, "result": result,
            "timestamp": round(time.time(), 3)}
