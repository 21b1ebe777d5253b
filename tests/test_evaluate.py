"""Evaluation: metric functions against independent computations, the digits classifier and its
real-vs-real floor, and the Inception path through a tiny TorchScript stand-in (no download here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cleanfid import downloads_helper, inception_pytorch
from cleanfid.resize import build_resizer

import gn_plugin
from gn_plugin import GnPluginError
from gn_plugin.config import EvalConfig, config_from_dict
from gn_plugin.data.base import ImageDataset
from gn_plugin.evaluation import evaluator as evaluator_module
from gn_plugin.evaluation import reference as reference_module
from gn_plugin.evaluation.digits_classifier import (
    DIGITS_CLASSIFIER_PATH,
    DigitsClassifier,
    accuracy,
    digits_tensors,
)
from gn_plugin.evaluation.evaluator import Evaluator
from gn_plugin.evaluation import features as features_module
from gn_plugin.evaluation.features import (
    InceptionExtractor,
    PytorchInceptionExtractor,
    build_extractor,
    clean_resize,
    to_uint8,
)
from gn_plugin.evaluation.pytorch_inception import load_pytorch_inception, pytorch_inception_network
from gn_plugin.experiments.smoke import write_stand_in_inception
from gn_plugin.metrics.base import (
    FeatureSet,
    ReferenceStats,
    compute_metrics,
    get_metric,
    higher_is_better,
    list_metrics,
)
from gn_plugin.metrics.classifier import inception_score

# ---------------------------------------------------------------------------------------------
# Metric functions


def exact_moment_samples(mean: np.ndarray, cov: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Samples whose sample mean and sample covariance are exactly ``mean`` and ``cov``."""
    z = np.random.default_rng(seed).standard_normal((count, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample covariance = I
    return mean + z @ np.linalg.cholesky(cov).T


def spd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def closed_form_fid(mu1, sigma1, mu2, sigma2) -> float:
    root1 = spd_sqrt(sigma1)
    cross = spd_sqrt(root1 @ sigma2 @ root1)  # same trace as (sigma1 sigma2)^(1/2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(cross))


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD with KID's kernel k(a, b) = (a·b/d + 1)³ over the full sets."""

    def kernel(a, b):
        return (a @ b.T / x.shape[1] + 1) ** 3

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    m, n = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
    )


def only_features(features: np.ndarray) -> FeatureSet:
    return FeatureSet(features, np.full((len(features), 2), 0.5))


def only_probabilities(probabilities: np.ndarray) -> FeatureSet:
    return FeatureSet(np.zeros((len(probabilities), 1)), probabilities)


def test_fid_of_two_gaussians_equals_the_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    sigma1, sigma2 = a @ a.T + 0.5 * np.eye(d), b @ b.T + 0.5 * np.eye(d)
    generated = exact_moment_samples(mu1, sigma1, 500, seed=1)
    reference = ReferenceStats(mu2, sigma2)
    value = get_metric("fid")(only_features(generated), reference)["fid"]
    assert value == pytest.approx(closed_form_fid(mu1, sigma1, mu2, sigma2), rel=1e-6)
    # Diagonal covariances: ||mu1 - mu2||² + Σ (√s1 - √s2)².
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    diagonal = get_metric("fid")(only_features(exact_moment_samples(np.zeros(3), np.diag(s1), 50, seed=2)),
                                 ReferenceStats(np.ones(3), np.diag(s2)))["fid"]
    assert diagonal == pytest.approx(3 + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum(), rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(300, 8))
    assert abs(get_metric("fid")(only_features(features), ReferenceStats.from_features(features))["fid"]) < 1e-6


def test_kid_is_the_unbiased_mmd_near_zero_for_one_distribution_and_positive_when_shifted():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    same = get_metric("kid")(only_features(x), ReferenceStats.from_features(y))["kid"]
    # Equal set sizes under clean-fid's 1000 cap: every subset is a whole set, so KID is the full statistic.
    assert same == pytest.approx(unbiased_mmd2(x, y), rel=1e-9)
    shifted = get_metric("kid")(only_features(x + 0.5), ReferenceStats.from_features(y))["kid"]
    assert abs(same) < 0.02 and shifted > 0.2
    assert shifted == pytest.approx(unbiased_mmd2(x + 0.5, y), rel=1e-9)


def test_kid_is_repeatable_and_leaves_numpys_global_generator_alone():
    rng = np.random.default_rng(1)
    # The reference is larger than the subset size, so its subsets are random draws.
    generated = only_features(rng.normal(size=(60, 4)))
    reference = ReferenceStats.from_features(rng.normal(size=(90, 4)))
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    first = get_metric("kid")(generated, reference)
    assert np.random.rand() == expected_next
    assert get_metric("kid")(generated, reference) == first


def test_inception_score_limits_and_textbook_formula():
    confident_uniform = np.eye(10)[np.arange(1000) % 10]
    assert inception_score(confident_uniform) == pytest.approx((10.0, 0.0))
    identical = np.tile(np.random.default_rng(0).dirichlet(np.ones(10)), (1000, 1))
    assert inception_score(identical)[0] == pytest.approx(1.0)
    probabilities = np.random.default_rng(1).dirichlet(np.full(5, 0.3), size=1000) + 1e-12
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    textbook = []
    for part in np.split(probabilities, 10):
        kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        textbook.append(np.exp(kl.sum(axis=1).mean()))
    result = get_metric("is")(only_probabilities(probabilities), ReferenceStats(np.zeros(1), np.eye(1)))
    assert result == pytest.approx({"is": np.mean(textbook), "is_std": np.std(textbook)}, rel=1e-6)


def test_class_coverage_counts_the_classes_that_are_some_samples_argmax():
    probabilities = np.full((6, 10), 0.01)
    probabilities[np.arange(6), [2, 2, 5, 7, 7, 7]] = 0.91
    assert get_metric("class_coverage")(only_probabilities(probabilities), ReferenceStats(np.zeros(1), np.eye(1))) == {
        "class_coverage": 0.3
    }


def test_metric_registry_lists_computes_and_rejects():
    assert {"fid", "kid", "is", "class_coverage", "precision", "recall", "density", "coverage"} <= set(list_metrics())
    with pytest.raises(GnPluginError, match="unknown metric 'fdi'; did you mean 'fid'"):
        get_metric("fdi")
    with pytest.raises(GnPluginError, match="already registered"):
        gn_plugin.register("metric", "fid")(lambda generated, reference: {})
    assert [higher_is_better(name) for name in ("fid", "kid", "is", "class_coverage", "precision", "coverage")] == [
        False, False, True, True, True, True
    ]
    features = np.random.default_rng(0).normal(size=(50, 3))
    both = compute_metrics(["fid", "class_coverage"], only_features(features), ReferenceStats.from_features(features))
    assert set(both) == {"fid", "class_coverage"}


# ---------------------------------------------------------------------------------------------
# Digits classifier and the digits metric space


@pytest.fixture(scope="module")
def digits_train():
    return gn_plugin.create("dataset", "digits")


@pytest.fixture(scope="module")
def digits_test():
    return gn_plugin.create("dataset", "digits", split="test")


@pytest.fixture(scope="module")
def digits_evaluator(digits_train, digits_test, tmp_path_factory):
    options = EvalConfig(
        num_samples=360, batch_size=128, metrics=["fid", "kid", "is", "class_coverage"],
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    return Evaluator(digits_train, options, held_out=digits_test)


@pytest.fixture(scope="module")
def digits_floor(digits_evaluator):
    return digits_evaluator.floor()


def test_shipped_digits_classifier_loads_as_plain_weights_and_is_accurate():
    state = torch.load(DIGITS_CLASSIFIER_PATH, weights_only=True)
    model = DigitsClassifier()
    model.load_state_dict(state)
    model.eval()
    assert accuracy(model, *digits_tensors("test")) >= 0.95
    # Samples at another resolution and in colour are brought back to 8×8 grey first.
    rgb32 = gn_plugin.create("dataset", "digits", split="test", resolution=32, channels=3)
    assert accuracy(model, rgb32.images, rgb32.labels) >= 0.9


def test_digits_floor_is_small_and_uniform_noise_is_far_above_it(digits_evaluator, digits_floor):
    assert digits_floor["fid"] < 1.0
    assert digits_floor["class_coverage"] == 1.0 and digits_floor["is"] > 7.0
    generator = torch.Generator().manual_seed(0)
    noise = digits_evaluator.evaluate(lambda n: torch.rand(n, 1, 8, 8, generator=generator) * 2 - 1)
    assert noise["fid"] > 20 * digits_floor["fid"] and noise["fid"] > 10
    assert noise["kid"] > 0.5 > 10 * abs(digits_floor["kid"])
    assert noise["is"] < digits_floor["is"] / 2


def test_generator_returning_held_out_digits_scores_the_floor(digits_evaluator, digits_floor, digits_test):
    order = iter(torch.randperm(len(digits_test), generator=torch.Generator().manual_seed(0)).split(128))
    result = digits_evaluator.evaluate(lambda n: digits_test.images[next(order)[:n]])
    # Same images in another order and batching: FID and KID do not depend on either.
    assert result["fid"] == pytest.approx(digits_floor["fid"], rel=1e-4)
    assert result["kid"] == pytest.approx(digits_floor["kid"], rel=1e-4)
    assert result["class_coverage"] == 1.0


def test_collapsed_generator_covers_one_class(digits_evaluator, digits_floor, digits_test):
    zeros = digits_test.images[digits_test.labels == 0]
    result = digits_evaluator.evaluate(lambda n: zeros[torch.arange(n) % len(zeros)])
    assert result["class_coverage"] == 0.1
    assert result["is"] < 1.5
    assert result["fid"] > 10 * digits_floor["fid"]


def test_run_config_eval_section_becomes_the_evaluator_options(digits_train, tmp_path):
    config = config_from_dict({"eval": {"num_samples": 100, "metrics": ["fid", "class_coverage"], "cache_dir": str(tmp_path)}})
    evaluator = Evaluator(digits_train, config.eval, torch.device("cpu"))
    assert evaluator.settings == EvalConfig(
        num_samples=100, batch_size=500, metrics=["fid", "class_coverage"], cache_dir=str(tmp_path)
    ) and evaluator.device == "cpu"
    assert evaluator.extractor.name.startswith("digits-") and len(list(tmp_path.glob("digits-*.npz"))) == 1


def test_floor_without_held_out_split_scores_one_half_against_the_other(digits_train, tmp_path, monkeypatch):
    options = EvalConfig(num_samples=400, batch_size=256, metrics=["fid"], cache_dir=str(tmp_path))
    evaluator = Evaluator(digits_train, options)
    extracted = []
    original = evaluator_module.dataset_batches

    def recording_batches(dataset, batch_size):
        extracted.append(list(dataset.indices))
        return original(dataset, batch_size)

    monkeypatch.setattr(evaluator_module, "dataset_batches", recording_batches)
    floor = evaluator.floor()
    reference_half, scored = extracted
    assert len(reference_half) == len(digits_train) // 2 and len(scored) == 400  # capped at num_samples
    assert not set(reference_half) & set(scored)
    assert 0 < floor["fid"] < 5.0


def test_resampled_floor_scores_draws_of_the_training_images_like_a_generator(digits_train, tmp_path):
    options = EvalConfig(num_samples=700, batch_size=256, metrics=["fid", "precision"], cache_dir=str(tmp_path))
    evaluator = Evaluator(digits_train, options)
    draws = evaluator.resampled_floor(draws=3, seed=5)
    assert len(draws) == 3 and evaluator.resampled_floor(draws=3, seed=5) == draws
    # The first draw is what a generator returning those training images, in that order, scores.
    rows = torch.as_tensor(np.random.default_rng(5).integers(0, len(digits_train), size=700))
    chunks = iter(digits_train.images[rows].split(256))
    assert evaluator.evaluate(lambda n: next(chunks)[:n]) == pytest.approx(draws[0], rel=1e-6)
    assert all(d["precision"] == 1.0 for d in draws)  # every drawn image is a training image


def test_resampled_floor_falls_with_the_sample_count(digits_train, tmp_path):
    """FID's small-sample bias: the same data scored with fewer images gives a higher floor."""
    def mean_fid(count: int) -> float:
        options = EvalConfig(num_samples=count, batch_size=500, metrics=["fid"], cache_dir=str(tmp_path))
        return float(np.mean([d["fid"] for d in Evaluator(digits_train, options).resampled_floor(draws=5)]))

    assert mean_fid(2000) < mean_fid(360) / 2


# ---------------------------------------------------------------------------------------------
# Inception path with a TorchScript stand-in for clean-fid's inception-2015-12-05.pt


@pytest.fixture(scope="module")
def stand_in_path(tmp_path_factory) -> str:
    return str(write_stand_in_inception(tmp_path_factory.mktemp("weights") / "inception-2015-12-05.pt"))


def inception_options(stand_in_path: str, cache_dir: Path, **overrides) -> EvalConfig:
    settings = dict(num_samples=64, batch_size=32, metrics=["fid", "kid", "is"],
                    inception_path=stand_in_path, cache_dir=str(cache_dir))
    return EvalConfig(**{**settings, **overrides})


def test_one_pass_gives_what_the_two_torchscript_calls_give(stand_in_path):
    extractor = InceptionExtractor(stand_in_path)
    images = torch.rand(5, 3, 20, 20) * 2 - 1
    features, probabilities = extractor(images)
    pixels = clean_resize(to_uint8(images), build_resizer("clean"))
    torch.testing.assert_close(features, extractor.model(pixels, return_features=True))
    torch.testing.assert_close(probabilities, extractor.model(pixels, no_output_bias=True))
    assert not torch.allclose(probabilities, extractor.model(pixels))  # the bias really is left out
    grey = images[:, :1]
    torch.testing.assert_close(extractor(grey)[0], extractor(grey.repeat(1, 3, 1, 1))[0])


def test_inception_evaluator_on_fake_data_scores_and_caches_its_reference(stand_in_path, tmp_path):
    dataset = gn_plugin.create("dataset", "fake", size=96, resolution=16)
    options = inception_options(stand_in_path, tmp_path / "cache")
    evaluator = Evaluator(dataset, options)
    cached = list((tmp_path / "cache").glob("fake-16px-inception-*.npz"))
    assert len(cached) == 1

    held_out = gn_plugin.create("dataset", "fake", size=64, resolution=16, split="test")
    same_distribution = evaluator.evaluate(lambda n: held_out.images[:n])
    constant = evaluator.evaluate(lambda n: torch.full((n, 3, 16, 16), 0.8))
    assert set(same_distribution) == {"fid", "kid", "is", "is_std"}
    assert all(np.isfinite(value) for value in same_distribution.values())
    assert constant["fid"] > 10 * same_distribution["fid"] and constant["kid"] > same_distribution["kid"]
    assert 1.0 <= same_distribution["is"] <= 10.0

    calls = []

    def counting_extractor(images):
        calls.append(len(images))
        return evaluator.extractor(images)

    counting_extractor.name = evaluator.extractor.name
    again = Evaluator(dataset, options, extractor=counting_extractor)
    assert calls == []  # read from the cache, not recomputed
    np.testing.assert_array_equal(again.reference.sigma, evaluator.reference.sigma)
    Evaluator(gn_plugin.create("dataset", "fake", size=96, resolution=16, seed=1), options, extractor=counting_extractor)
    assert sum(calls) == 96  # other data under the same name gets its own cache entry
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_missing_inception_weights_with_no_download_is_a_one_line_error(stand_in_path, tmp_path, monkeypatch):
    def offline(fpath):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(downloads_helper, "check_download_inception", offline)
    missing = tmp_path / "weights" / "inception-2015-12-05.pt"
    dataset = gn_plugin.create("dataset", "fake", size=8, resolution=8)
    with pytest.raises(GnPluginError) as error:
        Evaluator(dataset, inception_options(str(missing), tmp_path / "cache"))
    message = str(error.value)
    assert "\n" not in message
    assert str(missing) in message and downloads_helper.inception_url in message and "Network is unreachable" in message
    assert list((tmp_path / "weights").iterdir()) == []  # no partial file, no scratch folder left


def test_missing_inception_weights_are_fetched_by_clean_fid(stand_in_path, tmp_path, monkeypatch):
    def download(fpath):
        target = Path(fpath) / "inception-2015-12-05.pt"
        target.write_bytes(Path(stand_in_path).read_bytes())
        return str(target)

    monkeypatch.setattr(downloads_helper, "check_download_inception", download)
    wanted = tmp_path / "models" / "my-inception.pt"
    extractor = InceptionExtractor(str(wanted))
    assert wanted.read_bytes() == Path(stand_in_path).read_bytes()
    assert extractor(torch.zeros(2, 3, 8, 8))[0].shape == (2, 8)


class CleanFidBacked(ImageDataset):
    name = "cifar10"
    cleanfid_reference = ("cifar10", 32, "train")


@pytest.fixture
def requested_statistics(monkeypatch) -> tuple[list[tuple], np.ndarray]:
    """clean-fid's precomputed reference statistics replaced by statistics of random features: the list
    that records each request, and those features."""
    calls = []
    features = np.random.default_rng(0).random((50, 8))

    def precomputed(name, res, mode="clean", split="test", metric="FID", **_):
        calls.append((name, res, mode, split, metric))
        return features if metric == "KID" else (features.mean(axis=0), np.cov(features, rowvar=False))

    monkeypatch.setattr(reference_module, "get_reference_statistics", precomputed)
    return calls, features


def test_cleanfid_reference_statistics_are_used_when_the_dataset_names_them(
    stand_in_path, tmp_path, monkeypatch, requested_statistics
):
    calls, features = requested_statistics
    fid_only = Evaluator(CleanFidBacked(), inception_options(stand_in_path, tmp_path, metrics=["fid"]))
    assert calls == [("cifar10", 32, "clean", "train", "FID")] and fid_only.reference.features is None
    with_kid = Evaluator(CleanFidBacked(), inception_options(stand_in_path, tmp_path, metrics=["fid", "kid"]))
    assert calls[1:] == [("cifar10", 32, "clean", "train", "FID"), ("cifar10", 32, "clean", "train", "KID")]
    np.testing.assert_array_equal(with_kid.reference.features, features)
    assert list(tmp_path.glob("*.npz")) == []  # nothing computed, nothing cached

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(reference_module, "get_reference_statistics", offline)
    with pytest.raises(GnPluginError, match=r"^clean-fid reference statistics for cifar10 32px split 'train'.*unreachable"):
        Evaluator(CleanFidBacked(), inception_options(stand_in_path, tmp_path))


def test_unknown_metric_fails_before_any_work(tmp_path):
    dataset = gn_plugin.create("dataset", "fake", size=8, resolution=8)
    with pytest.raises(GnPluginError, match="unknown metric 'fdi'"):
        # settings built without validation: the evaluator checks the names itself, before any work
        settings = EvalConfig.model_construct(**{**EvalConfig().model_dump(), "metrics": ["fid", "fdi"],
                                                 "inception_path": str(tmp_path / "absent.pt")})
        Evaluator(dataset, settings)


# ---------------------------------------------------------------------------------------------
# eval.mode: clean-fid's three pipelines (clean, legacy_tensorflow, legacy_pytorch)


class RecordingNetwork(torch.nn.Module):
    """A stand-in for pytorch-fid's network: remembers its input, returns 8 pooled features."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, x):
        self.inputs.append(x)
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


@pytest.fixture
def stand_in_pytorch_inception(tmp_path, monkeypatch):
    """legacy_pytorch's loader replaced by :class:`RecordingNetwork` (the real weights are 95 MB)."""
    network, fc_weight = RecordingNetwork(), torch.randn(10, 8)
    path = tmp_path / "pt_inception.pth"
    path.write_bytes(b"stand-in")
    monkeypatch.setattr(features_module, "load_pytorch_inception", lambda p, device="cpu": (network, fc_weight))
    return path, network, fc_weight


def test_each_mode_resizes_the_way_clean_fid_does(stand_in_path, stand_in_pytorch_inception):
    images = torch.rand(3, 3, 20, 20) * 2 - 1
    pixels = to_uint8(images)
    as_numpy = [image.permute(1, 2, 0).numpy() for image in pixels]  # clean-fid's resizers take HWC uint8

    clean = InceptionExtractor(stand_in_path, mode="clean")  # PIL bicubic to 299, then the layers
    resized = torch.from_numpy(np.stack([build_resizer("clean")(x) for x in as_numpy])).permute(0, 3, 1, 2)
    torch.testing.assert_close(clean(images)[0], clean.model.layers((resized - 128) / 128).flatten(1))

    tf = InceptionExtractor(stand_in_path, mode="legacy_tensorflow")  # no resize outside: the file's own
    assert build_resizer("legacy_tensorflow")(as_numpy[0]) is as_numpy[0]
    tf_features, tf_probabilities = tf(images)
    torch.testing.assert_close(tf_features, tf.model(pixels.float(), return_features=True))
    torch.testing.assert_close(tf_probabilities, tf.model(pixels.float(), no_output_bias=True))
    assert not torch.allclose(tf_features, clean(images)[0], atol=1e-3)

    path, network, fc_weight = stand_in_pytorch_inception  # PyTorch bilinear, then pytorch-fid's 2x − 1
    legacy = PytorchInceptionExtractor(str(path))
    features, probabilities = legacy(images)
    expected = torch.from_numpy(np.stack([build_resizer("legacy_pytorch")(x) for x in as_numpy])).permute(0, 3, 1, 2)
    torch.testing.assert_close(network.inputs[-1], 2 * (expected / 255) - 1)
    torch.testing.assert_close(probabilities, torch.softmax(features @ fc_weight.T, dim=1))


def test_the_mode_is_part_of_the_reference_cache_key(stand_in_path, stand_in_pytorch_inception, tmp_path):
    dataset = gn_plugin.create("dataset", "fake", size=32, resolution=16)
    for mode in ("clean", "legacy_tensorflow", "legacy_pytorch"):
        options = inception_options(stand_in_path, tmp_path / "cache", mode=mode,
                                    pytorch_inception_path=str(stand_in_pytorch_inception[0]))
        assert Evaluator(dataset, options).extractor.name.startswith(f"inception-{mode}-")
    cached = sorted(p.name for p in (tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 3  # one reference per mode, none reused across modes
    assert all(any(f"-inception-{m}-" in c for c in cached) for m in ("clean", "legacy_tensorflow", "legacy_pytorch"))


@pytest.mark.parametrize("mode", ["legacy_tensorflow", "legacy_pytorch"])
def test_clean_fids_statistics_of_the_mode_are_requested(
    mode, stand_in_path, stand_in_pytorch_inception, tmp_path, requested_statistics
):
    calls, _ = requested_statistics
    options = inception_options(stand_in_path, tmp_path, metrics=["fid", "kid"], mode=mode,
                                pytorch_inception_path=str(stand_in_pytorch_inception[0]))
    Evaluator(CleanFidBacked(), options)
    assert calls == [("cifar10", 32, mode, "train", "FID"), ("cifar10", 32, mode, "train", "KID")]
    assert config_from_dict({}).eval.mode == "clean"  # the default stays clean-fid's own


def test_legacy_pytorch_network_is_clean_fids(tmp_path, monkeypatch):
    """Our pytorch-fid network with a weights file equals clean-fid's ``InceptionV3`` with the same weights."""
    torch.manual_seed(0)
    state = pytorch_inception_network().state_dict()
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    network, fc_weight = load_pytorch_inception(str(path))
    monkeypatch.setattr(inception_pytorch, "load_state_dict_from_url", lambda *args, **kwargs: state)
    theirs = inception_pytorch.InceptionV3(output_blocks=[3], resize_input=False).eval()
    x = torch.rand(2, 3, 299, 299)
    with torch.no_grad():
        torch.testing.assert_close(network(2 * x - 1), theirs(x)[0].flatten(1))
    assert torch.equal(fc_weight, state["fc.weight"])


def test_missing_pytorch_inception_weights_offline_is_a_one_line_error(tmp_path, monkeypatch):
    def offline(url, dst, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    missing = tmp_path / "hub" / "pt_inception.pth"
    with pytest.raises(GnPluginError) as error:
        build_extractor("inception", mode="legacy_pytorch", pytorch_inception_path=str(missing))
    message = str(error.value)
    assert "\n" not in message and str(missing) in message and "eval.pytorch_inception_path" in message
    assert list((tmp_path / "hub").iterdir()) == []
