"""The layers of DESIGN.md hold: a module imports only its own package and the layers below it,
and no two modules import each other (directly or around a longer loop).

Every import counts, also one inside a function: a lazy import of a higher layer still ties the
lower layer to it.
"""

from __future__ import annotations

import ast
import pathlib

import networkx as nx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "flowrl"

LAYERS: dict[str, int] = {
    "iter": 0,      # the dataflow engine: knows nothing about RL
    "data": 0,      # SampleBatch, MultiAgentBatch, policy ids
    "config": 0,    # typed configs (flowrl/config.py): the schema every layer reads
    "envs": 1,
    "replay": 1,
    "policy": 1,
    "viz": 1,
    "workers": 2,
    "ops": 3,
    "plans": 4,
}
"""Package (or top-level module) -> layer. Anything not named here is a user entry point
(Trainer, CLI, run(), Tune, ...) and may import every layer."""
TOP = 5


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The layer unit of a module: its package under flowrl, or its own top-level name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "flowrl"


def _imports(path: pathlib.Path, module: str | None = None) -> set[str]:
    """The flowrl modules `path` (the module `module`) imports, at module level or inside
    functions."""
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    type_only = {id(inner) for node in ast.walk(tree) if _is_type_checking_block(node)
                 for inner in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            # `from package import submodule` imports the submodule.
            found.update(f"{name}.{alias.name}" for alias in node.names
                         if f"{name}.{alias.name}" in MODULES)
    return {name for name in found if name == "flowrl" or name.startswith("flowrl.")}


def _is_type_checking_block(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:`: imports for annotations only, never run."""
    return isinstance(node, ast.If) and (
        getattr(node.test, "id", None) == "TYPE_CHECKING"
        or getattr(node.test, "attr", None) == "TYPE_CHECKING")


MODULES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _layer(unit: str) -> int:
    return LAYERS.get(unit, TOP)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(_unit(m)) < TOP))
def test_a_module_imports_only_its_own_layer_and_the_ones_below(module):
    unit = _unit(module)
    upward = sorted(
        name for name in _imports(MODULES[module])
        if _unit(name) != unit and _layer(_unit(name)) >= _layer(unit)
    )
    assert not upward, (
        f"{module} (layer {unit!r}, level {_layer(unit)}) imports {upward}, which are at its "
        f"own level or above; move the shared piece down a layer (see DESIGN.md's layers).")


def _module_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        for name in _imports(path):
            # `from flowrl.pkg import x` of a submodule resolves to the submodule when it is one.
            target = name if name in MODULES else name.rpartition(".")[0]
            if target in MODULES and target != module and not MODULES[target].name == (
                    "__init__.py") and not path.name == "__init__.py":
                graph.add_edge(module, target)
    return graph


def test_no_two_modules_import_each_other():
    cycles = list(nx.simple_cycles(_module_graph()))
    assert not cycles, (f"import cycles between flowrl modules: {cycles}; move the piece both "
                        "need into a module of its own that neither imports back.")


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("from . import sample_batch\n\ndef f():\n"
                      "    from flowrl.ops import TrainOneStep\n    return TrainOneStep\n")
    assert _imports(source, "flowrl.data.probe") == {
        "flowrl.ops", "flowrl.data", "flowrl.data.sample_batch"}
    guarded = tmp_path / "guarded.py"
    guarded.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                       "    from flowrl.plans import ppo\n")
    assert _imports(guarded, "flowrl.data.guarded") == set()
