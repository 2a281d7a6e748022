"""Plan visualisation: DOT text and an interactive HTML viewer for plan graphs.

Examples:
    >>> from flowrl.viz import to_dot, to_html, to_json
"""

from flowrl.viz.dot import to_dot
from flowrl.viz.html import from_json, to_html, to_json

__all__ = ["from_json", "to_dot", "to_html", "to_json"]
