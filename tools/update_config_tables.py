"""Rewrites the configuration table of every docs/plans/<algo>.md page from its config class.

Run after changing a config field or default: `.venv/bin/python tools/update_config_tables.py`.
tests/test_docs.py fails while a page's table differs from `config_table_markdown`.
"""

from __future__ import annotations

from pathlib import Path

from flowrl.config import config_table_markdown
from flowrl.plans import ALGORITHMS

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plans"
HEADER = "| Field | Default | Description |"


def update_page(path: Path, table: str) -> bool:
    """Replaces the page's first config table with `table`; returns whether it changed."""
    lines = path.read_text().splitlines()
    start = lines.index(HEADER)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    new = lines[:start] + table.splitlines() + lines[end:]
    if new == lines:
        return False
    path.write_text("\n".join(new) + "\n")
    return True


def main() -> None:
    for name, spec in sorted(ALGORITHMS.items()):
        page = DOCS / f"{name}.md"
        if not page.exists():
            print(f"missing {page}")
            continue
        if update_page(page, config_table_markdown(spec.config_class)):
            print(f"updated {page}")


if __name__ == "__main__":
    main()
