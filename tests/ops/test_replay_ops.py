"""Replay operators and replay actors: store, replay (nothing before learning_starts),
priority updates, target-network cadence, and a dead replay actor named in the error."""

from __future__ import annotations

import time

import numpy as np
import pytest

from flowrl.iter import FlowError, LocalIterator
from flowrl.iter import executor as actors_api
from flowrl.ops import (
    NUM_TARGET_UPDATES_COUNTER,
    PRIORITIES,
    TD_ERRORS,
    Concurrently,
    LearnerOutput,
    RecordSampledSteps,
    Replay,
    StoreToReplay,
    UpdatePriorities,
    UpdateTargetNetwork,
)
from flowrl.policy import MultiAgentBatch, SampleBatch
from flowrl.replay import (
    BATCH_INDEXES,
    MultiAgentReplayBuffer,
    PrioritizedReplayBuffer,
    ReplayBuffer,
)
from flowrl.workers.replay_actor import ReplayActor, add_with_priorities, create_replay_actors


def _rows(start: int, count: int) -> SampleBatch:
    values = np.arange(start, start + count, dtype=np.float32)
    return SampleBatch(obs=values[:, None], rewards=values)


def _batches(rows_per_batch: int):
    def factory():
        start = 0
        while True:
            yield _rows(start, rows_per_batch)
            start += rows_per_batch
    return factory


class _Policy:
    def __init__(self):
        self.target_updates = 0

    def update_target(self, tau=1.0):
        self.target_updates += 1


class _Workers:
    def __init__(self):
        self.policy = _Policy()

    def local_worker(self):
        return self


def test_local_replay_yields_nothing_before_learning_starts(local_executor):
    buffer = ReplayBuffer(100, seed=0)
    sizes_seen = []

    def record(batch):
        assert isinstance(batch, SampleBatch)  # never a not-ready placeholder
        sizes_seen.append(len(buffer))
        return batch

    store = LocalIterator(_batches(2), name="rollouts").for_each(StoreToReplay(buffer))
    train = Replay(buffer, num_items=3, learning_starts=6).for_each(record)
    plan = Concurrently([store, train], mode="round_robin", output_indexes=[1])
    out = plan.take(4)
    assert [len(batch) for batch in out] == [3, 3, 3, 3]
    assert sizes_seen[0] == 6  # the first replay came right after the third store
    assert sizes_seen == [6, 8, 10, 12]  # then one store, one replay per rotation


def test_training_intensity_weights_give_the_rotation(local_executor):
    buffer = ReplayBuffer(100, seed=0)
    store = LocalIterator(_batches(4), name="rollouts").for_each(StoreToReplay(buffer))
    replayed = Replay(buffer, num_items=2, learning_starts=4).for_each(lambda b: len(buffer))
    plan = Concurrently([store, replayed], mode="round_robin", output_indexes=[1],
                        round_robin_weights=[1, 3])
    assert plan.take(6) == [4, 4, 4, 8, 8, 8]


def test_replay_arguments_are_checked():
    buffer = ReplayBuffer(10)
    with pytest.raises(ValueError, match="num_items >= 1"):
        Replay(buffer)
    with pytest.raises(TypeError, match="local replay buffer .* or a non-empty list"):
        Replay([], num_items=2)
    with pytest.raises(ValueError, match="each actor's own num_items"):
        Replay([object()], num_items=2)
    with pytest.raises(ValueError, match="target_network_update_freq must be an int >= 1"):
        UpdateTargetNetwork(None, 0)
    with pytest.raises(ValueError, match="by='steps' is not one of"):
        UpdateTargetNetwork(None, 10, by="steps")
    with pytest.raises(TypeError, match="needs a PrioritizedReplayBuffer"):
        UpdatePriorities(None, buffer)


def test_replay_from_actors_waits_for_each_shard(executor):
    actors = create_replay_actors(2, capacity=100, num_items=4, learning_starts=8, seed=0)
    seen = []

    def record(pair):
        actor, batch = pair
        assert isinstance(batch, SampleBatch) and len(batch) == 4
        seen.append(actors_api.get(actors_api.call(actor, "stats"))["size"])
        return pair

    store = LocalIterator(_batches(2), name="rollouts").for_each(StoreToReplay(actors, seed=1))
    train = Replay(actors).for_each(record)
    plan = Concurrently([store, train], mode="async", output_indexes=[1])
    pairs = plan.take(3)
    assert all(actor in actors for actor, _ in pairs)
    assert min(seen) >= 4  # each shard holds learning_starts / 2 rows before it replays
    for actor in actors:
        actors_api.kill(actor)


def test_update_priorities_on_a_local_buffer(local_executor):
    buffer = PrioritizedReplayBuffer(16, alpha=1.0, beta=1.0, eps=0.0, seed=0)
    buffer.add(_rows(0, 4))
    workers = _Workers()

    def td_errors(policy, batch):
        assert policy is workers.policy
        return -np.asarray(batch["rewards"], np.float64) - 1.0  # |td| = reward + 1

    op = UpdatePriorities(workers, buffer, compute_td_errors=td_errors)
    batch = buffer.sample(8)
    (out,) = LocalIterator(lambda: [batch], name="replayed").for_each(op).take(1)
    assert out is batch
    assert buffer.max_priority == pytest.approx(float(batch["rewards"].max()) + 1.0)
    with pytest.raises(FlowError, match="batch_indexes"):
        LocalIterator(lambda: [_rows(0, 2)], name="rows").for_each(op).take(1)


def test_update_priorities_go_back_to_the_source_shard(executor):
    actors = create_replay_actors(2, capacity=20, num_items=2, prioritized=True,
                                  alpha=1.0, eps=0.0, seed=0)
    for actor in actors:
        actors_api.get(actors_api.call(actor, "add", _rows(0, 4)))
    output = LearnerOutput(source=actors[1], batch_count=2,
                           stats={"loss": 1.0, TD_ERRORS: np.array([-7.0, 2.0]),
                                  BATCH_INDEXES: np.array([0, 3])},
                           learner_version=1)
    plan = LocalIterator(lambda: [output], name="learner").for_each(
        UpdatePriorities(None, actors))
    (result,) = plan.take(1)
    assert result.stats == {"loss": 1.0}  # the per-row arrays do not reach the metrics
    time.sleep(0.2) if executor == "ray" else None
    stats = [actors_api.get(actors_api.call(actor, "stats")) for actor in actors]
    assert stats[1]["max_priority"] == pytest.approx(7.0)
    assert stats[0]["max_priority"] == pytest.approx(1.0)
    for actor in actors:
        actors_api.kill(actor)


@pytest.mark.parametrize("by", ["sampled", "trained"])
def test_update_target_network_cadence(by, local_executor):
    from flowrl.ops import STEPS_TRAINED_COUNTER

    workers = _Workers()

    def count_trained(batch):
        LocalIterator.get_metrics().counters[STEPS_TRAINED_COUNTER] += len(batch)
        return batch

    steps = LocalIterator(_batches(100), name="rollouts")
    steps = steps.for_each(RecordSampledSteps() if by == "sampled" else count_trained)
    plan = steps.for_each(UpdateTargetNetwork(workers, 250, by=by))
    plan.take(2)
    assert workers.policy.target_updates == 0  # 200 steps: not yet
    plan.take(1)
    assert workers.policy.target_updates == 1  # at 300
    plan.take(7)
    assert workers.policy.target_updates == 3  # at 600 and 900, not at 1000
    assert plan.shared_metrics.get().counters[NUM_TARGET_UPDATES_COUNTER] == 3


def test_worker_side_priorities_land_on_the_new_rows():
    buffer = PrioritizedReplayBuffer(5, alpha=1.0, beta=1.0, eps=0.0, seed=0)
    add_with_priorities(buffer, _rows(0, 3), np.array([1.0, 2.0, 3.0]))
    add_with_priorities(buffer, _rows(3, 4), np.array([4.0, 5.0, 6.0, 9.0]))  # wraps around
    # Slots now hold rows 5, 6, 2, 3, 4 with priorities 6, 9, 3, 4, 5.
    counts = np.bincount(buffer.sample(29_000)["rewards"].astype(int), minlength=7)
    expected = np.array([0, 0, 3, 4, 5, 6, 9]) / 27 * 29_000
    assert np.allclose(counts, expected, rtol=0.05)
    # A batch longer than the buffer keeps its last rows, with their priorities.
    add_with_priorities(buffer, _rows(10, 7), np.arange(1.0, 8.0))
    counts = np.bincount(buffer.sample(25_000)["rewards"].astype(int) - 10, minlength=7)
    np.testing.assert_allclose(counts, np.array([0, 0, 3, 4, 5, 6, 7]) / 25 * 25_000, rtol=0.06)
    with pytest.raises(ValueError, match="one initial priority per row"):
        add_with_priorities(buffer, _rows(0, 2), np.array([1.0]))
    with pytest.raises(ValueError, match="PrioritizedReplayBuffer"):
        add_with_priorities(ReplayBuffer(4), _rows(0, 1), np.array([1.0]))


def test_store_moves_a_priorities_column_out_of_the_rows(local_executor):
    buffer = PrioritizedReplayBuffer(8, alpha=1.0, eps=0.0, seed=0)
    batch = SampleBatch({**_rows(0, 2), PRIORITIES: np.array([3.0, 0.5])})
    LocalIterator(lambda: [batch], name="rows").for_each(StoreToReplay(buffer)).take(1)
    assert PRIORITIES not in buffer.sample(2).columns
    assert buffer.max_priority == pytest.approx(3.0)


def test_replay_actor_answers_none_until_ready():
    actor = ReplayActor(10, num_items=2, learning_starts=3, prioritized=False, seed=0)
    actor.add(_rows(0, 2))
    assert actor.replay() is None
    actor.add(_rows(2, 1))
    assert len(actor.replay()) == 2
    with pytest.raises(ValueError, match="prioritized shard"):
        actor.update_priorities(np.array([0]), np.array([1.0]))


def test_a_killed_replay_actor_is_reported_clearly(executor):
    actors = create_replay_actors(2, capacity=20, num_items=2, seed=0)
    actors_api.kill(actors[0])
    plan = LocalIterator(_batches(2), name="rollouts").for_each(StoreToReplay(actors, seed=0))
    deadline = time.monotonic() + 30
    with pytest.raises(FlowError) as caught:
        while time.monotonic() < deadline:
            plan.take(1)
            time.sleep(0.05)
    message = str(caught.value)
    assert "StoreToReplay" in message
    assert "replay actor 0 of 2" in message and "died" in message
    actors_api.kill(actors[1])


class _MultiAgentWorkers:
    """A learner with one fake policy per id (`get_policy`), as a multi-agent worker has."""

    def __init__(self, *policy_ids):
        self.policies = {pid: _Policy() for pid in policy_ids}

    def local_worker(self):
        return self

    def get_policy(self, policy_id):
        return self.policies[policy_id]


def _multi_agent_rows(start: int, count: int, *policy_ids: str) -> MultiAgentBatch:
    return MultiAgentBatch({pid: _rows(start + 100 * index, count)
                            for index, pid in enumerate(policy_ids)}, env_steps=count)


def test_replay_ops_store_replay_and_prioritize_per_policy_locally(local_executor):
    buffer = MultiAgentReplayBuffer({
        "p1": PrioritizedReplayBuffer(32, alpha=1.0, beta=1.0, eps=0.0, seed=0),
        "p2": ReplayBuffer(32, seed=0)})
    workers = _MultiAgentWorkers("p1", "p2")
    scored = []

    def td_errors(policy, batch):
        scored.append(policy)
        return np.full(len(batch), 5.0)

    def with_priorities(batch):  # worker-side priorities on p1's rows only
        p1 = batch.policy_batches["p1"]
        parts = {**batch.policy_batches, "p1": SampleBatch({**p1, PRIORITIES: np.full(len(p1),
                                                                                     2.0)})}
        return MultiAgentBatch(parts, batch.env_steps)

    def rollouts():
        start = 0
        while True:
            yield with_priorities(_multi_agent_rows(start, 2, "p1", "p2", "p3"))
            start += 2

    store = LocalIterator(rollouts, name="rollouts").for_each(StoreToReplay(buffer))
    train = (Replay(buffer, num_items={"p1": 3, "p2": 4}, learning_starts={"p1": 2, "p2": 6})
             .for_each(UpdatePriorities(workers, buffer, compute_td_errors=td_errors)))
    plan = Concurrently([store, train], mode="round_robin", output_indexes=[1])
    first = plan.take(1)[0]
    assert {pid: len(rows) for pid, rows in first.policy_batches.items()} == {"p1": 3}
    assert buffer.buffers["p1"].max_priority == pytest.approx(5.0)  # worker-side 2, then TD 5
    later = plan.take(3)[-1]
    assert {pid: len(rows) for pid, rows in later.policy_batches.items()} == {"p1": 3, "p2": 4}
    assert scored and all(policy is workers.policies["p1"] for policy in scored)
    metrics = plan.shared_metrics.get()
    assert metrics.counters["replay/rows_added"] == 2 * 2 * 4  # p3 has no buffer
    with pytest.raises(ValueError, match="num_items >= 1 for each policy"):
        Replay(buffer, num_items={"p1": 3}, learning_starts=0)
    with pytest.raises(ValueError, match="per policy only from a MultiAgentReplayBuffer"):
        Replay(ReplayBuffer(4), num_items={"p1": 3})


def test_a_single_buffer_refuses_rows_of_several_policies(local_executor):
    op = StoreToReplay(ReplayBuffer(8))
    with pytest.raises(FlowError, match="store into a MultiAgentReplayBuffer"):
        LocalIterator(lambda: [_multi_agent_rows(0, 2, "p1", "p2")], name="rows"
                      ).for_each(op).take(1)
    shared = MultiAgentBatch({"default_policy": _rows(0, 2)}, env_steps=2)
    buffer = ReplayBuffer(8)
    LocalIterator(lambda: [shared], name="rows").for_each(StoreToReplay(buffer)).take(1)
    assert len(buffer) == 2  # shared-policy mode: the one policy's rows
    with pytest.raises(TypeError, match="holds one buffer, but got a MultiAgentBatch"):
        ReplayActor(8, num_items=2).add(_multi_agent_rows(0, 2, "p1", "p2"))


def test_replay_actors_hold_a_buffer_per_policy(executor):
    actors = create_replay_actors(2, capacity=40, num_items=2, learning_starts=4, alpha=1.0,
                                  eps=0.0, seed=0, policies={
                                      "p1": {}, "p2": {"prioritized": False, "num_items": 3}})
    store = LocalIterator(lambda: (_multi_agent_rows(2 * i, 2, "p1", "p2")
                                   for i in range(1_000_000)), name="rollouts")
    store = store.for_each(StoreToReplay(actors, seed=1))
    plan = Concurrently([store, Replay(actors)], mode="async", output_indexes=[1])
    actor, batch = plan.take(1)[0]
    assert {pid: len(rows) for pid, rows in batch.policy_batches.items()} == {"p1": 2, "p2": 3}
    assert BATCH_INDEXES in batch.policy_batches["p1"]
    assert BATCH_INDEXES not in batch.policy_batches["p2"]
    stats = actors_api.get(actors_api.call(actor, "stats"))
    assert set(stats["policies"]) == {"p1", "p2"} and stats["learning_starts"] == {
        "p1": 2, "p2": 2}  # each policy's learning_starts split over the two shards
    assert stats["policies"]["p1"]["capacity"] == 20
    output = LearnerOutput(source=actor, batch_count=5, learner_version=1, stats={
        "p1": {"loss": 1.0, TD_ERRORS: np.array([-7.0, 2.0]),
               BATCH_INDEXES: batch.policy_batches["p1"][BATCH_INDEXES]},
        "p2": {"loss": 2.0}})
    (result,) = LocalIterator(lambda: [output], name="learner").for_each(
        UpdatePriorities(None, actors)).take(1)
    assert result.stats == {"p1": {"loss": 1.0}, "p2": {"loss": 2.0}}
    time.sleep(0.2) if executor == "ray" else None
    stats = actors_api.get(actors_api.call(actor, "stats"))
    assert stats["policies"]["p1"]["max_priority"] == pytest.approx(7.0)
    for shard in actors:
        actors_api.kill(shard)


@pytest.mark.parametrize("module_name", ["flowrl.ops.replay_ops", "flowrl.workers.replay_actor",
                                         "flowrl.plans.off_policy", "flowrl.plans.apex",
                                         "flowrl.plans.apex_ddpg", "flowrl.plans.sac"])
def test_docstring_examples(module_name, local_executor):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
