"""Offline assets: what a run reads from disk is listed, checked and fetched, and training names every
missing file in one error before its first step. Downloads come from local ``file://`` stand-ins."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cleanfid import downloads_helper
from torchvision import datasets

from gn_plugin import GnPluginError
from gn_plugin.cli import main
from gn_plugin.config import RECIPES, load_config
from gn_plugin.data.base import DatasetFiles, RequiredFile, TensorImageDataset
from gn_plugin.evaluation import assets
from gn_plugin.experiments.smoke import write_stand_in_inception
from gn_plugin.registry import register, registry
from gn_plugin.training.build import required_assets

CIFAR_GN = RECIPES / "cifar10" / "cnn" / "gn.yaml"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """The project's cache in a fresh folder, and no clean-fid folder holding anything."""
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "CLEANFID_STATS_DIR", tmp_path / "cleanfid-stats")
    return tmp_path / "cache"


def cifar_offline(tmp_path: Path) -> list[str]:
    """Overrides that put every file of the CIFAR-10 recipe where nothing is."""
    return [f"data.root={tmp_path / 'data'}", f"eval.inception_path={tmp_path / 'weights' / 'inception.pt'}"]


@pytest.mark.parametrize("mode", ["legacy_tensorflow", "clean"])
def test_cifar10_recipe_report_names_every_missing_file_with_its_source(mode, tmp_path, cache, capsys):
    """The recipe scores in the paper's legacy_tensorflow mode: clean-fid's statistics of that mode are
    listed, and ``--set eval.mode=clean`` lists clean mode's instead."""
    overrides = cifar_offline(tmp_path) + ([] if mode == "legacy_tensorflow" else ["eval.mode=clean"])
    assert main(["assets", str(CIFAR_GN), "--set", *overrides]) == 1
    out = capsys.readouterr().out
    batches = tmp_path / "data" / datasets.CIFAR10.base_folder
    expected_files = [name for name, _ in datasets.CIFAR10.train_list + datasets.CIFAR10.test_list] + ["batches.meta"]
    for name in expected_files:
        assert f"at {batches / name}" in out
    assert out.count(datasets.CIFAR10.url) == 1  # one archive provides all seven, listed once
    assert f"tar xzf cifar-10-python.tar.gz -C {tmp_path / 'data'}" in out
    assert f"at {tmp_path / 'weights' / 'inception.pt'}" in out and downloads_helper.inception_url in out
    other = "clean" if mode == "legacy_tensorflow" else "legacy_tensorflow"
    assert f"cifar10_{other}_" not in out
    for stats in (f"cifar10_{mode}_train_32.npz", f"cifar10_{mode}_train_32_kid.npz"):  # the recipe computes KID too
        assert f"at {cache / stats}" in out and f"also looked in {tmp_path / 'cleanfid-stats' / stats}" in out
        assert assets.CLEANFID_STATS_URL + stats in out
    assert "read by cifar10/cnn/gn.yaml" in out
    assert sum(line.startswith("missing ") for line in out.splitlines()) == len(expected_files) + 3
    assert "1 config(s): 0 file(s) in place, 10 missing or invalid" in out


def test_every_shipped_recipe_is_listed_with_files_shared_between_recipes_once(cache, capsys):
    assert main(["assets"]) in (0, 1)
    out = capsys.readouterr().out
    assert "read by cifar10/biggan/{gn-cr,gn,none,sn,wgan-gp}.yaml, cifar10/cnn/" in out
    assert "computed reference statistics of stl10 48px: computed from the data set at the first evaluation" in out
    assert "present  digits classifier weights (shipped with gn_plugin)" in out
    assert "data set folder: celebahq256" in out and "data set lmdb: church_outdoor_train_lmdb" in out


def test_inception_weights_default_to_the_cache_and_still_find_clean_fids_copy(cache, tmp_path, monkeypatch):
    weights = assets.inception_weights()
    assert weights.paths == (str(cache / assets.INCEPTION_FILE), f"/tmp/{assets.INCEPTION_FILE}")
    assert assets.inception_weights(str(tmp_path / "mine.pt")).paths == (str(tmp_path / "mine.pt"),)
    assert assets.inception_weights(mode="legacy_pytorch").checksum == "sha256:6726825d"
    elsewhere = write_stand_in_inception(tmp_path / "clean-fid" / assets.INCEPTION_FILE)
    moved = assets.Asset("weights", paths=(str(cache / "absent.pt"), str(elsewhere)), verify=assets.zip_problem)
    assert assets.locate(moved).path == str(elsewhere)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(elsewhere.read_bytes()[:-100])
    assert assets.locate(assets.Asset("weights", paths=(str(truncated),), verify=assets.zip_problem)).state == "invalid"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny_online(tmp_path, monkeypatch, cache):
    """A data set plugin whose files, Inception weights and clean-fid statistics all download from file:// URLs."""
    server = tmp_path / "server"
    content = server / "content" / "tiny" / "images.npy"
    content.parent.mkdir(parents=True)
    np.save(content, np.zeros((4, 1, 8, 8), dtype=np.float32))
    archive = server / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(content, arcname="tiny/images.npy")
    stats = server / "stats"
    stats.mkdir()
    features = np.random.default_rng(0).random((16, 8))
    np.savez(stats / "tiny_clean_train_8.npz", mu=features.mean(axis=0), sigma=np.cov(features, rowvar=False))
    np.savez(stats / "tiny_clean_train_8_kid.npz", feats=features)
    write_stand_in_inception(server / assets.INCEPTION_FILE)
    monkeypatch.setattr(downloads_helper, "inception_url", (server / assets.INCEPTION_FILE).as_uri())
    monkeypatch.setattr(assets, "CLEANFID_STATS_URL", stats.as_uri() + "/")

    def tiny_files(*, root="data", resolution=None, split="train") -> DatasetFiles:
        path = str(Path(root) / "tiny" / "images.npy")
        required = RequiredFile(path, md5=md5(content), url=archive.as_uri(), url_md5=md5(archive), extract_to=root)
        return DatasetFiles((required,), cleanfid_reference=("tiny", 8, split))

    def tiny(*, root="data", resolution=None, split="train", download=True) -> TensorImageDataset:
        images = torch.from_numpy(np.load(Path(root) / "tiny" / "images.npy"))
        return TensorImageDataset(images, torch.zeros(len(images)), name="tiny", num_classes=0)

    tiny.required_files = tiny_files
    register("dataset", "tiny")(tiny)
    config = tmp_path / "tiny.yaml"
    config.write_text(f"data: {{name: tiny, root: {tmp_path / 'data'}}}\n")
    yield config, content
    registry("dataset").unregister("tiny")


def test_fetch_downloads_extracts_and_checks_every_missing_file(tiny_online, tmp_path, cache, capsys):
    config, content = tiny_online
    assert main(["assets", str(config)]) == 1
    assert main(["assets", str(config), "--fetch"]) == 0
    out = capsys.readouterr().out
    placed = tmp_path / "data" / "tiny" / "images.npy"
    assert placed.read_bytes() == content.read_bytes()
    assert (cache / assets.INCEPTION_FILE).is_file()
    assert (cache / "tiny_clean_train_8.npz").is_file() and (cache / "tiny_clean_train_8_kid.npz").is_file()
    assert "4 file(s) in place, 0 missing" in out
    assert not list(tmp_path.glob("data/.partial-*")) and not list(cache.glob(".partial-*"))

    placed.write_bytes(b"damaged")  # a corrupted file is reported and fetched again
    assert main(["assets", str(config)]) == 1
    assert "invalid: " in capsys.readouterr().out
    assert main(["assets", str(config), "--fetch"]) == 0
    assert placed.read_bytes() == content.read_bytes()


def test_a_failed_download_leaves_nothing_behind_and_names_the_url(tiny_online, tmp_path, cache, monkeypatch, capsys):
    config, _ = tiny_online
    absent = (tmp_path / "nowhere" / assets.INCEPTION_FILE).as_uri()
    monkeypatch.setattr(downloads_helper, "inception_url", absent)
    assert main(["assets", str(config), "--fetch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and absent in err and "could not fetch" in err
    assert not (cache / assets.INCEPTION_FILE).exists() and not list(cache.glob(".partial-*"))


def test_a_download_that_does_not_match_its_checksum_is_refused(tmp_path):
    source = tmp_path / "file.bin"
    source.write_bytes(b"payload")
    with pytest.raises(OSError, match="does not match its checksum"):
        assets.download(source.as_uri(), str(tmp_path / "into"), checksum="md5:" + "0" * 32, progress=False)
    assert list((tmp_path / "into").iterdir()) == []


def test_training_names_every_missing_file_in_one_error_before_step_one(tmp_path, cache, capsys):
    run = tmp_path / "run"
    argv = ["train", str(CIFAR_GN), "--out", str(run), "--set", *cifar_offline(tmp_path), "train.steps=2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gnbench: error: 10 file(s) this run reads are missing or invalid")
    assert f"gnbench assets {run / 'config.yaml'} --fetch" in err
    for name in ("data_batch_1", "test_batch", "batches.meta", "inception.pt", "cifar10_legacy_tensorflow_train_32.npz",
                 "cifar10_legacy_tensorflow_train_32_kid.npz"):
        assert name in err
    assert len(err.strip().splitlines()) == 11  # the summary line, then one line per file
    assert not (run / "checkpoints").exists() and not (run / "scalars.jsonl").exists()


def test_evaluation_off_trains_the_cifar10_recipe_on_fake_data_without_any_feature_extractor(tmp_path, monkeypatch, capsys):
    def no_extractor(*args, **kwargs):
        raise AssertionError("a feature extractor was built")

    monkeypatch.setattr("gn_plugin.evaluation.evaluator.build_extractor", no_extractor)
    run = tmp_path / "run"
    argv = ["train", str(CIFAR_GN), "--out", str(run), "--no-progress", "--set", "data.name=fake", "train.steps=2",
            "eval.metrics=[]", "model.width=0.125", "train.batch_size_d=8", "train.batch_size_g=8", "train.device=cpu"]
    assert main(argv) == 0
    assert '"best": {}' in capsys.readouterr().out
    assert (run / "summary.json").is_file() and (run / "checkpoints" / "latest.pt").is_file()
    assert not (run / "results.jsonl").exists() and not (run / "checkpoints" / "best.pt").exists()
    assert required_assets(load_config(run / "config.yaml")) == []  # fake data, no metrics: nothing to read
    assert main(["eval", str(run)]) == 2
    assert "eval.metrics is empty" in capsys.readouterr().err
    assert main(["eval", str(run), "--set", "eval.metrics=[fid]", "eval.inception_path=/nonexistent/i.pt"]) == 2
    assert "/nonexistent/i.pt" in capsys.readouterr().err


def test_a_data_set_without_the_hook_is_created_to_read_how_it_is_scored():
    config = load_config(RECIPES / "digits" / "gn.yaml")
    (classifier,) = required_assets(config)
    assert classifier.paths and assets.locate(classifier).state == "present"
    with pytest.raises(GnPluginError, match="^1 file"):
        assets.require([assets.Asset("x", paths=("/nonexistent/x",))], "fetch it")
    assets.require(required_assets(config), "fetch it")  # nothing missing: no error


def test_a_plugin_hook_that_rejects_an_option_is_a_one_line_error(monkeypatch, tmp_path):
    def strict_files(*, root, resolution=None, split="train") -> DatasetFiles:
        return DatasetFiles()

    def strict(*, root="data", resolution=None, split="train", download=True, colour="red"):
        raise AssertionError("not created")

    strict.required_files = strict_files
    register("dataset", "strict")(strict)
    try:
        config = load_config(RECIPES / "digits" / "gn.yaml", ["data.name=strict", "data.options={colour: blue}"])
        with pytest.raises(GnPluginError, match=r"^dataset 'strict': required_files: .*colour"):
            required_assets(config)
    finally:
        registry("dataset").unregister("strict")


def test_clean_fid_statistics_are_read_from_the_cache(tiny_online, tmp_path, cache):
    from gn_plugin.evaluation.reference import cleanfid_reference

    shutil.copytree(tmp_path / "server" / "stats", cache)
    reference = cleanfid_reference("tiny", 8, "train", with_features=True)
    features = np.load(cache / "tiny_clean_train_8_kid.npz")["feats"]
    np.testing.assert_array_equal(reference.features, features)
    np.testing.assert_allclose(reference.mu, features.mean(axis=0))


def test_a_model_that_reads_values_while_it_initialises_still_gets_its_files_listed():
    def reads_values(*, z_dim=128, num_classes=0, width=1.0, channels=3):
        scale = torch.ones(1).item()  # impossible on the meta device
        return registry("model").get("mlp")(z_dim=z_dim, num_classes=num_classes, width=width * scale, channels=channels)

    register("model", "reads-values")(reads_values)
    try:
        config = load_config(RECIPES / "digits" / "gn.yaml", ["model.name=reads-values"])
        assert [asset.what for asset in required_assets(config)] == ["digits classifier weights (shipped with gn_plugin)"]
    finally:
        registry("model").unregister("reads-values")
