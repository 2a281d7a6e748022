"""RolloutWorker: fragment sizes, gymnasium termination/truncation, batch modes, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from flowrl.config import from_dict
from flowrl.plans.a2c import A2CConfig
from flowrl.plans.pg import PG_POLICY
from flowrl.plans.ppo import PPO_POLICY, PPOConfig
from flowrl.testing import CorridorEnv
from flowrl.workers import RolloutWorker


def make_worker(*, num_envs=2, fragment=7, batch_mode="truncate_episodes", seed=0, **env):
    env_config = {"length": 3, "max_steps": 4, **env}
    probe = CorridorEnv(env_config)
    config = from_dict(A2CConfig, {"gamma": 0.9, "gae_lambda": 1.0, "use_gae": True,
                                   "use_critic": True, "model": {"fcnet_hiddens": [8]}})
    return RolloutWorker(
        env_creator=CorridorEnv, env_config=env_config,
        policy_spec=PG_POLICY, config=config,
        observation_space=probe.observation_space, action_space=probe.action_space,
        num_envs=num_envs, rollout_fragment_length=fragment, batch_mode=batch_mode,
        seed=seed, worker_index=1,
    )


def test_sample_returns_fragment_times_envs_rows_with_postprocessed_columns():
    batch = make_worker(num_envs=3, fragment=5).sample()
    assert len(batch) == 15
    for column in ("obs", "new_obs", "actions", "rewards", "terminateds", "truncateds",
                   "eps_id", "t", "action_logp", "vf_preds", "advantages", "value_targets"):
        assert column in batch.columns, column
    assert batch["obs"].shape == (15, 2)


def test_done_rows_carry_the_final_observation_and_episodes_restart():
    worker = make_worker(num_envs=1, fragment=12)
    batch = worker.sample()
    dones = np.flatnonzero(batch["terminateds"] | batch["truncateds"])
    assert len(dones) >= 2
    for i in dones:
        # The final observation of an episode is never a reset observation ([0, 0]).
        assert batch["new_obs"][i].tolist() != [0.0, 0.0]
        if i + 1 < len(batch):
            assert batch["t"][i + 1] == 0
            assert batch["eps_id"][i + 1] != batch["eps_id"][i]
            assert batch["obs"][i + 1].tolist() == [0.0, 0.0]
    not_done = np.flatnonzero(~(batch["terminateds"] | batch["truncateds"]))[:-1]
    assert np.allclose(batch["new_obs"][not_done], batch["obs"][not_done + 1])


def test_truncated_episodes_bootstrap_and_terminated_ones_do_not():
    worker = make_worker(num_envs=1, fragment=40)
    batch = worker.sample()
    gamma = 0.9
    for episode in batch.split_by_episode():
        last = len(episode) - 1
        reward, target = episode["rewards"][last], episode["value_targets"][last]
        if episode["terminateds"][last]:
            assert target == pytest.approx(reward, abs=1e-5)
        else:
            # Truncated or cut by the fragment: bootstraps from V(new_obs[-1]).
            bootstrap = worker.policy.compute_values(episode["new_obs"][last:])[0]
            assert target == pytest.approx(reward + gamma * bootstrap, abs=1e-4)


def test_complete_episodes_mode_returns_only_whole_episodes():
    worker = make_worker(num_envs=2, fragment=3, batch_mode="complete_episodes")
    for _ in range(2):
        batch = worker.sample()
        assert len(batch) >= 6
        for episode in batch.split_by_episode():
            assert episode["t"][0] == 0
            assert episode["terminateds"][-1] or episode["truncateds"][-1]


def test_episode_stats_are_reported_once():
    worker = make_worker(num_envs=2, fragment=20)
    worker.sample()
    episodes = worker.get_episode_stats()
    assert episodes and all(length <= 4 for _, length in episodes)
    assert worker.get_episode_stats() == []


def test_same_seed_same_samples():
    a, b = make_worker(seed=3).sample(), make_worker(seed=3).sample()
    for column in a.columns:
        np.testing.assert_array_equal(a[column], b[column])


def test_building_a_worker_opens_no_environment():
    worker = make_worker()
    assert worker._env is None


def test_worker_runs_as_shard_on_both_executors(executor):
    from flowrl.iter import executor as ex
    from flowrl.iter import from_actors

    handle = ex.create_actor(RolloutWorker, num_cpus=0, **_worker_kwargs())
    try:
        batches = from_actors([handle]).gather_sync().take(2)
        assert [len(b) for b in batches] == [14, 14]
    finally:
        ex.kill(handle)


def _worker_kwargs():
    worker = make_worker()
    probe = CorridorEnv({"length": 3, "max_steps": 4})
    return dict(env_creator=CorridorEnv, env_config={"length": 3, "max_steps": 4},
                policy_spec=worker.policy.spec, config=worker.policy.config,
                observation_space=probe.observation_space, action_space=probe.action_space,
                num_envs=2, rollout_fragment_length=7, seed=0, worker_index=1)


def test_box_actions_are_clipped_for_the_env_but_kept_for_learning():
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    worker = RolloutWorker(
        env_creator=lambda cfg: gym.make("Pendulum-v1"), env_config={},
        policy_spec=PPO_POLICY, config=PPOConfig(seed=0),
        observation_space=env.observation_space, action_space=env.action_space,
        num_envs=2, rollout_fragment_length=4, seed=0, worker_index=1)
    assert worker._env_actions(np.array([[5.0], [-5.0]], dtype=np.float32)).tolist() == [
        [2.0], [-2.0]]
    batch = worker.sample()
    assert batch["actions"].shape == (8, 1)
