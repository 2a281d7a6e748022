"""User code that reaches Ray workers: modules the workers cannot import travel by value.

Ray pickles a function or class *by reference* (module name plus attribute) when its module is
importable in the driver, and a worker then imports that module. A module the driver loaded
from a path the workers do not search (a file loaded with ``importlib`` by path, a directory
added to ``sys.path`` at run time, a script's sibling module when the script runs from another
directory) breaks that: the worker fails with ``ModuleNotFoundError`` while unpickling.

Before anything is shipped to Ray, :func:`ship_unimportable_modules` finds such modules among
``sys.modules`` and registers them with Ray's cloudpickle to be pickled *by value*, so their
envs, plans and operator functions work on the workers without any setup. A module the workers
can import keeps going by reference (its globals, e.g. locks, are never copied).

What cannot work that way (a module missing on another node of a cluster the driver joined)
is recognised in errors by :func:`missing_module_name` and reported by
:func:`missing_module_message` with the fix.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import site
import subprocess
import sys
import sysconfig
from types import ModuleType

logger = logging.getLogger(__name__)

# Top-level module name -> whether the workers cannot import it (decided once per name).
_top_level_by_value: dict[str, bool] = {}
# Module name -> whether it was registered to travel by value.
_decided: dict[str, bool] = {}
# sys.modules at the last scan, as (size, newest name): a scan runs again only when modules were
# added (a dict keeps insertion order, so a new module is the newest name).
_scan_state: dict[str, tuple[int, str | None]] = {"modules_seen": (-1, None)}

_MISSING_MODULE = re.compile(r"No module named '([^']+)'")

# Run in a fresh interpreter of this Python, as a Ray worker on this machine starts: for each
# top-level module name, where its import would come from (None: it would not be found).
_PROBE = """
import importlib.util, json, sys
request = json.loads(sys.stdin.read())
sys.path[:0] = request["extra_path"]
found = {}
for name in request["names"]:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    found[name] = None if spec is None else (spec.origin or "namespace")
print(json.dumps(found))
"""


def ship_unimportable_modules() -> list[str]:
    """Registers every loaded module that Ray workers could not import to be pickled by value.

    Cheap when nothing new was imported since the last call (two comparisons), so it is
    called before every shipment to Ray. Returns the names registered by this call.
    """
    if _modules_seen() == _scan_state["modules_seen"]:
        return []
    from ray import cloudpickle

    loaded = {name: module for name, module in list(sys.modules.items())
              if name not in _decided and isinstance(module, ModuleType)}
    from_files = {name for name, module in loaded.items()
                  if _loaded_from_file(name, module) and not _installed(module)}
    _decide_top_levels({name.partition(".")[0] for name in from_files})
    registered = []
    for name in loaded:
        by_value = name in from_files and _top_level_by_value[name.partition(".")[0]]
        _decided[name] = by_value
        if by_value:
            cloudpickle.register_pickle_by_value(loaded[name])
            registered.append(name)
    _scan_state["modules_seen"] = _modules_seen()
    return registered


def _modules_seen() -> tuple[int, str | None]:
    return len(sys.modules), next(reversed(sys.modules), None)


def shipped_by_value() -> list[str]:
    """Names of the modules registered so far to travel to the workers by value."""
    return sorted(name for name, by_value in _decided.items() if by_value)


def worker_extra_path() -> list[str]:
    """What a Ray worker has on ``sys.path`` beyond a fresh interpreter's entries: what Ray adds
    for this driver (its current directory, and its script's directory when the driver imports
    from there) and what importing Ray adds (its bundled third-party packages)."""
    import ray

    ray_directory = os.path.dirname(os.path.realpath(ray.__file__))
    extra = [os.getcwd()]
    extra += [entry for entry in sys.path
              if os.path.realpath(entry or ".").startswith(ray_directory + os.sep)]
    if sys.argv and sys.argv[0]:
        script_directory = os.path.dirname(os.path.realpath(sys.argv[0]))
        if script_directory in sys.path:
            extra.append(script_directory)
    return extra


def _loaded_from_file(name: str, module: ModuleType) -> bool:
    """True for a module loaded from a Python source or bytecode file (not __main__, which
    cloudpickle ships by value itself, nor built-in, frozen or extension modules)."""
    if name in ("__main__", "__mp_main__"):
        return False
    origin = getattr(getattr(module, "__spec__", None), "origin", None)
    return isinstance(origin, str) and origin.endswith((".py", ".pyc"))


@functools.cache
def _installed_directories() -> tuple[str, ...]:
    """The standard library and site-packages directories, which every worker searches too."""
    paths = sysconfig.get_paths()
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    found = {paths[name] for name in names if name in paths} | set(site.getsitepackages())
    found |= {os.path.realpath(directory) for directory in found}
    return tuple(directory + os.sep for directory in sorted(found))


def _installed(module: ModuleType) -> bool:
    """Whether the module's file lies in the standard library or in site-packages (then the
    workers import it the same way and no probe is needed)."""
    origin: str = module.__spec__.origin  # type: ignore[union-attr]
    return (origin.startswith(_installed_directories())
            or os.path.realpath(origin).startswith(_installed_directories()))


def _decide_top_levels(names: set[str]) -> None:
    """Decides, for each new top-level name, whether a fresh interpreter (as a worker starts)
    would import the same files the driver did; one probe process for all of them."""
    undecided = sorted(name for name in names if name not in _top_level_by_value)
    if not undecided:
        return
    request = json.dumps({"names": undecided, "extra_path": worker_extra_path()})
    try:
        probe = subprocess.run([sys.executable, "-P", "-c", _PROBE], input=request,
                               capture_output=True, text=True, timeout=120, check=True,
                               env=dict(os.environ))
        found: dict[str, str | None] = json.loads(probe.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        logger.warning("Could not check which modules Ray workers can import (%s); %s go by "
                       "reference as Ray ships them by default.", error, undecided)
        found = {name: "unknown" for name in undecided}
    for name in undecided:
        _top_level_by_value[name] = not _same_origin(sys.modules.get(name), found.get(name))


def _same_origin(module: ModuleType | None, worker_origin: str | None) -> bool:
    """Whether the worker would import the module the driver has (same file, or a package
    the driver itself did not load from a file)."""
    if worker_origin is None:
        return False
    if worker_origin == "unknown":
        return True
    driver_origin = getattr(getattr(module, "__spec__", None), "origin", None)
    if not isinstance(driver_origin, str) or worker_origin == "namespace":
        return True
    return os.path.realpath(driver_origin) == os.path.realpath(worker_origin)


class WorkerImportError(ModuleNotFoundError):
    """A Ray worker could not import a module that an object sent to it needs.

    Raised on the driver in place of Ray's deserialization error; ``name`` is the module. The
    engine turns it into a ``FlowError`` naming the operator whose function needs the module.

    Examples:
        >>> error = WorkerImportError("cannot import it", name="my_envs")
        >>> isinstance(error, ModuleNotFoundError), error.name
        (True, 'my_envs')
    """


def as_worker_import_error(error: BaseException, needed_by: str) -> WorkerImportError | None:
    """A ``WorkerImportError`` for a Ray error caused by a module missing on the worker, or
    None when ``error`` has another cause."""
    if isinstance(error, WorkerImportError):
        return error
    module_name = missing_module_name(error)
    if module_name is None:
        return None
    return WorkerImportError(missing_module_message(module_name, needed_by), name=module_name)


def missing_module_name(error: BaseException) -> str | None:
    """The module a worker could not import, read from ``error`` or its causes, or None.

    Examples:
        >>> missing_module_name(RuntimeError("System error: No module named 'my_envs'"))
        'my_envs'
        >>> missing_module_name(ValueError("bad value")) is None
        True
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModuleNotFoundError) and current.name:
            return current.name
        match = _MISSING_MODULE.search(str(current))
        if match:
            return match.group(1)
        current = current.__cause__ or getattr(current, "cause", None)
        if not isinstance(current, BaseException):
            current = None
    return None


def missing_module_message(module_name: str, needed_by: str) -> str:
    """Says that the workers cannot import ``module_name`` (needed by ``needed_by``), and how
    to make it available to them."""
    return (
        f"The Ray workers cannot import module {module_name!r}, which {needed_by} needs "
        f"(ModuleNotFoundError while loading it on the worker). flowrl ships modules by value "
        f"when this driver loaded them from outside the workers' import path, but this one "
        f"was expected to be importable there. Make it importable on every node: install its "
        f"package, add its directory to PYTHONPATH before starting Ray, or pass "
        f"runtime_env={{'py_modules': [<the module or its package directory>]}} to "
        f"flowrl.init(...)."
    )
