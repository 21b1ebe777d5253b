"""MkDocs hooks: the reference sections are generated from the code at build time, never committed.

A page holds a marker such as ``<!-- gnbench:config-reference -->``; :func:`on_page_markdown`
replaces it with the rendered section:

- ``config-reference``: the run config's keys from ``Config.model_json_schema()``;
- ``bench-spec-reference``: the benchmark spec's keys from ``BenchSpec.model_json_schema()``;
- ``cli-reference``: every ``gnbench`` command's ``--help`` from the argparse parser;
- ``components``: the registered norms, losses, regularizers, models and data sets;
- ``contracts``: the docstrings that define each component kind's contract;
- ``recipes``: every YAML recipe under ``yaml_configs/`` with its exact command;
- ``results-pages``: the benchmark result pages present under ``docs/results/``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# -- schema tables ---------------------------------------------------------------------------------
def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted keys; empty mappings stay leaves."""
    if isinstance(data, dict) and data:
        return {k: v for key, value in data.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The schema a property refers to; an optional section (``Model | None``) resolves to the model."""
    if "$ref" in node:
        return defs[node["$ref"].split("/")[-1]]
    if "allOf" in node and len(node["allOf"]) == 1:
        return resolve(node["allOf"][0], defs)
    options = [option for option in node.get("anyOf", []) if option.get("type") != "null"]
    if len(options) == 1 and "$ref" in options[0] and len(node["anyOf"]) == 2:
        return resolve(options[0], defs)
    return node


def is_section(raw: dict[str, Any], defs: dict[str, Any]) -> bool:
    """A property that is a nested model of its own (not a component spec): a section of the reference."""
    node = resolve(raw, defs)
    refs = [raw.get("$ref", "")] + [option.get("$ref", "") for option in raw.get("anyOf", [])]
    return node.get("type") == "object" and "properties" in node and not any(r.endswith("ComponentSpec") for r in refs)


def markdown_text(text: str) -> str:
    """A description as table-cell text: one line, pipes escaped, and ``<``/``>`` kept as text, not read as HTML."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    # outside code spans (the even parts); inside them Markdown shows < and > as they are
    return "`".join(p.replace("<", "&lt;").replace(">", "&gt;") if i % 2 == 0 else p for i, p in enumerate(parts))


def type_text(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """A JSON-schema type in words: ``integer``, ``list of string``, ``one of: a, b``, ``component``."""
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        return "component (name or {name, options})" if name == "ComponentSpec" else name
    if "enum" in node:
        return "one of: " + ", ".join(f"`{v}`" for v in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    if "anyOf" in node:
        return " or ".join(type_text(option, defs) for option in node["anyOf"])
    kind = node.get("type", "any")
    if kind == "array":
        if "prefixItems" in node:
            return "[" + ", ".join(type_text(i, defs) for i in node["prefixItems"]) + "]"
        item = node.get("items", {})
        return f"list of {type_text(item, defs)}" if item else "list"
    if kind == "object" and "additionalProperties" in node and isinstance(node["additionalProperties"], dict):
        return f"mapping of {type_text(node['additionalProperties'], defs)}"
    return {"null": "null", "object": "mapping"}.get(kind, kind)


def constraint_text(node: dict[str, Any]) -> str:
    parts = []
    for key, symbol in (("exclusiveMinimum", ">"), ("minimum", "≥"), ("exclusiveMaximum", "<"), ("maximum", "≤")):
        if key in node:
            parts.append(f"{symbol} {node[key]}")
    if "minItems" in node and "prefixItems" not in node:
        parts.append(f"at least {node['minItems']} item(s)")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    for option in node.get("anyOf", []):
        text = constraint_text(option)
        if text:
            parts.append(text)
    return ", ".join(parts)


def cell(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) or not value else value
    return f"`{text}`".replace("|", "\\|")


def schema_sections(schema: dict[str, Any], defaults: dict[str, Any], title: str) -> str:
    """One table of the top-level leaves, then one section per nested model, recursively flattened."""
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))

    def rows(properties: dict[str, Any], prefix: str, needed: set[str]) -> list[str]:
        lines = []
        for name, raw in properties.items():
            node = resolve(raw, defs)
            key = f"{prefix}{name}"
            if is_section(raw, defs) and "$ref" in raw:
                lines += rows(node["properties"], f"{key}.", set(node.get("required", [])))
                continue
            default = "required" if name in needed else cell(defaults.get(key, raw.get("default")))
            description = markdown_text(raw.get("description", ""))
            lines.append(f"| `{key}` | {type_text(raw, defs)} | {default} | {constraint_text(raw)} | {description} |")
        return lines

    head = ["| key | type | default | constraint | meaning |", "|---|---|---|---|---|"]
    leaves, nested = {}, {}
    for name, raw in schema["properties"].items():
        (nested if is_section(raw, defs) else leaves)[name] = raw
    out = [f"### {title}", "", *head, *rows(leaves, "", required)]
    for name, raw in nested.items():
        node = resolve(raw, defs)
        intro = (node.get("description") or "").strip()
        optional = " (optional)" if "anyOf" in raw else ""
        out += ["", f"### `{name}`{optional}", "", *([intro, ""] if intro else []), *head,
                *rows(node["properties"], f"{name}.", set(node.get("required", [])))]
    return "\n".join(out)


def config_reference() -> str:
    from gn_plugin.config import Config

    return schema_sections(Config.model_json_schema(), flatten(Config().to_dict()), "Components")


def bench_spec_reference() -> str:
    from gn_plugin.experiments.spec import BenchSpec

    placeholder = BenchSpec(name="x", base="x")
    return schema_sections(BenchSpec.model_json_schema(), flatten(placeholder.model_dump(mode="json")), "Spec keys")


# -- CLI -------------------------------------------------------------------------------------------
def cli_reference() -> str:
    """``gnbench --help`` and every subcommand's ``--help``, as argparse prints them."""
    import argparse

    from gn_plugin.cli import build_parser

    os.environ["COLUMNS"] = "80"  # argparse wraps to the terminal width
    parser = build_parser()
    sections = [f"## `gnbench`\n\n```text\n{parser.format_help()}```"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sections.append(f"## `gnbench {name}`\n\n```text\n{sub.format_help()}```")
    return "\n\n".join(sections)


# -- components and contracts ----------------------------------------------------------------------
def components() -> str:
    """Every registered component, its provider, the first sentence of its docstring and its options."""
    from gn_plugin.registry import KINDS, first_sentence, options, registry

    lines = ["| kind | name | provided by | description | options (default) |", "|---|---|---|---|---|"]
    for kind in KINDS:
        for name in registry(kind).names():
            info = registry(kind).info(name)
            factory = registry(kind).get(name)
            text = rst_to_markdown(first_sentence(factory)).replace("|", "\\|")
            shown = ", ".join(f"`{option}`".replace("|", "\\|") for option in options(kind, factory))
            lines.append(f"| {kind} | `{name}` | {info.provider} | {text} | {shown or '–'} |")
    return "\n".join(lines)


def rst_to_markdown(text: str) -> str:
    """The reStructuredText of this project's docstrings as Markdown: literals and ``::`` code blocks."""
    text = re.sub(r":(?:func|class|mod|meth):`~?([^`]+)`", r"`\1`", text)
    text = text.replace("``", "`")
    lines, out, index = text.splitlines(), [], 0
    while index < len(lines):
        line = lines[index]
        if line.rstrip().endswith("::"):
            out.append(line.rstrip()[:-1])
            index += 1
            block = []
            while index < len(lines) and (not lines[index].strip() or lines[index].startswith("    ")):
                block.append(lines[index][4:])
                index += 1
            out += ["", "```python", *[b for b in "\n".join(block).strip("\n").splitlines()], "```", ""]
            continue
        out.append(line)
        index += 1
    return "\n".join(out)


CONTRACTS = {
    "Norms": "gn_plugin.norms.base",
    "Losses": "gn_plugin.losses",
    "Regularizers": "gn_plugin.regularizers.base",
    "Models": "gn_plugin.models.base",
    "Data sets": "gn_plugin.data.base",
    "Metrics": "gn_plugin.metrics.base",
    "Loggers": "gn_plugin.loggers.base",
}


def contracts() -> str:
    """The module docstrings that define each component kind's contract."""
    sections = []
    for title, module in CONTRACTS.items():
        doc = importlib.import_module(module).__doc__ or ""
        sections.append(f"### {title} (`{module}`)\n\n{rst_to_markdown(doc.strip())}")
    return "\n\n".join(sections)


# -- recipes and results ---------------------------------------------------------------------------
def header_comment(path: Path) -> str:
    """The leading ``#`` comment lines of a YAML file, joined."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    return " ".join(lines)


def recipes() -> str:
    """Every recipe folder: what its runs share, then one row per method with the exact command."""
    from gn_plugin.config import load_config

    sections = []
    for shared in sorted(ROOT.glob("yaml_configs/**/_recipe.yaml")):
        folder = shared.parent
        relative = folder.relative_to(ROOT).as_posix()
        base = load_config(shared)
        t, e, d = base.train, base.eval, base.data
        options = ", ".join(f"{key} {value}" for key, value in d.options.items())
        scored = (
            "the digits classifier" if d.name == "digits"
            else f"`eval.mode: {e.mode}`" + (" (the paper's metric code; `--set eval.mode=clean` for clean-fid's own)"
                                             if e.mode == "legacy_tensorflow" else "")
        )
        sections += [
            f"### `{relative}`", "", header_comment(shared), "",
            (
                f"Shared: model `{base.model.name}`, data `{d.name}`{f' ({options})' if options else ''}, "
                f"`data.hflip: {d.hflip}`, {t.steps} generator steps, n_dis {t.n_dis}, "
                f"batch D/G {t.batch_size_d}/{t.batch_size_g}, lr D/G {t.lr_d:g}/{t.lr_g:g}, lr decay {t.lr_decay}, "
                f"EMA {t.ema.decay} from step {t.ema.start}; evaluation every {e.every} steps with {e.num_samples} "
                f"samples ({', '.join(e.metrics)}) scored by {scored}, best by {e.best_metric} of the "
                f"{e.best_generator} generator."
            ),
            "", "| recipe | norm | loss | regularizers | command |", "|---|---|---|---|---|",
        ]
        for path in sorted(folder.glob("*.yaml")):
            if path.name == "_recipe.yaml":
                continue
            config = load_config(path)
            regularizers = ", ".join(r.name for r in config.regularizers) or "–"
            command = f"gnbench train {relative}/{path.name}"
            sections.append(
                f"| `{path.stem}` | {config.norm.name} | {config.loss.name} | {regularizers} | `{command}` |"
            )
        sections.append("")
    return "\n".join(sections)


def results_pages(page_file: Path) -> str:
    """A bullet per results page next to this one, with its title."""
    lines = []
    for path in sorted(page_file.parent.glob("*.md")):
        if path.name == "index.md":
            continue
        title = next((line[2:] for line in path.read_text().splitlines() if line.startswith("# ")), path.stem)
        lines.append(f"- [{title}]({path.name})")
    return "\n".join(lines) or "No benchmark has written a page yet."


RENDERERS: dict[str, Callable[[Path], str]] = {
    "config-reference": lambda page: config_reference(),
    "bench-spec-reference": lambda page: bench_spec_reference(),
    "cli-reference": lambda page: cli_reference(),
    "components": lambda page: components(),
    "contracts": lambda page: contracts(),
    "recipes": lambda page: recipes(),
    "results-pages": results_pages,
}


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    """Replace every ``<!-- gnbench:NAME -->`` marker of a page with its generated section."""
    def render(match: re.Match) -> str:
        name = match.group(1)
        if name not in RENDERERS:
            raise ValueError(f"{page.file.src_path}: unknown generated section '{name}'")
        return RENDERERS[name](Path(page.file.abs_src_path))

    return re.sub(r"<!-- gnbench:([\w-]+) -->", render, markdown)
