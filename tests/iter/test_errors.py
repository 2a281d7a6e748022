"""Errors name the operator, the lineage, the shard and the original exception."""

from __future__ import annotations

import pickle

import pytest

import flowrl
import flowrl.iter as fi
from flowrl.iter import LocalIterator


def parse_row(x):
    if x == 3:
        raise ValueError(f"bad row {x}")
    return x


class ConcatBatches:
    def __init__(self, min_batch_size):
        self.min_batch_size = min_batch_size

    def __call__(self, x):
        raise KeyError("obs")

    def __repr__(self):
        return f"ConcatBatches(min_batch_size={self.min_batch_size})"


def test_shard_error_names_operator_lineage_and_shard(executor):
    plan = fi.from_range(4, num_shards=2).for_each(parse_row)
    with pytest.raises(flowrl.FlowError) as info:
        plan.gather_sync().take(10)
    message = str(info.value)
    assert message.startswith("for_each(parse_row) failed on shard 1: ValueError: bad row 3")
    assert "plan:     from_range[4, shards=2].for_each(parse_row)" in message
    assert "Original traceback:" in message and "in parse_row" in message
    assert info.value.shard == 1 and info.value.original_type == "ValueError"
    assert isinstance(info.value.__cause__, ValueError)
    assert isinstance(info.value, RuntimeError)


def test_driver_error_and_callable_object_label(executor):
    plan = LocalIterator(lambda: iter(range(5)), name="rows").for_each(ConcatBatches(4000))
    with pytest.raises(
        flowrl.FlowError,
        match=r"ConcatBatches\(min_batch_size=4000\)\) failed "
        r"on the driver: KeyError: 'obs'",
    ) as info:
        next(plan)
    assert info.value.lineage == "rows.for_each(ConcatBatches(min_batch_size=4000))"
    assert info.value.shard is None


def test_error_after_gather_and_in_filter_and_combine(executor):
    gathered = fi.from_range(4, num_shards=2).gather_async().for_each(parse_row)
    with pytest.raises(flowrl.FlowError, match="gather_async.*for_each\\(parse_row\\)"):
        gathered.take(10)
    with pytest.raises(flowrl.FlowError, match="filter\\(<lambda>\\) failed on shard 0"):
        fi.from_range(4, num_shards=2).filter(lambda x: 1 / 0).gather_sync().take(1)
    with pytest.raises(flowrl.FlowError, match="combine\\(parse_row\\) failed on the driver"):
        LocalIterator(lambda: [3], name="src").combine(parse_row).take(1)


def test_source_error_names_the_source(executor):
    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(flowrl.FlowError, match="src failed on the driver: OSError: disk gone"):
        LocalIterator(broken, name="src").for_each(abs).take(5)
    with pytest.raises(flowrl.FlowError, match=r"gens failed on shard 0: OSError"):
        fi.from_iterators([broken], name="gens").gather_sync().take(5)


def test_max_concurrency_error_is_attributed(executor):
    plan = LocalIterator(lambda: range(5), name="src").for_each(parse_row, max_concurrency=2)
    with pytest.raises(
        flowrl.FlowError,
        match=r"for_each\(parse_row\) failed on the driver: "
        r"ValueError: bad row 3",
    ):
        plan.take(10)
    sharded = fi.from_range(8, num_shards=2).for_each(parse_row, max_concurrency=2)
    with pytest.raises(flowrl.FlowError, match=r"for_each\(parse_row\) failed on shard 0"):
        sharded.gather_sync().take(10)


def test_nested_flow_error_is_not_rewrapped(executor):
    inner = LocalIterator(lambda: [3], name="inner").for_each(parse_row)

    def pull(_):
        return next(inner)

    outer = LocalIterator(lambda: [0], name="outer").for_each(pull)
    with pytest.raises(flowrl.FlowError) as info:
        outer.take(1)
    assert info.value.operator == "for_each(parse_row)"
    assert info.value.lineage == "inner.for_each(parse_row)"


def test_flow_error_pickles_with_its_fields(local_executor):
    error = fi.FlowError(
        operator="op",
        lineage="a.op",
        shard=2,
        original_type="E",
        original_message="m",
        remote_traceback="tb",
    )
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.shard == 2


def test_label_override(local_executor):
    plan = LocalIterator(lambda: [3], name="src").for_each(parse_row, label="parse")
    with pytest.raises(flowrl.FlowError, match="^parse failed"):
        plan.take(1)
