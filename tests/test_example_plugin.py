"""The example plugin package in ``examples/gn-plugin-gran``: installed with pip, found through its
entry points by distribution name, and trained with on digits."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gn_plugin import GnPluginError
from gn_plugin.cli import main
from gn_plugin.config import load_config
from gn_plugin.losses import NonSaturatingLoss
from gn_plugin.registry import KINDS, create, registry
from gn_plugin.training.build import setup
from gn_plugin.training.distributed import ProcessGroup
from gn_plugin.training.loop import train
from gn_plugin.training.run_dir import RunFiles
from gn_plugin.training.steps import discriminator_step

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gn-plugin-gran"


def refresh_registries() -> None:
    for kind in KINDS:
        registry(kind).refresh()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip install`` the example into a private target folder and put it on ``sys.path``.

    It is built from a copy, so the build leaves nothing in the checkout.
    """
    source = tmp_path_factory.mktemp("src") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        check=True, capture_output=True,
    )
    sys.path.insert(0, str(target))
    refresh_registries()
    yield target
    sys.path.remove(str(target))
    for name in [m for m in sys.modules if m.startswith("gn_plugin_gran")]:
        del sys.modules[name]
    refresh_registries()


def test_components_are_discovered_by_distribution_name(installed, capsys):
    assert registry("norm").info("gran").provider == "gn-plugin-gran"
    assert registry("loss").info("fgan").provider == "gn-plugin-gran"
    assert main(["list", "norm"]) == 0
    assert any(line.split()[1:3] == ["gran", "gn-plugin-gran"] for line in capsys.readouterr().out.splitlines())


def test_two_training_steps_on_digits_with_the_plugin_norm_and_loss(installed, tmp_path):
    config = load_config(
        EXAMPLE / "digits-gran.yaml",
        ["train.steps=2", "train.log_every=1", "eval.num_samples=64", "eval.batch_size=64", "train.batch_size_d=16"],
    )
    assert (config.norm.name, config.loss.name, config.loss.options) == ("gran", "fgan", {"divergence": "pearson"})
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == 2
    assert math.isfinite(summary["best"]["value"])


def test_gran_is_k_lipschitz_on_every_linear_piece(installed):
    torch.manual_seed(0)
    d = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    x = torch.randn(64, 1, 4, 4, requires_grad=True)
    wrapper = create("norm", "gran", d, lipschitz=2.0, eps=1e-8)
    (grad,) = torch.autograd.grad(wrapper(x).sum(), x)
    (raw,) = torch.autograd.grad(d(x).sum(), x)
    raw_norm = raw.flatten(1).norm(dim=1)
    expected = 2.0 * raw_norm**2 / (raw_norm**2 + 1e-8)  # K·‖∇f‖²/(‖∇f‖²+ε) < K
    torch.testing.assert_close(grad.flatten(1).norm(dim=1), expected)


def test_fgan_js_is_the_original_gan_up_to_a_constant(installed):
    real, fake = torch.randn(32), torch.randn(32)
    js, ns = create("loss", "fgan", divergence="js"), NonSaturatingLoss()
    torch.testing.assert_close(js.d_loss(real, fake), ns.d_loss(real, fake) - 2 * math.log(2))
    with pytest.raises(GnPluginError, match="unknown divergence 'x'"):
        create("loss", "fgan", divergence="x")


def test_gran_declares_per_sample_scores_so_its_cr_views_join_the_fused_pass(installed, tmp_path):
    """GraN's fused D pass (real, fake and CR's view scored at once) gives the separate passes' numbers."""
    results = {}
    for fused in (True, False):
        config = load_config(EXAMPLE / "digits-gran.yaml", [
            "regularizers=[{name: cr, weight: 5.0}]", f"train.fuse_consistency={str(fused).lower()}",
            "train.batch_size_d=16", "train.device=cpu",
        ])
        t = setup(config, RunFiles(tmp_path / "run", writer=False), ProcessGroup())
        assert t.fused_views is fused
        images, labels = next(t.stream)
        torch.manual_seed(3)  # the same fakes and augmentations in both
        step = discriminator_step(t, images, labels)
        results[fused] = (step.losses, [p.detach().clone() for p in t.discriminator.parameters()])
    (fused_losses, fused_weights), (separate_losses, separate_weights) = results[True], results[False]
    assert fused_losses.keys() == separate_losses.keys() and "loss/cr" in fused_losses
    for name in fused_losses:
        assert torch.equal(fused_losses[name], separate_losses[name]), name  # per-sample scores: bit-identical
    for a, b in zip(fused_weights, separate_weights):  # after one Adam step; batch sums differ only in order
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_spectral_norm_does_not_claim_per_sample_scores(tmp_path):
    config = load_config(EXAMPLE / "digits-gran.yaml", ["norm=sn", "regularizers=[{name: cr, weight: 5.0}]", "train.device=cpu"])
    assert not setup(config, RunFiles(tmp_path / "run", writer=False), ProcessGroup()).fused_views
