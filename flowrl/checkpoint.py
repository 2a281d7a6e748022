"""Checkpoints on disk: safe to load, atomic to write, readable by later versions.

A checkpoint is a directory with two files and nothing that can run code when loaded:

- ``arrays.npz``: every numpy array of the state (weights, optimizer moments, ...), named by
  its path in the state, e.g. ``policy_state/weights/pi/fc_0/kernel``; loaded with pickling
  disabled, so an object array is refused, not unpickled.
- ``checkpoint.json``: everything else (algorithm, env, config, counters, operator statistics,
  other scalars) as a JSON tree, in which each array is a ``{"__ndarray__": name}`` reference
  into ``arrays.npz``, plus ``format_version``.

```python
write_checkpoint("ckpt/checkpoint_000010", {"iteration": 10, "weights": {"w": np.ones(3)}})
read_checkpoint("ckpt/checkpoint_000010")["weights"]["w"]      # array([1., 1., 1.])
```

``write_checkpoint`` never leaves a torn checkpoint: it writes a staging directory beside the
target, fsyncs it, and swaps it in with one atomic rename (an atomic exchange of the two
directories when the path already holds a checkpoint), so after a crash at any moment the path
holds the previous complete checkpoint or the new one. Staging directories a crash left behind
are removed by the next save into the same parent directory.
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import importlib.util
import json
import os
import shutil
import sys
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
"""The checkpoint layout this version writes; it reads every version up to this one."""

STATE_FILE = "checkpoint.json"
ARRAYS_FILE = "arrays.npz"
LEGACY_PICKLE_FILE = "trainer_state.pkl"

_ARRAY_MARKER = "__ndarray__"
_STAGING_TAG = ".staging-"
_PREVIOUS_TAG = ".previous-"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: missing, from an unsafe or newer format, or corrupt."""


# =============================================================================================
# Nested state <-> (JSON tree, named arrays)
# =============================================================================================


def flatten_state(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Splits a nested state into a JSON-ready tree and the arrays it references by name.

    Dicts (string keys), lists and tuples nest; numpy arrays go to the array dict under their
    ``/``-joined path; numpy scalars become Python numbers; str, int, float, bool and None
    stay. Tuples come back as lists.

    Raises:
        TypeError: for a value of any other type or a non-string key, naming its path.

    Examples:
        >>> tree, arrays = flatten_state({"w": {"pi/fc_0/kernel": np.zeros(2)}, "step": 3})
        >>> tree
        {'w': {'pi/fc_0/kernel': {'__ndarray__': 'w/pi/fc_0/kernel'}}, 'step': 3}
        >>> list(arrays)
        ['w/pi/fc_0/kernel']
    """
    arrays: dict[str, np.ndarray] = {}
    tree = _flatten(dict(state), "", arrays)
    return tree, arrays


def _flatten(value: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"Checkpoint state at {path!r} is an object array; only numeric "
                            f"and string arrays can be stored without pickling.")
        name = path or "root"
        while name in arrays:  # a key containing "/" can spell the same path as nesting
            name += "_"
        arrays[name] = value
        return {_ARRAY_MARKER: name}
    if isinstance(value, Mapping):
        flat = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"Checkpoint state at {path!r} has the non-string key {key!r}; "
                                f"use string keys (JSON objects only have string keys).")
            if key == _ARRAY_MARKER:
                raise TypeError(f"Checkpoint state at {path!r} uses the reserved key "
                                f"{_ARRAY_MARKER!r}; rename it.")
            flat[key] = _flatten(item, f"{path}/{key}" if path else key, arrays)
        return flat
    if isinstance(value, list | tuple):
        return [_flatten(item, f"{path}/{index}", arrays) for index, item in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise TypeError(f"Checkpoint state at {path!r} is a {type(value).__name__}, which a "
                    f"checkpoint cannot store safely; use numpy arrays, numbers, strings, "
                    f"lists or dicts.")


def unflatten_state(tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """Rebuilds the state ``flatten_state`` split: array references become the arrays.

    Raises:
        CheckpointError: if the tree references an array that ``arrays`` lacks.

    Examples:
        >>> tree, arrays = flatten_state({"w": np.arange(2), "lr": 0.1})
        >>> unflatten_state(tree, arrays)
        {'w': array([0, 1]), 'lr': 0.1}
    """
    if isinstance(tree, dict):
        if set(tree) == {_ARRAY_MARKER}:
            name = tree[_ARRAY_MARKER]
            if name not in arrays:
                raise CheckpointError(f"The checkpoint's state refers to the array {name!r}, "
                                      f"which {ARRAYS_FILE} does not hold; the file is damaged.")
            return arrays[name]
        return {key: unflatten_state(item, arrays) for key, item in tree.items()}
    if isinstance(tree, list):
        return [unflatten_state(item, arrays) for item in tree]
    return tree


# =============================================================================================
# Reading
# =============================================================================================


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Loads the state a ``write_checkpoint`` call stored at ``path``; runs no code from it.

    Raises:
        FileNotFoundError: if ``path`` holds no checkpoint.
        CheckpointError: for an old pickle checkpoint (never opened), a newer format, an
            object array or a damaged file.
    """
    path = os.fspath(path)
    _finish_interrupted_swap(Path(path))
    state_file = os.path.join(path, STATE_FILE)
    arrays_file = os.path.join(path, ARRAYS_FILE)
    if not os.path.isfile(state_file):
        if os.path.isfile(os.path.join(path, LEGACY_PICKLE_FILE)):
            raise CheckpointError(
                f"{path!r} holds {LEGACY_PICKLE_FILE}, a checkpoint in the old pickle format. "
                f"flowrl does not load it, because unpickling a file can run any code in it. "
                f"Retrain and save with this version, which writes {STATE_FILE} and "
                f"{ARRAYS_FILE} (no pickle).")
        raise FileNotFoundError(
            f"No flowrl checkpoint at {path!r}: expected the files {STATE_FILE} and "
            f"{ARRAYS_FILE} in it, as written by Trainer.save().")
    try:
        with open(state_file, encoding="utf-8") as f:
            document = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{state_file!r} is not valid JSON ({error}); the checkpoint "
                              f"is damaged or not a flowrl checkpoint.") from None
    if not isinstance(document, dict) or "format_version" not in document:
        raise CheckpointError(f"{state_file!r} has no format_version; it is not a flowrl "
                              f"checkpoint.")
    version = document["format_version"]
    if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path!r} has checkpoint format_version={version!r}; this flowrl reads versions "
            f"1 to {FORMAT_VERSION}. Upgrade flowrl to read it.")
    arrays = _load_arrays(arrays_file)
    return unflatten_state(document["state"], arrays)


def _load_arrays(arrays_file: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(arrays_file):
        raise CheckpointError(f"{arrays_file!r} is missing; the checkpoint is incomplete.")
    try:
        with np.load(arrays_file, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as error:  # numpy refuses object arrays when pickling is disabled
        raise CheckpointError(
            f"{arrays_file!r} holds an array that only unpickling could load ({error}). flowrl "
            f"never unpickles checkpoint data; this file was not written by flowrl.") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CheckpointError(f"{arrays_file!r} cannot be read ({error}); the checkpoint is "
                              f"damaged.") from None


# =============================================================================================
# Writing, atomically
# =============================================================================================


def write_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> str:
    """Writes ``state`` as a checkpoint directory at ``path``, replacing any checkpoint there.

    The path holds either its previous complete checkpoint or the new one at every moment,
    even if the process is killed during the call. Returns the absolute path.

    Raises:
        TypeError: if the state holds a value a checkpoint cannot store (see ``flatten_state``).
        FileExistsError: if ``path`` exists and is not a flowrl checkpoint directory.
    """
    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target.parent)
    if target.exists() and not (target.is_dir() and _looks_like_checkpoint(target)):
        raise FileExistsError(f"{str(target)!r} exists and is not a flowrl checkpoint; choose "
                              f"another path or remove it first.")
    tree, arrays = flatten_state(state)
    document = {"format_version": FORMAT_VERSION, "state": tree}
    staging = target.parent / f".{target.name}{_STAGING_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        with open(staging / ARRAYS_FILE, "wb") as f:
            np.savez(f, **arrays)
            _flush_to_disk(f)
        with open(staging / STATE_FILE, "w", encoding="utf-8") as f:
            json.dump(document, f, allow_nan=True)
            _flush_to_disk(f)
        _fsync_directory(staging)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return str(target)


def _swap_into_place(staging: Path, target: Path) -> None:
    """Makes ``staging`` appear at ``target`` in one atomic step, then removes the old one."""
    if not target.exists():
        os.rename(staging, target)
    elif _exchange(staging, target):
        shutil.rmtree(staging)  # it now holds the previous checkpoint
    else:
        # No atomic exchange on this system/filesystem: move the old checkpoint aside first.
        # A crash between the two renames is repaired by `_finish_interrupted_swap`.
        previous = target.parent / f".{target.name}{_PREVIOUS_TAG}{os.getpid()}"
        os.rename(target, previous)
        os.rename(staging, target)
        shutil.rmtree(previous)
    _fsync_directory(target.parent)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swaps two directories (Linux renameat2); False where that is unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                       _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"renameat2 exchange failed: {os.strerror(code)}", str(second))


def _finish_interrupted_swap(target: Path) -> None:
    """Puts the previous checkpoint back if a crash hit between the fallback swap's renames."""
    if target.exists() or not target.parent.is_dir():
        return
    for candidate in target.parent.glob(f".{target.name}{_PREVIOUS_TAG}*"):
        if candidate.is_dir() and _looks_like_checkpoint(candidate):
            os.rename(candidate, target)
            return


def remove_stale_staging(directory: str | os.PathLike[str]) -> None:
    """Removes staging directories left in ``directory`` by saves that crashed.

    A staging directory of a process that is still running (a save in progress) is kept.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if not entry.name.startswith("."):
            continue
        if _PREVIOUS_TAG in entry.name:
            _finish_interrupted_swap(directory / entry.name[1:].split(_PREVIOUS_TAG)[0])
            if not entry.exists():
                continue
        elif _STAGING_TAG not in entry.name:
            continue
        owner = entry.name.rsplit("-", 2)[-2] if _STAGING_TAG in entry.name else ""
        if owner.isdigit() and int(owner) != os.getpid() and _process_alive(int(owner)):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def find_checkpoint(path: str | os.PathLike[str]) -> str:
    """The checkpoint ``path`` names: ``path`` itself when it holds one, else the latest
    ``checkpoint_<iteration>`` directory inside it (a run directory, or the directory a Ray Tune
    trial's ``best.checkpoint`` points at), else ``path`` unchanged (reading it then says what
    is missing).

    Examples:
        >>> find_checkpoint("no/such/dir")
        'no/such/dir'
    """
    directory = Path(path)
    if not directory.is_dir() or _looks_like_checkpoint(directory):
        return os.fspath(path)
    found = sorted(entry for entry in directory.glob("checkpoint_*")
                   if entry.is_dir() and (entry / STATE_FILE).is_file())
    return str(found[-1]) if found else os.fspath(path)


def _looks_like_checkpoint(directory: Path) -> bool:
    return (directory / STATE_FILE).is_file() or (directory / LEGACY_PICKLE_FILE).is_file()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flush_to_disk(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# =============================================================================================
# Custom envs
# =============================================================================================


def import_env_module(module: str) -> None:
    """Imports the module that registers a checkpoint's custom env (its `register_env` call).

    Args:
        module: a dotted module name importable here (``my_package.envs``) or the path of a
            ``.py`` file (``./my_envs.py``).

    Raises:
        ValueError: if the module cannot be found.
    """
    if module.endswith(".py") or os.sep in module:
        file = Path(module).expanduser().absolute()
        if not file.is_file():
            raise ValueError(f"--env-module {module!r}: no such file. Give a .py file that "
                             f"calls flowrl.register_env, or an importable module name.")
        name = file.stem
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise ValueError(f"--env-module {module!r} cannot be loaded as a Python module.")
        loaded = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(name, loaded)
        spec.loader.exec_module(loaded)
        return
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise ValueError(f"--env-module {module!r} cannot be imported ({error}). Give an "
                         f"importable module name or the path of a .py file.") from None


def describe_env_source(creator: Any) -> dict[str, str] | None:
    """Where a registered env creator is defined (module and name), for a checkpoint; None for
    gymnasium ids and built-in envs, which need nothing imported."""
    inner = getattr(creator, "creator", None)
    if inner is None:
        return None
    module = getattr(inner, "__module__", None) or ""
    if not module or module.startswith("flowrl."):
        return None
    name = getattr(inner, "__qualname__", None) or type(inner).__qualname__
    return {"module": module, "name": name}


__all__ = [
    "ARRAYS_FILE",
    "FORMAT_VERSION",
    "STATE_FILE",
    "CheckpointError",
    "describe_env_source",
    "find_checkpoint",
    "flatten_state",
    "import_env_module",
    "read_checkpoint",
    "remove_stale_staging",
    "unflatten_state",
    "write_checkpoint",
]
