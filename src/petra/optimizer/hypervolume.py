"""2-D hypervolume of a compression front: metric drop vs p50 latency ratio, both minimised.

The hypervolume (Zitzler & Thiele 1998) of a point set is the area that its points dominate
inside the box between the *ideal* corner and a *reference* point. Here the two objectives are
the metric drop against the FP32 baseline (in the metric's points) and the p50 latency ratio to
that baseline, and the box is fixed for every searcher that is compared:

- reference point ``(max_drop, 1.0)``: a candidate counts only while its drop is within the
  constraint and it is faster than the FP32 baseline; the baseline itself (drop 0, ratio 1)
  therefore has a hypervolume of exactly 0, and so does anything slower or less accurate;
- ideal corner ``(0, 0)``: a drop below zero (a candidate that scores *better* than the
  baseline, usually noise or extra training) is clipped to 0, so no front earns area for
  luck on a small evaluation set, and the area is bounded by ``max_drop * 1.0``.

``normalized_hypervolume`` divides by that box, giving a number in [0, 1]: 1 would be a free,
instantaneous model. Only feasible points should be passed; points outside the box add nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def hypervolume_2d(points: Iterable[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both objectives minimised) and bounded by ``reference``.

    Points that do not strictly beat the reference on both objectives, or are not finite,
    contribute nothing; dominated points and duplicates are harmless.
    """
    rx, ry = reference
    pts = sorted((x, y) for x, y in points if math.isfinite(x) and math.isfinite(y) and x < rx and y < ry)
    area, best_y = 0.0, ry
    for x, y in pts:  # sweep by the first objective; each new lower y adds a strip to the right
        if y < best_y:
            area += (rx - x) * (best_y - y)
            best_y = y
    return area


def drop_latency_hypervolume(points: Iterable[tuple[float, float]], max_drop: float) -> float:
    """Hypervolume of (metric drop, p50 ratio) points in the box [0, max_drop] x [0, 1]."""
    if max_drop <= 0:
        raise ValueError(f"max_drop must be > 0, got {max_drop}")
    clipped = [(max(0.0, d), max(0.0, r)) for d, r in points]
    return hypervolume_2d(clipped, (max_drop, 1.0))


def normalized_hypervolume(points: Iterable[tuple[float, float]], max_drop: float) -> float:
    """``drop_latency_hypervolume`` as a share of the whole box: in [0, 1]."""
    return drop_latency_hypervolume(points, max_drop) / max_drop


__all__ = ["drop_latency_hypervolume", "hypervolume_2d", "normalized_hypervolume"]
