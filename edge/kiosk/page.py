"""The kiosk's web page on its http:// output: the live stream full screen; a tap on it opens
the style picker (a thumbnail of each style in the rotation, rendered from the live frame)
and, with ``kiosk.snapshots``, a button that takes a snapshot.

Paths beside the stream's (``/stream.mjpg``, ``/snapshot.jpg``): ``/`` the page (no
external resources: a browser in kiosk mode needs nothing else), ``/state`` the style shown
and the styles (JSON), ``/thumbs/<style>.jpg`` a thumbnail, ``POST /style`` (form field
``style``) the switch, through ``Kiosk.set_style`` as the MQTT ``style/set`` command,
``POST /snapshot`` a snapshot, ``/snapshots/<token>.jpg`` one while it lives.

Thumbnails are rendered on the kiosk's thread, one style per frame, only while a page
asks for them (the picker is open): at most every ``THUMB_EVERY`` seconds each.
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Set
from urllib.parse import parse_qs, quote, unquote

import cv2
import numpy as np

from ..core.errors import JetkioskError, StyleError
from .catalog import StyleCatalog
from .mjpeg import Reply, Routes
from .snapshots import PATH as SNAPSHOT_PATH
from .snapshots import SnapshotError

if TYPE_CHECKING:
    from .loop import Kiosk

log = logging.getLogger(__name__)

THUMB_WIDTH = 160  # pixels
THUMB_EVERY = 3.0  # seconds between two renderings of a style's thumbnail
THUMB_IDLE = 15.0  # seconds after a page last asked for a thumbnail that rendering stops
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


class Thumbnails:
    """The newest thumbnail JPEG of each style, rendered from live frames by ``update`` (the
    kiosk's thread) while ``get`` (any thread) was asked within ``THUMB_IDLE`` seconds."""

    def __init__(self, catalog: StyleCatalog, names: List[str], width: int = THUMB_WIDTH,
                 every: float = THUMB_EVERY, quality: int = 80):
        self.catalog = catalog
        self.names = list(names)
        self.width = width
        self.every = every
        self.quality = quality
        self._lock = threading.Lock()
        self._jpegs: Dict[str, bytes] = {}
        self._asked = -float("inf")
        self._due: Dict[str, float] = {}
        self._failed: Set[str] = set()

    def get(self, name: str) -> Optional[bytes]:
        with self._lock:
            self._asked = time.monotonic()
            return self._jpegs.get(name)

    def update(self, frame: np.ndarray, hide: Callable[[np.ndarray], None]) -> Optional[str]:
        """Render the most overdue style's thumbnail from ``frame`` (the camera's); ``hide``
        pixelates on it what the screen hides. The style rendered, or None."""
        now = time.monotonic()
        with self._lock:
            if now - self._asked > THUMB_IDLE:
                return None
        waiting = [n for n in self.names if n not in self._failed
                   and self._due.get(n, -float("inf")) <= now]
        if not waiting:
            return None
        name = min(waiting, key=lambda n: self._due.get(n, -float("inf")))
        self._due[name] = now + self.every
        try:
            model = self.catalog.get(name)
            height = max(1, round(self.width * frame.shape[0] / frame.shape[1]))
            size = model.check_size(self.width, height)
            thumb = model(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
        except JetkioskError as exc:
            log.warning("thumbnail of style %s: %s (no thumbnail for it)", name, exc)
            self._failed.add(name)
            return None
        hide(thumb)
        ok, buf = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            with self._lock:
                self._jpegs[name] = buf.tobytes()
        return name


def _json(status: HTTPStatus, value: object) -> Reply:
    return status, (json.dumps(value) + "\n").encode(), JSON


class KioskPage(Routes):
    """The page and its paths for one kiosk (set as its http:// server's ``routes``)."""

    post_paths = ("/style", "/snapshot")
    secret_paths = (SNAPSHOT_PATH,)

    def __init__(self, kiosk: Kiosk, thumbnails: Thumbnails):
        self.kiosk = kiosk
        self.thumbnails = thumbnails
        self.html = page(thumbnails.names, kiosk.snapshots is not None)

    def get(self, path: str) -> Optional[Reply]:
        if path in ("/", "/index.html"):
            return HTTPStatus.OK, self.html, "text/html; charset=utf-8"
        if path == "/state":
            return _json(HTTPStatus.OK, self.state())
        if path.startswith("/thumbs/") and path.endswith(".jpg"):
            name = unquote(path[len("/thumbs/"):-len(".jpg")])
            if name not in self.thumbnails.names:
                return None
            jpeg = self.thumbnails.get(name)
            if jpeg is None:
                return HTTPStatus.SERVICE_UNAVAILABLE, b"not rendered yet\n", TEXT
            return HTTPStatus.OK, jpeg, "image/jpeg"
        if path.startswith(SNAPSHOT_PATH) and self.kiosk.snapshots is not None:
            jpeg = self.kiosk.snapshots.lookup(path)
            return (HTTPStatus.OK, jpeg, "image/jpeg") if jpeg is not None else None
        return None

    def state(self) -> Dict[str, object]:
        return {"style": self.kiosk.stylizer.style, "styles": self.thumbnails.names,
                "snapshots": self.kiosk.snapshots is not None}

    def post(self, path: str, body: bytes, local: str) -> Reply:
        if path == "/style":
            return self._style(body)
        try:
            return _json(HTTPStatus.OK, self.kiosk.take_snapshot(local))
        except SnapshotError as exc:
            return _json(exc.status, {"error": str(exc)})

    def _style(self, body: bytes) -> Reply:
        try:
            fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            fields = {}
        names = fields.get("style", [])
        if len(names) != 1:
            return _json(HTTPStatus.BAD_REQUEST, {
                "error": "POST /style needs one form field style: one of "
                         + ", ".join(self.kiosk.stylizer.catalog.names)})
        try:
            return _json(HTTPStatus.OK, {"style": self.kiosk.set_style(names[0])})
        except StyleError as exc:
            return _json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except JetkioskError as exc:
            return _json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})


STYLE = """html,body{margin:0;height:100%;background:#000;overflow:hidden;
font-family:sans-serif;-webkit-user-select:none;user-select:none}
#stream{width:100vw;height:100vh;object-fit:contain;display:block;touch-action:manipulation}
#picker{position:fixed;left:0;right:0;bottom:0;background:rgba(0,0,0,.8);color:#fff;
padding:12px;display:none;touch-action:manipulation}
#picker.open{display:block}
#row{display:flex;gap:12px;overflow-x:auto;align-items:stretch}
button{font-size:20px;color:#fff;background:#333;border:4px solid #555;border-radius:12px;
padding:8px;min-height:88px;min-width:120px;cursor:pointer;touch-action:manipulation}
button.style{display:flex;flex-direction:column;align-items:center;gap:6px;flex:none}
button.style img{width:160px;height:90px;object-fit:cover;background:#222;border-radius:6px}
button.current{border-color:#4caf50;background:#1b3d1d}
button:active{background:#555}
#bar{display:flex;gap:12px;align-items:center;margin-top:12px}
#snap{background:#0d47a1;border-color:#42a5f5;font-size:24px;padding:12px 28px}
#status{font-size:20px;min-height:1.2em}"""

SCRIPT = """(() => {
const picker = document.getElementById('picker');
const stream = document.getElementById('stream');
const status = document.getElementById('status');
let closeAt = 0, timer = null;
function say(text) { status.textContent = text; }
function keepOpen() { closeAt = Date.now() + 30000; }
function open() {
  picker.classList.add('open'); keepOpen(); refresh();
  state().then(() => {  // the row scrolls sideways: start it at the style shown
    const current = document.querySelector('button.current');
    if (current) current.scrollIntoView({inline: 'center', block: 'nearest'});
  });
}
function close() { picker.classList.remove('open'); }
stream.addEventListener('click', () => picker.classList.contains('open') ? close() : open());
picker.addEventListener('pointerdown', keepOpen);
function load(img, tries) {
  const next = new Image();
  next.onload = () => { img.src = next.src; };
  next.onerror = () => { if (tries > 0) setTimeout(() => load(img, tries - 1), 700); };
  next.src = img.dataset.src + '?t=' + Date.now();
}
function refresh() {
  if (!picker.classList.contains('open')) return;
  for (const img of document.querySelectorAll('button.style img')) load(img, 2);
}
async function state() {
  try {
    const s = await (await fetch('state', {cache: 'no-store'})).json();
    for (const b of document.querySelectorAll('button.style'))
      b.classList.toggle('current', b.dataset.style === s.style);
  } catch (e) { /* the kiosk restarts: the next tick tries again */ }
}
async function post(path, fields) {
  const reply = await fetch(path, {method: 'POST', body: new URLSearchParams(fields)});
  let value = {};
  try { value = await reply.json(); } catch (e) { value = {error: reply.statusText}; }
  if (!reply.ok) throw new Error(value.error || reply.statusText);
  return value;
}
for (const b of document.querySelectorAll('button.style')) {
  b.addEventListener('click', async () => {
    keepOpen();
    try { const r = await post('style', {style: b.dataset.style}); say('Style: ' + r.style); }
    catch (e) { say(e.message); }
    state();
  });
}
const snap = document.getElementById('snap');
if (snap) snap.addEventListener('click', async () => {
  keepOpen();
  try { await post('snapshot', {}); say('Scan the code on the screen to get your picture'); }
  catch (e) { say(e.message); }
});
setInterval(() => {
  if (!picker.classList.contains('open')) return;
  if (Date.now() > closeAt) { close(); say(''); return; }
  state();
}, 1000);
setInterval(refresh, 3000);
})();"""


def page(names: List[str], snapshots: bool) -> bytes:
    """The page: self-contained HTML, CSS and JavaScript."""
    buttons = "".join(
        f'<button class="style" type="button" data-style="{html.escape(name)}">'
        f'<img alt="" data-src="thumbs/{html.escape(quote(name))}.jpg">'
        f"<span>{html.escape(name)}</span></button>" for name in names)
    snap = '<button id="snap" type="button">Take a picture</button>' if snapshots else ""
    return (f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>jetkiosk</title>
<meta name="viewport" content="width=device-width, initial-scale=1, user-scalable=no">
<style>{STYLE}</style></head>
<body><img id="stream" src="stream.mjpg" alt="jetkiosk">
<div id="picker"><div id="row">{buttons}</div>
<div id="bar">{snap}<div id="status"></div></div></div>
<script>{SCRIPT}</script></body></html>
""").encode()
