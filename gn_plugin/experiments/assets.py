"""``gnbench assets [CONFIG ...]``: the files runs read from disk, whether each is in place, and fetching them.

For each config (default: every shipped recipe) it lists the data set's files, the feature
extractor's weights and the reference statistics, each with where it is looked for, whether a
valid file is there (checksum or contents checked), the URL it comes from and the one command that
places it by hand. A file several configs read is listed once, with the configs that read it.
``--fetch`` downloads what is missing (where there is internet: a login node, say); training
checks the same list before its first step. The exit status is 0 when everything is in place, 1
when something is still missing.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from gn_plugin.config import RECIPES, load_config
from gn_plugin.errors import GnPluginError
from gn_plugin.evaluation.assets import Asset, Located, fetch, locate
from gn_plugin.experiments.smoke import shipped_recipes
from gn_plugin.training.build import required_assets


def config_label(path: Path) -> str:
    """A shipped recipe relative to the recipes folder (as under ``yaml_configs/``), any other path as given."""
    try:
        return path.resolve().relative_to(RECIPES).as_posix()
    except ValueError:
        return str(path)


def collect(paths: list[Path], overrides: list[str]) -> dict[tuple[str, tuple[str, ...]], tuple[Asset, list[str]]]:
    """Every asset the configs read, once each (by what it is and where it is looked for), with their labels."""
    found: dict[tuple[str, tuple[str, ...]], tuple[Asset, list[str]]] = {}
    for path in paths:
        label = config_label(path)
        for asset in required_assets(load_config(path, overrides)):
            found.setdefault((asset.what, asset.paths), (asset, []))[1].append(label)
    return found


def abbreviate(labels: list[str]) -> str:
    """``cifar10/cnn/gn.yaml, cifar10/cnn/sn.yaml`` -> ``cifar10/cnn/{gn,sn}.yaml``."""
    folders: dict[str, list[str]] = {}
    for label in labels:
        folder, _, name = label.rpartition("/")
        folders.setdefault(folder, []).append(name.removesuffix(".yaml"))
    parts = []
    for folder, names in folders.items():
        prefix = f"{folder}/" if folder else ""
        parts.append(f"{prefix}{names[0]}.yaml" if len(names) == 1 else f"{prefix}{{{','.join(names)}}}.yaml")
    return ", ".join(parts)


def report(entries: list[tuple[Located, list[str]]]) -> list[str]:
    """The report: one block per download (its files, then where it comes from and how to place it)."""
    blocks: dict[object, list[tuple[Located, list[str]]]] = {}
    for item, labels in entries:
        key = (item.asset.url, item.asset.place) if item.asset.url or item.asset.place else item.asset.what
        blocks.setdefault(key, []).append((item, labels))
    pad = " " * 9
    lines = []
    for block in blocks.values():
        for item, _ in block:
            asset = item.asset
            if item.state == "computed":
                lines.append(f"{'computed':<8} {asset.what}: {asset.note}")
                continue
            lines += [f"{item.state:<8} {asset.what}", f"{pad}at {item.target}"]
            lines += [f"{pad}also looked in {path}" for path in asset.paths if path != item.target]
            if item.state == "invalid":
                lines.append(f"{pad}invalid: {item.problem}")
        first = block[0][0].asset
        if any(item.state in ("missing", "invalid") for item, _ in block):
            if first.url:
                lines.append(f"{pad}from {first.url}" + (f" ({first.url_checksum})" if first.url_checksum else ""))
            if first.place:
                lines.append(f"{pad}place: {first.place}")
        labels = list(dict.fromkeys(label for _, names in block for label in names))
        lines += [f"{pad}read by {abbreviate(labels)}", ""]
    return lines


def run_assets(
    paths: list[Path], *, overrides: list[str] | None = None, download: bool = False, log: Callable[[str], None] = print
) -> int:
    """List (and with ``download``, fetch) what the configs read; returns 0 when all is in place, else 1."""
    collected = collect(paths, overrides or [])
    failed = None
    if download:
        try:
            fetch([asset for asset, _ in collected.values()], log=log)
        except GnPluginError as exc:  # report what is in place and what is not, then the error
            failed = exc
    entries = [(locate(asset), labels) for asset, labels in collected.values()]
    for line in report(entries):
        log(line)
    states = [item.state for item, _ in entries]
    absent = states.count("missing") + states.count("invalid")
    log(
        f"{len(paths)} config(s): {states.count('present')} file(s) in place, {absent} missing or invalid, "
        f"{states.count('computed')} computed at the first evaluation"
    )
    if failed is not None:
        raise failed
    if absent and not download:
        log("fetch them with --fetch (online), or place them by hand as shown")
    return 1 if absent else 0


def command_assets(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.config] or shipped_recipes()
    return run_assets(paths, overrides=args.set, download=args.fetch)


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``gnbench assets``."""
    parser = subparsers.add_parser(
        "assets", help="files runs read from disk (data, Inception weights, reference statistics): check or fetch them",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("config", nargs="*", help="YAML configs (default: every shipped recipe)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override every config's values")
    parser.add_argument("--fetch", action="store_true", help="download what is missing (needs internet)")
    parser.set_defaults(handler=command_assets)
