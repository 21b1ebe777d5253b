"""Datasets: the contract (range, shape, labels, attributes) and the user-facing errors.

No network here: torchvision's data sets are replaced by stand-ins holding a few PIL images, and the
download path runs for real against a ``urlopen`` that fails the way an offline machine does.
"""

from __future__ import annotations

import io
import pickle
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import gn_plugin
from gn_plugin import GnPluginError
from gn_plugin.data import lmdb_images
from gn_plugin.data.base import ImageDataset
from gn_plugin.data.digits import digits_arrays

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def create(name: str, **options) -> ImageDataset:
    return gn_plugin.create("dataset", name, **options)


def split_image(width: int, height: int, margin_colour=GREEN) -> Image.Image:
    """A ``width`` × ``height`` image whose centred square is red on the left, blue on the right,
    and whose margins outside that square are ``margin_colour``."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, :] = margin_colour
    pixels[top : top + side, left : left + side // 2] = RED
    pixels[top : top + side, left + side // 2 : left + side] = BLUE
    return Image.fromarray(pixels)


def assert_split_pattern(image: torch.Tensor, resolution: int) -> None:
    """``image`` is :func:`split_image` cropped to its square: no margin left, red | blue halves."""
    assert image.shape == (3, resolution, resolution)
    assert image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1
    quarter = resolution // 4
    assert torch.allclose(image[:, :, :quarter].mean((1, 2)), torch.tensor([1.0, -1, -1]), atol=0.02)
    assert torch.allclose(image[:, :, -quarter:].mean((1, 2)), torch.tensor([-1.0, -1, 1]), atol=0.02)
    assert image[1].max() < -0.9  # the green margins were cropped away


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# -- digits ---------------------------------------------------------------------------------------
def rows(images: np.ndarray, labels: np.ndarray) -> list[tuple]:
    """The (image, label) pairs as sorted tuples: equal lists mean equal multisets."""
    return sorted(map(tuple, np.concatenate([images.reshape(len(labels), -1), labels[:, None]], 1)))


def test_digits_split_is_a_fixed_stratified_partition():
    train_x, train_y = digits_arrays("train")
    test_x, test_y = digits_arrays("test")
    all_x, all_y = digits_arrays("all")
    assert (len(train_y), len(test_y)) == (1437, 360)
    # train + test is exactly the whole set (all 1,797 images are distinct), so they are disjoint
    assert rows(np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])) == rows(all_x, all_y)
    # stratified: every class in both, in the proportions of the whole set
    expected = np.bincount(all_y) * 360 / len(all_y)
    assert np.all(np.abs(np.bincount(test_y, minlength=10) - expected) <= 1)
    assert set(train_y) == set(test_y) == set(range(10))
    again_x, again_y = digits_arrays("test")
    assert np.array_equal(again_x, test_x) and np.array_equal(again_y, test_y)


def test_digits_dataset_values_shapes_and_attributes():
    data = create("digits", split="test", resolution=32, channels=3)
    assert len(data) == 360 and data.images.shape == (360, 3, 32, 32)
    assert data.images.min() >= -1 and data.images.max() <= 1
    assert data.images.min() == -1 and data.images.max() > 0.9  # the range is used, not squashed
    assert (data.num_classes, data.metric_space, data.resolution) == (10, "digits", 32)
    assert create("digits").images.shape == (1437, 1, 8, 8)
    with pytest.raises(GnPluginError, match="digits"):
        create("digits", split="val")


# -- fake -----------------------------------------------------------------------------------------
def test_fake_is_deterministic_under_seed_and_shaped_as_asked():
    a = create("fake", resolution=16, channels=1, size=10, num_classes=4, seed=3)
    b = create("fake", resolution=16, channels=1, size=10, num_classes=4, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, create("fake", resolution=16, channels=1, size=10, seed=4).images)
    test = create("fake", resolution=16, channels=1, size=10, seed=3, split="test")
    assert not torch.equal(a.images, test.images)
    assert a.images.shape == (10, 1, 16, 16) and a.images.min() >= -1 and a.images.max() <= 1
    assert a.labels.dtype == torch.int64 and a.labels.max() < 4 and a.num_classes == 4


# -- cifar10 / stl10 through torchvision stand-ins ---------------------------------------------
class FakeCIFAR10(datasets.CIFAR10):
    """Four 32 px CIFAR-like images, labels 0..3; records how it was built."""

    def __init__(self, root, train=True, download=False):
        self.built_with = (root, train, download)
        self.items = [(split_image(32, 32), label) for label in range(3)] + [(split_image(32, 32), 7)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


class FakeSTL10(datasets.STL10):
    """Three 96 px STL-like images, label -1 (torchvision's 'no label') on the unlabeled split."""

    def __init__(self, root, split="train", download=False):
        self.built_with = (root, split, download)
        self.items = [(split_image(96, 96), -1 if "unlabeled" in split else 5)] * 3

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


@pytest.fixture
def torchvision_stand_ins(monkeypatch):
    monkeypatch.setattr(datasets, "CIFAR10", FakeCIFAR10)
    monkeypatch.setattr(datasets, "STL10", FakeSTL10)


def test_cifar10_items_labels_and_clean_fid_reference(torchvision_stand_ins, tmp_path):
    data = create("cifar10", root=str(tmp_path))
    assert data.images.built_with == (str(tmp_path), True, True)
    assert len(data) == 4 and (data.resolution, data.channels, data.num_classes) == (32, 3, 10)
    assert data.cleanfid_reference == ("cifar10", 32, "train") and data.metric_space == "inception"
    for index, expected_label in enumerate([0, 1, 2, 7]):
        image, label = data[index]
        assert_split_pattern(image, 32)
        assert label.dtype == torch.int64 and label.item() == expected_label

    test = create("cifar10", root=str(tmp_path), split="test", download=False)
    assert test.images.built_with == (str(tmp_path), False, False)
    assert test.cleanfid_reference == ("cifar10", 32, "test")

    bigger = create("cifar10", root=str(tmp_path), resolution=64)
    assert_split_pattern(bigger[0][0], 64)
    assert bigger.cleanfid_reference is None  # clean-fid has no 64 px CIFAR-10 statistics

    images, labels = next(iter(DataLoader(data, batch_size=4)))
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == [0, 1, 2, 7]


def test_stl10_unlabeled_48px_labels_zero_and_labelled_splits(torchvision_stand_ins, tmp_path):
    data = create("stl10", root=str(tmp_path))
    assert data.images.built_with == (str(tmp_path), "unlabeled", True)
    assert (data.resolution, data.num_classes, data.cleanfid_reference) == (48, 0, None)
    image, label = data[0]
    assert_split_pattern(image, 48)  # 96 px downscaled to 48
    assert label.dtype == torch.int64 and label.item() == 0  # not torchvision's -1

    train = create("stl10", root=str(tmp_path), split="train", resolution=32)
    assert train.num_classes == 10 and train[0][1].item() == 5
    assert_split_pattern(train[0][0], 32)


@pytest.mark.parametrize("name, split", [("cifar10", "unlabeled"), ("stl10", "validation")])
def test_torchvision_sets_reject_unknown_splits(torchvision_stand_ins, name, split):
    with pytest.raises(GnPluginError) as excinfo:
        create(name, split=split)
    assert_one_line_error(excinfo, f"dataset '{name}'", f"'{split}'")


@pytest.fixture
def offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


@pytest.mark.parametrize(
    "name, folder, archive",
    [
        ("cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
        ("stl10", "stl10_binary", "stl10_binary.tar.gz"),
    ],
)
def test_failed_download_is_one_line_naming_dataset_root_and_files(offline, tmp_path, name, folder, archive):
    root = tmp_path / "datasets"
    with pytest.raises(GnPluginError) as excinfo:  # torchvision's real download code, offline
        create(name, root=str(root))
    assert_one_line_error(
        excinfo, f"dataset '{name}'", str(root), "URLError", "name resolution", folder, archive
    )

    with pytest.raises(GnPluginError) as excinfo:  # download off and the files are not there
        create(name, root=str(root), download=False)
    assert_one_line_error(excinfo, f"dataset '{name}'", str(root), "not found", folder)


# -- folder ---------------------------------------------------------------------------------------
def test_folder_finds_images_recursively_and_center_crops_when_asked(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    split_image(60, 40).save(tmp_path / "wide.png")  # landscape: green left/right margins
    split_image(40, 70).save(tmp_path / "a" / "tall.PNG")  # portrait: green top/bottom margins
    split_image(16, 16).save(tmp_path / "a" / "b" / "small.webp", lossless=True)  # upscaled
    split_image(64, 64).save(tmp_path / "a" / "b" / "photo.jpg", quality=100)
    Image.new("L", (20, 20), 0).save(tmp_path / "grey.bmp")  # greyscale becomes RGB
    (tmp_path / "notes.txt").write_text("not an image")
    split_image(8, 8).save(tmp_path / ".hidden.png")

    data = create("folder", root=str(tmp_path), resolution=24, resize="center_crop")
    assert [f[len(str(tmp_path)) + 1 :] for f in data.files] == [
        "a/b/photo.jpg", "a/b/small.webp", "a/tall.PNG", "grey.bmp", "wide.png"
    ]
    assert (data.resolution, data.num_classes, data.cleanfid_reference) == (24, 0, None)
    for index in (0, 1, 2, 4):
        image, label = data[index]
        if index == 0:  # JPEG: colours are approximate, the layout is not
            assert image.shape == (3, 24, 24)
            assert image[0, :, :6].mean() > 0.9 and image[2, :, -6:].mean() > 0.9
        else:
            assert_split_pattern(image, 24)
        assert label.dtype == torch.int64 and label.item() == 0
    assert torch.equal(data[3][0], torch.full((3, 24, 24), -1.0))

    only_png = create("folder", root=str(tmp_path), resolution=8, extensions=["png"])
    assert [f.rsplit("/", 1)[1] for f in only_png.files] == ["tall.PNG", "wide.png"]


def test_folder_errors_name_the_path(tmp_path):
    missing = tmp_path / "celeba"
    with pytest.raises(GnPluginError) as excinfo:
        create("folder", root=str(missing), resolution=32)
    assert_one_line_error(excinfo, "dataset 'folder'", str(missing))

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no images")
    with pytest.raises(GnPluginError) as excinfo:
        create("folder", root=str(tmp_path / "empty"), resolution=32)
    assert_one_line_error(excinfo, "dataset 'folder'", "no images", str(tmp_path / "empty"))

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    data = create("folder", root=str(broken), resolution=32)
    with pytest.raises(GnPluginError) as excinfo:
        data[0]
    assert_one_line_error(excinfo, "dataset 'folder'", str(broken / "cut.png"))

    for bad, message in [({"resolution": 0}, "resolution"), ({"split": "test"}, "'test'")]:
        with pytest.raises(GnPluginError) as excinfo:
            create("folder", **{"root": str(tmp_path), "resolution": 32, **bad})
        assert_one_line_error(excinfo, "dataset 'folder'", message)
    with pytest.raises(GnPluginError, match="resolution"):  # required: there is no natural default
        create("folder", root=str(tmp_path))


def release_transform(resolution: int):
    """The authors' release: ``Resize((S, S))``, ``ToTensor``, ``Normalize(0.5, 0.5)`` (its flip comes later)."""
    return transforms.Compose([
        transforms.Resize((resolution, resolution)), transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)
    ])


@pytest.mark.parametrize("size", [(60, 40), (40, 70), (96, 96), (16, 16)], ids=["wide", "tall", "down", "up"])
def test_default_resize_squashes_the_whole_image_as_the_release_does(tmp_path, size):
    """No crop: a non-square image keeps its margins, squashed; pixels equal torchvision's Resize((S, S))."""
    split_image(*size).save(tmp_path / "image.png")
    image = create("folder", root=str(tmp_path), resolution=24)[0][0]
    with Image.open(tmp_path / "image.png") as original:
        torch.testing.assert_close(image, release_transform(24)(original.convert("RGB")), rtol=0, atol=1e-6)
    if size[0] != size[1]:
        assert image[1].max() > 0.9  # the green margins are still there
    cropped = create("folder", root=str(tmp_path), resolution=24, resize="center_crop")[0][0]
    assert_split_pattern(cropped, 24)
    assert not torch.equal(cropped, image)


def test_squash_applies_to_every_data_set_read_from_images(torchvision_stand_ins, church_lmdb, tmp_path):
    for name, options in [("stl10", {"root": str(tmp_path)}), ("lmdb", {"root": str(church_lmdb), "resolution": 16})]:
        squashed, cropped = create(name, **options), create(name, **options, resize="center_crop")
        assert squashed.resize == "squash" and cropped.resize == "center_crop"
        assert not torch.equal(squashed[0][0], cropped[0][0])  # bilinear vs bicubic (and no crop)
        with pytest.raises(GnPluginError) as excinfo:
            create(name, **options, resize="crop")
        assert_one_line_error(excinfo, f"dataset '{name}'", "resize", "squash, center_crop", "'crop'")


# -- lmdb -----------------------------------------------------------------------------------------
def test_lmdb_without_the_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lmdb", None)  # makes `import lmdb` raise ImportError
    with pytest.raises(GnPluginError) as excinfo:
        create("lmdb", root=str(tmp_path), resolution=32)
    assert_one_line_error(excinfo, "pip install gn-plugin[lmdb]")


@pytest.fixture
def church_lmdb(tmp_path):
    """A tiny LSUN-style LMDB: image ids as keys, WebP bytes as values."""
    lmdb = pytest.importorskip("lmdb")
    path = tmp_path / "church_outdoor_train_lmdb"
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, size in [(b"0002", (64, 48)), (b"0001", (48, 64)), (b"0003", (32, 32))]:
            buffer = io.BytesIO()
            split_image(*size).save(buffer, format="webp", lossless=True)
            txn.put(key, buffer.getvalue())
    env.close()
    return path


def starts_without_databases(worker_id: int) -> None:
    """A forked worker must open its own LMDB environment, not reuse the parent's."""
    assert not lmdb_images._ENVIRONMENTS


def test_lmdb_reads_images_in_key_order_in_workers(church_lmdb):
    data = create("lmdb", root=str(church_lmdb), resolution=16, resize="center_crop")
    assert data.keys == [b"0001", b"0002", b"0003"] and len(data) == 3
    assert (data.resolution, data.num_classes, data.cleanfid_reference) == (16, 0, None)
    image, label = data[0]  # the parent opens the database before the workers fork
    assert_split_pattern(image, 16)
    assert label.item() == 0

    restored = pickle.loads(pickle.dumps(data))  # spawned workers receive a pickled copy
    assert torch.equal(restored[2][0], data[2][0])
    again = create("lmdb", root=str(church_lmdb), resolution=16, resize="center_crop")  # same database, same process
    assert torch.equal(again[1][0], data[1][0])

    batches = list(DataLoader(data, batch_size=1, num_workers=2, worker_init_fn=starts_without_databases))
    assert len(batches) == 3 and all(labels.item() == 0 for _, labels in batches)
    for images, _ in batches:
        assert_split_pattern(images[0], 16)


def test_lmdb_errors_name_the_path(church_lmdb, tmp_path):
    import lmdb

    missing = tmp_path / "nowhere"
    with pytest.raises(GnPluginError) as excinfo:
        create("lmdb", root=str(missing), resolution=32)
    assert_one_line_error(excinfo, "dataset 'lmdb'", str(missing))

    empty = tmp_path / "empty_lmdb"
    lmdb.open(str(empty), map_size=1 << 20).close()
    with pytest.raises(GnPluginError) as excinfo:
        create("lmdb", root=str(empty), resolution=32)
    assert_one_line_error(excinfo, "dataset 'lmdb'", str(empty), "no entries")

    env = lmdb.open(str(church_lmdb), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"0004", b"not an image")
    env.close()
    data = create("lmdb", root=str(church_lmdb), resolution=32)
    with pytest.raises(GnPluginError) as excinfo:
        data[3]
    assert_one_line_error(excinfo, "dataset 'lmdb'", "0004", str(church_lmdb))


# -- registry -------------------------------------------------------------------------------------
def test_every_dataset_is_registered_and_created_by_name(torchvision_stand_ins, tmp_path):
    split_image(40, 30).save(tmp_path / "one.png")
    options = {
        "digits": {},
        "fake": {"size": 2},
        "cifar10": {"root": str(tmp_path)},
        "stl10": {"root": str(tmp_path)},
        "folder": {"root": str(tmp_path), "resolution": 32},
    }
    assert set(options) | {"lmdb"} <= set(gn_plugin.list_components("dataset"))
    for name, kwargs in options.items():
        data = create(name, **kwargs)
        assert isinstance(data, ImageDataset) and data.name == name
        image, label = data[0]
        assert image.shape == (data.channels, data.resolution, data.resolution)
        assert image.min() >= -1 and image.max() <= 1 and label.dtype == torch.int64
    with pytest.raises(GnPluginError, match="folder"):
        create("folder", root=str(tmp_path), resolution=32, colour="sepia")
