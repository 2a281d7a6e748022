"""Schedules that follow the global env-step count (the learning rate's `lr_schedule`)."""

from __future__ import annotations

from collections.abc import Sequence


class PiecewiseSchedule:
    """Piecewise-linear interpolation over (timestep, value) points, flat outside them.

    Examples:
        >>> PiecewiseSchedule([[0, 1.0], [100, 0.0]])(25)
        0.75
    """

    def __init__(self, points: Sequence[Sequence[float]]) -> None:
        pts = sorted((float(t), float(v)) for t, v in points)
        if not pts:
            raise ValueError(f"a schedule needs at least one [timestep, value] pair, got {points=}")
        self.points = pts

    def __call__(self, timestep: float) -> float:
        pts = self.points
        if timestep <= pts[0][0]:
            return pts[0][1]
        for (t0, v0), (t1, v1) in zip(pts, pts[1:]):
            if timestep < t1:
                return v0 + (timestep - t0) / (t1 - t0) * (v1 - v0)
        return pts[-1][1]
