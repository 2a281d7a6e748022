"""Multi-agent rollout workers: policy mapping, batched forwards, per-agent trajectories."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from pettingzoo.utils.env import ParallelEnv

from flowrl.config import from_dict
from flowrl.envs import MultiAgentArena, ParallelEnvProtocolError
from flowrl.plans.pg import PG_POLICY, PGConfig
from flowrl.plans.ppo import PPO_POLICY, PPOConfig
from flowrl.policy import MultiAgentBatch, SampleBatch, concat_samples
from flowrl.workers.multi_agent import (
    MultiAgentRolloutWorker,
    MultiAgentSetup,
    multi_agent_setup_for,
)

TINY_MODEL = {"fcnet_hiddens": [8]}


def ppo_config(**overrides):
    return from_dict(PPOConfig, {"model": TINY_MODEL, "seed": 3, "train_batch_size": 512,
                                 **overrides})


class StaggeredEnv(ParallelEnv):
    """Two agents that finish at different times: "short" terminates after 2 steps, "long"
    is truncated after 4. Rewards: 1 per step for "short", 10 per step for "long"."""

    metadata = {"name": "StaggeredEnv"}

    def __init__(self, config: dict | None = None) -> None:
        self.possible_agents = ["short", "long"]
        self.agents: list[str] = []
        self._t = 0

    def observation_space(self, agent):
        return gym.spaces.Box(-1.0, 10.0, shape=(2,), dtype=np.float32)

    def action_space(self, agent):
        return gym.spaces.Discrete(2)

    def _obs(self, agent):
        return np.array([self._t, agent == "long"], dtype=np.float32)

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self._t = 0
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self._t += 1
        acted = list(self.agents)
        observations = {a: self._obs(a) for a in acted}
        rewards = {a: 1.0 if a == "short" else 10.0 for a in acted}
        terminations = {a: a == "short" and self._t >= 2 for a in acted}
        truncations = {a: a == "long" and self._t >= 4 for a in acted}
        self.agents = [a for a in acted if not (terminations[a] or truncations[a])]
        return observations, rewards, terminations, truncations, {a: {} for a in acted}


class RewardlessEnv(StaggeredEnv):
    """Breaks the protocol: no reward for agent "long" at step 1."""

    def step(self, actions):
        result = super().step(actions)
        del result[1]["long"]
        return result


class InfiniteObservationEnv(StaggeredEnv):
    """Agent "long" observes inf at step 3 (or at reset, with `config["at_reset"]`), inside its
    unbounded Box (a NaN would already fail the space check of the protocol)."""

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config)
        self.at_reset = bool((config or {}).get("at_reset"))

    def observation_space(self, agent):
        return gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)

    def _obs(self, agent):
        obs = super()._obs(agent)
        if agent == "long" and (self._t == 3 or (self.at_reset and self._t == 0)):
            obs[0] = np.inf
        return obs


def make_worker(env_creator=MultiAgentArena, policies=None, mapping=None, *, num_envs=2,
                fragment=10, batch_mode="truncate_episodes", env_config=None):
    """A remote-style worker (index 1) over `policies` (default: one shared PPO policy)."""
    table = policies or {"default_policy": (PPO_POLICY, ppo_config())}
    setup = MultiAgentSetup.from_env(env_creator(env_config or {}), table, mapping)
    return MultiAgentRolloutWorker(env_creator=env_creator, env_config=env_config or {},
                                   multi_agent=setup, num_envs=num_envs,
                                   rollout_fragment_length=fragment, batch_mode=batch_mode,
                                   seed=5, worker_index=1, num_workers=1)


TWO_POLICIES = {"p1": (PPO_POLICY, ppo_config()), "p2": (PPO_POLICY, ppo_config(lr=1e-4))}
BY_AGENT = {"agent1": "p1", "agent2": "p2"}


# --- policy mapping --------------------------------------------------------------------------


def test_dict_and_callable_mappings_pick_each_agents_policy():
    env = MultiAgentArena()
    by_dict = MultiAgentSetup.from_env(env, TWO_POLICIES, BY_AGENT)
    by_callable = MultiAgentSetup.from_env(env, TWO_POLICIES,
                                           lambda agent: "p1" if agent == "agent1" else "p2")
    for setup in (by_dict, by_callable):
        assert [setup.policy_for(a) for a in ("agent1", "agent2")] == ["p1", "p2"]
        assert setup.policies_to_train == ("p1", "p2")
        assert setup.entries["p1"].action_space == gym.spaces.Discrete(4)


def test_mapping_to_an_unknown_policy_lists_the_valid_ids():
    with pytest.raises(ValueError, match=r"'agent2' to 'p3'.*\['p1', 'p2'\]"):
        MultiAgentSetup.from_env(MultiAgentArena(), TWO_POLICIES, {"agent1": "p1",
                                                                    "agent2": "p3"})
    with pytest.raises(ValueError, match=r"'agent1' to 'nobody'.*\['p1', 'p2'\]"):
        MultiAgentSetup.from_env(MultiAgentArena(), TWO_POLICIES, lambda agent: "nobody")


def rllib_style_mapping(agent_id, episode, worker, **kwargs):
    return "p1" if agent_id == "agent1" else "p2"


def test_an_rllib_style_mapping_function_is_refused_naming_the_signature_flowrl_calls():
    """0.2 failed here with a bare TypeError from inside sampling."""
    with pytest.raises(TypeError) as info:
        MultiAgentSetup.from_env(MultiAgentArena(), TWO_POLICIES, rllib_style_mapping)
    message = str(info.value)
    assert "rllib_style_mapping(agent_id, episode, worker, **kwargs)" in message
    assert "policy_mapping(agent_id) -> policy_id" in message
    # With its extra parameters optional, the same function works.
    setup = MultiAgentSetup.from_env(
        MultiAgentArena(), TWO_POLICIES,
        lambda agent_id, episode=None, **kwargs: rllib_style_mapping(agent_id, episode, None))
    assert setup.policy_for("agent2") == "p2"


def test_an_agent_without_mapping_is_an_error_listing_the_policies():
    with pytest.raises(ValueError, match=r"'agent2' has no entry.*\['p1', 'p2'\]"):
        MultiAgentSetup.from_env(MultiAgentArena(), TWO_POLICIES, {"agent1": "p1"})
    with pytest.raises(ValueError, match=r"policy_mapping is missing.*\['p1', 'p2'\]"):
        MultiAgentSetup.from_env(MultiAgentArena(), TWO_POLICIES, None)


def test_unused_policies_and_unknown_policies_to_train_are_errors():
    with pytest.raises(ValueError, match=r"Policies \['p2'\] have no agent mapped"):
        MultiAgentSetup.from_env(MultiAgentArena(), TWO_POLICIES, lambda agent: "p1")
    with pytest.raises(ValueError, match=r"policies_to_train names unknown policies \['p9'\]"):
        MultiAgentSetup.from_env(MultiAgentArena(), TWO_POLICIES, BY_AGENT, ["p9"])


def test_one_policy_for_agents_with_different_spaces_is_an_error():
    class Mixed(StaggeredEnv):
        def action_space(self, agent):
            return gym.spaces.Discrete(2 if agent == "short" else 3)

    with pytest.raises(ValueError, match="'short' and 'long' both map to policy"):
        multi_agent_setup_for(Mixed(), PPO_POLICY, ppo_config())


def test_single_agent_env_gets_no_setup_and_rejects_multi_agent_settings():
    cartpole = gym.make("CartPole-v1")
    assert multi_agent_setup_for(cartpole, PPO_POLICY, ppo_config()) is None
    with pytest.raises(ValueError, match="single-agent gymnasium env"):
        multi_agent_setup_for(cartpole, PPO_POLICY, ppo_config(policies={"p": {}}),
                              {"p": (PPO_POLICY, ppo_config())})


# --- sampling --------------------------------------------------------------------------------


def test_sample_returns_per_policy_batches_with_gae():
    worker = make_worker(policies=TWO_POLICIES, mapping=BY_AGENT, num_envs=3, fragment=20)
    batch = worker.sample()
    assert isinstance(batch, MultiAgentBatch)
    assert batch.env_steps == 60
    assert set(batch.policy_batches) == {"p1", "p2"}
    for policy_batch in batch.policy_batches.values():
        assert len(policy_batch) == 60
        assert {"obs", "actions", "rewards", "new_obs", "advantages", "value_targets",
                "action_logp", "eps_id", "agent_index"} <= set(policy_batch)
    # agent2's rewards are only -0.1 (no collision) or +1 (collision).
    assert set(np.round(batch.policy_batches["p2"]["rewards"].astype(float), 3)) <= {-0.1, 1.0}
    assert set(batch.policy_batches["p1"]["agent_index"]) == {0}
    assert set(batch.policy_batches["p2"]["agent_index"]) == {1}


def test_one_batched_forward_per_policy_per_step():
    worker = make_worker(policies=TWO_POLICIES, mapping=BY_AGENT, num_envs=4, fragment=5)
    calls = {"p1": [], "p2": []}
    for policy_id, policy in worker.policy_map.items():
        original = policy.compute_actions

        def counting(obs, state=None, *, explore=True, _original=original, _id=policy_id):
            calls[_id].append(len(obs))
            return _original(obs, state, explore=explore)

        policy.compute_actions = counting
    worker.sample()
    assert calls == {"p1": [4] * 5, "p2": [4] * 5}  # 5 steps, all 4 envs in one forward


def test_shared_policy_mode_maps_every_agent_to_default_policy():
    worker = make_worker(num_envs=2, fragment=10)
    batch = worker.sample()
    assert list(batch.policy_batches) == ["default_policy"]
    assert len(batch.policy_batches["default_policy"]) == 40  # 2 agents x 2 envs x 10 steps
    assert worker.policy is worker.get_policy("default_policy")


def test_grid_postprocessing_equals_per_trajectory_postprocessing():
    worker = make_worker(policies=TWO_POLICIES, mapping=BY_AGENT, num_envs=2, fragment=60,
                         env_config={"timestep_limit": 25})
    batch = worker.sample().policy_batches["p1"]
    policy = worker.get_policy("p1")
    for eps_id in np.unique(batch["eps_id"]):
        rows = batch["eps_id"] == eps_id
        raw = SampleBatch({k: v[rows] for k, v in batch.items()
                           if k not in ("advantages", "value_targets")})
        expected = policy.postprocess_trajectory(raw)
        np.testing.assert_allclose(batch["advantages"][rows], expected["advantages"], atol=1e-5)
        np.testing.assert_allclose(batch["value_targets"][rows], expected["value_targets"],
                                   atol=1e-5)


def test_agents_that_finish_at_different_times_get_their_own_trajectories():
    policies = {"s": (PPO_POLICY, ppo_config()), "l": (PPO_POLICY, ppo_config())}
    worker = make_worker(StaggeredEnv, policies, {"short": "s", "long": "l"}, num_envs=1,
                         fragment=8)
    batch = worker.sample()
    short, long_ = batch.policy_batches["s"], batch.policy_batches["l"]
    assert batch.env_steps == 8
    assert len(short) == 4 and len(long_) == 8  # two episodes of 4 env steps
    assert short["terminateds"].tolist() == [False, True] * 2
    assert long_["truncateds"].tolist() == [False, False, False, True] * 2
    assert not long_["terminateds"].any()
    episodes = worker.get_episode_stats()
    assert episodes == [(42.0, 4, {"s": 2.0, "l": 40.0})] * 2


def test_complete_episodes_mode_returns_only_whole_agent_episodes():
    policies = {"s": (PPO_POLICY, ppo_config()), "l": (PPO_POLICY, ppo_config())}
    worker = make_worker(StaggeredEnv, policies, {"short": "s", "long": "l"}, num_envs=1,
                         fragment=3, batch_mode="complete_episodes")
    batch = worker.sample()
    long_ = batch.policy_batches["l"]
    assert len(long_) % 4 == 0 and len(long_) >= 4
    ends = np.flatnonzero(long_["truncateds"])
    assert ends.tolist() == list(range(3, len(long_), 4))


def test_policies_of_different_algorithms_sample_side_by_side():
    policies = {"ppo": (PPO_POLICY, ppo_config()),
                "pg": (PG_POLICY, from_dict(PGConfig, {"model": TINY_MODEL}))}
    worker = make_worker(policies=policies, mapping={"agent1": "ppo", "agent2": "pg"})
    batch = worker.sample()
    assert "advantages" in batch.policy_batches["ppo"]
    assert "value_targets" in batch.policy_batches["pg"]


def test_weights_travel_per_policy():
    source = make_worker(policies=TWO_POLICIES, mapping=BY_AGENT)
    target = make_worker(policies=TWO_POLICIES, mapping=BY_AGENT)
    only_p2 = source.get_weights(["p2"])
    assert list(only_p2) == ["p2"]
    before_p1 = target.get_weights(["p1"])["p1"]
    target.set_weights(only_p2, {"timestep": 10})
    for name, value in source.get_weights(["p2"])["p2"].items():
        np.testing.assert_array_equal(target.get_weights(["p2"])["p2"][name], value)
    for name, value in before_p1.items():
        np.testing.assert_array_equal(target.get_weights(["p1"])["p1"][name], value)


def test_several_policies_have_no_single_policy_attribute():
    worker = make_worker(policies=TWO_POLICIES, mapping=BY_AGENT)
    with pytest.raises(AttributeError, match=r"get_policy\(policy_id\)"):
        _ = worker.policy
    with pytest.raises(KeyError, match=r"valid policy ids: \['p1', 'p2'\]"):
        worker.get_policy("p3")


def test_an_env_breaking_the_protocol_is_named_with_agent_and_step():
    worker = make_worker(RewardlessEnv, num_envs=1, fragment=2)
    with pytest.raises(ParallelEnvProtocolError, match=r"step 1, agent 'long': rewards"):
        worker.sample()


def test_evaluate_runs_whole_episodes_without_exploration():
    worker = make_worker(policies=TWO_POLICIES, mapping=BY_AGENT,
                         env_config={"timestep_limit": 7})
    episodes = worker.evaluate(3, seed=1)
    assert [length for _, length in episodes] == [7, 7, 7]


@pytest.mark.parametrize(("at_reset", "where"), [(False, r"step\(\).*agent 'long' at episode "
                                                 r"step 3"),
                                                (True, r"reset\(\).*agent 'long'")])
def test_a_non_finite_observation_is_an_error_naming_the_agent(at_reset, where):
    policies = {"s": (PPO_POLICY, ppo_config()), "l": (PPO_POLICY, ppo_config())}
    worker = make_worker(InfiniteObservationEnv, policies, {"short": "s", "long": "l"}, num_envs=1,
                         fragment=8, env_config={"at_reset": at_reset})
    with pytest.raises(ValueError, match=where + r".*env index 0 of rollout worker 1"):
        worker.sample()


# --- time-major (V-trace) policies -----------------------------------------------------------


def impala_config(**overrides):
    from flowrl.plans.impala import IMPALAConfig

    return from_dict(IMPALAConfig, {"model": TINY_MODEL, "seed": 3, "rollout_fragment_length": 5,
                                    "num_envs_per_worker": 2, "train_batch_size": 20,
                                    **overrides})


def streams(rows, length):
    """A column's rows as the V-trace loss reshapes them: [B, T] (env-major streams)."""
    return np.asarray(rows).reshape(-1, length)


@pytest.mark.parametrize("mapping", [None, BY_AGENT])
def test_vtrace_rows_are_whole_env_major_streams_per_agent(mapping):
    from flowrl.plans.impala import IMPALA_POLICY

    policies = ({"default_policy": (IMPALA_POLICY, impala_config())} if mapping is None else
                {"p1": (IMPALA_POLICY, impala_config()), "p2": (IMPALA_POLICY, impala_config())})
    worker = make_worker(policies=policies, mapping=mapping, num_envs=2, fragment=5,
                         env_config={"timestep_limit": 7})
    first, second = worker.sample(), worker.sample()
    merged = concat_samples([first, second])  # what IMPALA's ConcatFragments does
    agents_per_policy = 2 if mapping is None else 1
    for policy_id, batch in merged.policy_batches.items():
        assert len(batch) == 2 * 2 * agents_per_policy * 5  # samples x envs x agents x T
        agent_index, eps_id, t = (streams(batch[name], 5) for name in ("agent_index", "eps_id",
                                                                        "t"))
        done = streams(batch["terminateds"] | batch["truncateds"], 5)
        for stream in range(agent_index.shape[0]):
            assert len(set(agent_index[stream])) == 1, policy_id  # one agent per stream
            for step in range(4):  # consecutive steps of one env, across episode resets
                if done[stream, step]:
                    assert t[stream, step + 1] == 0
                else:
                    assert t[stream, step + 1] == t[stream, step] + 1
                    assert eps_id[stream, step + 1] == eps_id[stream, step]


@pytest.mark.parametrize(("policies", "mapping", "named"), [
    (None, None, r"Policy 'default_policy' \(impala\).*\['short'\]"),
    ({"s": None, "l": None}, {"short": "s", "long": "l"}, r"Policy 's' \(impala\).*\['short'\]"),
])
def test_vtrace_policies_reject_agents_that_finish_before_the_episode_ends(policies, mapping,
                                                                          named):
    from flowrl.plans.impala import IMPALA_POLICY

    config = impala_config(rollout_fragment_length=8, num_envs_per_worker=1)
    table = ({"default_policy": (IMPALA_POLICY, config)} if policies is None
             else {pid: (IMPALA_POLICY, config) for pid in policies})
    worker = make_worker(StaggeredEnv, table, mapping, num_envs=1, fragment=8)
    with pytest.raises(ValueError, match=named + r".*not supported by V-trace plans.*PPO"):
        worker.sample()
