"""Multi-agent training through the Trainer: policy mapping, per-policy training and metrics,
the composed plan, a user's PettingZoo env, and a short learning run."""

from __future__ import annotations

import numpy as np
import pytest

import flowrl
from flowrl.envs import MultiAgentArena
from flowrl.ops import StoreToReplay
from flowrl.plans.multiagent import multiagent_plan
from flowrl.replay import MultiAgentReplayBuffer, PrioritizedReplayBuffer, ReplayBuffer
from flowrl.workers.multi_agent import MultiAgentRolloutWorker

FRAMEWORKS = ["torch", pytest.param("tf", marks=pytest.mark.tf)]
TWO_POLICIES = {"p1": {}, "p2": {"config": {"lr": 1e-4}}}
BY_AGENT = {"agent1": "p1", "agent2": "p2"}


def arena_config(**overrides) -> dict:
    """Two PPO policies on a short 4x4 arena; one iteration takes well under a second."""
    base = {"num_workers": 0, "num_envs_per_worker": 2, "rollout_fragment_length": 20,
            "train_batch_size": 40, "sgd_minibatch_size": 20, "num_sgd_iter": 2,
            "num_cpus_per_worker": 0, "seed": 7, "model": {"fcnet_hiddens": [16]},
            "env_config": {"width": 4, "height": 4, "timestep_limit": 10},
            "policies": TWO_POLICIES, "policy_mapping": BY_AGENT}
    return {**base, **overrides}


def weights_of(trainer, policy_id):
    return {k: v.copy() for k, v in trainer.get_policy(policy_id).get_weights().items()}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_policy_trains_on_its_agents_and_reports_its_returns(framework, executor):
    trainer = flowrl.Trainer("ppo", env="MultiAgentArena-v0",
                             config=arena_config(framework=framework, num_workers=1))
    try:
        assert isinstance(trainer.workers.local_worker(), MultiAgentRolloutWorker)
        before = {pid: weights_of(trainer, pid) for pid in ("p1", "p2")}
        result = trainer.train()
        result = trainer.train()
    finally:
        trainer.stop()
    assert set(result["info"]["learner"]) == {"p1", "p2"}
    assert "policy_loss" in result["info"]["learner"]["p2"]
    rewards = result["policy_reward_mean"]
    assert set(rewards) == {"p1", "p2"}
    assert result["episode_reward_mean"] == pytest.approx(rewards["p1"] + rewards["p2"])
    # agent2 earns -0.1 a step or +1 per collision over 10 steps.
    assert -1.0 - 1e-6 <= rewards["p2"] <= 10.0
    for pid in ("p1", "p2"):
        after = trainer.get_policy(pid).get_weights()
        assert any(not np.allclose(after[k], before[pid][k]) for k in after), pid


def test_policies_to_train_leaves_the_others_untouched(local_executor):
    trainer = flowrl.Trainer("ppo", env="MultiAgentArena-v0",
                             config=arena_config(policies_to_train=["p1"]))
    try:
        frozen = weights_of(trainer, "p2")
        result = trainer.train()
        after = trainer.get_policy("p2").get_weights()
    finally:
        trainer.stop()
    assert set(result["info"]["learner"]) == {"p1"}
    for name, value in frozen.items():
        np.testing.assert_array_equal(after[name], value)
    assert set(result["policy_reward_mean"]) == {"p1", "p2"}


def test_callable_mapping_and_shared_policy(local_executor):
    trainer = flowrl.Trainer("ppo", env="MultiAgentArena-v0", config=arena_config(
        policies={"shared": {}}, policy_mapping=lambda agent: "shared"))
    try:
        result = trainer.train()
    finally:
        trainer.stop()
    assert set(result["info"]["learner"]) == {"shared"}
    assert result["num_steps_trained"] == 2 * result["timesteps_total"]  # 2 agents per step


@pytest.mark.parametrize(("algo", "overrides"), [
    ("pg", {"train_batch_size": 40}),
    ("a2c", {"train_batch_size": 40, "microbatch_size": 20}),
    ("dqn", {"learning_starts": 20, "train_batch_size": 16, "min_steps_per_iteration": 40}),
])
def test_shared_policy_mode_works_with_other_algorithms(algo, overrides, local_executor):
    config = {"num_workers": 0, "num_envs_per_worker": 2, "rollout_fragment_length": 10,
              "seed": 3, "model": {"fcnet_hiddens": [16]}, "env_config": {"timestep_limit": 10},
              **overrides}
    trainer = flowrl.Trainer(algo, env="MultiAgentArena-v0", config=config)
    try:
        results = [trainer.train() for _ in range(3)]
    finally:
        trainer.stop()
    assert "default_policy" in results[-1]["info"]["learner"]
    assert np.isfinite(results[-1]["policy_reward_mean"]["default_policy"])


@pytest.mark.parametrize("algo", ["pg", "a2c"])
def test_independent_policies_with_other_on_policy_algorithms(algo, local_executor):
    config = arena_config(train_batch_size=40)
    for key in ("sgd_minibatch_size", "num_sgd_iter"):
        config.pop(key)
    trainer = flowrl.Trainer(algo, env="MultiAgentArena-v0", config=config)
    try:
        result = trainer.train()
    finally:
        trainer.stop()
    assert set(result["info"]["learner"]) == {"p1", "p2"}


@pytest.mark.parametrize(("mapping", "message"), [
    ({"agent1": "p1", "agent2": "p3"}, r"maps agent 'agent2' to 'p3'.*\['p1', 'p2'\]"),
    ({"agent1": "p1"}, r"'agent2' has no entry in policy_mapping.*\['p1', 'p2'\]"),
])
def test_bad_mappings_fail_when_the_trainer_is_built(mapping, message, local_executor):
    with pytest.raises(ValueError, match=message):
        flowrl.Trainer("ppo", env="MultiAgentArena-v0", config=arena_config(policy_mapping=mapping))


def test_multi_agent_settings_on_a_single_agent_env_are_rejected(tiny_config, local_executor):
    with pytest.raises(ValueError, match="single-agent gymnasium env"):
        flowrl.Trainer("ppo", env="corridor", config=tiny_config(
            "ppo", policies=TWO_POLICIES, policy_mapping=BY_AGENT))


def test_a_policy_of_another_algorithm_uses_that_algorithms_config(local_executor):
    trainer = flowrl.Trainer("ppo", env="MultiAgentArena-v0", config=arena_config(
        policies={"p1": {}, "p2": {"algo": "pg", "config": {"lr": 0.01}}}))
    try:
        p2 = trainer.get_policy("p2")
        assert type(p2.config).__name__ == "PGConfig"
        assert p2.config.lr == 0.01 and p2.config.seed == 7
        assert trainer.get_policy("p1").config.lr == trainer.config.lr
    finally:
        trainer.stop()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_composed_plan_trains_each_policy_in_its_own_branch(framework, executor):
    config = arena_config(framework=framework, num_workers=1, policies={
        "p1": {"config": {"num_sgd_iter": 1}}, "p2": {"config": {"train_batch_size": 80}}})
    trainer = flowrl.Trainer("ppo", env="MultiAgentArena-v0", config=config,
                             plan=multiagent_plan)
    try:
        trained = set()
        for _ in range(4):
            trained |= set(trainer.train()["info"]["learner"])
        graph = trainer.plan_graph()
    finally:
        trainer.stop()
    assert trained == {"p1", "p2"}
    labels = " ".join(str(data.get("label", node)) for node, data in graph.nodes(data=True))
    for branch in ("policy_ids=['p1']", "policy_ids=['p2']", "ConcatBatches(min_batch_size=80)",
                   "Concurrently"):
        assert branch in labels, (branch, labels)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_composed_ppo_and_dqn_plan_trains_both_algorithms(framework, executor):
    config = arena_config(framework=framework, num_workers=1, min_steps_per_iteration=40,
                          policies={"p1": {}, "p2": {"algo": "dqn", "config": {
                              "learning_starts": 40, "train_batch_size": 16,
                              "training_intensity": 0.5, "model": {"fcnet_hiddens": [16]}}}})
    trainer = flowrl.Trainer("ppo", env="MultiAgentArena-v0", config=config,
                             plan=multiagent_plan)
    try:
        assert type(trainer.get_policy("p2").config).__name__ == "DQNConfig"
        learner = {}
        for _ in range(3):
            learner.update(trainer.train()["info"]["learner"])
        labels = repr(trainer.plan)
        result = trainer.train()
    finally:
        trainer.stop()
    assert "policy_loss" in learner["p1"] and "mean_q" in learner["p2"]
    assert result["info"]["counters"]["replay/rows_added"] > 0
    for stage in ("StoreToReplay", "PolicyRows(policy_id='p2')", "UpdateKL",
                  "TrainOneStep(num_sgd_iter=1, sgd_minibatch_size=0, policy_ids=['p2'])"):
        assert stage in labels, (stage, labels)


DQN_TINY = {"learning_starts": 40, "train_batch_size": 16, "training_intensity": 0.5,
            "model": {"fcnet_hiddens": [16]}}


def test_a_policy_of_another_algorithm_trains_without_naming_a_plan(local_executor):
    """0.2 failed here with KeyError 'advantages': a DQN policy under a PPO trainer needs the
    composed plan, which the Trainer now picks by itself."""
    config = arena_config(min_steps_per_iteration=40, policies={
        "p1": {}, "p2": {"algo": "dqn", "config": DQN_TINY}})
    trainer = flowrl.Trainer("ppo", env="MultiAgentArena-v0", config=config)
    try:
        learner = {}
        for _ in range(3):
            learner.update(trainer.train()["info"]["learner"])
        assert trainer._plan_fn is multiagent_plan
    finally:
        trainer.stop()
    assert "policy_loss" in learner["p1"] and "mean_q" in learner["p2"]


@pytest.mark.parametrize(("trainer_algo", "other", "overrides", "stat"), [
    ("dqn", "a2c", {"train_batch_size": 40}, "vf_loss"),
    ("a2c", "ppo", {"num_sgd_iter": 1}, "kl_coeff"),
    ("ppo", "pg", {"train_batch_size": 40}, "policy_loss"),
    ("ppo", "a2c", {"train_batch_size": 40, "microbatch_size": 20}, "vf_loss"),
    ("ppo", "impala", {"train_batch_size": 40}, "mean_rho"),
    ("dqn", "appo", {"train_batch_size": 40}, "mean_ratio"),
    ("impala", "a2c", {"train_batch_size": 40}, "vf_loss"),
    ("ppo", "sac", {"learning_starts": 40, "train_batch_size": 16, "training_intensity": 0.5,
                    "random_timesteps": 20}, "alpha"),
])
def test_any_two_composable_algorithms_train_side_by_side(trainer_algo, other, overrides, stat,
                                                          local_executor):
    own = DQN_TINY if trainer_algo == "dqn" else {}
    config = {**arena_config(min_steps_per_iteration=40, **own), "policies": {
        "p1": {}, "p2": {"algo": other, "config": overrides}}}
    if trainer_algo != "ppo":
        for key in ("sgd_minibatch_size", "num_sgd_iter"):
            config.pop(key)
    trainer = flowrl.Trainer(trainer_algo, env="MultiAgentArena-v0", config=config)
    try:
        before = weights_of(trainer, "p2")
        learner = {}
        for _ in range(3):
            learner.update(trainer.train()["info"]["learner"])
        after = trainer.get_policy("p2").get_weights()
    finally:
        trainer.stop()
    assert set(learner) == {"p1", "p2"}
    assert stat in learner["p2"]
    assert any(not np.allclose(after[k], before[k]) for k in after)


def test_a_mix_with_an_algorithm_that_cannot_compose_fails_before_any_worker_starts():
    config = arena_config(policies={"p1": {}, "p2": {"algo": "a3c"}})
    with pytest.raises(ValueError) as info:
        flowrl.Trainer("ppo", env="MultiAgentArena-v0", config=config, local_mode=True)
    message = str(info.value)
    assert "'p2' uses A3C" in message and "'PPO'" in message and "'DQN'" in message


REPLAY_TINY = {"num_envs_per_worker": 2, "rollout_fragment_length": 10, "seed": 3,
               "num_cpus_per_worker": 0, "model": {"fcnet_hiddens": [16]},
               "env_config": {"width": 4, "height": 4, "timestep_limit": 10},
               "learning_starts": 20, "train_batch_size": 16}
UNIFORM_P2 = {"buffer_size": 300, "prioritized_replay": False, "exploration_final_eps": 0.5,
              "exploration_timesteps": 40, "target_network_update_freq": 1000}


def test_dqn_trains_independent_policies_each_with_its_own_buffer(executor):
    config = {**REPLAY_TINY, "num_workers": 1, "min_steps_per_iteration": 40,
              "target_network_update_freq": 40, "policy_mapping": BY_AGENT,
              "policies": {"p1": {}, "p2": {"config": UNIFORM_P2}}}
    trainer = flowrl.Trainer("dqn", env="MultiAgentArena-v0", config=config)
    try:
        before = {pid: weights_of(trainer, pid) for pid in ("p1", "p2")}
        results = [trainer.train() for _ in range(3)]
        buffer = trainer.plan.operators(StoreToReplay)[0].local_buffer
        epsilons = {pid: trainer.get_policy(pid).action_selector.epsilon for pid in ("p1", "p2")}
        plan = repr(trainer.plan)
        changed = {pid: any(not np.allclose(value, before[pid][name]) for name, value in
                            trainer.get_policy(pid).get_weights().items()) for pid in before}
    finally:
        trainer.stop()
    result = results[-1]
    assert set(result["info"]["learner"]) == {"p1", "p2"}
    assert all("mean_q" in stats for stats in result["info"]["learner"].values())
    assert set(result["policy_reward_mean"]) == {"p1", "p2"}
    assert changed == {"p1": True, "p2": True}
    # Each policy has its own buffer, built from its own config, and both got rows.
    assert isinstance(buffer, MultiAgentReplayBuffer)
    assert isinstance(buffer.buffers["p1"], PrioritizedReplayBuffer)
    assert type(buffer.buffers["p2"]) is ReplayBuffer and buffer.buffers["p2"].capacity == 300
    assert min(buffer.sizes().values()) >= 20
    assert result["info"]["counters"]["replay/priority_updates"] > 0  # p1's
    # Its own epsilon schedule (p2: 0.5 after 40 steps; p1 still near 1) and target updates.
    assert epsilons["p2"] == pytest.approx(0.5) and epsilons["p1"] > 0.9
    assert "target_network_update_freq=40, by='sampled', policy_id='p1'" in plan
    assert "target_network_update_freq=1000, by='sampled', policy_id='p2'" in plan
    assert result["info"]["counters"]["learner/target_updates"] >= 1


def test_per_policy_replay_buffers_are_restored_from_a_checkpoint(tmp_path, local_executor):
    config = {**REPLAY_TINY, "num_workers": 0, "min_steps_per_iteration": 40,
              "store_buffer_in_checkpoints": True, "policy_mapping": BY_AGENT,
              "policies": {"p1": {}, "p2": {"config": UNIFORM_P2}}}

    def buffer_of(trainer):
        return trainer.plan.operators(StoreToReplay)[0].local_buffer

    trainer = flowrl.Trainer("dqn", env="MultiAgentArena-v0", config=config)
    try:
        trainer.train()
        path = trainer.save(str(tmp_path))
        saved = buffer_of(trainer).stats()
    finally:
        trainer.stop()
    restored = flowrl.Trainer("dqn", env="MultiAgentArena-v0", config=config)
    try:
        restored.restore(path)
        assert buffer_of(restored).stats() == saved
        assert set(restored.train()["info"]["learner"]) == {"p1", "p2"}
    finally:
        restored.stop()


def _train_apex_until_both_learn(config):
    trainer = flowrl.Trainer("apex", env="MultiAgentArena-v0", config=config)
    try:
        learner, result = {}, trainer.train()
        learner.update(result["info"]["learner"])
        while len(learner) < len(trainer.workers.multi_agent.policies_to_train):
            result = trainer.train()
            learner.update(result["info"]["learner"])
            assert result["training_iteration"] < 20, result["info"]["counters"]
        return learner, trainer.train()
    finally:
        trainer.stop()


APEX_TINY = {**REPLAY_TINY, "num_workers": 1, "num_replay_buffer_shards": 1,
             "buffer_size": 1000, "max_weight_sync_delay": 20, "min_steps_per_iteration": 100,
             "target_network_update_freq": 32}


def test_apex_shared_policy_mode(local_executor):
    learner, result = _train_apex_until_both_learn(APEX_TINY)
    assert set(learner) == {"default_policy"} and "mean_q" in learner["default_policy"]
    counters = result["info"]["counters"]
    assert counters["replay/priority_updates"] > 0 and counters["learner/weight_broadcasts"] > 0
    assert np.isfinite(result["policy_reward_mean"]["default_policy"])


def test_apex_trains_independent_policies_with_per_policy_replay(executor):
    config = {**APEX_TINY, "policy_mapping": BY_AGENT, "policies": {
        "p1": {}, "p2": {"config": {**UNIFORM_P2, "worker_side_prioritization": False}}}}
    learner, result = _train_apex_until_both_learn(config)
    assert set(learner) == {"p1", "p2"}
    assert all("mean_q" in stats and "td_errors" not in stats for stats in learner.values())
    counters = result["info"]["counters"]
    assert counters["replay/priority_updates"] > 0 and counters["learner/weight_broadcasts"] > 0
    assert counters["learner/target_updates"] >= 1
    assert set(result["policy_reward_mean"]) == {"p1", "p2"}


def test_checkpoint_restores_every_policy(tmp_path, local_executor):
    trainer = flowrl.Trainer("ppo", env="MultiAgentArena-v0", config=arena_config())
    try:
        trainer.train()
        path = trainer.save(str(tmp_path))
        saved = {pid: weights_of(trainer, pid) for pid in ("p1", "p2")}
        trainer.train()
        trainer.restore(path)
        for pid in ("p1", "p2"):
            for name, value in trainer.get_policy(pid).get_weights().items():
                np.testing.assert_array_equal(value, saved[pid][name])
    finally:
        trainer.stop()


def test_a_callable_mapping_is_checkpointed_by_name(tmp_path, local_executor):
    from flowrl.checkpoint import read_checkpoint

    trainer = flowrl.Trainer("ppo", env="MultiAgentArena-v0", config=arena_config(
        policy_mapping=lambda agent: "p1" if agent == "agent1" else "p2"))
    try:
        trainer.train()
        state = read_checkpoint(trainer.save(str(tmp_path)))
    finally:
        trainer.stop()
    assert state["config"]["policy_mapping"].startswith("<callable ")
    assert set(state["policy_state"]["policies"]) == {"p1", "p2"}


def test_a_users_pettingzoo_env_trains_with_flowrl_run(tmp_path, local_executor):
    flowrl.register_env("users_arena", lambda env_config: MultiAgentArena(
        {"width": 3, "height": 3, "timestep_limit": 5}))
    config = arena_config()
    for key in ("policies", "policy_mapping", "env_config"):
        config.pop(key)
    result = flowrl.run("ppo", env="users_arena", config=config, local_mode=True, verbose=0,
                        stop={"training_iteration": 2}, log_dir=str(tmp_path))
    assert result["training_iteration"] == 2
    assert set(result["policy_reward_mean"]) == {"default_policy"}
    assert np.isfinite(result["episode_reward_mean"])


def test_agent1_learns_to_explore_a_small_arena(tmp_path, local_executor):
    """On a 3x3 arena with 8 steps a random agent1 scores about -0.2 (against a random agent2);
    sweeping the new cells scores up to +8. Only agent1's policy trains."""
    config = arena_config(env_config={"width": 3, "height": 3, "timestep_limit": 8},
                          num_envs_per_worker=8, rollout_fragment_length=16,
                          train_batch_size=256, sgd_minibatch_size=64, num_sgd_iter=6,
                          lr=3e-3, policies={"p1": {}, "p2": {}}, policies_to_train=["p1"],
                          model={"fcnet_hiddens": [32]})
    result = flowrl.run("ppo", env="MultiAgentArena-v0", config=config, local_mode=True,
                        verbose=0, stop={"timesteps_total": 6_000}, log_dir=str(tmp_path))
    assert result["policy_reward_mean"]["p1"] >= 1.5, result["policy_reward_mean"]


# --- A3C, IMPALA and APPO: shared and independent policies -----------------------------------

ASYNC_ALGOS = {
    "a3c": {"num_workers": 1},
    "impala": {"num_workers": 1, "train_batch_size": 40, "min_time_s_per_iteration": 0.1},
    "appo": {"num_workers": 1, "train_batch_size": 40, "min_time_s_per_iteration": 0.1},
}


def async_config(algo, **overrides) -> dict:
    config = {"num_envs_per_worker": 2, "rollout_fragment_length": 10, "seed": 3,
              "num_cpus_per_worker": 0, "model": {"fcnet_hiddens": [16]},
              "env_config": {"timestep_limit": 10}, **ASYNC_ALGOS[algo], **overrides}
    return config


def train_async(algo, config, iterations=3):
    trainer = flowrl.Trainer(algo, env="MultiAgentArena-v0", config=config)
    try:
        policy_ids = list(trainer.workers.local_worker().policy_map)
        before = {pid: weights_of(trainer, pid) for pid in policy_ids}
        results = [trainer.train() for _ in range(iterations)]
        after = {pid: weights_of(trainer, pid) for pid in policy_ids}
    finally:
        trainer.stop()
    changed = {pid for pid in policy_ids
               if any(not np.allclose(after[pid][k], before[pid][k]) for k in after[pid])}
    return results[-1], changed


@pytest.mark.parametrize("algo", sorted(ASYNC_ALGOS))
@pytest.mark.parametrize("mode", ["shared", "independent"])
def test_async_algorithms_train_shared_and_independent_policies(algo, mode, local_executor):
    extra = {} if mode == "shared" else {"policies": TWO_POLICIES, "policy_mapping": BY_AGENT}
    result, changed = train_async(algo, async_config(algo, **extra))
    policy_ids = {"default_policy"} if mode == "shared" else {"p1", "p2"}
    assert set(result["info"]["learner"]) == policy_ids
    assert changed == policy_ids
    for pid in policy_ids:
        assert np.isfinite(result["info"]["learner"][pid]["total_loss"]), pid
        assert np.isfinite(result["policy_reward_mean"][pid]), pid
    if algo == "appo":
        assert all(result["info"]["learner"][pid]["kl_coeff"] > 0 for pid in policy_ids)
        assert result["info"]["counters"]["learner/target_updates"] >= 1
    if algo != "a3c":
        assert result["info"]["learner_thread"]["num_updates"] >= 1  # its stats as before


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_appo_independent_policies_on_both_executors(framework, executor):
    result, changed = train_async("appo", async_config(
        "appo", framework=framework, policies=TWO_POLICIES, policy_mapping=BY_AGENT,
        use_kl_loss=True))
    assert set(result["info"]["learner"]) == {"p1", "p2"} == changed
    assert result["info"]["counters"]["learner/weight_broadcasts"] >= 1
    assert set(result["policy_reward_mean"]) == {"p1", "p2"}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a3c_independent_policies_on_both_executors(framework, executor):
    result, changed = train_async("a3c", async_config(
        "a3c", framework=framework, policies=TWO_POLICIES, policy_mapping=BY_AGENT))
    assert set(result["info"]["learner"]) == {"p1", "p2"} == changed
    assert "policy_loss" in result["info"]["learner"]["p2"]


@pytest.mark.parametrize("algo", ["impala", "a3c"])
def test_async_algorithms_leave_untrained_policies_alone(algo, local_executor):
    result, changed = train_async(algo, async_config(
        algo, policies=TWO_POLICIES, policy_mapping=BY_AGENT, policies_to_train=["p1"]))
    assert set(result["info"]["learner"]) == {"p1"} == changed


def test_impala_trains_several_policies_on_the_driver_without_workers(local_executor):
    result, changed = train_async("impala", async_config(
        "impala", num_workers=0, policies=TWO_POLICIES, policy_mapping=BY_AGENT))
    assert set(result["info"]["learner"]) == {"p1", "p2"} == changed
    # Steps trained count agent steps: a train batch of 40 env steps holds 2 x 40 rows.
    assert result["num_steps_trained"] > 0 and result["num_steps_trained"] % 80 == 0


def test_a2c_microbatches_average_gradients_per_policy(local_executor):
    config = arena_config(train_batch_size=40, microbatch_size=20)
    for key in ("sgd_minibatch_size", "num_sgd_iter"):
        config.pop(key)
    result, changed = train_async("a2c", config, iterations=1)
    assert set(result["info"]["learner"]) == {"p1", "p2"} == changed
