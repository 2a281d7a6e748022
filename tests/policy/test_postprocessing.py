"""compute_advantages against hand-computed examples, with truncation vs termination."""

from __future__ import annotations

import types

import numpy as np
import pytest

from flowrl.policy import SampleBatch, compute_advantages, discount_cumsum
from flowrl.policy.postprocessing import compute_gae_for_trajectory


def piece(terminated_last: bool) -> SampleBatch:
    return SampleBatch(
        rewards=np.array([1.0, 2.0, 3.0]),
        vf_preds=np.array([0.5, 1.0, 1.5], dtype=np.float32),
        terminateds=np.array([False, False, terminated_last]),
        truncateds=np.array([False, False, not terminated_last]),
    )


def test_discount_cumsum():
    assert discount_cumsum(np.array([1.0, 2.0, 3.0]), 0.5).tolist() == [2.75, 3.5, 3.0]


def test_gae_truncated_bootstraps_from_last_value():
    gamma, lam, last_value = 0.9, 0.8, 2.0
    batch = compute_advantages(piece(terminated_last=False), last_value, gamma, lam)
    # Hand computation: delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma*lam*A_{t+1}.
    d2 = 3.0 + 0.9 * 2.0 - 1.5  # 3.3
    d1 = 2.0 + 0.9 * 1.5 - 1.0  # 2.35
    d0 = 1.0 + 0.9 * 1.0 - 0.5  # 1.4
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    np.testing.assert_allclose(batch["advantages"], [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(batch["value_targets"], [a0 + 0.5, a1 + 1.0, a2 + 1.5], rtol=1e-6)
    assert batch["advantages"].dtype == np.float32


def test_gae_terminated_ignores_last_value():
    batch = compute_advantages(piece(terminated_last=True), 100.0, 0.9, 0.8)
    d2 = 3.0 - 1.5
    d1 = 2.0 + 0.9 * 1.5 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    np.testing.assert_allclose(batch["advantages"], [a0, a1, a2], rtol=1e-6)


def test_discounted_returns_with_and_without_critic():
    batch = compute_advantages(piece(False), 2.0, 0.5, use_gae=False, use_critic=True)
    returns = [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 2.0, 2 + 0.5 * 3 + 0.25 * 2.0, 3 + 0.5 * 2.0]
    np.testing.assert_allclose(batch["value_targets"], returns)
    np.testing.assert_allclose(batch["advantages"], np.subtract(returns, [0.5, 1.0, 1.5]))
    vanilla = compute_advantages(piece(True), 2.0, 0.5, use_gae=False, use_critic=False)
    np.testing.assert_allclose(vanilla["advantages"], [1 + 1 + 0.75, 2 + 1.5, 3.0])


def test_errors():
    with pytest.raises(ValueError, match="use_gae=True needs a critic"):
        compute_advantages(piece(True), 0.0, use_gae=True, use_critic=False)
    bad = SampleBatch(rewards=np.ones(3), vf_preds=np.zeros(3), terminateds=[True, False, False])
    with pytest.raises(ValueError, match=r"terminateds\[0\] is set before the last row"):
        compute_advantages(bad, 0.0)
    with pytest.raises(ValueError, match=r"needs columns \['vf_preds'\]"):
        compute_advantages(SampleBatch(rewards=np.ones(2)), 0.0)


class ConstantValuePolicy:
    """A fake stateless policy: V(obs) = 10 * obs[0]."""

    config = types.SimpleNamespace(gamma=1.0, gae_lambda=1.0, use_gae=True, use_critic=True)

    def compute_values(self, obs_rows):
        return 10.0 * obs_rows[:, 0]

    def compute_values_after(self, rows):
        return self.compute_values(rows["new_obs"])


@pytest.mark.parametrize("terminated, expected_last", [(True, 1.0), (False, 1.0 + 30.0)])
def test_trajectory_postprocessing_bootstraps_from_new_obs(terminated, expected_last):
    batch = SampleBatch(
        obs=np.zeros((2, 1), np.float32), new_obs=np.array([[0.0], [3.0]], np.float32),
        rewards=[1.0, 1.0], vf_preds=np.zeros(2, np.float32),
        terminateds=[False, terminated], truncateds=[False, not terminated],
    )
    out = compute_gae_for_trajectory(ConstantValuePolicy(), batch)
    assert out["advantages"][-1] == pytest.approx(expected_last)
