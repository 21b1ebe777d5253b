"""The digits metrics, validated: they rank known degradations of real digits as they must, and the
memorisation check flags a generator that returns training images but not one that returns fresh ones."""

from __future__ import annotations

import csv

import pytest
import torch

from gn_plugin.config import RECIPES, load_config
from gn_plugin.data.base import dataset_tensors
from gn_plugin.evaluation.evaluator import Evaluator
from gn_plugin.evaluation.features import DigitsExtractor
from gn_plugin.experiments.memorisation import (
    HELD_OUT,
    check_samples,
    memorisation_sentences,
    nearest_distances,
)
from gn_plugin.experiments.metric_validation import (
    DEGRADATIONS,
    FALLS,
    NOT_MONOTONE,
    RISES,
    degradation_rows,
    direction,
    monotonicity,
    monotonicity_table,
    real_images,
    degradation_markdown,
    summary_sentences,
    values_table,
    matched_training_images,
    with_copies,
)
from gn_plugin.training.build import build_dataset
from gn_plugin.training.loop import train

DIGITS = RECIPES / "digits" / "gn.yaml"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    config = load_config(DIGITS, ["train.device=cpu", f"eval.cache_dir={tmp_path_factory.mktemp('cache')}"])
    return config, build_dataset(config), build_dataset(config, split="test")


def test_direction_allows_ties_but_not_a_step_against_the_trend():
    assert direction([1, 1, 2, 5]) == RISES and direction([3, 2, 2]) == FALLS
    assert direction([1, 3, 2]) == NOT_MONOTONE and direction([2, 2]) == "flat"


def test_digits_metrics_rank_noise_blur_mode_dropping_and_copies(digits):
    """500 degraded real digits per set, scored like 500 samples against the training reference: FID and IS
    must worsen with noise, blur and dropped classes; copies of training images must lower FID."""
    config, dataset, held_out = digits
    settings = config.eval.model_copy(update={"metrics": ["fid", "is"], "num_samples": 500})
    evaluator = Evaluator(dataset, settings)
    rows = degradation_rows(real_images(dataset, held_out), evaluator, draws=1)
    checks = {(c.degradation, c.metric): c for c in monotonicity(rows, ["fid", "is"])}
    assert {d.name for d in DEGRADATIONS} == {name for name, _ in checks}
    for name in ("noise", "blur", "drop_classes"):
        assert checks[name, "fid"].observed == RISES, checks[name, "fid"]
        assert checks[name, "is"].observed == FALLS, checks[name, "is"]
        assert checks[name, "fid"].means[-1] > 5 * checks[name, "fid"].means[0]  # far beyond the sampling noise
    copies = checks["copies", "fid"]
    assert copies.means[-1] < copies.means[0]  # memorising lowers FID against the training set
    assert all(row.images == 500 for row in rows)
    # the undegraded sets are the training images for three degradations, the held-out ones for copies
    zero = {row.degradation: row.metrics["fid"] for row in rows if row.strength == 0}
    assert zero["noise"] == zero["blur"] == zero["drop_classes"] != zero["copies"]
    table = monotonicity_table(list(checks.values()))
    assert "| noise | Gaussian noise, σ | 0, 0.05, 0.1, 0.2, 0.4 |" in table and "| noise | ↑ ✓ | ↓ ✓ |" in table
    assert "noise | 0.4 |" in values_table(list(checks.values()))
    assert summary_sentences(list(checks.values()))[0] == "noise: 2 of 2 metrics move as they must."
    page = degradation_markdown(rows, list(checks.values()))
    assert "500 per set" in page and "1 draw per strength" in page and table in page
    assert "- noise: 2 of 2 metrics move as they must." in page


def test_copies_replace_held_out_images_by_training_images_of_the_same_class(digits):
    """The strengths of ``copies`` differ only in how many of the same held-out images are replaced by training
    images: as many distinct images, of the same classes, at every strength."""
    _, dataset, held_out = digits
    real = real_images(dataset, held_out)
    matched = matched_training_images(real, torch.Generator().manual_seed(0))
    index = {tuple(image.flatten().tolist()): i for i, image in enumerate(real.training)}
    rows = [index[tuple(image.flatten().tolist())] for image in matched]  # every one a training image
    assert len(set(rows)) == len(held_out) == 360 and torch.equal(real.labels[rows], real.held_out_labels)
    copied = {}
    for fraction in (0.0, 0.5, 1.0):
        images = with_copies(real, fraction, 2000, torch.Generator().manual_seed(0))
        keys = [tuple(image.flatten().tolist()) for image in images]
        copied[fraction] = {key for key in keys if key in index}
        assert len(keys) == 2000 and len(set(keys)) <= 360
        assert abs(sum(key in index for key in keys) / 2000 - fraction) < 0.05
    assert not copied[0.0] and copied[0.5] < copied[1.0]  # the same copies, and more of them


def test_a_degradation_that_goes_the_wrong_way_is_reported_as_such():
    from gn_plugin.experiments.metric_validation import DegradationRow

    rows = [DegradationRow("noise", s, 0, 10, {"fid": value}) for s, value in [(0, 3.0), (0.1, 2.0), (0.2, 1.0)]]
    (check,) = monotonicity(rows, ["fid"])
    assert check.observed == FALLS and check.as_expected is False
    assert "↓ ✗ (must ↑)" in monotonicity_table([check])
    assert summary_sentences([check]) == ["noise: 0 of 1 metrics move as they must (not: FID falls)."]


def test_nearest_distances_match_a_brute_force_computation():
    rng = torch.Generator().manual_seed(0)
    queries, references = torch.randn(50, 7, generator=rng), torch.randn(30, 7, generator=rng)
    brute = torch.tensor([min(float((q.double() - r.double()).norm()) for r in references) for q in queries],
                         dtype=torch.float64)
    torch.testing.assert_close(nearest_distances(queries, references), brute)


def test_a_generator_that_returns_training_images_is_flagged_and_one_of_fresh_images_is_not(digits):
    _, dataset, held_out = digits
    training, _ = dataset_tensors(dataset)
    fresh, _ = dataset_tensors(held_out)
    baseline, unseen = fresh[:180], fresh[180:]  # the check's held-out images; a "generator" of other fresh ones
    torch.manual_seed(0)
    extractor = DigitsExtractor()
    copier = check_samples(training[torch.randint(len(training), (500,))], training, baseline, method="copies",
                           extractor=extractor)
    novel = check_samples(unseen, training, baseline, method="fresh", extractor=extractor)
    noisy_copies = check_samples((training[:500] + 0.05 * torch.randn(500, 1, 8, 8)).clamp(-1, 1), training,
                                 baseline, method="noisy copies", spaces=["pixels"])
    for row in copier:
        assert row.flagged and row.closer_than_any_held_out == 1.0 and row.median_ratio < 0.05, row
        assert row.held_out_images == 180
    for row in novel:
        assert not row.flagged, row  # 1 / 181 expected; under ten times that
        assert 0.8 < row.median_ratio < 1.25, row
    assert noisy_copies[0].flagged  # near copies too
    assert {row.space for row in copier} == {"pixels", "features"}
    assert memorisation_sentences(copier + novel) == [
        "pixels: flagged: copies (1 of 1 runs).", "features: flagged: copies (1 of 1 runs)."
    ]
    assert memorisation_sentences(novel)[0].startswith("pixels: no run flagged (largest share ")


def test_a_data_set_scored_against_its_held_out_split_is_validated_without_copies(tmp_path):
    """CelebA-HQ 128 scores against its held-out images: mixing those with training images tests no memorisation,
    so ``copies`` is left out, and the other degradations are scored against the held-out reference."""
    from PIL import Image

    from gn_plugin.experiments.metric_validation import validate_metrics
    from gn_plugin.experiments.smoke import write_stand_in_inception

    root = tmp_path / "celebahq"
    root.mkdir()
    for index in range(1, 21):
        Image.new("RGB", (8, 8), (index * 12, 255 - index * 12, (index * 37) % 256)).save(root / f"{index}.png")
    config = load_config(RECIPES / "celebahq128" / "resnet" / "gn.yaml", [
        f"data.root={root}", "data.options.held_out=5", "data.num_workers=0", "model.name=mlp",
        "model.options.resolution=8", "model.width=0.125", "train.device=cpu", "eval.num_samples=6",
        "eval.batch_size=6", f"eval.inception_path={write_stand_in_inception(tmp_path / 'inception.pt')}",
        f"eval.cache_dir={tmp_path / 'cache'}",
    ])
    rows, checks = validate_metrics(config, ["fid"], draws=1)
    assert {row.degradation for row in rows} == {"noise", "blur"}  # unlabelled: no classes to drop either
    assert {(c.degradation, c.metric) for c in checks} == {("noise", "fid"), ("blur", "fid")}
    from gn_plugin.evaluation.reference import dataset_fingerprint
    from gn_plugin.training.build import build_reference_dataset

    reference = build_reference_dataset(config, build_dataset(config, resolution=8))
    cached = [p.name for p in (tmp_path / "cache").glob("*.npz")]
    assert len(reference) == 5 and len(cached) == 1 and dataset_fingerprint(reference) in cached[0]


def test_gnbench_validate_metrics_writes_its_tables_and_checks_the_benchmarks_finished_runs(tmp_path, capsys):
    import yaml

    from gn_plugin.cli import main
    from gn_plugin.experiments.spec import expand, load_spec

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "v", "base": str(DIGITS.parent / "_recipe.yaml"), "methods": {"gn": {"norm": "gn"}}, "seeds": [0],
        "metrics": ["fid", "precision"],
        "set": {"train.steps": 2, "train.device": "cpu", "model.width": 0.25, "eval.num_samples": 100,
                "eval.batch_size": 100, "eval.metrics": ["fid"], "eval.cache_dir": str(tmp_path / "cache")},
    }))
    out = tmp_path / "out"
    command = ["validate-metrics", str(spec_path), "--out", str(out), "--draws", "1"]
    assert main(command) == 0
    printed = capsys.readouterr()
    assert "| Gaussian noise, σ | 0, 0.05, 0.1, 0.2, 0.4 |" in printed.out and "no finished run" in printed.err
    rows = list(csv.DictReader((out / "metric_validation.csv").open()))
    assert len(rows) == 4 * 5 and {"fid", "precision"} <= set(rows[0])  # 4 degradations × 5 strengths, 1 draw
    assert len(list(csv.DictReader((out / "metric_monotonicity.csv").open()))) == 4 * 2
    assert not (out / "memorisation.csv").exists()

    (cell,) = expand(load_spec(spec_path), spec_path, out)
    train(cell.config, cell.run_dir, progress=False)  # a finished run: the memorisation check reads its generators
    assert main([*command, "--generators", "ema", "raw"]) == 0
    page = capsys.readouterr().out
    found = list(csv.DictReader((out / "memorisation.csv").open()))
    assert [(r["method"], r["generator"], r["space"]) for r in found] == [
        (HELD_OUT, "", "pixels"), (HELD_OUT, "", "features"),
        ("gn", "ema", "pixels"), ("gn", "ema", "features"), ("gn", "raw", "pixels"), ("gn", "raw", "features"),
    ]
    assert float(found[0]["median_ratio"]) == 1.0 and float(found[0]["closer_than_any_held_out"]) == 0.0
    assert all(r["images"] == "100" and r["held_out_images"] == "360" for r in found[2:])  # as the run evaluates
    assert not any(r["flagged"] == "True" for r in found)  # two steps of training copy nothing
    pixels = page[page.index("Pixels:"):page.index("Features:")]  # a table per space
    assert f"| {HELD_OUT} (baseline) | – |" in pixels and "| gn | ema |" in pixels and pixels.count("| 0 of 1 |") == 2
    assert "best checkpoint draws 100 samples" in page and "the 360 held-out images" in page
    assert "- pixels: no run flagged" in page
    assert main([*command[:-1], "0"]) == 2
    assert capsys.readouterr().err.strip() == "gnbench: error: --draws must be at least 1, got 0"
