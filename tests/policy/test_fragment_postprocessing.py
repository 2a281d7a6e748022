"""Whole-fragment GAE equals per-trajectory GAE on every piece."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from flowrl.plans.pg import PG_POLICY
from flowrl.policy import (
    SampleBatch,
    compute_gae_for_fragment,
    concat_samples,
    trajectory_bounds,
)

T, N = 12, 3


def _fragment(rng: np.random.Generator) -> dict[str, np.ndarray]:
    terminateds = rng.random((T, N)) < 0.1
    truncateds = (rng.random((T, N)) < 0.1) & ~terminateds
    return {
        "obs": rng.normal(size=(T, N, 4)).astype(np.float32),
        "new_obs": rng.normal(size=(T, N, 4)).astype(np.float32),
        "rewards": rng.normal(size=(T, N)).astype(np.float32),
        "terminateds": terminateds,
        "truncateds": truncateds,
        "vf_preds": rng.normal(size=(T, N)).astype(np.float32),
    }


def _per_piece(policy, columns):
    pieces = []
    for env in range(N):
        rows = {name: value[:, env] for name, value in columns.items()}
        for start, end in trajectory_bounds(rows["terminateds"], rows["truncateds"]):
            piece = SampleBatch({name: value[start:end] for name, value in rows.items()})
            pieces.append(policy.postprocess_trajectory(piece))
    return concat_samples(pieces)


@pytest.mark.parametrize(("use_gae", "use_critic"), [(True, True), (False, True), (False, False)])
def test_fragment_gae_matches_per_trajectory_gae(use_gae, use_critic):
    space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    policy = PG_POLICY.build(space, gym.spaces.Discrete(2), {
        "use_gae": use_gae, "use_critic": use_critic, "gamma": 0.9, "gae_lambda": 0.8,
        "seed": 0})
    rng = np.random.default_rng(0)
    for _ in range(5):
        columns = _fragment(rng)
        fast = compute_gae_for_fragment(policy, columns)
        slow = _per_piece(policy, columns)
        assert len(fast) == len(slow) == T * N
        for name in ("rewards", "obs", "advantages", "value_targets"):
            np.testing.assert_allclose(fast[name], slow[name], rtol=1e-5, atol=1e-5,
                                       err_msg=name)
