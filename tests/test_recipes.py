"""Every shipped recipe loads, keeps the authors' settings, and trains two steps on fake data of its shape."""

from __future__ import annotations

import math

import pytest

from gn_plugin.config import load_config
from gn_plugin.experiments.smoke import (
    RECIPES,
    shipped_recipes,
    smoke_config,
    write_stand_in_inception,
)
from gn_plugin.training.loop import train
from gn_plugin.training.run_dir import RunFiles

METHODS = {"gn", "gn-cr", "sn", "wgan-gp", "none"}


def test_every_spec_row_ships_all_methods():
    folders = {p.parent.relative_to(RECIPES).as_posix() for p in shipped_recipes()}
    assert folders == {"cifar10/cnn", "cifar10/resnet", "cifar10/biggan", "stl10/cnn", "stl10/resnet",
                       "celebahq128/resnet", "celebahq256/resnet", "church256/resnet", "digits"}
    for folder in folders:
        assert {p.stem for p in (RECIPES / folder).glob("*.yaml") if not p.stem.startswith("_")} == METHODS


def test_methods_of_one_recipe_differ_only_in_norm_loss_and_regularizers():
    for folder in {p.parent for p in shipped_recipes()}:
        configs = {m: load_config(folder / f"{m}.yaml").to_dict() for m in METHODS}
        shared = {k: v for k, v in configs["gn"].items() if k not in ("norm", "loss", "regularizers")}
        for method, data in configs.items():
            assert {k: v for k, v in data.items() if k not in ("norm", "loss", "regularizers")} == shared, (folder, method)
        assert configs["wgan-gp"]["norm"] == "none" and configs["wgan-gp"]["loss"] == "wasserstein"
        assert configs["wgan-gp"]["regularizers"] == [{"name": "gp", "weight": 10.0}]
        assert configs["gn-cr"]["norm"] == {"name": "gn-cr", "consistency_weight": 5.0}


def test_cifar10_resnet_recipe_is_the_authors():
    config = load_config(RECIPES / "cifar10" / "resnet" / "gn.yaml")
    train_ = config.train
    assert (config.model.name, config.loss.name, train_.steps, train_.lr_decay) == ("resnet32", "hinge", 200_000, "linear")
    assert (train_.batch_size_d, train_.batch_size_g, train_.lr_d, train_.lr_g, train_.n_dis) == (64, 128, 4e-4, 2e-4, 5)
    assert train_.betas == (0.0, 0.9) and train_.ema.decay == 0.9999


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    return write_stand_in_inception(tmp_path_factory.mktemp("inception") / "inception-2015-12-05.pt")


@pytest.mark.parametrize("path", shipped_recipes(), ids=lambda p: "-".join(p.with_suffix("").parts[-3:]))
def test_recipe_trains_two_steps_on_fake_data(path, stand_in, tmp_path):
    config = smoke_config(path, inception=stand_in, cache_dir=tmp_path / "cache", steps=2, width=1 / 16, batch=2, device="cpu")
    recipe = load_config(path)
    assert (config.norm, config.loss, config.regularizers) == (recipe.norm, recipe.loss, recipe.regularizers)
    assert (config.model.name, config.train.n_dis, config.train.lr_d) == (recipe.model.name, recipe.train.n_dis, recipe.train.lr_d)
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == 2
    last = RunFiles(tmp_path / "run").read_results()[-1]
    assert math.isfinite(last["fid"])
