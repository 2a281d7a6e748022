"""Runs the ``Examples:`` blocks of the replay modules' docstrings."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["flowrl.replay.buffer", "flowrl.replay.prioritized", "flowrl.replay.segment_tree",
           "flowrl.replay.multi_agent", "flowrl.replay.sequences"]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
