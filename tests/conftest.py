"""Shared fixtures: throw-away plugin distributions placed on sys.path with a real .dist-info."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable

import pytest

from gn_plugin.registry import KINDS, registry


def _refresh_all() -> None:
    for kind in KINDS:
        registry(kind).refresh()


@pytest.fixture
def make_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write a distribution (modules + ``.dist-info`` with entry points) and put it on sys.path.

    ``make_distribution("gnp-demo", {"gnp_demo": source}, {"gn_plugin.norms": {"x": "gnp_demo:f"}})``
    """

    def make(name: str, modules: dict[str, str], entry_points: dict[str, dict[str, str]]) -> Path:
        site = tmp_path / f"site-{name}"
        site.mkdir()
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
        groups = "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
            for group, eps in entry_points.items()
        )
        (info / "entry_points.txt").write_text(groups)
        monkeypatch.syspath_prepend(str(site))
        _refresh_all()
        return site

    yield make
    monkeypatch.undo()
    _refresh_all()
