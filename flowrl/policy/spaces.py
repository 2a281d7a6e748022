"""Observation preprocessing and action checks, by gymnasium space (numpy only).

`get_preprocessor(space)` returns an object whose `transform(raw_batch)` turns a batch of raw
env observations (leading batch dimension; a dict/tuple of arrays for Dict/Tuple spaces) into the
rows a `SampleBatch["obs"]` holds:

- `Box`: unchanged shape, cast to the space's dtype (images stay uint8);
- `Discrete`: one-hot float32; `MultiDiscrete`: concatenated one-hots; `MultiBinary`: float32;
- `Dict` / `Tuple`: each sub-space flattened to float32 and concatenated (Dict in sorted-key order).

Examples:
    >>> import gymnasium as gym, numpy as np
    >>> get_preprocessor(gym.spaces.Discrete(3)).transform(np.array([0, 2]))
    array([[1., 0., 0.],
           [0., 0., 1.]], dtype=float32)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

SUPPORTED_OBSERVATION_SPACES = ("Box", "Discrete", "MultiDiscrete", "MultiBinary", "Dict", "Tuple")
SUPPORTED_ACTION_SPACES = ("Discrete", "MultiDiscrete", "Box")


class Preprocessor:
    """Turns raw observation batches of one space into model-input rows.

    Attributes:
        space: the observation space.
        shape: the shape of one output row.
        dtype: the output dtype.
    """

    def __init__(self, space: gym.Space, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.space = space
        self.shape = shape
        self.dtype = np.dtype(dtype)

    @property
    def size(self) -> int:
        """The number of scalars in one output row."""
        return int(np.prod(self.shape))

    def transform(self, raw_batch: Any) -> np.ndarray:
        """Validates and converts a raw batch (leading batch dimension) into output rows."""
        raise NotImplementedError


class BoxPreprocessor(Preprocessor):
    def __init__(self, space: gym.spaces.Box) -> None:
        super().__init__(space, tuple(space.shape), space.dtype)

    def transform(self, raw_batch: Any) -> np.ndarray:
        batch = np.asarray(raw_batch)
        if batch.shape[1:] != self.shape or batch.ndim != len(self.shape) + 1:
            raise ValueError(
                f"observation batch does not fit observation_space={self.space}: expected shape "
                f"(batch_size, {', '.join(map(str, self.shape))}), got shape={batch.shape}; pass "
                "a batch of observations with a leading batch dimension"
            )
        return batch.astype(self.dtype, copy=False)


class DiscretePreprocessor(Preprocessor):
    def __init__(self, space: gym.spaces.Discrete) -> None:
        super().__init__(space, (int(space.n),), np.float32)

    def transform(self, raw_batch: Any) -> np.ndarray:
        batch = np.asarray(raw_batch)
        if batch.ndim != 1 or not np.issubdtype(batch.dtype, np.integer):
            raise ValueError(
                f"observation batch does not fit observation_space={self.space}: expected a 1-D "
                f"integer array of shape (batch_size,), got shape={batch.shape} "
                f"dtype={batch.dtype}"
            )
        return _one_hot(batch - int(self.space.start), int(self.space.n), self.space)


class MultiDiscretePreprocessor(Preprocessor):
    def __init__(self, space: gym.spaces.MultiDiscrete) -> None:
        self.nvec = np.asarray(space.nvec).reshape(-1)
        self.start = np.asarray(space.start).reshape(-1)
        super().__init__(space, (int(self.nvec.sum()),), np.float32)

    def transform(self, raw_batch: Any) -> np.ndarray:
        batch = np.asarray(raw_batch)
        if batch.shape[1:] != tuple(self.space.shape) or not np.issubdtype(batch.dtype, np.integer):
            raise ValueError(
                f"observation batch does not fit observation_space={self.space}: expected integer "
                f"shape (batch_size, {', '.join(map(str, self.space.shape))}), "
                f"got shape={batch.shape} dtype={batch.dtype}"
            )
        flat = batch.reshape(len(batch), -1) - self.start
        parts = [_one_hot(flat[:, i], int(n), self.space) for i, n in enumerate(self.nvec)]
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(batch), 0), np.float32)


class MultiBinaryPreprocessor(Preprocessor):
    def __init__(self, space: gym.spaces.MultiBinary) -> None:
        super().__init__(space, (int(np.prod(space.shape)),), np.float32)

    def transform(self, raw_batch: Any) -> np.ndarray:
        batch = np.asarray(raw_batch)
        if batch.shape[1:] != tuple(self.space.shape):
            raise ValueError(
                f"observation batch does not fit observation_space={self.space}: expected shape "
                f"(batch_size, {', '.join(map(str, self.space.shape))}), got shape={batch.shape}"
            )
        return batch.reshape(len(batch), -1).astype(np.float32)


class DictPreprocessor(Preprocessor):
    """Flattens each sub-space to float32 and concatenates them in sorted-key order."""

    def __init__(self, space: gym.spaces.Dict) -> None:
        self.children = {key: get_preprocessor(space.spaces[key]) for key in sorted(space.spaces)}
        super().__init__(space, (sum(c.size for c in self.children.values()),), np.float32)

    def transform(self, raw_batch: Any) -> np.ndarray:
        if not isinstance(raw_batch, dict) or set(raw_batch) != set(self.children):
            got = sorted(raw_batch) if isinstance(raw_batch, dict) else type(raw_batch).__name__
            raise ValueError(
                f"observation batch does not fit observation_space={self.space}: expected a dict "
                f"of batched arrays with keys {sorted(self.children)}, got {got}"
            )
        parts = [c.transform(raw_batch[k]) for k, c in self.children.items()]
        return _flat_concat(parts)


class TuplePreprocessor(Preprocessor):
    """Flattens each sub-space to float32 and concatenates them in order."""

    def __init__(self, space: gym.spaces.Tuple) -> None:
        self.children = [get_preprocessor(s) for s in space.spaces]
        super().__init__(space, (sum(c.size for c in self.children),), np.float32)

    def transform(self, raw_batch: Any) -> np.ndarray:
        if not isinstance(raw_batch, (tuple, list)) or len(raw_batch) != len(self.children):
            got = len(raw_batch) if isinstance(raw_batch, (tuple, list)) else type(raw_batch)
            raise ValueError(
                f"observation batch does not fit observation_space={self.space}: expected a tuple "
                f"of {len(self.children)} batched arrays, got {got}"
            )
        return _flat_concat([c.transform(x) for c, x in zip(self.children, raw_batch)])


_PREPROCESSORS: dict[type, type[Preprocessor]] = {
    gym.spaces.Box: BoxPreprocessor,
    gym.spaces.Discrete: DiscretePreprocessor,
    gym.spaces.MultiDiscrete: MultiDiscretePreprocessor,
    gym.spaces.MultiBinary: MultiBinaryPreprocessor,
    gym.spaces.Dict: DictPreprocessor,
    gym.spaces.Tuple: TuplePreprocessor,
}


def get_preprocessor(space: gym.Space) -> Preprocessor:
    """Returns the preprocessor for an observation space.

    Raises:
        ValueError: for a space flowrl cannot preprocess (the message lists the supported ones).
    """
    for space_type, preprocessor_type in _PREPROCESSORS.items():
        if type(space) is space_type:
            return preprocessor_type(space)
    raise ValueError(
        f"unsupported observation_space={space!r}: expected one of "
        f"{', '.join(SUPPORTED_OBSERVATION_SPACES)} (gymnasium.spaces)"
    )


def check_action_space(space: gym.Space) -> None:
    """Raises `ValueError` unless `space` is a Discrete, MultiDiscrete or Box action space."""
    if type(space) not in (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.Box):
        raise ValueError(
            f"unsupported action_space={space!r}: expected one of "
            f"{', '.join(SUPPORTED_ACTION_SPACES)} (gymnasium.spaces)"
        )


def action_offset(space: gym.Space) -> np.ndarray | int:
    """The integer offset (`start`) between model action indices and env actions."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.start)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return np.asarray(space.start).reshape(-1)
    return 0


def action_rows(space: gym.Space, actions: Any) -> np.ndarray:
    """Validates a batch of env actions and converts them to model rows.

    Discrete -> int64 indices (B,); MultiDiscrete -> int64 (B, d); Box -> float32 (B, prod(shape)).

    Raises:
        ValueError: naming the action space, if an action lies outside it or has the wrong shape.
    """
    actions = np.asarray(actions)
    if isinstance(space, gym.spaces.Box):
        if actions.shape[1:] != space.shape:
            raise ValueError(
                f"actions do not fit action_space={space}: expected shape (batch_size, "
                f"{', '.join(map(str, space.shape))}), got shape={actions.shape}"
            )
        rows = actions.reshape(len(actions), -1).astype(np.float32, copy=False)
        if not np.isfinite(rows).all():
            raise ValueError(f"actions for action_space={space} contain NaN or inf")
        return rows
    expected = () if isinstance(space, gym.spaces.Discrete) else tuple(space.shape)
    if actions.shape[1:] != expected or not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(
            f"actions do not fit action_space={space}: expected integers of shape "
            f"(batch_size{''.join(', ' + str(d) for d in expected)}), "
            f"got shape={actions.shape} dtype={actions.dtype}"
        )
    if isinstance(space, gym.spaces.Discrete):
        indices = actions.astype(np.int64) - int(space.start)
        high = int(space.n)
    else:
        indices = actions.reshape(len(actions), -1).astype(np.int64) - action_offset(space)
        high = np.asarray(space.nvec).reshape(-1)
    if indices.size and ((indices < 0).any() or (indices >= high).any()):
        raise ValueError(
            f"actions outside action_space={space}: got min={actions.min()} max={actions.max()}; "
            "every action must be a valid index of the space (check the action column)"
        )
    return indices


def _one_hot(indices: np.ndarray, n: int, space: gym.Space) -> np.ndarray:
    if indices.size and ((indices < 0).any() or (indices >= n).any()):
        raise ValueError(
            f"observation outside observation_space={space}: got values "
            f"{np.unique(indices).tolist()[:10]} (after subtracting the space's start), "
            f"expected integers in [0, {n})"
        )
    out = np.zeros((len(indices), n), dtype=np.float32)
    out[np.arange(len(indices)), indices] = 1.0
    return out


def _flat_concat(parts: list[np.ndarray]) -> np.ndarray:
    rows = len(parts[0]) if parts else 0
    return np.concatenate([p.reshape(rows, -1).astype(np.float32) for p in parts], axis=1)
