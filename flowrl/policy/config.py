"""The plain-dict policy config: defaults, validation and the piecewise-linear schedule."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "fcnet_hiddens": (64, 64),
    "fcnet_activation": "tanh",
    "vf_share_layers": False,
    "free_log_std": False,
    "conv_filters": None,
    "conv_activation": "relu",
}

DEFAULT_POLICY_CONFIG: dict[str, Any] = {
    "lr": 5e-4,
    "gamma": 0.99,
    "gae_lambda": 1.0,
    "use_gae": True,
    "use_critic": True,
    "grad_clip": None,
    "vf_loss_coeff": 1.0,
    "entropy_coeff": 0.0,
    "seed": None,
    "num_threads": None,
    "lr_schedule": None,
    "model": DEFAULT_MODEL_CONFIG,
}
"""Every key a policy reads, with its default. Algorithms add their own keys on top.

Keys ending in ``_coeff`` with a numeric value become mutable loss coefficients
(`Policy.get_coefficient` / `Policy.set_coefficient`).
"""

ACTIVATIONS = ("tanh", "relu", "swish", "linear")


def merge_config(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merges config dicts left to right (later wins); `model` is merged key by key.

    Raises:
        ValueError: for an unknown model key (naming the closest valid one) or a bad value.
    """
    merged: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for layer in layers:
        if not layer:
            continue
        for key, value in layer.items():
            if key == "model":
                model.update(value or {})
            else:
                merged[key] = copy.deepcopy(value)
    merged["model"] = validate_model_config(model)
    if merged.get("use_gae") and not merged.get("use_critic"):
        raise ValueError(
            f"use_gae=True needs a value function, got use_critic={merged.get('use_critic')}; "
            "set use_critic=True or use_gae=False"
        )
    return merged


def validate_model_config(model: Mapping[str, Any]) -> dict[str, Any]:
    """Fills model defaults and checks names and values."""
    for key in model:
        if key not in DEFAULT_MODEL_CONFIG:
            close = difflib.get_close_matches(key, list(DEFAULT_MODEL_CONFIG), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown model config key {key!r}; {hint}"
                f"valid keys: {sorted(DEFAULT_MODEL_CONFIG)}"
            )
    full = {**DEFAULT_MODEL_CONFIG, **model}
    for key in ("fcnet_activation", "conv_activation"):
        if full[key] not in ACTIVATIONS:
            raise ValueError(f"model {key}={full[key]!r} is not one of {ACTIVATIONS}")
    hiddens = full["fcnet_hiddens"]
    if not isinstance(hiddens, Sequence) or not all(
        isinstance(h, int) and h > 0 for h in hiddens
    ):
        raise ValueError(f"model fcnet_hiddens must be a sequence of positive ints, got {hiddens=}")
    full["fcnet_hiddens"] = tuple(hiddens)
    filters = full["conv_filters"]
    if filters is not None:
        if not all(len(f) == 3 and all(isinstance(x, int) and x > 0 for x in f) for f in filters):
            raise ValueError(
                "model conv_filters must be a list of [out_channels, kernel, stride] positive "
                f"ints, got {filters=}"
            )
        full["conv_filters"] = tuple(tuple(f) for f in filters)
    return full


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
