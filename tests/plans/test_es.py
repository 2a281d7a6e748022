"""ES: smoke runs on both executors, the maths, the noise table, filters, checkpoints."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import flowrl
from flowrl.ops.gradient_free import (
    STALE_RESULTS_COUNTER,
    CollectPerturbations,
    centered_ranks,
)
from flowrl.plans.es import ESConfig, ESGradient
from flowrl.policy.filters import RunningStat
from flowrl.policy.gradient_free import FlatOptimizer
from flowrl.workers.noise_table import SharedNoiseTable, check_noise_size, make_noise

TINY_ES = {"episodes_per_batch": 4, "train_batch_size": 20, "pairs_per_request": 1,
           "noise_size": 100_000, "eval_prob": 0.5, "seed": 3, "num_cpus_per_worker": 0,
           "model": {"fcnet_hiddens": [8]}}


def _trainer(**overrides):
    return flowrl.Trainer("es", env="CartPole-v1", config={**TINY_ES, **overrides})


@pytest.mark.parametrize("num_workers", [0, 2])
def test_two_iterations_on_both_executors(executor, num_workers):
    trainer = _trainer(num_workers=num_workers)
    try:
        first, second = trainer.train(), trainer.train()
    finally:
        trainer.stop()
    stats = second["info"]["learner"]["default_policy"]
    assert second["training_iteration"] == 2
    assert second["timesteps_total"] > first["timesteps_total"] > 0
    assert stats["pairs"] >= 2 and stats["weights_version"] == 2
    assert stats["update_norm"] > 0
    counters = second["info"]["counters"]
    assert counters["gradient_free/perturbed_episodes"] >= 8
    assert second["info"]["gradient_free/noise_table_creation_s"] >= 0


def test_same_seed_gives_identical_weights(local_executor):
    def weights():
        trainer = _trainer(num_workers=2)
        try:
            trainer.train()
            trainer.train()
            return trainer.get_policy().get_flat_weights()
        finally:
            trainer.stop()

    np.testing.assert_array_equal(weights(), weights())


def test_results_for_old_weights_are_dropped_and_counted(local_executor):
    # Two requests queued per worker: after each update the queued ones ran on old weights.
    trainer = _trainer(num_workers=2, max_sample_requests_in_flight_per_worker=2)
    try:
        result = [trainer.train() for _ in range(3)][-1]
    finally:
        trainer.stop()
    assert result["info"]["counters"][STALE_RESULTS_COUNTER] > 0


def test_batch_size_does_not_depend_on_the_number_of_workers(local_executor):
    pairs = []
    for num_workers in (1, 4):
        trainer = _trainer(num_workers=num_workers, train_batch_size=1, episodes_per_batch=6)
        try:
            pairs.append(trainer.train()["info"]["learner"]["default_policy"]["pairs"])
        finally:
            trainer.stop()
    assert pairs == [3.0, 3.0]


def test_observation_filter_is_merged_from_workers_and_pushed_back(local_executor):
    trainer = _trainer(num_workers=2)
    try:
        result = trainer.train()
        learner = trainer.get_policy()
        steps = result["info"]["counters"]["sampler/env_steps"]
        # Perturbed episodes count for the filter; noise-free evaluation episodes do not.
        assert 0 < learner.observation_stats.count <= steps
        np.testing.assert_allclose(learner.filter_mean, learner.observation_stats.mean,
                                   rtol=1e-6)
        for worker in trainer.workers.remote_workers():
            np.testing.assert_array_equal(worker.policy.filter_mean, learner.filter_mean)
            np.testing.assert_array_equal(worker.policy.flat_weights, learner.flat_weights)
    finally:
        trainer.stop()


def test_checkpoint_restores_weights_optimizer_and_filter_and_continues(local_executor,
                                                                         tmp_path):
    trainer = _trainer(num_workers=0)
    try:
        trainer.train()
        trainer.train()
        path = trainer.save(str(tmp_path))
        saved = trainer.get_policy().get_state()
    finally:
        trainer.stop()
    restored = flowrl.Trainer.from_checkpoint(path)
    try:
        policy = restored.get_policy()
        state = policy.get_state()
        for name, value in saved["weights"].items():
            np.testing.assert_array_equal(state["weights"][name], value, err_msg=name)
        assert state["optimizer"]["t"] == saved["optimizer"]["t"] == 2
        np.testing.assert_array_equal(state["optimizer"]["m"], saved["optimizer"]["m"])
        assert state["observation_stats"]["count"] == saved["observation_stats"]["count"]
        result = restored.train()
        assert result["training_iteration"] == 3
        assert policy.weights_version == 3
    finally:
        restored.stop()


@pytest.mark.parametrize("framework", ["torch", pytest.param("tf", marks=pytest.mark.tf)])
def test_framework_model_through_flat_weights(local_executor, framework):
    trainer = _trainer(num_workers=0, numpy_policy=False, framework=framework)
    try:
        result = trainer.train()
        policy = trainer.get_policy()
        assert policy.framework == framework
        assert policy.num_params == 4 * 8 + 8 + 8 * 2 + 2
        assert result["info"]["learner"]["default_policy"]["update_norm"] > 0
    finally:
        trainer.stop()


def test_plan_graph_shows_the_fan_out_and_fan_in(local_executor):
    trainer = _trainer(num_workers=2)
    try:
        graph = trainer.plan_graph()
    finally:
        trainer.stop()
    side = {data["label"] for _, _, data in graph.edges(data=True) if data.get("side")}
    assert {"perturbation offsets", "(offset, R+, R-, lengths)", "weights"} <= side


# ---- maths -------------------------------------------------------------------------------


def test_centered_ranks_by_hand():
    ranks = centered_ranks(np.array([[3.0, 1.0], [2.0, 4.0]]))
    np.testing.assert_allclose(ranks, [[1 / 6, -0.5], [-1 / 6, 0.5]])
    assert centered_ranks(np.array([[5.0, 5.0]])).tolist() in ([[-0.5, 0.5]], [[0.5, -0.5]])


def test_es_gradient_by_hand():
    # Pair 0 (+ wins) pushes along its noise, pair 1 (- wins) against its noise.
    returns = np.array([[10.0, 0.0], [1.0, 5.0]])
    noise = np.array([[1.0, 0.0], [0.0, 1.0]])
    theta = np.array([2.0, -2.0])
    loss_gradient, stats = ESGradient(l2_coeff=0.1)(returns, noise, theta)
    ranks = centered_ranks(returns)  # [[0.5, -0.5], [-1/6, 1/6]]
    expected_g = np.array([ranks[0, 0] - ranks[0, 1], ranks[1, 0] - ranks[1, 1]]) / 4
    np.testing.assert_allclose(expected_g, [0.25, -1 / 12])
    np.testing.assert_allclose(loss_gradient, -expected_g + 0.1 * theta)
    assert stats["grad_norm"] == pytest.approx(np.linalg.norm(expected_g))


def test_running_stat_merge_equals_one_pass():
    rng = np.random.default_rng(0)
    rows = rng.normal(3.0, 2.0, (50, 3))
    whole = RunningStat((3,))
    whole.push_rows(rows)
    parts = [RunningStat((3,)) for _ in range(3)]
    for part, chunk in zip(parts, np.array_split(rows, [7, 30])):
        part.push_rows(chunk)
    merged = RunningStat((3,))
    for part in reversed(parts):
        merged.merge(RunningStat.from_state(part.get_state()))
    assert merged.count == 50
    np.testing.assert_allclose(merged.mean, rows.mean(axis=0))
    np.testing.assert_allclose(merged.var, rows.var(axis=0, ddof=1))
    np.testing.assert_allclose(whole.var, merged.var)


def test_adam_first_step_moves_each_coordinate_by_lr():
    adam = FlatOptimizer("adam", lr=0.01)
    theta = adam.step(np.zeros(3, np.float32), np.array([5.0, -0.1, 0.0]))
    np.testing.assert_allclose(theta, [-0.01, 0.01, 0.0], atol=1e-6)


def test_collect_perturbations_waits_for_pairs_and_steps():
    from flowrl.workers.perturbation import PerturbationResult

    def result(steps):
        return PerturbationResult(offsets=np.array([0]), returns=np.zeros((1, 2)),
                                  lengths=np.array([[steps, steps]]), weights_version=0,
                                  observation_delta=RunningStat((1,)).get_state())

    collect = CollectPerturbations(min_pairs=2, min_steps=30)
    assert collect(result(5)) == [] and collect(result(5)) == []
    (batch,) = collect(result(5))
    assert len(batch) == 3


# ---- noise table ---------------------------------------------------------------------------


def test_noise_size_beyond_memory_names_both_numbers():
    with pytest.raises(ValueError, match=r"noise_size=500000000 float32 take 2000000000 "
                                         r"bytes .* of the 1000000000 bytes"):
        check_noise_size(500_000_000, 1_000_000_000)


def test_trainer_rejects_a_noise_table_larger_than_the_machine(local_executor):
    with pytest.raises(ValueError, match="noise_size=1000000000000 float32 take"):
        _trainer(num_workers=0, noise_size=10**12)


def test_noise_table_is_read_only_and_pickles_without_its_data(local_executor):
    table = SharedNoiseTable(size=10_000, seed=5).create()
    np.testing.assert_array_equal(table.get(100, 3), make_noise(10_000, 5)[100:103])
    assert not table.view().flags.writeable
    assert len(pickle.dumps(table)) < 1_000
    assert np.shares_memory(pickle.loads(pickle.dumps(table)).view(), table.view())


def test_noise_table_in_the_object_store_is_a_zero_copy_view(ray_executor):
    table = SharedNoiseTable(size=200_000, seed=9).create()
    view = table.view()
    assert not view.flags.writeable and not view.flags.owndata
    np.testing.assert_array_equal(view[:5], make_noise(200_000, 9)[:5])


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="noise_stdev"):
        ESConfig(noise_stdev=0.0)
    with pytest.raises(ValueError, match="episodes_per_batch"):
        ESConfig(episodes_per_batch=1)


@pytest.mark.slow
def test_a_two_node_cluster_holds_one_copy_of_the_table_per_node():
    # A second Ray instance cannot start in this process (one per test session): subprocess.
    import json
    import subprocess
    import sys
    from pathlib import Path

    benchmarks = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(benchmarks))
    try:
        from gradient_free import NOISE_CODE
    finally:
        sys.path.remove(str(benchmarks))
    out = subprocess.run([sys.executable, "-c", NOISE_CODE.format(args=1_000_000)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    table_bytes = measured["table_bytes"]
    assert measured["store_bytes_after_create"]["node_b"] < table_bytes  # not copied yet
    for node, used in measured["store_bytes_after_4_readers"].items():
        assert table_bytes <= used < 2 * table_bytes, (node, measured)  # one copy, not two
    assert len({reader["node"] for reader in measured["readers"]}) == 2  # two per node
    assert not any(reader["writeable"] or reader["owndata"] for reader in measured["readers"])


def test_numpy_and_torch_policies_share_weight_names_and_actions():
    import gymnasium as gym

    from flowrl.config import from_dict
    from flowrl.plans.es import ES_POLICY

    spaces = gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(3)
    config = from_dict(ESConfig, {"model": {"fcnet_hiddens": [8]}, "seed": 0})
    torch_backed = ES_POLICY.build(*spaces, config.replace(numpy_policy=False))
    numpy_backed = ES_POLICY.build(*spaces, config)
    numpy_backed.set_weights(torch_backed.get_weights())
    obs = np.random.default_rng(0).uniform(-1, 1, (64, 4)).astype(np.float32)
    theta = torch_backed.get_flat_weights() * 50  # large weights: actions differ across rows
    np.testing.assert_array_equal(numpy_backed.compute_actions_with(theta, obs),
                                  torch_backed.compute_actions_with(theta, obs))


def test_flowrl_rollout_runs_an_es_checkpoint(tmp_path, capsys, local_executor):
    from flowrl import cli

    result = flowrl.run("es", env="CartPole-v1", local_mode=True, verbose=0,
                        config={**TINY_ES, "num_workers": 0}, stop={"training_iteration": 1},
                        checkpoint_dir=str(tmp_path), log_dir=str(tmp_path / "run"))
    code = cli.main(["rollout", result["checkpoint"], "--episodes", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("episode ") == 2 and "mean return over 2 episodes" in out


def _frameworks_imported(worker):
    import sys

    return sorted(name for name in ("torch", "tensorflow") if name in sys.modules)


def test_numpy_policy_workers_import_no_framework(ray_executor):
    trainer = _trainer(num_workers=1)
    try:
        trainer.train()
        remote = trainer.workers.foreach_worker(_frameworks_imported)[1:]
    finally:
        trainer.stop()
    assert remote == [[]]


def test_ray_and_local_mode_give_the_same_weights(ray_session):
    # One worker, one request in flight: the same requests in the same order on both executors.
    def weights(local_mode):
        flowrl.init(local_mode=local_mode)
        trainer = _trainer(num_workers=1)
        try:
            trainer.train()
            trainer.train()
            return trainer.get_policy().get_flat_weights()
        finally:
            trainer.stop()

    in_process = weights(True)
    np.testing.assert_array_equal(weights(False), in_process)
