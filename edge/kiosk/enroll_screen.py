"""Walk-up enrollment drawn on the kiosk's screen: the consent text, the pose asked for with
its arrow and a progress bar, and the outcome. Pure drawing, in place, after every filter."""

from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np

from .enrollment import CAPTURE, CONSENT, FAILED, SAVED, Screen

FONT = cv2.FONT_HERSHEY_SIMPLEX
# BGR band colour per state
BANDS = {CONSENT: (60, 40, 20), CAPTURE: (60, 40, 20), SAVED: (40, 110, 30),
         FAILED: (30, 30, 150)}
HINTS = {CONSENT: "Y: agree     N: decline", CAPTURE: "N: cancel"}


def wrap(text: str, width: int, scale: float, thickness: int) -> List[str]:
    """``text`` in lines no wider than ``width`` pixels (a longer word gets a line of its
    own)."""
    lines: List[str] = []
    for word in text.split():
        line = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(line, FONT, scale, thickness)[0][0] <= width:
            lines[-1] = line
        else:
            lines.append(word)
    return lines


def draw_enrollment(frame: np.ndarray, screen: Screen) -> np.ndarray:
    """A band across the top third of ``frame`` with ``screen``'s text; in capture, an arrow
    for the turn asked for and a progress bar."""
    height, width = frame.shape[:2]
    scale = max(0.5, 1.0 * height / 720)
    thickness = max(1, round(2 * scale))
    line_height = int(cv2.getTextSize("Ag", FONT, scale, thickness)[0][1] * 1.9)
    lines = wrap(screen.text, int(width * 0.9), scale, thickness)
    hint = HINTS.get(screen.state)
    rows = len(lines) + (1 if hint else 0)
    bottom = int(line_height * (rows + 1)) + (int(40 * scale) if screen.progress is not None
                                              else 0)
    band = frame[:min(height, bottom)]
    band[:] = (band * 0.25 + np.array(BANDS.get(screen.state, (40, 40, 40))) * 0.75
               ).astype(np.uint8)
    y = line_height
    for text in lines + ([hint] if hint else []):
        (tw, _), _ = cv2.getTextSize(text, FONT, scale, thickness)
        colour = (200, 200, 200) if text is hint else (255, 255, 255)
        cv2.putText(frame, text, ((width - tw) // 2, y), FONT, scale, colour, thickness,
                    cv2.LINE_AA)
        y += line_height
    if screen.progress is not None:
        _progress(frame, screen.progress, (int(width * 0.2), y - line_height // 3),
                  (int(width * 0.6), int(16 * scale)))
    if screen.state == CAPTURE and screen.arrow:
        _arrow(frame, screen.arrow, scale)
    return frame


def _progress(frame: np.ndarray, share: float, origin: Tuple[int, int],
              size: Tuple[int, int]) -> None:
    (x, y), (w, h) = origin, size
    cv2.rectangle(frame, (x, y), (x + w, y + h), (255, 255, 255), 2)
    if share > 0:
        cv2.rectangle(frame, (x + 3, y + 3), (x + 3 + round((w - 6) * share), y + h - 3),
                      (80, 200, 60), cv2.FILLED)


def _arrow(frame: np.ndarray, direction: int, scale: float) -> None:
    """A large arrow at the side of the frame the head should turn towards."""
    height, width = frame.shape[:2]
    y = height // 2
    tip = width - int(30 * scale) if direction > 0 else int(30 * scale)
    tail = tip - direction * int(width * 0.18)
    for colour, thick in (((0, 0, 0), 14), ((0, 220, 255), 8)):
        cv2.arrowedLine(frame, (tail, y), (tip, y), colour, max(2, round(thick * scale)),
                        cv2.LINE_AA, tipLength=0.35)
