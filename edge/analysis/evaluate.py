"""Detection quality against centre annotations (ALL-IDB1 `.xyc` files and synthetic truth).

A detection is a true positive when its centre lies within `radius` px of a not-yet-matched
annotated centre (closest pairs first); the rest are false positives / misses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple, Union

Point = Tuple[float, float]


def read_xyc(path: Union[str, Path]) -> List[Point]:
    """ALL-IDB1 `.xyc`: one `x y` (whitespace separated) blast centre per line."""
    points = []
    for n, line in enumerate(Path(path).read_text(encoding="ascii").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise ValueError(f"{path}:{n}: expected 'x y', got {line!r}")
        points.append((float(parts[0]), float(parts[1])))
    return points


@dataclass
class Match:
    true_positives: int
    detections: int
    annotated: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.detections if self.detections else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.annotated if self.annotated else 1.0

    def __add__(self, other: Match) -> Match:
        return Match(self.true_positives + other.true_positives,
                     self.detections + other.detections, self.annotated + other.annotated)


def match_centres(detected: Sequence[Point], annotated: Sequence[Point], radius: float) -> Match:
    """Greedy one-to-one matching, closest pairs first, within `radius`."""
    pairs = sorted(
        ((dx * dx + dy * dy, i, j)
         for i, (x, y) in enumerate(detected) for j, (ax, ay) in enumerate(annotated)
         for dx, dy in ((x - ax, y - ay),) if dx * dx + dy * dy <= radius * radius))
    used_d, used_a = set(), set()
    for _, i, j in pairs:
        if i not in used_d and j not in used_a:
            used_d.add(i)
            used_a.add(j)
    return Match(len(used_d), len(detected), len(annotated))
