"""The configuration reference (generated from the schema by docs/hooks.py) explains every key."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from gn_plugin.runner.bench import BenchSpec
from gn_plugin.runner.config import ComponentSpec, Config


def undocumented(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted keys of ``model`` (nested settings recursively) whose field has no description."""
    missing = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel) and kind is not ComponentSpec:
            missing += undocumented(kind, f"{prefix}{name}.")
        elif not (field.description or "").strip():
            missing.append(f"{prefix}{name}")
    return missing


@pytest.mark.parametrize("schema", [Config, BenchSpec])
def test_every_key_has_a_meaning(schema):
    assert undocumented(schema) == []
