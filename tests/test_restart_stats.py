"""Honest statistics: per-operator counts in `result["ops"]` are cumulative across rollout worker
restarts and never go backwards (a replaced worker's counts stay in the total)."""

from __future__ import annotations

import pytest

import flowrl
from flowrl.iter import executor as flow_executor
from flowrl.testing import CorridorEnv

CONFIGS = {
    "a3c": {"num_workers": 2},
    "ppo": {"num_workers": 2, "train_batch_size": 40, "sgd_minibatch_size": 20,
            "num_sgd_iter": 1},
}
BASE = {"num_envs_per_worker": 1, "rollout_fragment_length": 10, "num_cpus_per_worker": 0.5,
        "seed": 5, "model": {"fcnet_hiddens": [8]}, "min_steps_per_iteration": 40,
        "min_time_s_per_iteration": 0}


@pytest.fixture(scope="module", autouse=True)
def corridor_registered():
    flowrl.register_env("restart_stats_corridor", CorridorEnv)


def counts(ops: dict) -> dict[str, tuple[int, int]]:
    """(items_in, items_out) per operator of ``result["ops"]``, keyed by position and label."""
    return {f"{position}:{op['label']}": (op["items_in"], op["items_out"])
            for position, op in enumerate(ops.values())}


def assert_never_decrease(history: list[dict[str, tuple[int, int]]]) -> None:
    for before, after in zip(history, history[1:]):
        assert before.keys() == after.keys()
        for op, (items_in, items_out) in after.items():
            assert items_in >= before[op][0] and items_out >= before[op][1], (
                f"{op}: (items_in, items_out) went from {before[op]} to {(items_in, items_out)}")


@pytest.mark.parametrize("algo", ["a3c", "ppo"])
def test_operator_counts_never_go_backwards_when_workers_are_killed(executor, algo):
    trainer = flowrl.Trainer(algo, env="restart_stats_corridor", config={**BASE, **CONFIGS[algo]})
    history = []
    try:
        for iteration in range(5):
            if iteration in (1, 3):  # kill a worker that has sampled, twice
                flow_executor.kill(trainer.workers.remote_workers()[iteration // 2])
                # Dead but not yet replaced: its last counts still stand.
                history.append(counts(trainer.plan.stats()))
                assert_never_decrease(history)
            result = trainer.train()
            history.append(counts(result["ops"]))
            assert_never_decrease(history)
        assert result["num_worker_restarts"] >= 2
    finally:
        trainer.stop()
    # The counts come from the shards: the shard-side operators did count items.
    shard_ops = [op for op in result["ops"].values() if op["where"] != "driver"]
    assert shard_ops and all(op["items_out"] > 0 for op in shard_ops)
