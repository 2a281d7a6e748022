"""The shared noise table of ES and ARS: one block of Gaussian noise per node, read zero-copy.

A perturbation of a policy with `d` parameters is the slice `table[offset:offset + d]`, so a
perturbation crosses the network as one integer. On Ray the table is made by one task and held
in the object store: every process on a node (driver, rollout workers) maps the same copy
read-only, and a node gets its copy the first time one of its processes reads it. In local
mode the table is a plain numpy array in the process.

```python
noise = SharedNoiseTable(size=25_000_000, seed=123)   # cheap: nothing is created yet
noise.create()                                         # on the driver, once (first plan step)
eps = noise.get(noise.sample_offset(rng, dim), dim)    # anywhere the handle was sent
```

RLlib's default table (250M floats, 1 GB) froze its trainer on creation; the size here is
checked against the node's memory before anything is allocated (`check_noise_size`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from flowrl.iter import executor

FLOAT_BYTES = 4
DEFAULT_NOISE_SIZE = 25_000_000
# The table may take at most this share of the memory it must fit in.
_MAX_MEMORY_SHARE = 0.5

# Tables this process has read: (seed, size) -> read-only array.
_VIEWS: dict[tuple[int, int], np.ndarray] = {}


def node_memory_bytes() -> int:
    """Physical memory of this machine (bytes), read without Ray."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_noise_size(noise_size: int, available_bytes: int, where: str = "node memory") -> None:
    """Raises ValueError when a table of `noise_size` float32 exceeds half of `available_bytes`.

    Examples:
        >>> check_noise_size(1000, 10**9)
        >>> check_noise_size(250_000_000, 10**9)
        Traceback (most recent call last):
        ...
        ValueError: noise_size=250000000 float32 take 1000000000 bytes (1000 MB), more than \
half of the 1000000000 bytes (1000 MB) of node memory. Use a smaller noise_size (25_000_000 = \
100 MB is plenty for policies with up to a few million parameters).
    """
    needed = int(noise_size) * FLOAT_BYTES
    if needed > _MAX_MEMORY_SHARE * available_bytes:
        raise ValueError(
            f"noise_size={noise_size} float32 take {needed} bytes ({needed // 10**6} MB), more "
            f"than half of the {available_bytes} bytes ({available_bytes // 10**6} MB) of "
            f"{where}. Use a smaller noise_size (25_000_000 = 100 MB is plenty for policies "
            "with up to a few million parameters).")


def make_noise(size: int, seed: int) -> np.ndarray:
    """The table's contents: `size` standard normal float32, in chunks (no float64 copy)."""
    rng = np.random.default_rng(seed)
    table = np.empty(size, dtype=np.float32)
    chunk = 1 << 22
    for start in range(0, size, chunk):
        stop = min(start + chunk, size)
        table[start:stop] = rng.standard_normal(stop - start, dtype=np.float32)
    return table


class SharedNoiseTable:
    """A handle on the noise table; pickles as (size, seed, object-store reference).

    Args:
        size: float32 entries; checked against this node's memory at once.
        seed: the table's seed (every run with it sees the same noise).

    Raises:
        ValueError: `size` does not fit this node's memory (both numbers in the message).
    """

    def __init__(self, *, size: int = DEFAULT_NOISE_SIZE, seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"noise_size must be >= 1; got noise_size={size}.")
        check_noise_size(size, node_memory_bytes())
        self.size = int(size)
        self.seed = int(seed)
        self._ref: Any = None
        self.creation_time_s: float | None = None

    @property
    def nbytes(self) -> int:
        """Bytes one copy of the table takes (in the object store, per node)."""
        return self.size * FLOAT_BYTES

    @property
    def created(self) -> bool:
        return self._ref is not None

    def create(self) -> SharedNoiseTable:
        """Makes the table (once): a Ray task whose result stays in the object store, or a
        numpy array in local mode. Records `creation_time_s`. Returns self."""
        if self._ref is not None:
            return self
        start = time.perf_counter()
        if executor.is_local_mode():
            self._ref = _VIEWS.setdefault((self.seed, self.size), _read_only(
                make_noise(self.size, self.seed)))
        else:
            self._ref = _create_in_object_store(self.size, self.seed)
            self.view()  # the driver's zero-copy view; also waits for the task
        self.creation_time_s = time.perf_counter() - start
        return self

    def view(self) -> np.ndarray:
        """The whole table, read-only, without copying (mapped from this node's store)."""
        key = (self.seed, self.size)
        table = _VIEWS.get(key)
        if table is None:
            if self._ref is None:
                raise RuntimeError("The noise table was not created yet: call create() on the "
                                   "driver first (the plan's source does on its first step).")
            table = self._ref if isinstance(self._ref, np.ndarray) else _ray_get(self._ref)
            _VIEWS[key] = table = _read_only(table)
        return table

    def get(self, offset: int, dim: int) -> np.ndarray:
        """The perturbation at `offset`: a read-only view of `dim` entries."""
        return self.view()[offset:offset + dim]

    def sample_offset(self, rng: np.random.Generator, dim: int) -> int:
        """A uniformly random offset with `dim` entries after it."""
        if dim > self.size:
            raise ValueError(f"The policy has {dim} parameters but the noise table only "
                             f"noise_size={self.size} entries; use noise_size >= {dim * 100}.")
        return int(rng.integers(0, self.size - dim + 1))

    def __getstate__(self) -> dict[str, Any]:
        # A local-mode table is an array: never pickle 100 MB, the receiver makes its own.
        ref = None if isinstance(self._ref, np.ndarray) else self._ref
        return {"size": self.size, "seed": self.seed, "_ref": ref,
                "creation_time_s": self.creation_time_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._ref is None and (self.seed, self.size) in _VIEWS:
            self._ref = _VIEWS[(self.seed, self.size)]

    def __repr__(self) -> str:
        return f"SharedNoiseTable(size={self.size}, seed={self.seed})"


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def _create_in_object_store(size: int, seed: int) -> Any:
    import ray

    available = min(int(node["Resources"].get("object_store_memory", 0))
                    for node in ray.nodes() if node.get("Alive"))
    check_noise_size(size, available, where="the smallest node's Ray object store")
    return ray.remote(make_noise).options(num_cpus=0).remote(size, seed)


def _ray_get(ref: Any) -> np.ndarray:
    import ray

    return ray.get(ref)
