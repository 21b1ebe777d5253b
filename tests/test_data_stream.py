"""Data sets read from disk kept on the device: the same batches as the DataLoader, and when ``auto`` keeps them."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import gn_plugin
from gn_plugin import GnPluginError
from gn_plugin.config import config_from_dict
from gn_plugin.data.base import ImageDataset
from gn_plugin.data.torchvision_sets import TorchvisionImages
from gn_plugin.training.data_stream import BatchStream, decode_all, keeps_on_device

CPU = torch.device("cpu")


def random_images(count: int, seed: int = 0) -> list[Image.Image]:
    """``count`` random RGB images of different sizes, so decoding crops and resizes."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)) for i in range(count)]


def image_folder(root, count: int, resolution: int) -> ImageDataset:
    for index, image in enumerate(random_images(count)):
        image.save(root / f"{index}.png")
    return gn_plugin.create("dataset", "folder", root=str(root), resolution=resolution)


def labelled(count: int) -> TorchvisionImages:
    """A CIFAR-10-like data set: torchvision's (PIL image, label) items, converted on access."""
    items = [(image, index % 10) for index, image in enumerate(random_images(count, seed=1))]
    return TorchvisionImages(items, name="cifar10", resolution=8, num_classes=10, cleanfid_reference=None)


def forget_images(data: ImageDataset) -> None:
    """Make every item unreadable (same length): the files deleted, or torchvision's images dropped."""
    if isinstance(data, TorchvisionImages):
        data.images = [None] * len(data.images)
    else:
        for file in data.files:
            os.remove(file)


def batches(stream: BatchStream, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(stream) for _ in range(count)]


def assert_same_batches(actual, expected) -> None:
    assert len(actual) == len(expected)
    for (images, labels), (want_images, want_labels) in zip(actual, expected):
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)


def test_decode_all_is_every_item_in_index_order():
    data = labelled(7)
    images, labels = decode_all(data, num_workers=2, device=CPU, batch_size=2)  # 4 batches over 2 workers
    assert torch.equal(images, torch.stack([data[i][0] for i in range(7)]))
    assert labels.tolist() == [i % 10 for i in range(7)]


@pytest.mark.parametrize("kind", ["folder", "labelled"])
@pytest.mark.parametrize("shard", [slice(None), slice(1, 3)])
def test_on_device_yields_the_dataloader_batches_across_epochs_and_resume(tmp_path, kind, shard):
    data = image_folder(tmp_path, 7, resolution=8) if kind == "folder" else labelled(7)
    options = {"batch_size": 3, "seed": 5, "device": CPU, "shard": shard}
    expected = batches(BatchStream(data, num_workers=0, **options), 8)  # 24 samples: more than 3 epochs

    kept = BatchStream(data, num_workers=2, on_device=True, **options)
    resumed = BatchStream(data, num_workers=0, on_device=True, **options)
    resumed.position = 5 * 3  # what a checkpoint taken after 5 batches restores
    forget_images(data)  # decoded at start-up: the streams never read an item again

    assert_same_batches(batches(kept, 8), expected)
    assert_same_batches(batches(resumed, 3), expected[5:])
    assert kept.position == 24


def test_auto_keeps_data_on_a_cuda_device_within_the_limit(tmp_path):
    data = image_folder(tmp_path, 4, resolution=1024)  # decoded: 4 × 3 × 1024² × 4 bytes = 48 MiB, plus labels
    cuda = torch.device("cuda", 0)
    assert not keeps_on_device("auto", data, CPU, 4096)
    assert not keeps_on_device("auto", data, cuda, 48)  # the labels' 32 bytes go over
    assert keeps_on_device("auto", data, cuda, 49)
    assert keeps_on_device("on", data, CPU, 1)
    assert not keeps_on_device("off", data, cuda, 4096)

    in_memory = gn_plugin.create("dataset", "fake", size=8)
    assert all(keeps_on_device(choice, in_memory, CPU, 1) for choice in ("auto", "on", "off"))


@pytest.mark.parametrize(
    "data, key",
    [({"on_device": "yes"}, "data.on_device"), ({"on_device_limit_mib": 0}, "data.on_device_limit_mib")],
)
def test_bad_on_device_settings_are_one_line_errors_naming_the_key(data, key):
    with pytest.raises(GnPluginError) as error:
        config_from_dict({"data": data})
    message = str(error.value)
    assert f"config: {key}: " in message and "\n" not in message
