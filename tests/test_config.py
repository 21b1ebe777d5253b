"""The configuration schema: every key explained (docs/hooks.py generates the reference), and its traps closed."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from gn_plugin.config import ComponentSpec, Config, config_from_dict, load_config
from gn_plugin.errors import GnPluginError
from gn_plugin.experiments.spec import BenchSpec


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


@pytest.mark.parametrize("key", ["train.cheap_generator_step", "train.cheap_discriminator_step", "data.on_device"])
def test_unquoted_yaml_on_and_off_mean_the_switch_positions(tmp_path, key):
    section, name = key.split(".")
    for written, meant in (("on", "on"), ("off", "off"), ("'on'", "on"), ("auto", "auto"), ("true", "on"), ("no", "off")):
        path = tmp_path / "config.yaml"
        path.write_text(f"{section}:\n  {name}: {written}\n")  # YAML 1.1 reads bare on/off/no as booleans
        assert getattr(getattr(load_config(path), section), name) == meant, written
    with pytest.raises(GnPluginError, match=rf"{key}: Input should be 'auto', 'on' or 'off'"):
        config_from_dict({section: {name: "sometimes"}})


def test_best_metric_must_be_one_of_the_metrics():
    assert config_from_dict({"eval": {"metrics": ["kid", "fid"]}}).eval.best_metric == "fid"
    with pytest.raises(GnPluginError, match=r"^config: eval: best_metric 'fid' is not among metrics \(kid\)$"):
        config_from_dict({"eval": {"metrics": ["kid"]}})
    assert config_from_dict({"eval": {"metrics": ["kid"], "best_metric": "kid"}}).eval.best_metric == "kid"


def test_unknown_metric_names_are_a_config_error():
    with pytest.raises(GnPluginError, match=r"^config: eval\.metrics: unknown metric 'fdi'; did you mean 'fid'\?"):
        config_from_dict({"eval": {"metrics": ["fid", "fdi"]}})


def test_the_spec_reference_keeps_angle_brackets_as_text_and_shows_every_section():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "hooks.py"
    spec = importlib.util.spec_from_file_location("docs_hooks", path)
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    text = hooks.bench_spec_reference()
    # outside code, <name> would be read as an HTML tag and vanish from the page; inside code it is shown as is
    assert "runs/bench/&lt;name&gt;" in text and "<name>" not in text.replace("`<", "")
    assert hooks.markdown_text("a <b> `<c>` d") == "a &lt;b&gt; `<c>` d"
    assert "### `primary`" in text and "| `primary.margin` |" in text
    assert "### `paper` (optional)" in text and "| `paper.values` |" in text
