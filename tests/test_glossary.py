"""docs/glossary.md has one entry per hyperparameter name used by any config (STYLE G9)."""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import pytest

from flowrl.config import AlgorithmConfig, ModelConfig

GLOSSARY = Path(__file__).resolve().parents[1] / "docs" / "glossary.md"

# Fields the algorithm configs use or will use; kept here so the glossary is ready for them.
PLANNED_FIELDS = [
    "clip_param", "vf_clip_param", "entropy_coeff", "vf_loss_coeff", "kl_coeff", "kl_target",
    "use_gae", "gae_lambda", "use_critic", "num_sgd_iter", "sgd_minibatch_size",
    "microbatch_size", "buffer_size", "learning_starts", "target_network_update_freq",
]  # fmt: skip


def glossary_entries() -> dict[str, str]:
    """Entry name -> entry text, from headings like ### `gae_lambda`."""
    text = GLOSSARY.read_text()
    parts = re.split(r"^### `(\w+)`.*$", text, flags=re.MULTILINE)
    return {name: body.split("\n## ")[0].strip() for name, body in zip(parts[1::2], parts[2::2])}


def field_names(config_class: type) -> list[str]:
    return [field.name for field in dataclasses.fields(config_class)]


@pytest.mark.parametrize("config_class", [AlgorithmConfig, ModelConfig])
def test_every_shared_field_is_in_the_glossary(config_class):
    missing = sorted(set(field_names(config_class)) - set(glossary_entries()))
    assert not missing, f"add these {config_class.__name__} fields to docs/glossary.md: {missing}"


def test_planned_algorithm_fields_are_in_the_glossary():
    missing = sorted(set(PLANNED_FIELDS) - set(glossary_entries()))
    assert not missing, f"add these fields to docs/glossary.md: {missing}"


def test_every_entry_gives_a_meaning_and_a_typical_range():
    entries = glossary_entries()
    assert len(entries) == len(set(entries)), "duplicate glossary entries"
    for name, body in entries.items():
        assert "**Typical:**" in body, f"glossary entry {name!r} needs a typical range"
        assert "**Elsewhere:**" in body, f"glossary entry {name!r} needs other libraries' names"
        assert len(body.split("**Typical:**")[0].split()) >= 5, f"{name!r} needs a meaning"


def test_every_registered_algorithm_field_is_in_the_glossary_or_prefixed():
    try:
        algorithms = importlib.import_module("flowrl.plans").ALGORITHMS
    except ImportError as error:
        pytest.skip(f"flowrl.plans cannot be imported yet: {error}")
    entries = glossary_entries()
    for key, spec in algorithms.items():
        missing = [
            name
            for name in field_names(spec.config_class)
            if name not in entries and not name.startswith(f"{key}_")
        ]
        assert not missing, (
            f"{spec.config_class.__name__} fields {missing} need a docs/glossary.md entry, or a "
            f"name starting with {key + '_'!r} if they are specific to {spec.name}"
        )
