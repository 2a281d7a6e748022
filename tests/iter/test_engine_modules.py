"""The engine's scheduling primitives: fused-chain tracebacks, polled sources, retried steps,
and unions that run some inputs only for their side effects."""

from __future__ import annotations

import linecache
import pdb
import traceback

import pytest

import flowrl
import flowrl.iter as fi
from flowrl.iter import LocalIterator, NonBlockingStep, PollingSource, merge_iterators
from flowrl.iter.fused import fused_function


def fails_on_three(x):
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def test_traceback_through_a_fused_chain_shows_its_source_lines(local_executor):
    plan = LocalIterator(lambda: range(5), name="src").for_each(fails_on_three).filter(bool)
    with pytest.raises(flowrl.FlowError) as info:
        plan.take(5)
    text = info.value.remote_traceback
    chain_frame = next(line for line in text.splitlines() if "<flowrl fused chain" in line)
    assert "for_each(f) -> filter(f)" in chain_frame and ", in fused" in chain_frame
    # The line under the chain's frame is the generated statement that called the step.
    lines = text.splitlines()
    shown = lines[lines.index(chain_frame) + 1]
    assert "x = f0(x)  # step 0: for_each" in shown
    # Also a traceback printed afterwards (as pdb's `where` does) finds the lines.
    printed = "".join(traceback.format_exception(info.value.original))
    assert "x = f0(x)  # step 0: for_each" in printed


def test_fused_chain_source_survives_a_cleared_line_cache(local_executor):
    function = fused_function(("map", "filter"), False)
    filename = function.__code__.co_filename
    assert filename.startswith("<flowrl fused chain ") and filename.endswith(">")
    linecache.clearcache()
    LocalIterator(lambda: [1], name="src").for_each(abs).filter(bool).take(1)  # rebuilds
    source = "".join(linecache.getlines(filename))
    assert source.startswith("def fused(") and "f1(x)" in source
    assert isinstance(pdb.Pdb, type)  # pdb reads the same linecache entries


class Countdown(PollingSource):
    """Ready only on every third poll; records the waits the engine asked for."""

    def __init__(self, n):
        self.n, self.polls, self.waits = n, 0, []

    def poll(self):
        self.polls += 1
        if self.n == 0:
            raise StopIteration
        if self.polls % 3:
            return False, None
        self.n -= 1
        return True, self.n

    def wait(self, timeout_s):
        self.waits.append(timeout_s)

    def extra_stats(self):
        return {"left": self.n}


def test_polled_source_alone_waits_between_polls_and_never_leaks_not_ready(local_executor):
    source = Countdown(3)
    plan = LocalIterator.from_polling_source(source, name="countdown").for_each(lambda x: x * 2)
    assert plan.take(10) == [4, 2, 0]
    assert len(source.waits) == 6 and all(0 < w <= 0.05 for w in source.waits)
    stats = next(iter(plan.stats().values()))
    assert stats["label"] == "countdown" and stats["items_out"] == 3 and stats["left"] == 0


def test_polled_source_under_a_union_lets_the_other_input_run(local_executor):
    plan = LocalIterator.from_polling_source(Countdown(2), name="countdown").union(
        LocalIterator(lambda: "ab", name="letters")
    )
    assert sorted(map(str, plan.take(10))) == ["0", "1", "a", "b"]


def test_polled_source_errors_name_it(local_executor):
    class Broken(PollingSource):
        def poll(self):
            raise OSError("queue is gone")

    with pytest.raises(flowrl.FlowError, match="broken failed on the driver: OSError"):
        LocalIterator.from_polling_source(Broken(), name="broken").take(1)
    with pytest.raises(TypeError, match="PollingSource"):
        LocalIterator.from_polling_source(iter([1]), name="x")


class EveryThirdTry(NonBlockingStep):
    def __init__(self):
        self.tries, self.seen = 0, []

    def try_apply(self, item):
        self.tries += 1
        if self.tries % 3:
            return False, None
        self.seen.append(item)
        return True, item + 100

    def wait(self, timeout_s):
        pass


def test_nonblocking_step_is_retried_on_the_same_item(local_executor):
    step = EveryThirdTry()
    plan = LocalIterator(lambda: range(3), name="src").for_each(step)
    assert plan.take(5) == [100, 101, 102] and step.seen == [0, 1, 2] and step.tries == 9
    assert repr(plan) == "src.for_each(EveryThirdTry)"
    with pytest.raises(ValueError, match="max_concurrency"):
        LocalIterator(lambda: [], name="src").for_each(EveryThirdTry(), max_concurrency=2)


def test_nonblocking_step_under_a_union_yields_to_the_other_input(local_executor):
    step = EveryThirdTry()
    letters = LocalIterator(lambda: "abcdef", name="letters")
    plan = LocalIterator(lambda: range(2), name="src").for_each(step).union(letters)
    out = plan.take(8)
    assert sorted(map(str, out)) == ["100", "101", "a", "b", "c", "d", "e", "f"]
    assert out.index("a") < out.index(100)  # the letters ran while the step was retrying


def test_union_output_indexes_hide_items_but_run_their_input(executor):
    side_effects = []
    hidden = fi.from_range(4, num_shards=1).gather_sync().for_each(side_effects.append)
    shown = LocalIterator(lambda: "abcd", name="letters")
    plan = hidden.union(shown, deterministic=True, output_indexes=[1])
    assert plan.take(4) == ["a", "b", "c", "d"]
    assert side_effects == [0, 1, 2, 3]  # one hidden pull per turn, before each shown item
    assert "output_indexes=[1]" in repr(plan)
    stats = {s["label"]: s for s in plan.stats().values()}
    union_stats = stats["union(deterministic=True, output_indexes=[1])"]
    assert union_stats["items_in"] == 8 and union_stats["items_out"] == 4


def test_merge_iterators_checks_its_arguments():
    a = LocalIterator(lambda: [], name="a")
    common = {"op": "m", "kind": "union", "label": "m()", "lineage": "m", "method": "m()"}
    with pytest.raises(ValueError, match="at least one"):
        merge_iterators([], deterministic=True, **common)
    out_of_range = r"output index out of range: index=2.*valid indexes 0\.\.1"
    with pytest.raises(ValueError, match=out_of_range):
        merge_iterators([a, a], deterministic=True, output_indexes=[2], **common)
    with pytest.raises(ValueError, match="one weight per input"):
        merge_iterators([a, a], deterministic=True, round_robin_weights=[1], **common)
    with pytest.raises(TypeError, match="takes LocalIterators"):
        merge_iterators([a, [1]], deterministic=True, **common)
