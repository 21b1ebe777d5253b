"""The Python API (gn_plugin.api) and `gnbench sample`: the docs page's example runs as written, samples are
the generators' images at the stated z and classes, interpolation follows the great circle, and `auto` picks
the generator that is meaningful at the checkpoint's step."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gn_plugin
from gn_plugin.cli import main
from gn_plugin.config import RECIPES, load_config
from gn_plugin.errors import GnPluginError
from gn_plugin.evaluation.sampling import slerp
from gn_plugin.training.ema import ema_lags, ema_note, meaningful_generator
from gn_plugin.training.loop import train

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"
TINY = [
    "train.steps=4", "train.batch_size_d=16", "train.batch_size_g=16", "train.log_every=2", "train.sample_every=4",
    "train.checkpoint_every=4", "train.sample_count=16", "train.device=cpu", "eval.every=2", "eval.num_samples=64",
    "eval.batch_size=64", "eval.metrics=[fid]", "model.width=0.25", "train.loggers=[]",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The two runs the docs page reads, short: runs/digits-gn and runs/digits-gn-conditional."""
    root = tmp_path_factory.mktemp("api")
    train(load_config(RECIPES / "digits" / "gn.yaml", TINY), root / "runs" / "digits-gn", progress=False)
    conditional = load_config(RECIPES / "digits" / "gn.yaml", [*TINY, "model.conditional=true"])
    train(conditional, root / "runs" / "digits-gn-conditional", progress=False)
    return root


def test_the_docs_pages_example_runs_as_written(runs, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOCS_PAGE.read_text(), flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(runs)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOCS_PAGE), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "4 gn mlp" in printed and "FID" in printed
    assert namespace["images"].shape == (64, 1, 8, 8) and namespace["rows"].shape == (80, 1, 8, 8)
    assert namespace["walk"].shape == (10, 1, 8, 8) and namespace["sevens"].shape == (10, 1, 8, 8)
    for name in ("raw.png", "ema.png", "classes.png", "walk.png"):
        assert Image.open(runs / name).size[0] > 0
    # at step 4 with decay 0.999 the EMA lags: auto is the raw generator
    assert torch.equal(namespace["images"], namespace["raw"])
    assert not torch.equal(namespace["raw"], namespace["ema"])


def test_load_run_holds_config_generators_and_evaluations(runs):
    run = gn_plugin.load_run(runs / "runs" / "digits-gn")
    assert run.step == 4 and run.config.train.steps == 4
    assert [(r["step"], r["generator"]) for r in run.evaluations] == [(2, "raw"), (2, "ema"), (4, "raw"), (4, "ema")]
    assert not run.generator.training and not run.generator_ema.training
    with pytest.raises(GnPluginError, match="checkpoint must be latest or best"):
        gn_plugin.load_run(runs / "runs" / "digits-gn", "last")


def test_samples_are_the_generators_images_at_the_stated_z_and_classes(runs):
    run = gn_plugin.load_run(runs / "runs" / "digits-gn-conditional")
    run.config.eval.generator_mode = "eval"  # running statistics: each image depends on its own z alone
    z = gn_plugin.latents(run, 3, seed=5)
    images = gn_plugin.sample(run, 3, seed=5, generator="ema", classes=[2, 7])
    with torch.no_grad():
        expected = run.generator_ema(z.repeat(2, 1), torch.tensor([2, 2, 2, 7, 7, 7]))
    torch.testing.assert_close(images, expected)
    assert not torch.allclose(images[:3], images[3:])  # the class changes the image
    with pytest.raises(GnPluginError, match="class 10 does not exist"):
        gn_plugin.sample(run, 2, classes=[10])
    unconditional = gn_plugin.load_run(runs / "runs" / "digits-gn")
    with pytest.raises(GnPluginError, match="conditional"):
        gn_plugin.sample(unconditional, 2, classes=[1])


def test_train_mode_samples_one_image_in_a_filled_batch(runs):
    run = gn_plugin.load_run(runs / "runs" / "digits-gn")
    assert run.config.eval.generator_mode == "train"  # the MLP's BatchNorm would refuse a batch of one
    one = gn_plugin.sample(run, 1, seed=2, generator="raw")
    assert one.shape == (1, 1, 8, 8) and torch.isfinite(one).all()
    torch.testing.assert_close(one, gn_plugin.sample(run, 1, seed=2, generator="raw"))  # the filler is seeded


def test_interpolation_follows_the_great_circle_between_its_ends(runs):
    z0, z1 = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    path = slerp(z0, z1, torch.linspace(0, 1, 9))
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)
    # every point lies in the plane of the two ends, at evenly spaced angles, with norms between the ends'
    unit0, unit1 = z0 / z0.norm(), z1 / z1.norm()
    angles = torch.arccos(torch.clamp((path / path.norm(dim=1, keepdim=True)) @ unit0, -1, 1))
    torch.testing.assert_close(angles, torch.linspace(0, 1, 9) * torch.arccos(unit0 @ unit1))
    low, high = sorted([float(z0.norm()), float(z1.norm())])
    assert all(low - 1e-5 <= float(n) <= high + 1e-5 for n in path.norm(dim=1))
    line_middle = (z0 + z1) / 2  # what a straight line would give: well inside the sphere
    assert line_middle.norm() < 0.85 * path[4].norm()

    run = gn_plugin.load_run(runs / "runs" / "digits-gn")
    run.config.eval.generator_mode = "eval"
    z = gn_plugin.latents(run, 2, seed=1)
    walk = gn_plugin.interpolate(run, z[0], z[1], steps=5, generator="ema")
    with torch.no_grad():
        ends = run.generator_ema(z, None)
    torch.testing.assert_close(walk[[0, -1]], ends)
    torch.testing.assert_close(gn_plugin.interpolate(run, 1, 1, steps=3, generator="ema")[0], walk[0])  # a seed is latents(run, 1, seed)[0]
    conditional = gn_plugin.load_run(runs / "runs" / "digits-gn-conditional")
    with pytest.raises(GnPluginError, match="give label="):
        gn_plugin.interpolate(conditional, 0, 1)


def test_auto_is_the_raw_generator_until_the_ema_has_averaged_three_horizons():
    ema = load_config(RECIPES / "digits" / "gn.yaml", ["train.ema.decay=0.99", "train.ema.start=10"]).train.ema
    # horizon 100 steps, averaging from step 10: it lags from step 11 up to step 309
    assert [meaningful_generator(step, ema) for step in (10, 11, 309, 310)] == ["ema", "raw", "raw", "ema"]
    assert ema_lags(309, ema) and not ema_lags(310, ema) and ema_note(310, ema) is None
    note = ema_note(110, ema)
    assert "1 of the 3 EMA horizons" in note and "until step 310" in note and "37% the generator of step 10" in note
    assert math.isclose(0.99**100, 0.366, abs_tol=1e-3)


def test_gnbench_sample_writes_raw_above_ema_rows_per_class_and_interpolations(runs, capsys):
    run_dir = runs / "runs" / "digits-gn-conditional"
    assert main(["sample", str(run_dir), "--classes", "--count", "16", "--generator", "both"]) == 0
    captured = capsys.readouterr()
    assert "raw and EMA generators" in captured.err and "note: at step 4 the EMA generator" in captured.err
    grid = np.asarray(Image.open(captured.out.strip()).convert("L"))
    # two blocks (raw, EMA), each a label strip over 10 class rows of 4 images enlarged to 64 px (+2 px padding)
    assert grid.shape[1] == 2 + 4 * 66 and grid.shape[0] > 2 * (2 + 10 * 66)
    assert main(["sample", str(run_dir), "--interpolate", "5", "--count", "10"]) == 0  # the EMA lags: raw alone
    captured = capsys.readouterr()
    assert "sampling the raw generator" in captured.err and captured.out.strip().endswith("latest_raw_step4_interpolate.png")
    walk = np.asarray(Image.open(captured.out.strip()).convert("L"))
    assert walk.shape[1] == 2 + 5 * 66 and 2 + 2 * 66 < walk.shape[0] < 2 + 3 * 66  # 2 rows of 5 under one label
    assert main(["sample", str(runs / "runs" / "digits-gn"), "--classes"]) == 2
    assert "needs a conditional model" in capsys.readouterr().err
