"""What the face path decided, drawn on the kiosk's screen: a box and a label per track.

Pure drawing (numpy and OpenCV): boxes come in the face path's frame coordinates and are
scaled to the frame shown, which is drawn on in place after every filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Sequence, Tuple

import cv2
import numpy as np

# BGR colour of each decision; a track not decided yet is grey
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "match": (80, 200, 60), "unknown": (40, 40, 230), "uncertain": (0, 190, 250),
    "spoof": (200, 0, 200), "not_verified_live": (0, 140, 255), "": (170, 170, 170)}
Box = Tuple[float, float, float, float]  # x1, y1, x2, y2


@dataclass(frozen=True)
class Label:
    """One track as shown: its box (face path coordinates), text and decision ('' before
    one)."""

    track_id: int
    box: Box
    text: str
    decision: str


def scale_box(box: Sequence[float], source: Tuple[int, int], shown: Tuple[int, int]
              ) -> Tuple[int, int, int, int]:
    """``box`` from a ``source`` (width, height) frame to a ``shown`` one, in whole pixels
    inside it."""
    sx, sy = shown[0] / source[0], shown[1] / source[1]
    x1, y1, x2, y2 = (float(v) for v in box)
    return (int(np.clip(round(x1 * sx), 0, shown[0] - 1)),
            int(np.clip(round(y1 * sy), 0, shown[1] - 1)),
            int(np.clip(round(x2 * sx), 0, shown[0] - 1)),
            int(np.clip(round(y2 * sy), 0, shown[1] - 1)))


def pixelate(frame: np.ndarray, box: Tuple[int, int, int, int], cells: int = 6) -> None:
    """Replace ``box`` (pixels, inclusive) of ``frame`` by ``cells`` flat blocks across."""
    x1, y1, x2, y2 = box
    region = frame[y1:y2 + 1, x1:x2 + 1]
    h, w = region.shape[:2]
    if h == 0 or w == 0:
        return
    across = max(1, min(cells, w))
    down = max(1, min(h, round(cells * h / w)))
    small = cv2.resize(region, (across, down), interpolation=cv2.INTER_AREA)
    region[:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def draw_labels(frame: np.ndarray, labels: Iterable[Label], source: Tuple[int, int],
                blur: bool = False) -> np.ndarray:
    """Each label's box and text on ``frame`` (BGR uint8, drawn in place and returned);
    ``source``: the (width, height) of the frames the boxes were found in; ``blur``: every
    face not recognised (unknown, uncertain, not decided yet) is pixelated first."""
    height, width = frame.shape[:2]
    scale = max(0.4, height / 720)
    thickness = max(2, round(3 * scale))
    for label in labels:
        x1, y1, x2, y2 = scale_box(label.box, source, (width, height))
        if blur and label.decision != "match":
            pixelate(frame, (x1, y1, x2, y2))
        colour = COLOURS.get(label.decision, COLOURS[""])
        cv2.rectangle(frame, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        if not label.text:
            continue
        (tw, th), base = cv2.getTextSize(label.text, cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, 2)
        top = y1 - th - base - 6 if y1 - th - base - 6 >= 0 else y2
        cv2.rectangle(frame, (x1, top), (min(width - 1, x1 + tw + 8), top + th + base + 6),
                      colour, cv2.FILLED)
        cv2.putText(frame, label.text, (x1 + 4, top + th + 3), cv2.FONT_HERSHEY_SIMPLEX,
                    0.8 * scale, (0, 0, 0), 2, cv2.LINE_AA)
    return frame


def draw_greeting(frame: np.ndarray, text: str) -> np.ndarray:
    """``text`` centred near the bottom of ``frame`` on a dark band (in place)."""
    height, width = frame.shape[:2]
    scale = max(0.6, 1.4 * height / 720)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    x, y = max(0, (width - tw) // 2), height - int(40 * scale)
    cv2.rectangle(frame, (max(0, x - 12), y - th - 12), (min(width - 1, x + tw + 12), y + base + 8),
                  (20, 20, 20), cv2.FILLED)
    cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                max(1, round(2 * scale)), cv2.LINE_AA)
    return frame
