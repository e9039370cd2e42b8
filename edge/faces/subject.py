"""Which face in a photo is its subject: the only one, or one much larger than any other and
near the centre (a bystander in the background does not make an enrollment photo useless).

The two constants were chosen on ../shared/faces/lfw-calib, where the subject of every
photo is known (``bench/open_set.py --subject`` prints how many photos the rule recovers
and how many it would have given to the wrong face).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

from .detection import Detection

MIN_AREA_RATIO = 2.0  # the subject's box covers at least this many times any other's
# Its centre lies within this share of the photo's width and height of the photo's centre
# (more room vertically: portraits put the face in the upper third).
MAX_CENTRE_OFFSET = (0.25, 0.35)


def subject(detections: Sequence[Detection], shape: Tuple[int, ...],
            min_ratio: float = MIN_AREA_RATIO,
            max_offset: Tuple[float, float] = MAX_CENTRE_OFFSET) -> Optional[int]:
    """Index of the subject among ``detections`` in a photo of ``shape`` (h, w, ...), or None
    when there is no face or no face clearly stands out."""
    if len(detections) <= 1:
        return 0 if detections else None
    areas = [d.width * d.height for d in detections]
    order = sorted(range(len(areas)), key=areas.__getitem__, reverse=True)
    first, second = order[0], order[1]
    if areas[first] < min_ratio * areas[second]:
        return None
    height, width = shape[:2]
    box = detections[first].box
    dx = abs((box[0] + box[2]) / 2 - width / 2) / width
    dy = abs((box[1] + box[3]) / 2 - height / 2) / height
    return first if dx <= max_offset[0] and dy <= max_offset[1] else None
