"""The live plan viewer: a page on 127.0.0.1 that follows a training run while it trains.

The page is the plan viewer (``viewer.html``, the same drawing as ``to_html``) in *live mode*:
it polls ``/state.json`` every half second and redraws the plan with, on every operator, the
items it produced per second and its share of the iteration's time (and a queue's fill), next to
the learning curve (episode return against env steps) and the last iteration's result dict.

Two sources feed the same page:

* :class:`LiveViewer` -- a running trainer publishes a snapshot after every ``train()``
  (``Trainer.serve_viewer``, ``flowrl.run(..., viewer=True)``, ``flowrl train --viewer``);
* :class:`RunRecordsSource` -- a run directory's records (``result.json`` and ``plan.json``),
  read again whenever they change (``flowrl view RUN_DIR``), so it works on a finished run and
  follows one that is still writing.

Threading: the HTTP server runs in a daemon thread and only ever reads the last published
snapshot (immutable bytes swapped under a lock); the training thread builds each snapshot from
the plan graph, so the server never touches the plan.

Examples:
    >>> from flowrl.iter import LocalIterator
    >>> plan = LocalIterator(lambda: range(6), name="numbers").for_each(abs)
    >>> _ = plan.take(6)
    >>> graph = annotate_rates(plan.graph(), {"time_this_iter_s": 2.0, "time_total_s": 2.0})
    >>> [graph.nodes[n]["items_per_s"] for n in graph.nodes]
    [3.0, 3.0]
"""

from __future__ import annotations

import http.server
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flowrl.viz.html import _embed, _fill, _jsonable, _template, from_json, plan_data

__all__ = [
    "LiveViewer",
    "RunRecordsSource",
    "ViewerPortError",
    "ViewerServer",
    "annotate_rates",
    "live_page",
    "queue_fills",
    "serve_run_dir",
    "state_document",
    "write_run_page",
]

STATE_FORMAT = "flowrl-live"
STATE_PATH = "/state.json"
POLL_MS = 500
"""How often the page asks for a new state; the page is at most this plus one iteration behind."""
PLAN_FILE = "plan.json"
RESULT_FILE = "result.json"
MAX_CURVE_POINTS = 2000
"""Longer learning curves are thinned (evenly, always keeping the last point) for the page."""


# -- what the page shows ------------------------------------------------------------------------


def annotate_rates(graph: Any, result: Mapping[str, Any] | None = None,
                   previous_ops: Mapping[str, Mapping[str, Any]] | None = None) -> Any:
    """Adds ``items_per_s``, ``time_share`` and ``seconds_per_item`` (the operator's own time
    per item it produced) to every operator of ``graph``; returns ``graph``.

    ``graph`` is a plan graph with cumulative statistics (``items_out``, ``time_s`` per node,
    as ``trainer.plan_graph()`` has them). With ``previous_ops`` (the ``result["ops"]`` of the
    iteration before), the figures are for the last iteration: items it produced per second of
    ``result["time_this_iter_s"]`` and the seconds spent in it as a share of that time. Without,
    they average over ``result["time_total_s"]``. Shard-side operators run in parallel, so their
    shares can add up to more than 1. Along a chain of one-to-one operators every node yields
    the same items per second; ``seconds_per_item`` and ``time_share`` tell them apart. Nodes
    keep any queue fill (``queue_size``) they carry;
    side-link resources (``kind="resource"``) get no rates.
    Without a result (nothing trained yet) the graph is returned as it is.
    """
    if not result:
        return graph
    key = "time_this_iter_s" if previous_ops else "time_total_s"
    seconds = _number(result.get(key)) or _number(result.get("time_total_s"))
    if not seconds or seconds <= 0:
        return graph
    for node, attrs in graph.nodes(data=True):
        if attrs.get("kind") == "resource":
            continue  # a side-link resource (a learner thread) is no operator: no item counts
        before = (previous_ops or {}).get(str(node)) or {}
        items = (_number(attrs.get("items_out")) or 0.0) - (_number(before.get("items_out")) or 0.0)
        spent = (_number(attrs.get("time_s")) or 0.0) - (_number(before.get("time_s")) or 0.0)
        attrs["items_per_s"] = max(items, 0.0) / seconds
        attrs["time_share"] = max(spent, 0.0) / seconds
        if items > 0 and spent > 0:  # what sets one operator apart from the next in a chain
            attrs["seconds_per_item"] = spent / items
    return graph


def queue_fills(result: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every queue fill a result reports anywhere in ``info``: ``X_size`` next to
    ``X_maxsize`` (as a learner thread's ``stats()`` has them), or a fraction ``X_fill``.

    Examples:
        >>> queue_fills({"info": {"learner_thread": {"inqueue_size": 3, "inqueue_maxsize": 16}}})
        [{'name': 'learner_thread/inqueue', 'size': 3, 'maxsize': 16}]
        >>> queue_fills({"info": {"learner_thread": {"queue_fill": 0.25}}})
        [{'name': 'learner_thread/queue', 'fraction': 0.25}]
    """
    info = (result or {}).get("info")
    return list(_walk_fills(info, "")) if isinstance(info, Mapping) else []


def _walk_fills(tree: Mapping[str, Any], prefix: str) -> Iterator[dict[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _walk_fills(value, f"{prefix}{key}/")
        elif not isinstance(key, str) or _number(value) is None:
            continue
        elif key.endswith("_size") and _number(tree.get(f"{key[:-5]}_maxsize")) is not None:
            name = key[: -len("_size")]
            yield {"name": prefix + name, "size": value, "maxsize": tree[f"{name}_maxsize"]}
        elif key.endswith("_fill"):
            yield {"name": prefix + key[: -len("_fill")], "fraction": value}


def curve_point(result: Mapping[str, Any]) -> list[float] | None:
    """``[timesteps_total, episode_reward_mean]`` of a result, or None before any episode ended."""
    steps = _number(result.get("timesteps_total"))
    episode_return = _number(result.get("episode_reward_mean"))
    if steps is None or episode_return is None or not math.isfinite(episode_return):
        return None
    return [steps, episode_return]


def state_document(graph: Any | None, *, title: str, result: Mapping[str, Any] | None = None,
                   previous_result: Mapping[str, Any] | None = None,
                   curve: list[list[float]] | None = None, status: str = "running",
                   version: int = 0) -> dict[str, Any]:
    """What ``/state.json`` serves: the annotated plan with its layout, curve and last result.

    ``graph`` is annotated in place (see :func:`annotate_rates`); None means no plan is known
    (a run directory without ``plan.json``).
    """
    plan = None
    if graph is not None:
        previous_ops = (previous_result or {}).get("ops") if previous_result else None
        annotate_rates(graph, result, previous_ops if isinstance(previous_ops, Mapping) else None)
        plan = plan_data(graph, title=title)
    shown = {key: value for key, value in (result or {}).items() if key != "ops"}
    return {
        "format": STATE_FORMAT,
        "version": version,
        "title": title,
        "status": status,
        "published_at": time.time(),
        "plan": plan,
        "curve": _thin(curve or []),
        "result": _jsonable(shown) if result else None,
        "queues": _jsonable(queue_fills(result)),
    }


def live_page(title: str = "flowrl run", state: Mapping[str, Any] | None = None) -> str:
    """The viewer page in live mode: it polls ``state.json``, or shows ``state`` when given."""
    config: dict[str, Any] = {"format": STATE_FORMAT, "poll_ms": POLL_MS}
    if state is None:
        config["state_url"] = STATE_PATH.lstrip("/")
    else:
        config["state"] = state
    return _fill(_template(), title, _embed(config))


def _thin(points: list[list[float]]) -> list[list[float]]:
    if len(points) <= MAX_CURVE_POINTS:
        return list(points)
    step = len(points) / (MAX_CURVE_POINTS - 1)
    return [points[int(i * step)] for i in range(MAX_CURVE_POINTS - 1)] + [points[-1]]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(_jsonable(document), ensure_ascii=False, separators=(",", ":")).encode()


# -- serving ------------------------------------------------------------------------------------


class ViewerPortError(OSError):
    """The viewer could not listen on the port asked for (taken, or not allowed)."""


class ViewerServer:
    """An HTTP server on 127.0.0.1 (a daemon thread) serving the live page and its state.

    Args:
        state: called on the server thread for every ``/state.json`` request; returns the
            state document as JSON bytes. It must only read data published for it.
        title: the page title.
        port: the port to listen on; None picks a free one.

    Raises:
        ViewerPortError: when ``port`` is taken, saying so and how to pick another.
    """

    def __init__(self, state: Callable[[], bytes], title: str = "flowrl run",
                 port: int | None = None) -> None:
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                 or not 0 <= port <= 65535):
            raise ValueError(f"The viewer port must be an int from 0 to 65535 or None (any free "
                             f"port); got {port=}.")
        page = live_page(title).encode()
        handler = type("Handler", (_Handler,), {"page": page, "state": staticmethod(state)})
        try:
            self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port or 0), handler)
        except OSError as error:
            raise ViewerPortError(
                error.errno, f"Cannot serve the plan viewer on 127.0.0.1:{port}: "
                f"{error.strerror}. Pass another port, or none to pick a free one.") from None
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"flowrl-viewer-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The page's address, ``http://127.0.0.1:<port>/``."""
        return f"http://127.0.0.1:{self.port}/"

    def close(self) -> None:
        """Stops serving and frees the port. Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET ``/`` (the page) and ``/state.json``; anything else is a 404."""

    page: bytes = b""
    state: Callable[[], bytes]

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", self.page)
        elif path == STATE_PATH:
            self._send(200, "application/json", type(self).state())
        else:
            self._send(404, "text/plain; charset=utf-8",
                       f"Not found: {path}. The viewer serves / and {STATE_PATH}.".encode())

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base signature
        """Quiet: a request line per poll would flood the training output."""


class LiveViewer:
    """The live page for a running training loop: ``publish`` after each iteration.

    ```python
    viewer = LiveViewer("PPO on CartPole-v1")
    print(viewer.url)
    for _ in range(100):
        result = trainer.train()
        viewer.publish(trainer.plan_graph(), result)   # on the training thread
    viewer.close()
    ```

    ``Trainer.serve_viewer()`` does this for a trainer.
    """

    def __init__(self, title: str = "flowrl run", port: int | None = None) -> None:
        self.title = title
        self._lock = threading.Lock()
        self._curve: list[list[float]] = []
        self._previous: Mapping[str, Any] | None = None
        self._version = 0
        self._snapshot = _encode(state_document(None, title=title, status="starting"))
        self._server = ViewerServer(self._read, title=title, port=port)

    @property
    def url(self) -> str:
        """The page's address on 127.0.0.1."""
        return self._server.url

    def publish(self, graph: Any, result: Mapping[str, Any] | None = None,
                status: str = "running") -> None:
        """Makes ``graph`` (annotated in place) and ``result`` what the page shows next.

        Call it on the thread that runs the plan, after ``train()``; ``graph`` must be a fresh
        ``plan_graph()``, not shared with the plan.
        """
        if result is not None:
            point = curve_point(result)
            if point is not None:
                self._curve.append(point)
        document = state_document(graph, title=self.title, result=result,
                                  previous_result=self._previous, curve=self._curve,
                                  status=status, version=self._version + 1)
        encoded = _encode(document)
        with self._lock:
            self._version += 1
            self._snapshot = encoded
        if result is not None:
            self._previous = result

    def _read(self) -> bytes:
        with self._lock:
            return self._snapshot

    def close(self) -> None:
        """Stops serving. Idempotent."""
        self._server.close()


class RunRecordsSource:
    """A run directory's records as the page's state, read again when a file changes.

    Reads ``result.json`` (one JSON line per iteration: the curve, the last result and the one
    before it, whose ``ops`` give the last iteration's rates) and ``plan.json`` (the plan graph
    ``flowrl.viz.to_json`` wrote at the last iteration).

    Raises:
        FileNotFoundError: when ``run_dir`` is not a directory with a ``result.json``.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise FileNotFoundError(
                f"{str(self.run_dir)!r} is not a directory. Pass a run directory a training run "
                f"wrote, e.g. results/PPO_CartPole-v1_<timestamp>/ (printed when it started).")
        if not (self.run_dir / RESULT_FILE).is_file():
            raise FileNotFoundError(
                f"{str(self.run_dir)!r} has no {RESULT_FILE}, so it is not a run directory (or "
                f"its run has not finished an iteration yet). Pass the directory printed as "
                f"'Run records ... in <dir>' when the run started.")
        self.title = self.run_dir.resolve().name
        self._lock = threading.Lock()
        self._stamp: tuple[Any, ...] | None = None
        self._encoded = b""
        self._version = 0

    def document(self) -> dict[str, Any]:
        """The state document of the records as they are now on disk."""
        results = _read_result_lines(self.run_dir / RESULT_FILE)
        plan_path = self.run_dir / PLAN_FILE
        graph = from_json(plan_path.read_text(encoding="utf-8")) if plan_path.is_file() else None
        curve = [point for point in map(curve_point, results) if point is not None]
        last = results[-1] if results else None
        previous = results[-2] if len(results) > 1 else None
        return state_document(graph, title=self.title, result=last, previous_result=previous,
                              curve=curve, status="records", version=self._version)

    def __call__(self) -> bytes:
        """The state as JSON bytes; re-read only when ``result.json`` or ``plan.json`` changed."""
        stamp = tuple(_file_stamp(self.run_dir / name) for name in (RESULT_FILE, PLAN_FILE))
        with self._lock:
            if stamp != self._stamp:
                self._version += 1
                self._encoded = _encode(self.document())
                self._stamp = stamp
            return self._encoded


def serve_run_dir(run_dir: str | os.PathLike, port: int | None = None) -> ViewerServer:
    """Serves the viewer page over a run directory's records (``flowrl view RUN_DIR``)."""
    source = RunRecordsSource(run_dir)
    return ViewerServer(source, title=source.title, port=port)


def write_run_page(run_dir: str | os.PathLike, path: str | os.PathLike) -> str:
    """Writes the viewer page with a run directory's records in it (no server needed); returns
    the path. The page is self-contained and opens from ``file://``."""
    source = RunRecordsSource(run_dir)
    page = live_page(source.title, state=_jsonable(source.document()))
    Path(path).write_text(page, encoding="utf-8")
    return str(path)


def _read_result_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of ``result.json`` (a line cut off by a crash is skipped)."""
    results = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                results.append(value)
    return results


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_mtime_ns, info.st_size)
