"""DOT output: real line breaks in labels, and `flowrl.viz` reachable after `import flowrl`."""

from __future__ import annotations

import subprocess
import sys

import flowrl.iter as fi
from flowrl.viz import to_dot


def test_dot_labels_break_lines_instead_of_showing_a_backslash():
    plan = fi.from_range(4, num_shards=2).for_each(abs)
    dot = to_dot(plan.graph())
    assert '[label="from_range[4, shards=2]\\n[2 shards]"' in dot  # DOT's \n escape: a line break
    assert "\\\\n" not in dot  # never an escaped backslash followed by n (drawn literally)
    graph = plan.graph()
    node = next(iter(graph.nodes))
    graph.nodes[node]["label"] = 'say "hi"\\ there'
    assert '"say \\"hi\\"\\\\ there\\n[2 shards]"' in to_dot(graph)


def test_flowrl_viz_is_an_attribute_of_flowrl_after_a_plain_import():
    code = (
        "import sys, flowrl\n"
        "assert 'flowrl.viz' not in sys.modules\n"
        "import flowrl.iter as fi\n"
        "print(flowrl.viz.to_dot(fi.from_range(2).graph()).splitlines()[0])\n"
        "assert 'viz' in dir(flowrl)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'digraph "plan" {'
