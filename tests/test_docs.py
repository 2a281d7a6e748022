"""Documentation that is generated from code stays equal to the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowrl.config import config_table_markdown
from flowrl.plans import ALGORITHMS

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_each_algorithm_page_shows_its_current_config_table(algo):
    page = (DOCS / "plans" / f"{algo}.md").read_text()
    table = config_table_markdown(ALGORITHMS[algo].config_class)
    assert table in page, (
        f"docs/plans/{algo}.md has a stale configuration table; replace it with:\n\n{table}"
    )


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_each_algorithm_page_has_the_documented_headings(algo):
    page = (DOCS / "plans" / f"{algo}.md").read_text()
    for heading in ("## Overview", "## Usage", "## Logged metrics", "## Implementation details",
                    "## Configuration", "## Results"):
        assert heading in page, f"docs/plans/{algo}.md lacks {heading!r}"
