"""Building a plan is free: no Ray, picklable, printable (checked in a fresh process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import pickle, sys
    import flowrl.iter as fi
    from flowrl.viz import to_dot

    def square(x):
        return x * x

    def keep(x):
        return x > 1

    plan = (fi.from_range(8, num_shards=4).for_each(square).filter(keep)
            .union(fi.from_items([1, 2], num_shards=1)).gather_async(num_async=2))
    local = fi.LocalIterator(range, name="local")
    a, b = plan.batch(2).duplicate(2)
    final = a.union(b.flatten(), local, deterministic=True)
    text = repr(final)
    blob = pickle.dumps(final)
    restored = pickle.loads(blob)
    assert repr(restored) == text, (repr(restored), text)
    to_dot(final.graph())
    assert "ray" not in sys.modules, "building a plan imported ray"
    print("OK", text)
""")


def test_plan_builds_pickles_and_prints_without_ray():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK from_range[8, shards=4].for_each(square)")
