"""Plan visualisation: DOT text for plan graphs.

Examples:
    >>> from flowrl.viz import to_dot
"""

from flowrl.viz.dot import to_dot

__all__ = ["to_dot"]
