"""Fused chains: consecutive ``for_each``/``filter`` steps compiled into one generator.

One generated loop (one generator frame for the whole chain) is what keeps the engine's
per-item cost below that of hand-chained generators. Each shape of chain (its step kinds, and
whether it runs under a union) is compiled once; the generated source is registered with
``linecache`` under a descriptive file name, so tracebacks and ``pdb`` show its lines.
"""

from __future__ import annotations

import itertools
import linecache
import time
from collections.abc import Iterator
from typing import Any

from flowrl.iter.not_ready import NOT_READY
from flowrl.iter.scheduling import Build, Waits, step_error

_SAMPLE_AFTER = 64  # time every item until then; afterwards 1 in 16 if the chain is cheap
_CHEAP_SECONDS = 20e-6
_fused_cache: dict[tuple[tuple[str, ...], bool], tuple[Any, str, tuple]] = {}
_chain_numbers = itertools.count(1)


def fused_code(kinds: tuple[str, ...], cooperative: bool) -> str:
    """Source of one generator running a chain of Map/Filter steps.

    Only filters count (``o{i}``: items kept); a step's items in are the items out of the
    nearest filter before it (or ``seen``, the items pulled from upstream). Timing is sampled.
    """
    steps = range(len(kinds))
    lines = ["def fused(upstream, fns, stats, wrap, NR, pc, source_wrap, source_stat):"]
    if kinds:
        lines.append("    " + ", ".join(f"f{i}" for i in steps) + ", = fns")
    for i in steps:
        lines.append(f"    o{i} = c{i} = 0; t{i} = 0.0")
    lines += ["    seen = 0; mask = 0", "    try:", "        for x in upstream:"]
    if cooperative:
        lines += ["            if x is NR:", "                yield x", "                continue"]
    lines += ["            seen += 1", "            if seen & mask:"]
    lines += _fused_body(kinds, cooperative, timed=False)
    lines += ["            else:", "                tp = pc()"]
    total = " + ".join(f"t{i}" for i in steps) or "0.0"
    lines += [
        f"                if seen == {_SAMPLE_AFTER + 1}:",
        f"                    mask = 15 if ({total}) < {_SAMPLE_AFTER * _CHEAP_SECONDS} else 0",
    ]
    lines += _fused_body(kinds, cooperative, timed=True)
    lines += [
        "    except Exception as e:",
        "        if source_wrap is None or getattr(e, '_flowrl_step', False):",
        "            raise",
        "        raise source_wrap(e)",
        "    finally:",
        "        if source_stat is not None:",
        "            source_stat.items_out = seen",
    ]
    entering = "seen"
    for i, kind in enumerate(kinds):
        out = f"o{i}" if kind == "filter" else entering
        lines.append(
            f"        s = stats[{i}]; s.items_in = {entering}; s.items_out = {out}; "
            f"s.time_s = t{i} / c{i} * {entering} if c{i} else 0.0"
        )
        entering = out
    return "\n".join(lines)


def _fused_body(kinds: tuple[str, ...], cooperative: bool, *, timed: bool) -> list[str]:
    pad = "                "
    lines: list[str] = []
    for i, kind in enumerate(kinds):
        target = "x" if kind == "map" else "keep"
        lines += [
            f"{pad}try:",
            f"{pad}    {target} = f{i}(x)  # step {i}: {'for_each' if kind == 'map' else kind}",
            f"{pad}except Exception as e:",
            f"{pad}    raise wrap({i}, e)",
        ]
        if timed:
            lines.append(f"{pad}tn = pc(); t{i} += tn - tp; c{i} += 1; tp = tn")
        if kind == "filter":
            lines.append(f"{pad}if not keep:")
            if cooperative:
                lines += [f"{pad}    Waits.progress += 1", f"{pad}    yield NR"]
            lines += [f"{pad}    continue", f"{pad}o{i} += 1"]
    lines.append(f"{pad}yield x")
    return lines


def _chain_filename(kinds: tuple[str, ...], cooperative: bool) -> str:
    """A unique fake file name describing the chain, e.g. ``<flowrl fused chain 3: ...>``."""
    steps = " -> ".join("for_each(f)" if kind == "map" else "filter(f)" for kind in kinds)
    mode = ", under a union" if cooperative else ""
    return f"<flowrl fused chain {next(_chain_numbers)}: {steps or 'source only'}{mode}>"


def fused_function(kinds: tuple[str, ...], cooperative: bool) -> Any:
    """The compiled generator function for a chain shape (compiled once, then cached).

    Each call also (re)registers the generated source with ``linecache``, in case something
    cleared the cache since, so tracebacks through the chain always show its lines.
    """
    key = (kinds, cooperative)
    cached = _fused_cache.get(key)
    if cached is None:
        source = fused_code(kinds, cooperative)
        filename = _chain_filename(kinds, cooperative)
        lines = [line + "\n" for line in source.splitlines()]
        # mtime None: linecache.checkcache() keeps entries that have no file on disk.
        entry = (len(source), None, lines, filename)
        namespace: dict[str, Any] = {"Waits": Waits}
        exec(compile(source, filename, "exec"), namespace)
        cached = _fused_cache[key] = (namespace["fused"], filename, entry)
    function, filename, entry = cached
    if filename not in linecache.cache:
        linecache.cache[filename] = entry
    return function


def _fused_probe(generator: Any, index: int, kinds: tuple[str, ...]) -> Any:
    def probe() -> tuple[int, int, float] | None:
        frame = generator.gi_frame
        if frame is None:
            return None
        values = frame.f_locals
        entering = values.get("seen", 0)
        for i in range(index):
            if kinds[i] == "filter":
                entering = values.get(f"o{i}", 0)
        items_out = values.get(f"o{index}", 0) if kinds[index] == "filter" else entering
        sampled = values.get(f"c{index}", 0)
        seconds = values.get(f"t{index}", 0.0) / sampled * entering if sampled else 0.0
        return entering, items_out, seconds

    return probe


def _seen_probe(generator: Any) -> Any:
    def probe() -> tuple[int, int, float] | None:
        frame = generator.gi_frame
        return None if frame is None else (0, frame.f_locals.get("seen", 0), 0.0)

    return probe


def fuse(
    upstream: Iterator[Any], ops: list[Any], build: Build, source: Any = None
) -> Iterator[Any]:
    """Runs the Map/Filter operators ``ops`` over ``upstream`` in one generated generator.

    ``source`` is ``(wrap_error, stat)`` when ``upstream`` is a raw user iterator: the chain
    then counts its items and attributes its errors.
    """
    kinds = tuple(op.impl.fusable for op in ops)
    fns = [op.impl.fn for op in ops]
    stats = [build.context.op_stat(op.id) for op in ops]

    def wrap(index: int, exc: BaseException) -> BaseException:
        error = step_error(ops[index], build, exc)
        error._flowrl_step = True  # raised by a step: the source must not re-wrap it
        return error

    source_wrap, source_stat = source if source is not None else (None, None)
    generator = fused_function(kinds, build.cooperative)(
        upstream, fns, stats, wrap, NOT_READY, time.perf_counter, source_wrap, source_stat
    )
    for index, stat in enumerate(stats):
        stat.probe = _fused_probe(generator, index, kinds)
    if source_stat is not None:
        source_stat.probe = _seen_probe(generator)
    return generator
