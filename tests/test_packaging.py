"""The wheel carries the recipes and benchmark specs: shipped experiments run from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the checkout and unpacked into a folder of its own.

    Building from a copy leaves no ``gn_plugin.egg-info`` in the checkout, whose entry points would
    shadow the installed ones for any process started there.
    """
    source = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "gn_plugin", source / "gn_plugin", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(dist), str(source)],
        check=True, capture_output=True,
    )
    (wheel,) = dist.glob("gn_plugin-*.whl")
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def run_from_elsewhere(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


def test_the_wheel_ships_every_recipe_and_spec(unpacked_wheel):
    shipped = {p.relative_to(unpacked_wheel / "gn_plugin" / "recipes").as_posix()
               for p in (unpacked_wheel / "gn_plugin" / "recipes").rglob("*.yaml")}
    in_checkout = {p.relative_to(ROOT / "gn_plugin" / "recipes").as_posix() for p in (ROOT / "gn_plugin" / "recipes").rglob("*.yaml")}
    assert shipped == in_checkout and "bench/digits.yaml" in shipped and "cifar10/cnn/gn.yaml" in shipped


def test_shipped_experiments_run_from_any_directory(unpacked_wheel, tmp_path):
    probe = run_from_elsewhere(unpacked_wheel, tmp_path, "-c", "import gn_plugin; print(gn_plugin.__file__)")
    assert probe.stdout.startswith(str(unpacked_wheel)), probe.stderr  # the wheel's copy, not the checkout's
    for command in (["bench", "digits"], ["lipschitz"]):
        result = run_from_elsewhere(
            unpacked_wheel, tmp_path, "-m", "gn_plugin.cli", *command, "--out", str(tmp_path / command[0]), "--print-commands"
        )
        assert result.returncode == 0, result.stderr
        commands = result.stdout.splitlines()
        assert commands and all(line.startswith("gnbench train ") for line in commands)
        assert len(commands) == len(list((tmp_path / command[0] / "configs").glob("*.yaml")))
    variant = run_from_elsewhere(
        unpacked_wheel, tmp_path, "-c",
        "from gn_plugin.experiments.perf import variant_config; print(variant_config('resnet32', 'fp32', 'gn', 'cpu', []).loss.name)",
    )
    assert variant.stdout.strip() == "hinge", variant.stderr
    assert not (tmp_path / "docs").exists()  # a shipped spec run by name writes no docs page
