"""The release's evaluation conventions: train-mode sampling on a copy, whole-state EMA, random
evaluation labels, and the best generator chosen per resolution (docs: Fidelity)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from scipy import stats
from torch import nn

from gn_plugin import create
from gn_plugin.config import config_from_dict, load_config
from gn_plugin.evaluation.evaluator import EVAL_SEED, evaluation_sampler
from gn_plugin.evaluation.sampling import latent_sampler
from gn_plugin.experiments.smoke import RECIPES, shipped_recipes
from gn_plugin.training.steps import update_ema

Z_DIM = 16


def mlp_generator(num_classes: int = 0) -> nn.Module:
    """The digits MLP's G, which has BatchNorm: batch statistics and running statistics differ."""
    torch.manual_seed(0)
    generator = create("model", "mlp", z_dim=Z_DIM, num_classes=num_classes).generator
    with torch.no_grad():  # running statistics far from a fresh batch's, so the two modes differ
        for module in generator.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    return generator


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_state(before: dict[str, torch.Tensor], module: nn.Module) -> None:
    after = module.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def seeded_latents(seed: int, batches: list[int], num_classes: int = 0) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """The z (and labels) a sampler seeded with ``seed`` draws for generator calls of these sizes."""
    rng = torch.Generator().manual_seed(seed)
    drawn = []
    for count in batches:
        z = torch.randn(count, Z_DIM, generator=rng)
        drawn.append((z, torch.randint(num_classes, (count,), generator=rng) if num_classes else None))
    return drawn


# -- sampling mode ---------------------------------------------------------------------------------
def test_train_mode_samples_use_each_batchs_statistics_on_a_copy():
    """Train mode: BatchNorm normalises with the statistics of batches of ``batch_size``, as in the
    release; the generator's parameters, buffers and mode are left exactly as they were."""
    generator = mlp_generator().eval()
    before = state(generator)
    sample = latent_sampler(generator, "cpu", seed=5, mode="train", batch_size=128)
    images = torch.cat([sample(300), sample(200)])  # not multiples of the batch: served from whole batches
    reference = copy.deepcopy(generator).train()
    with torch.no_grad():
        expected = torch.cat([reference(z) for z, _ in seeded_latents(5, [128] * 4)])[:500]
    torch.testing.assert_close(images, expected, rtol=0, atol=0)
    assert_same_state(before, generator)
    assert generator.training is False

    with torch.no_grad():
        eval_images = latent_sampler(generator, "cpu", seed=5, mode="eval", batch_size=128)(500)
        running_statistics = torch.cat([generator(z) for z, _ in seeded_latents(5, [128] * 4)])[:500]
    torch.testing.assert_close(eval_images, running_statistics, rtol=0, atol=0)
    assert (eval_images - images).abs().max() > 0.1  # the mode matters for a generator with BatchNorm
    assert_same_state(before, generator)


def test_eval_mode_restores_a_training_generator():
    generator = mlp_generator().train()
    before = state(generator)
    latent_sampler(generator, "cpu", seed=0, mode="eval")(64)
    assert generator.training is True
    assert_same_state(before, generator)


def test_train_mode_runs_spectral_norms_power_iteration_on_the_copy_only():
    torch.manual_seed(0)
    generator = create("model", "biggan32", z_dim=Z_DIM, width=1 / 16).generator.eval()
    before = state(generator)
    sampled = latent_sampler(generator, "cpu", seed=1, mode="train", batch_size=8)(8)
    reference = copy.deepcopy(generator).train()  # one power iteration per layer, then batch statistics
    with torch.no_grad():
        ((z, labels),) = seeded_latents(1, [8], num_classes=10)
        torch.testing.assert_close(sampled, reference(z, labels), rtol=0, atol=0)
    assert_same_state(before, generator)  # neither the SN vectors nor the BN statistics moved
    moved = [k for k, v in reference.state_dict().items() if k.endswith("_u") and not torch.equal(v, before[k])]
    assert moved, "the copy's power iteration should have updated its singular vectors"


def test_evaluation_samples_in_batches_of_batch_size_g_in_train_mode():
    config = config_from_dict({"train": {"batch_size_g": 96}, "eval": {"generator_mode": "train"}})
    generator = mlp_generator()
    with torch.no_grad():
        expected = torch.cat([copy.deepcopy(generator).train()(z) for z, _ in seeded_latents(EVAL_SEED, [96] * 3)])
    sample = evaluation_sampler(generator, config, "cpu")
    torch.testing.assert_close(torch.cat([sample(100), sample(100)]), expected[:200], rtol=0, atol=0)
    assert config_from_dict({}).eval.generator_mode == "train"  # the release's way is the default


# -- evaluation labels -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_conditional_labels_are_drawn_uniformly_with_the_samplers_own_rng(mode):
    generator = mlp_generator(num_classes=10)
    seen: list[torch.Tensor] = []
    generator.register_forward_hook(lambda module, inputs, output: seen.append(inputs[1]))  # shared by copies
    global_rng = torch.get_rng_state()
    latent_sampler(generator, "cpu", seed=3, mode=mode, batch_size=500)(5000)
    assert torch.equal(torch.get_rng_state(), global_rng)
    labels = torch.cat(seen)
    expected = torch.cat([y for _, y in seeded_latents(3, [500] * 10, num_classes=10)])
    assert torch.equal(labels, expected)
    assert not torch.equal(labels, torch.arange(5000) % 10)  # not cycled
    assert stats.chisquare(torch.bincount(labels, minlength=10).numpy()).pvalue > 1e-4


# -- EMA -------------------------------------------------------------------------------------------
def test_ema_averages_buffers_too_and_copies_before_its_start():
    generator, average = mlp_generator(), mlp_generator()
    with torch.no_grad():
        for module in average.modules():  # a different EMA state, so averaging is visible
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.zero_()
                module.running_var.fill_(3.0)
                module.num_batches_tracked.fill_(7)
        for parameter in average.parameters():
            parameter.zero_()
    old = state(average)
    config = config_from_dict({"train": {"ema": {"decay": 0.9, "start": 10}}})
    update_ema(SimpleNamespace(config=config, step=10, generator=generator, generator_ema=average))
    new = generator.state_dict()
    for key, value in average.state_dict().items():
        if value.is_floating_point():  # weights, running_mean, running_var
            torch.testing.assert_close(value, 0.9 * old[key] + 0.1 * new[key], msg=key)
        else:  # the integer batch counter is copied
            assert torch.equal(value, new[key]), key
    assert any(k.endswith("running_var") for k in new)

    update_ema(SimpleNamespace(config=config, step=9, generator=generator, generator_ema=average))
    assert_same_state(state(generator), average)  # before ema.start: an exact copy, buffers included


# -- which generator picks best.pt -----------------------------------------------------------------------
def resolution(path) -> int:
    config = load_config(path)
    pair = create("model", config.model.name, width=1 / 16, num_classes=10 if config.model.conditional else 0)
    return pair.generator.resolution


@pytest.mark.parametrize("path", sorted({p.parent / "_recipe.yaml" for p in shipped_recipes()}),
                         ids=lambda p: p.parent.relative_to(RECIPES).as_posix())
def test_best_checkpoint_is_chosen_by_the_raw_generator_at_32_and_48_px_and_by_ema_above(path):
    chosen = load_config(path).eval.best_generator
    if path.parent.name == "digits":
        assert chosen == "ema"  # not a release recipe; the reason is on the Fidelity page
    elif resolution(path) <= 48:
        assert chosen == "raw"
    else:
        assert resolution(path) >= 128 and chosen == "ema"


# -- the metric mode of the paper's recipes ------------------------------------------------------------
def test_recipes_of_the_papers_tables_default_to_its_metric_mode_and_clean_is_one_flag_away():
    for path in shipped_recipes():
        recipe = load_config(path)
        if recipe.data.name == "digits":  # the digits classifier has one pipeline
            assert recipe.eval.mode == "clean", path
            continue
        assert recipe.eval.mode == "legacy_tensorflow", path  # the TF code behind the paper's tables
        assert load_config(path, ["eval.mode=clean"]).eval.mode == "clean"


def test_a_data_set_scored_by_the_digits_classifier_refuses_an_inception_mode():
    from gn_plugin.errors import GnPluginError
    from gn_plugin.evaluation.features import build_extractor
    from gn_plugin.training.build import required_assets

    digits = load_config(RECIPES / "digits" / "gn.yaml", ["eval.mode=legacy_tensorflow"])
    with pytest.raises(GnPluginError, match="eval.mode: legacy_tensorflow .* digits classifier"):
        required_assets(digits)  # before a run's first step
    with pytest.raises(GnPluginError, match="leave eval.mode at clean"):
        build_extractor("digits", mode="legacy_pytorch")
    assert build_extractor("digits").name.startswith("digits-")


# -- CelebA-HQ 128: scored against the release's 3,000 held-out images ------------------------------
def celebahq_stand_in(folder, count: int = 30):
    """``1.png`` … ``count.png``, each a flat colour made from its number (as the release names CelebA-HQ)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for number in range(1, count + 1):
        Image.new("RGB", (8, 8), (number * 8, 255 - number * 8, (number * 37) % 256)).save(folder / f"{number}.png")
    return folder


def test_held_out_images_are_the_last_by_number_and_never_trained_on(tmp_path):
    from gn_plugin.errors import GnPluginError

    root = celebahq_stand_in(tmp_path / "celebahq")
    train = create("dataset", "folder", root=str(root), resolution=8, held_out=3)
    test = create("dataset", "folder", root=str(root), resolution=8, split="test", held_out=3)
    names = lambda dataset: sorted(int(f.rsplit("/", 1)[-1].split(".")[0]) for f in dataset.files)  # noqa: E731
    assert names(test) == [28, 29, 30]  # by number, as the release's 27001.jpg … 30000.jpg (not 7, 8, 9 by text)
    assert names(train) == list(range(1, 28))
    assert len(create("dataset", "folder", root=str(root), resolution=8)) == 30  # no held_out: every image trains
    for options, message in [
        ({"held_out": 30}, "held_out 30 leaves no training image"),
        ({"held_out": -1}, "held_out must be a whole number"),
        ({"reference_split": "test"}, "reference_split 'test' needs held-out images"),
        ({"split": "test"}, "has one split, 'train'"),
    ]:
        with pytest.raises(GnPluginError, match=message):
            create("dataset", "folder", root=str(root), resolution=8, **options)


def test_celebahq128_recipe_trains_on_the_rest_and_scores_against_the_held_out_split(tmp_path):
    from gn_plugin.evaluation.reference import dataset_fingerprint
    from gn_plugin.experiments.smoke import write_stand_in_inception
    from gn_plugin.training.build import build_dataset, build_reference_dataset, required_assets
    from gn_plugin.training.loop import train

    recipe_path = RECIPES / "celebahq128" / "resnet" / "gn.yaml"
    root = celebahq_stand_in(tmp_path / "celebahq")
    recipe = load_config(recipe_path, [f"data.root={root}"])
    assert recipe.data.options == {"held_out": 3000, "reference_split": "test"}  # the release's 3k test images
    assert any(a.what == "reference statistics of folder 128px, split test" for a in required_assets(recipe))
    # the recipe's data and evaluation, with 3 of the 30 stand-in images held out and a small model (CPU)
    config = load_config(recipe_path, [
        f"data.root={root}", "data.options.held_out=3", "data.num_workers=0", "model.name=mlp",
        "model.options.resolution=16", "model.width=0.125", "train.n_dis=1", "train.steps=2",
        "train.batch_size_d=2", "train.batch_size_g=2", "train.device=cpu", "eval.num_samples=4",
        "eval.batch_size=2", f"eval.inception_path={write_stand_in_inception(tmp_path / 'inception.pt')}",
        f"eval.cache_dir={tmp_path / 'cache'}",
    ])
    training = build_dataset(config, resolution=16)
    reference = build_reference_dataset(config, training)
    assert training.reference_split == "test" and len(training) == 27 and len(reference) == 3
    assert not set(training.files) & set(reference.files)
    train(config, tmp_path / "run", progress=False)
    cached = [p.name for p in (tmp_path / "cache").glob("*.npz")]
    assert len(cached) == 1 and dataset_fingerprint(reference) in cached[0]  # statistics of the 3 held-out images

    # the real-vs-real floor draws from the 27 training images and scores them against the same 3 held-out ones
    from gn_plugin.experiments import bench, report, tables

    floor = bench.compute_floor(config, training, tmp_path / "floor.json", log=lambda line: None)
    assert (floor["training_images"], floor["reference_images"]) == (27, 3)
    assert floor["context"]["kind"] == "training" and floor["context"]["images"] == 4
    how = tables.floor_how(report.floor_rows("key", floor))
    assert "from the 27 folder training images, each scored" in how and "(the reference's own images)" not in how
    assert how.endswith("The reference is the data set's 3 held-out images, which training never sees.")
    assert "4 distinct training images, scored against the same reference." in how
